"""The reference wire format of ``/rpa/v1/exec``, rendered from an execution's events.

Before the end: an id-only event (``id:`` line, no ``data:``) per event, so the
client always holds a resume cursor, and ``: ping`` comments while idle.  At the
end: exactly one ``data:`` frame ``{"code","message","sid","data"}``.  Progress
becomes ``event: progress`` data frames only for callers that opted in, because
the documented clients take the first ``data:`` frame as the result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from rpa_gateway import sse
from rpa_gateway.executions import Event, EventKind


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def terminal_frame(event: Event, sid: str) -> bytes:
    payload = {
        "code": event.data.get("code"),
        "message": event.data.get("message"),
        "sid": sid,
        "data": event.data.get("data"),
    }
    return sse.frame(id=event.id, data=_json(payload))


def progress_frame(event: Event, sid: str) -> bytes:
    payload = {"code": 0, "message": "Progress", "sid": sid, "data": {"progress": event.data}}
    return sse.frame(id=event.id, event="progress", data=_json(payload))


async def render(
    events: AsyncIterator[Event | None], sid: str, *, with_progress: bool
) -> AsyncIterator[bytes]:
    async for event in events:
        if event is None:
            yield sse.PING
        elif event.kind is EventKind.TERMINAL:
            yield terminal_frame(event, sid)
            return
        elif event.kind is EventKind.PROGRESS and with_progress:
            yield progress_frame(event, sid)
        else:
            yield sse.frame(id=event.id)
