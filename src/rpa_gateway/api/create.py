"""What both create endpoints do before they answer differently."""

from __future__ import annotations

from starlette.requests import Request

from rpa_gateway.api.body import (
    idempotency_key,
    parse_exec_body,
    read_json_object,
    trace_parent,
)
from rpa_gateway.api.components import Components
from rpa_gateway.api.errors import draining
from rpa_gateway.executions import Event, Execution


async def create_execution(
    request: Request, parts: Components, token: str
) -> tuple[Execution, Event | None]:
    """Read the body, refuse while draining, honour ``Idempotency-Key``; (execution, its
    first event when it is new)."""
    key = idempotency_key(request)
    settings = parts.settings
    payload = await read_json_object(
        request, settings.rpa_max_body_bytes, settings.rpa_body_timeout
    )
    body = parse_exec_body(payload)
    if parts.lifecycle.draining:  # checked after the body arrived: the drain may have begun
        raise draining()
    return await parts.executions.create(
        body.to_request(trace_parent(request)),
        token,
        idempotency_key=key,
        # Only an Idempotency-Key needs it: a replay with another body is refused.
        request_hash=body.request_hash() if key is not None else None,
    )
