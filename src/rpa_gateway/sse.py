"""Server-Sent Events framing and the streaming response that carries it.

A few lines of our own rather than an SSE library: the stream is driven by the
execution's event log (replay + follow, with idle pings) and needs nothing but
byte framing, which keeps the per-stream cost to one generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping

from starlette.responses import StreamingResponse

MEDIA_TYPE = "text/event-stream"

# Proxies must neither buffer nor transform the stream (nginx reads X-Accel-Buffering).
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}

PING = b": ping\n\n"


def frame(
    *,
    id: str | None = None,
    event: str | None = None,
    data: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One SSE event.  ``data`` must not contain newlines (JSON from ``json.dumps`` never does)."""
    parts: list[str] = []
    if retry_ms is not None:
        parts.append(f"retry: {retry_ms}\n")
    if id is not None:
        parts.append(f"id: {id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    if data is not None:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode()


class EventStreamResponse(StreamingResponse):
    def __init__(self, content: AsyncIterable[bytes], status_code: int = 200) -> None:
        super().__init__(
            content, status_code=status_code, headers=dict(HEADERS), media_type=MEDIA_TYPE
        )
