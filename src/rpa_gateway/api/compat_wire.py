"""The reference wire format of ``/rpa/v1/exec``, rendered from an execution's events.

Before the end: an id-only event (``id:`` line, no ``data:``) per event, so the
client always holds a resume cursor, and ``: ping`` comments while idle.  At the
end: exactly one ``data:`` frame ``{"code","message","sid","data"}``.  Progress
becomes ``event: progress`` data frames only for callers that opted in, because
the documented clients take the first ``data:`` frame as the result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from rpa_gateway import codes, sse
from rpa_gateway.codes import Code
from rpa_gateway.executions import Event, EventKind
from rpa_gateway.service import Signal

log = logging.getLogger(__name__)

_DATA_PREFIX = "data: "


def terminal_frame(event: Event, sid: str, max_line: int) -> bytes:
    """The result frame; one whose ``data:`` line would exceed ``max_line`` bytes says so instead.

    aiohttp, which astron-agent's node reads with, fails on lines over 128 KiB
    with an opaque "Chunk too big"; a clear failure naming the size and where
    the whole result is served is better.
    """
    code = event.data.get("code")
    payload = {
        "code": code,
        "message": event.data.get("message"),
        "sid": sid,
        "data": event.data.get("data"),
    }
    data = sse.json_data(payload)
    size = _line_size(data)
    if size > max_line:
        too_large = {
            "code": Code.RESULT_TOO_LARGE.value,
            "message": codes.result_too_large_message(
                size, max_line, int(code or 0), event.execution_id
            ),
            "sid": sid,
            "data": None,
        }
        data = sse.json_data(too_large)
    return sse.frame(id=event.id, data=data)


def progress_frame(event: Event, sid: str, max_line: int) -> bytes:
    """A progress frame, or just the event id when the frame would be too long to read."""
    payload = {"code": 0, "message": "Progress", "sid": sid, "data": {"progress": event.data}}
    data = sse.json_data(payload)
    if _line_size(data) > max_line:
        return sse.frame(id=event.id)
    return sse.frame(id=event.id, event="progress", data=data)


def _line_size(data: str) -> int:
    """Bytes of ``data: <data>\n``; UTF-8 takes 1 to 4 bytes a character."""
    return len(_DATA_PREFIX) + len(data.encode() if not data.isascii() else data) + 1


def refusal_frame(
    status_code: int, error: str, message: str, sid: str, fields: list[str], max_line: int
) -> bytes:
    """The one frame a refused request gets, so a reader of ``data:`` lines sees the failure.

    ``sid`` is ``""`` when unknown: astron-agent's node validates it as a string.  Text
    from the request (a field path, a quoted value) may hold lone surrogates, which no
    JSON reader takes back: they become ``?``.  A message too long for ``max_line`` is cut.
    """
    if status_code in (429, 503):
        code, text = Code.UNAVAILABLE, codes.unavailable_message(message)
    elif status_code >= 500:
        code, text = Code.UNKNOWN, codes.unknown_error_message(message)
    else:
        code, text = Code.CREATE_ERROR, codes.create_error_message(message)
    text = _printable(text)
    payload: dict[str, Any] = {
        "code": code.value,
        "message": text,
        "sid": sid,
        "data": None,
        "error": error,
    }
    if fields:
        payload["fields"] = [_printable(field) for field in fields]
    data = sse.json_data(payload)
    over = _line_size(data) - max_line
    if over > 0:  # each character cut saves a byte or more; "…" takes 3
        payload["message"] = text[: max(0, len(text) - over - 3)] + "…"
        data = sse.json_data(payload)
    return sse.frame(data=data)


def _printable(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def reconnect_frame(
    last_event_id: str, sid: str, retry_ms: int, *, run_outlives_service: bool = True
) -> bytes:
    payload = {
        "code": Code.RECONNECT.value,
        "message": codes.reconnect_message(
            last_event_id, run_outlives_service=run_outlives_service
        ),
        "sid": sid,
        "data": None,
    }
    return sse.frame(id=last_event_id, data=sse.json_data(payload), retry_ms=retry_ms)


def store_failed_frame(last_event_id: str, sid: str, retry_ms: int) -> bytes:
    """No event id: the execution's real end is still to come under the last one."""
    payload = {
        "code": Code.UNKNOWN.value,
        "message": codes.unknown_error_message(
            "the execution store cannot be read; the execution goes on; reconnect with"
            f" Last-Event-ID: {last_event_id} to get its result"
        ),
        "sid": sid,
        "data": None,
    }
    return sse.frame(data=sse.json_data(payload), retry_ms=retry_ms)


def lost_frame(sid: str) -> bytes:
    """The store lost its data and no process wrote the execution back: its outcome is
    unknown (never a success that did not happen).  No event id: nothing to resume."""
    payload = {
        "code": Code.UNKNOWN.value,
        "message": codes.unknown_error_message(codes.LOST_MESSAGE),
        "sid": sid,
        "data": None,
    }
    return sse.frame(data=sse.json_data(payload))


async def render(
    events: AsyncIterator[Event | Signal],
    sid: str,
    *,
    with_progress: bool,
    retry_ms: int,
    last_event_id: str,
    max_line: int,
    run_outlives_service: bool = True,
) -> AsyncGenerator[bytes, None]:
    try:
        async for event in events:
            if event is Signal.RECONNECT:
                yield reconnect_frame(
                    last_event_id, sid, retry_ms, run_outlives_service=run_outlives_service
                )
                return
            elif event is Signal.STORE_FAILED:
                yield store_failed_frame(last_event_id, sid, retry_ms)
                return
            elif event is Signal.LOST:
                yield lost_frame(sid)
                return
            elif event.kind is EventKind.TERMINAL:
                yield terminal_frame(event, sid, max_line)
                return
            else:
                last_event_id = event.id
                if event.kind is EventKind.PROGRESS and with_progress:
                    yield progress_frame(event, sid, max_line)
                else:
                    yield sse.frame(id=event.id)

    except Exception:
        # Not the end of the execution: a fault here.  Its client, reading only data
        # frames, must not take the stream's close for a success.
        log.exception("the stream of %s failed", last_event_id)
        yield sse.frame(
            data=sse.json_data(
                {
                    "code": Code.UNKNOWN.value,
                    "message": codes.unknown_error_message("internal error"),
                    "sid": sid,
                    "data": None,
                }
            )
        )
