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
from rpa_gateway.executions import Execution


async def create_execution(
    request: Request, parts: Components, token: str
) -> tuple[Execution, bool]:
    """Refuse while draining, read the body, honour ``Idempotency-Key``; (execution, is new)."""
    if parts.lifecycle.draining:
        raise draining()
    key = idempotency_key(request)
    body = parse_exec_body(await read_json_object(request, parts.settings.rpa_max_body_bytes))
    return parts.executions.create(
        body.to_request(trace_parent(request)),
        token,
        idempotency_key=key,
        request_hash=body.request_hash(),
    )
