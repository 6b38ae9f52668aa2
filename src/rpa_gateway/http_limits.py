"""The limits uvicorn's httptools protocol lacks, added to it (no parser of our own).

- A request head (request line and headers) larger than ``max_header_bytes`` gets a
  431 and the connection closes, however its bytes arrive: a head still incomplete
  past the limit is refused as it comes (httptools buffers a header line whole, so
  ten clients sending 32 MB lines grew the process by 380 MB), a complete one is
  measured before the app sees it.
- A connection that has not sent a complete request head within
  ``header_timeout`` seconds of opening (or of its previous response) is closed
  with a 408: idle sockets were held forever, and enough of them exhausted the
  file descriptors (uvicorn's keep-alive timeout starts only after a response).
  Unless its bytes are waiting unread in the socket: then the client was on time and
  the loop is late (an overloaded loop runs its due timers before it reads), and the
  head gets one more ``header_timeout``.  A 408 sent before the request line is read
  cannot be a ``data:`` frame, which astron-agent's node reads as a success; a
  connection that sent nothing at all is closed without one.
- Beyond ``max_connections`` open connections a request is answered with a 503
  refusal (``Retry-After``, connection closed) before anything else runs.

Refusals here go out before the app sees the request, so they choose their form
as the app's do: one ``data:`` frame for ``/rpa/v1/exec`` (its main caller reads
only those), JSON elsewhere.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import termios
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rpa_gateway import sse
from rpa_gateway.api import compat_wire
from rpa_gateway.api.edge import normalised
from rpa_gateway.api.refusals import COMPAT_PATH, reads_data_lines
from rpa_gateway.connection import SCOPE_KEY, Connection
from rpa_gateway.http10 import CloseDelimitedCycle
from rpa_gateway.lazy_event import LazyEvent
from rpa_gateway.pipeline_queue import PipelineQueue


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout: float
    max_connections: int


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]
    # Our attributes in slots: uvicorn's protocol has 28 in its __dict__ by the first
    # request, and past 30 CPython stops sharing an instance dict's keys with its class:
    # 33 there cost 1.3 KB more per connection (1 584 bytes against 296).
    __slots__ = ("_connection", "_head_bytes", "_head_deadline", "_head_extended", "_limits")

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
        """The protocol class to hand uvicorn (it instantiates one per connection)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = PipelineQueue()  # type: ignore[assignment]  # see pipeline_queue
        self._limits = self.limits
        self._head_bytes = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_extended = False
        self._connection: Connection | None = None  # of the request being answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow._is_writable_event = LazyEvent(is_set=True)  # see lazy_event
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_received()
        super().connection_lost(exc)
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.lost()

    def data_received(self, data: bytes) -> None:
        waiting_for_head = self._head_deadline is not None
        if waiting_for_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._head_deadline is not None
            and self._head_bytes > self._limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._head_received()
            self._refuse(
                431,
                "headers_too_large",
                f"request headers are larger than {self._limits.max_header_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_deadline is None:  # a next request on a kept-alive connection
            self._await_head()

    def on_headers_complete(self) -> None:
        self._head_received()
        size = self._head_size()
        if size > self._limits.max_header_bytes:
            self.logger.info("a request head of %d bytes is refused", size)
            self._answer_with(_headers_too_large(self._limits.max_header_bytes))
            return
        if len(self.connections) <= self._limits.max_connections:
            super().on_headers_complete()
            # The request's task is scheduled, not begun: it sees the scope with this.
            if self.cycle is not None and self.cycle.scope is self.scope:
                self.cycle.message_event = LazyEvent()  # nothing has set it yet
                if self.scope["http_version"] == "1.0":
                    self.cycle.__class__ = CloseDelimitedCycle
                self._connection = Connection(self.cycle)
                self.scope[SCOPE_KEY] = self._connection  # type: ignore[literal-required]
            return
        self.logger.warning("%d connections open: a request is refused", len(self.connections))
        self._answer_with(_too_many_connections)

    def _answer_with(self, refusal: Any) -> None:
        """The request, answered by ``refusal`` (an ASGI app) instead of the service."""
        app, self.app = self.app, refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _head_size(self) -> int:
        """The request head's bytes as sent in the usual form: the request line, each
        header as ``name: value``, the lines' ends and the blank line."""
        line = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        return line + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

    def _await_head(self) -> None:
        self._head_bytes = 0
        self._head_extended = False
        self._head_deadline = self.loop.call_later(self._limits.header_timeout, self._head_late)

    def _head_received(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if not self._head_extended and _unread_bytes(self.transport) > 0:
            self._head_extended = True
            self._head_deadline = self.loop.call_later(self._limits.header_timeout, self._head_late)
            return
        if self._head_bytes == 0:
            # Nothing was asked: closed unanswered (as nginx does).  A request sent after
            # this would read a 408 written before it as its answer, and a JSON one is a
            # success to astron-agent's node; a closed connection is a failure to every client.
            self.transport.close()
            return
        self._refuse(
            408,
            "request_timeout",
            f"no complete request within {self._limits.header_timeout:g} s",
        )

    def _refuse(self, status: int, error: str, message: str) -> None:
        url: bytes = getattr(self, "url", b"")  # set once a request begins
        path = url.split(b"?", 1)[0].rstrip(b"/")
        if path.endswith(COMPAT_PATH.encode()):
            body = compat_wire.refusal_frame(status, error, message, "", [], 4096)
            content_type = f"{sse.MEDIA_TYPE}; charset=utf-8"
        else:
            body = json.dumps({"error": error, "message": message}).encode()
            content_type = "application/json"
        head = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _unread_bytes(transport: asyncio.Transport) -> int:
    """Bytes the client sent that this process has not read yet (0 if unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(waiting, "little")


def _refusal_app(status: int, error: str, message: str, extra: list[tuple[bytes, bytes]]) -> Any:
    """An ASGI app that refuses the request in the form its caller reads, and closes."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(normalised(scope))
        if reads_data_lines(request):
            body = compat_wire.refusal_frame(status, error, message, "", [], 4096)
            content_type = f"{sse.MEDIA_TYPE}; charset=utf-8"
        else:
            body = json.dumps({"error": error, "message": message}).encode()
            content_type = "application/json"
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


_too_many_connections = _refusal_app(
    503,
    "too_many_connections",
    "the service has too many open connections; retry shortly",
    [(b"retry-after", b"1")],
)


def _headers_too_large(limit: int) -> Any:
    return _refusal_app(
        431, "headers_too_large", f"request headers are larger than {limit} bytes", []
    )
