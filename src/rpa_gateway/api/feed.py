"""``GET /rpa/v1/feed``: the caller's execution changes as Server-Sent Events, for
dashboards (the web monitor among them) and ``rpa-gateway ls --watch``."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response

from rpa_gateway import sse
from rpa_gateway.api.auth import Caller, is_admin
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.api.openapi_docs import change_stream, errors
from rpa_gateway.event_stream import EventStreamResponse
from rpa_gateway.service import FeedEnd
from rpa_gateway.store.hub import CHANGES_BACKLOG, Change
from rpa_gateway.telemetry import Telemetry

log = logging.getLogger(__name__)
router = APIRouter(tags=["executions"])

_MILLISECONDS = re.compile(r"[0-9]{1,16}")


@router.get(
    "/rpa/v1/feed",
    response_class=EventStreamResponse,
    operation_id="execution_feed",
    responses={**change_stream(), **errors(400, 401)},
    summary="The caller's execution changes, live",
    description="One `change` event per change of any of the caller's executions: created, "
    "each state change, each progress report, the end. The event id is the change's "
    "`updated_at` in milliseconds: resuming with `Last-Event-ID` (or `?last_event_id=`) "
    "first sends the current state of every execution of the caller's changed since "
    "(less 2 s, as changes of different executions may come slightly out of order; at "
    "most 10 000), then live changes. A client keeps the latest change of each execution "
    "by `id`. A client that leaves 10 000 changes unread, or takes no byte for "
    "`RPA_STREAM_STALL_SECONDS`, is disconnected: it resumes with `Last-Event-ID`.",
)
async def execution_feed(request: Request, token: Caller) -> Response:
    parts = components(request)
    since = _since(request)
    changes = parts.executions.changes(token, since, every_owner=is_admin(request, token))
    body = _render(changes, parts.settings.rpa_reconnect_delay_ms, parts.telemetry)
    return EventStreamResponse(body, counter=parts.lifecycle, pings=parts.pings)


def _since(request: Request) -> float | None:
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if value is None or not value.strip():
        return None
    if _MILLISECONDS.fullmatch(value.strip()) is None:
        raise RequestRejected(
            400,
            "invalid_last_event_id",
            "Last-Event-ID of the feed is a change's id: milliseconds since the epoch",
        )
    return int(value.strip()) / 1000


async def _render(
    changes: AsyncIterator[list[Change] | FeedEnd], retry_ms: int, telemetry: Telemetry
) -> AsyncGenerator[bytes, None]:
    async for batch in changes:
        if isinstance(batch, FeedEnd):
            if batch is FeedEnd.FELL_BEHIND:
                log.warning(
                    "a feed's client left %d changes unread: the feed ends (its client"
                    " resumes with Last-Event-ID)",
                    CHANGES_BACKLOG,
                )
                telemetry.slow_client("fell_behind")
            yield sse.frame(retry_ms=retry_ms)  # reconnect (elsewhere, when shutting down)
            return
        elif not batch:  # the first bytes: the feed is subscribed
            yield sse.frame(retry_ms=retry_ms)
        else:
            yield b"".join(_wire(change) for change in batch)


def _wire(change: Change) -> bytes:
    if change.wire is None:  # rendered once for every feed that sends it
        change.wire = sse.frame(
            id=str(round(change.data["updated_at"] * 1000)),
            event="change",
            data=sse.json_data(change.data),
        )
    return change.wire
