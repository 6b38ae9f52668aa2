"""What the MCP endpoints send: JSON-RPC as JSON, or an answer as an event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rpa_gateway import sse
from rpa_gateway.api.body import read_bounded
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.event_stream import EventStreamResponse, StreamCounter
from rpa_gateway.mcp.call_scope import Emit
from rpa_gateway.mcp.gate import Refusal
from rpa_gateway.mcp.jsonrpc import RpcError, error_response
from rpa_gateway.mcp.results import dumps
from rpa_gateway.ping_sweep import PingSweep

JSON = "application/json"
# A request answered within this many seconds, with nothing sent before, is answered as JSON
# (its HTTP status can then say how it went); one that takes longer, as an event stream.
STREAM_AFTER = 0.25


def json_response(
    body: dict[str, Any] | list[dict[str, Any]],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(dumps(body).encode(), status, headers=headers, media_type=JSON)


def refusal_response(refusal: Refusal) -> Response:
    body = error_response(None, refusal.code, refusal.message)
    return json_response(body, refusal.status, refusal.headers)


def rpc_error_response(error: RpcError, status: int = 400) -> Response:
    return json_response(error.response(), status)


def message_frame(message: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    return sse.frame(event="message", data=sse.json_data(message))


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, as ``/rpa/v1/exec`` reads one (413, 408).  Raises Refusal."""
    try:
        return await read_bounded(request, limit, seconds)
    except RequestRejected as exc:
        raise Refusal(exc.status_code, exc.message) from None


async def answered(
    answer: Callable[[Emit], Awaitable[dict[str, Any] | None]],
    json_status: Callable[[dict[str, Any]], int],
    cancelled: dict[str, Any],
    *,
    json_ok: bool,
    counter: StreamCounter,
    pings: PingSweep,
) -> Response:
    """``answer``'s response: as JSON when it comes at once (within :data:`STREAM_AFTER` s,
    with nothing to send before it), else as an event stream of what it emits while it
    works (progress, and pings), then the response.  The client leaving ends ``answer``
    (never the run it waits for).  ``answer`` gives ``None`` when its client cancelled the
    request: the stream then ends without a response (as the spec asks), a JSON answer is
    ``cancelled``."""
    frames = _Frames()

    def emit(notification: dict[str, Any]) -> None:
        frames.put(message_frame(notification))

    async def run() -> dict[str, Any] | None:
        try:
            return await answer(emit)
        finally:
            frames.put(None)

    task = asyncio.create_task(run())
    first = frames.get()
    try:
        await asyncio.wait((first,), timeout=STREAM_AFTER)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if first.done() and first.result() is None and json_ok:  # the answer, and nothing else
        response = task.result() or cancelled
        return json_response(response, json_status(response))
    return EventStreamResponse(_stream(first, frames, task), counter=counter, pings=pings)


class _Frames:
    """What an answer emits, in order, for its one reader (``None``: the answer is there).

    A list and a future, not an ``asyncio.Queue``: every waiting call holds one, and a queue
    brings four deques (3 KB) where this holds two slots."""

    __slots__ = ("_ready", "_waiter")

    def __init__(self) -> None:
        self._ready: list[bytes | None] = []
        self._waiter: asyncio.Future[bytes | None] | None = None

    def put(self, frame: bytes | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        else:
            self._ready.append(frame)

    def get(self) -> asyncio.Future[bytes | None]:
        taken: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        if self._ready:
            taken.set_result(self._ready.pop(0))
        else:
            self._waiter = taken
        return taken


async def _stream(
    first: asyncio.Future[bytes | None],
    frames: _Frames,
    task: asyncio.Task[dict[str, Any] | None],
) -> AsyncGenerator[bytes, None]:
    try:
        frame = await first
        while frame is not None:
            yield frame
            frame = await frames.get()
        response = task.result()
        if response is not None:
            yield message_frame(response)
    finally:
        if not task.done():
            task.cancel()  # the client left: stop answering (the run goes on)
