"""A response's connection, as the server hands it to the app beside the ASGI scope.

What ASGI does not offer and long-lived streams need: writing a ping into the body
from outside the request's task (one sweep pings every idle stream, so an idle stream
costs no task wake-up and no timer), hearing at once that the client is gone (no task
per stream waiting on ``receive``), and handing the stream to the outermost layer so it
is served without the framework's call chain held open for its whole life.

Knows uvicorn's httptools request cycle; ``http_limits`` (our protocol class) attaches
one to each request's scope under :data:`SCOPE_KEY`.  A scope without one (another
server) streams in place, without pings.
"""

from __future__ import annotations

import contextlib
import socket
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from rpa_gateway.http10 import CloseDelimitedCycle

SCOPE_KEY = "rpa.connection"


class HandedOff(Protocol):
    """A response the outermost layer serves once the app has returned."""

    async def serve(self, send: Any, connection: Connection | None) -> None: ...


class Connection:
    # The cycle by weak reference: it holds the scope, which holds this (no reference
    # cycle, so a request's scope and body go as soon as it is answered, not at a collection).
    __slots__ = ("_cycle", "handed_off", "on_lost")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = weakref.ref(cycle)
        self.handed_off: HandedOff | None = None
        self.on_lost: Callable[[], None] | None = None

    @property
    def gone(self) -> bool:
        cycle = self._cycle()
        return cycle is None or cycle.disconnected or cycle.transport.is_closing()

    def lost(self) -> None:
        """Called by the protocol when the connection closes."""
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback()

    @property
    def write_paused(self) -> bool:
        """The client takes no more for now: the socket's buffers are full."""
        cycle = self._cycle()
        return cycle is not None and cycle.flow.write_paused

    def limit_send_buffer(self, size: int) -> None:
        """At most about ``size`` bytes (the kernel doubles it) wait in the kernel for a
        slow client, instead of the megabytes TCP autotuning allows: a stream's unread
        backlog then shows as paused writes soon enough to act on (see ping_sweep)."""
        cycle = self._cycle()
        sock = cycle.transport.get_extra_info("socket") if cycle is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def abort(self) -> None:
        """Close the connection now, dropping what is still unsent."""
        cycle = self._cycle()
        if cycle is not None:
            cycle.transport.abort()

    def write_body(self, data: bytes) -> bool:
        """Write ``data`` into the started response's body now; False once the client is
        gone.  Skipped (True) while the client reads too slowly to take more: only for
        bytes that may be dropped, like pings.  Call between the response's own sends."""
        cycle = self._cycle()
        if cycle is None or cycle.disconnected or cycle.transport.is_closing():
            return False
        if not cycle.response_started or cycle.response_complete or cycle.flow.write_paused:
            return True
        if cycle.chunked_encoding:  # as every response without a length (SSE) is sent
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        elif isinstance(cycle, CloseDelimitedCycle) and cycle.close_delimited:  # HTTP/1.0
            cycle.transport.write(data)
        return True
