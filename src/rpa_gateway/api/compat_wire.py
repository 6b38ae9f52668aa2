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

from rpa_gateway import codes, sse
from rpa_gateway.codes import Code
from rpa_gateway.executions import Event, EventKind
from rpa_gateway.service import Signal


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


def reconnect_frame(last_event_id: str, sid: str, retry_ms: int) -> bytes:
    payload = {
        "code": Code.RECONNECT.value,
        "message": codes.reconnect_message(last_event_id),
        "sid": sid,
        "data": None,
    }
    return sse.frame(id=last_event_id, data=_json(payload), retry_ms=retry_ms)


async def render(
    events: AsyncIterator[Event | Signal],
    sid: str,
    *,
    with_progress: bool,
    retry_ms: int,
    last_event_id: str,
) -> AsyncIterator[bytes]:
    async for event in events:
        if event is Signal.PING:
            yield sse.PING
        elif event is Signal.RECONNECT:
            yield reconnect_frame(last_event_id, sid, retry_ms)
            return
        elif event.kind is EventKind.TERMINAL:
            yield terminal_frame(event, sid)
            return
        else:
            last_event_id = event.id
            if event.kind is EventKind.PROGRESS and with_progress:
                yield progress_frame(event, sid)
            else:
                yield sse.frame(id=event.id)
