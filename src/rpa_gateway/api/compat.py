"""``POST /rpa/v1/exec``: the drop-in endpoint of the reference RPA plugin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rpa_gateway.api import compat_wire
from rpa_gateway.api.auth import TOKEN_SECURITY, caller_token, is_admin
from rpa_gateway.api.body import last_event_id
from rpa_gateway.api.components import components
from rpa_gateway.api.create import create_execution
from rpa_gateway.api.openapi_docs import EXEC_BODY, EXEC_PARAMETERS, compat_stream, errors
from rpa_gateway.event_stream import EventStreamResponse
from rpa_gateway.executions import Event

router = APIRouter()

_TRUE = frozenset({"1", "true", "yes", "on"})


def wants_progress(request: Request) -> bool:
    """Progress frames are opt-in: ``?progress=true`` or ``X-RPA-Progress: true``."""
    flag = request.query_params.get("progress") or request.headers.get("x-rpa-progress", "")
    return flag.strip().lower() in _TRUE


@router.post(
    "/rpa/v1/exec",
    summary="Run an RPA project and stream its outcome (reference wire format)",
    description=(
        "Starts an execution and streams it as Server-Sent Events: id-only events, `: ping` "
        "comments, then exactly one `data:` frame `{code, message, sid, data}`. With a "
        "`Last-Event-ID` header it re-attaches to that execution instead (the body is then "
        "ignored) and replays what the client missed. `Idempotency-Key` returns the "
        "execution already made with that key. Refusals keep their HTTP status but, "
        "unless `Accept` asks for JSON only, come as one `data:` frame with a non-zero "
        "code (clients that read only `data:` lines must see them)."
    ),
    response_class=EventStreamResponse,
    responses={
        **compat_stream(),
        **errors(400, 401, 404, 405, 413, 415, 422, 429, stream=True),
    },
    openapi_extra={**EXEC_BODY, **TOKEN_SECURITY, **EXEC_PARAMETERS},
)
async def exec_rpa(request: Request) -> Response:
    token = caller_token(request)
    parts = components(request)
    cursor = last_event_id(request)
    first: Event | None = None
    replayed = False
    if cursor is not None:
        execution = await parts.executions.attach(
            cursor[0], token, after=cursor[1], every_owner=is_admin(request, token)
        )
        after = cursor[1]
    else:
        execution, first = await create_execution(request, parts, token)
        replayed = first is None  # the execution its Idempotency-Key made before
        after = 0
    settings = parts.settings
    events = parts.executions.follow(execution.id, after, known=first)
    body_stream = compat_wire.render(
        events,
        execution.request.sid,
        with_progress=wants_progress(request),
        retry_ms=settings.rpa_reconnect_delay_ms,
        last_event_id=f"{execution.id}:{after}",
        max_line=settings.rpa_max_frame_bytes,
        run_outlives_service=parts.executions.runs_outlive_the_service,
    )
    response = EventStreamResponse(body_stream, counter=parts.lifecycle, pings=parts.pings)
    if replayed:
        response.raw_headers = [*response.raw_headers, (b"idempotent-replayed", b"true")]
    return response
