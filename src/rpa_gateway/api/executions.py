"""The native API: executions as resources, their event streams, cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from rpa_gateway.api import native_wire
from rpa_gateway.api.auth import Caller, is_admin
from rpa_gateway.api.body import last_event_id
from rpa_gateway.api.components import components
from rpa_gateway.api.create import create_execution as create
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.api.openapi_docs import (
    CREATED_HEADERS,
    EXEC_BODY,
    IDEMPOTENCY_KEY,
    LAST_EVENT_ID,
    LAST_EVENT_ID_QUERY,
    errors,
    links_to_the_execution,
    native_stream,
)
from rpa_gateway.api.paging import page_after
from rpa_gateway.api.views import ExecutionPage, ExecutionView
from rpa_gateway.cursors import encode_cursor
from rpa_gateway.event_stream import EventStreamResponse
from rpa_gateway.executions import MAX_SEQ, Status, parse_seq
from rpa_gateway.store.base import ListQuery

router = APIRouter(prefix="/rpa/v1/executions", tags=["executions"])


@router.post(
    "",
    status_code=202,
    response_model=ExecutionView,
    operation_id="start_execution",
    responses={
        202: {"links": links_to_the_execution(), "headers": CREATED_HEADERS},
        **errors(400, 401, 413, 415, 422, 429),
    },
    openapi_extra={**EXEC_BODY, "parameters": [IDEMPOTENCY_KEY]},
    summary="Start an execution",
    description="Same body as `/rpa/v1/exec`. Answers at once; follow it with `/events`. "
    "An `Idempotency-Key` header returns the execution already made with that key.",
)
async def start_execution(request: Request, token: Caller) -> JSONResponse:
    execution, first = await create(request, components(request), token)
    headers = {"Location": f"/rpa/v1/executions/{execution.id}"}
    if first is None:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        ExecutionView.of(execution).model_dump(mode="json"), status_code=202, headers=headers
    )


@router.get(
    "",
    response_model=ExecutionPage,
    operation_id="list_executions",
    responses=errors(400, 401, 422),
    summary="List this token's executions, newest first",
)
async def list_executions(
    request: Request,
    token: Caller,
    status: Annotated[Status | None, Query(description="only this status")] = None,
    project_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> ExecutionPage:
    before = page_after(cursor)
    items = await components(request).executions.list_executions(
        token,
        ListQuery(owner="", status=status, project_id=project_id, limit=limit + 1, before=before),
        every_owner=is_admin(request, token),
    )
    page, more = items[:limit], len(items) > limit
    executions = components(request).executions
    return ExecutionPage(
        items=[ExecutionView.of(e, executions.run_info(e)) for e in page],
        next_cursor=encode_cursor(page[-1]) if more and page else None,
    )


@router.get(
    "/{execution_id}",
    response_model=ExecutionView,
    operation_id="get_execution",
    responses=errors(401, 404),
    summary="One execution",
)
async def get_execution(request: Request, token: Caller, execution_id: str) -> ExecutionView:
    executions = components(request).executions
    execution = await executions.attach(execution_id, token, every_owner=is_admin(request, token))
    return ExecutionView.of(execution, executions.run_info(execution))


@router.get(
    "/{execution_id}/events",
    response_class=EventStreamResponse,
    operation_id="execution_events",
    responses={**native_stream(), **errors(400, 401, 404, 422)},
    openapi_extra={"parameters": [LAST_EVENT_ID, LAST_EVENT_ID_QUERY]},
    summary="Every event of an execution as Server-Sent Events",
    description="Replays the log, then follows it to the terminal event. Resume with the "
    "`Last-Event-ID` header, or `?last_event_id=` / `?after=<seq>` where headers cannot be set.",
)
async def execution_events(
    request: Request,
    token: Caller,
    execution_id: str,
    after: Annotated[
        str | None,
        Query(
            pattern="^[0-9]{1,19}$",
            description=f"resume after this sequence (ASCII digits, at most {MAX_SEQ})",
        ),
    ] = None,
) -> Response:
    parts = components(request)
    cursor = last_event_id(request)
    if cursor is not None and cursor[0] != execution_id:
        raise RequestRejected(400, "invalid_last_event_id", "Last-Event-ID names another execution")
    start = cursor[1] if cursor is not None else _sequence(after)
    execution = await parts.executions.attach(
        execution_id, token, after=start, every_owner=is_admin(request, token)
    )
    events = parts.executions.follow(execution.id, start)
    body_stream = native_wire.render(events, retry_ms=parts.settings.rpa_reconnect_delay_ms)
    return EventStreamResponse(body_stream, counter=parts.lifecycle, pings=parts.pings)


@router.post(
    "/{execution_id}/cancel",
    response_model=ExecutionView,
    operation_id="cancel_execution",
    responses=errors(401, 404, 409),
    summary="Cancel an execution",
    description="Idempotent while the execution runs; cancels the upstream run when the "
    "platform allows it. The execution ends with code 55004.",
)
async def cancel_execution(request: Request, token: Caller, execution_id: str) -> ExecutionView:
    execution = await components(request).executions.cancel(
        execution_id, token, every_owner=is_admin(request, token)
    )
    return ExecutionView.of(execution)


def _sequence(after: str | None) -> int:
    if after is None:
        return 0
    seq = parse_seq(after)
    if seq is None:
        raise RequestRejected(422, "invalid_request", f"after: at most {MAX_SEQ}", ["after"])
    return seq
