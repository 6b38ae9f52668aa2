"""The response that carries an SSE stream, served with as little as a stream can hold.

The endpoint returns it like any response; it then hands itself to the outermost
layer (``api.edge``), which serves it once the framework's call chain has returned:
an open stream holds this one coroutine and its body's generators, not a dozen
middleware frames, a task group and a task waiting for a disconnect.  Pings come from
the sweep (``ping_sweep``), which also ends the stream when its client leaves.
Without a :class:`Connection` in the scope (another server) it streams in place,
unpinged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rpa_gateway import sse
from rpa_gateway.connection import SCOPE_KEY, Connection
from rpa_gateway.ping_sweep import PingSweep


def _headers() -> list[tuple[bytes, bytes]]:
    response = Response(media_type=sse.MEDIA_TYPE, headers=dict(sse.HEADERS))
    return [(name, value) for name, value in response.raw_headers if name != b"content-length"]


_HEADERS = _headers()  # made once: every stream sends them
STREAM_SEND_BUFFER = 128 * 1024  # bytes of a stream the kernel may hold for its client


class StreamCounter(Protocol):
    def opened(self) -> None: ...

    def closed(self) -> None: ...


class EventStreamResponse(Response):
    # No class-wide media type: the OpenAPI document keeps an endpoint's errors JSON (its
    # stream's content types are listed by hand, see openapi_docs).
    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        status_code: int = 200,
        counter: StreamCounter | None = None,
        pings: PingSweep | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body_iterator = content
        self.raw_headers = _HEADERS
        self._counter = counter
        self._pings = pings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = scope.get(SCOPE_KEY)
        if not isinstance(connection, Connection):
            await self.serve(send, None)
        elif connection.handed_off is None:
            connection.handed_off = self
        else:  # never two responses to one request; serve it here rather than lose it
            await self.serve(send, connection)

    async def serve(self, send: Send, connection: Connection | None) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self._counter is not None:
            self._counter.opened()
        if connection is not None:
            connection.limit_send_buffer(STREAM_SEND_BUFFER)
        pings = self._pings if connection is not None else None
        swept = pings.add(connection) if pings is not None and connection is not None else None
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if swept is not None and pings is not None:
                    pings.wrote(swept)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if swept is None or not swept.gone or task is None:
                raise
            task.uncancel()  # the sweep woke it: the client is gone, nothing more to send
        finally:
            if swept is not None and pings is not None:
                pings.remove(swept)
            if self._counter is not None:
                self._counter.closed()
            await self.body_iterator.aclose()
