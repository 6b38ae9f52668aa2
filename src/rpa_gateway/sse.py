"""Server-Sent Events framing.

A few lines of our own rather than an SSE library: the stream is driven by the
execution's event log (replay + follow) and needs nothing but byte framing;
``event_stream`` carries it, ``ping_sweep`` keeps idle streams alive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MEDIA_TYPE = "text/event-stream"

# Proxies must neither buffer nor transform the stream (nginx reads X-Accel-Buffering).
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}

PING = b": ping\n\n"


# JSON leaves these unescaped, but line readers split on them (Python's str.splitlines,
# which httpx's iter_lines follows; browsers' JS before ES2019): a frame must stay one line.
_LINE_BREAKERS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_data(value: Any) -> str:
    """``value`` as compact JSON for a ``data:`` line: UTF-8, one line for every reader."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if text.isascii() else text.translate(_LINE_BREAKERS)


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
