"""The native event stream: every event of the log, named and in full."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from rpa_gateway import codes, sse
from rpa_gateway.executions import Event, EventKind
from rpa_gateway.service import Signal


def event_frame(event: Event) -> bytes:
    payload = {"execution_id": event.execution_id, "seq": event.seq, "at": event.at, **event.data}
    return sse.frame(
        id=event.id,
        event=event.kind.value,
        data=sse.json_data(payload),
    )


LOST_DATA = {"error": "lost", "message": codes.LOST_MESSAGE}


async def render(
    events: AsyncIterator[Event | Signal], *, retry_ms: int
) -> AsyncGenerator[bytes, None]:
    async for event in events:
        if event is Signal.RECONNECT or event is Signal.STORE_FAILED:
            # EventSource clients reconnect on their own, sending Last-Event-ID.
            yield sse.frame(retry_ms=retry_ms)
            return
        if event is Signal.LOST:  # nothing to reconnect to: the record is gone
            yield sse.frame(event="lost", data=sse.json_data(LOST_DATA))
            return
        else:
            yield event_frame(event)
            if event.kind is EventKind.TERMINAL:
                return
