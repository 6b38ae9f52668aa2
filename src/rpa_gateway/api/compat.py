"""``POST /rpa/v1/exec``: the drop-in endpoint of the reference RPA plugin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rpa_gateway.api import compat_wire
from rpa_gateway.api.body import bearer_token, parse_exec_body, read_json_object
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.sse import EventStreamResponse
from rpa_gateway.store.base import StoreError

router = APIRouter()

_TRUE = frozenset({"1", "true", "yes", "on"})


def wants_progress(request: Request) -> bool:
    """Progress frames are opt-in: ``?progress=true`` or ``X-RPA-Progress: true``."""
    flag = request.query_params.get("progress") or request.headers.get("x-rpa-progress", "")
    return flag.strip().lower() in _TRUE


@router.post(
    "/rpa/v1/exec",
    summary="Run an RPA project and stream its outcome (reference wire format)",
    response_class=EventStreamResponse,
)
async def exec_rpa(request: Request) -> Response:
    parts = components(request)
    try:
        token = bearer_token(request)
        body = parse_exec_body(await read_json_object(request, parts.settings.rpa_max_body_bytes))
        execution_request = body.to_request()
        try:
            execution = parts.executions.create(execution_request, token)
        except StoreError:
            raise RequestRejected(
                503, "store_unavailable", "the execution store is unavailable; retry later"
            ) from None
    except RequestRejected as rejected:
        return rejected.response()
    events = parts.executions.follow(execution.id, 0, parts.settings.xiaowu_rpa_ping_interval)
    return EventStreamResponse(
        compat_wire.render(events, execution_request.sid, with_progress=wants_progress(request))
    )
