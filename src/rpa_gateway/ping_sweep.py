"""One timer pings every idle stream; an idle stream costs no timer and no wake-up.

Streams sit in buckets by when they last wrote (``tick`` wide).  Every ``tick`` the
sweep takes the buckets idle for ``interval`` or more and writes a ping straight into
each of those connections (:meth:`Connection.write_body`), so a stream is pinged
``interval - tick`` to ``interval + tick`` after it last wrote (a sixth either side).
A stream whose client is gone is woken (its task cancelled) so that it ends at once
instead of at its execution's end.  So is one whose client has taken no byte for
``stall_seconds`` (its socket full, checked when it is due a ping): its connection is
closed, and its client resumes with Last-Event-ID when it reads again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from rpa_gateway.connection import Connection
from rpa_gateway.sse import PING

log = logging.getLogger(__name__)


class SweptStream:
    __slots__ = ("connection", "gone", "paused_since", "slot", "task")

    def __init__(self, connection: Connection, task: asyncio.Task[object] | None) -> None:
        self.connection = connection
        self.task = task
        self.slot = 0
        self.gone = False
        self.paused_since: float | None = None  # first seen unable to write


class PingSweep:
    def __init__(
        self,
        interval: float,
        ticks_per_interval: int = 6,
        *,
        stall_seconds: float = 60.0,
        on_stalled: Callable[[], None] | None = None,
    ) -> None:
        self._interval = interval
        self._stall_seconds = stall_seconds
        self._on_stalled = on_stalled
        self._tick = interval / ticks_per_interval
        self._buckets: dict[int, set[SweptStream]] = {}
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Connection) -> SweptStream:
        """Ping the stream of this connection while it is idle, from now on."""
        stream = SweptStream(connection, asyncio.current_task())
        self._count += 1
        if connection.gone:  # left before its stream began: it ends at its next await
            self._end(stream)
            return stream
        connection.on_lost = lambda: self._lost(stream)
        self._file(stream, self._slot(asyncio.get_running_loop().time()))
        if self._timer is None:
            self._arm()
        return stream

    def wrote(self, stream: SweptStream) -> None:
        """The stream wrote something itself: its next ping is an interval from now, and
        its client took what came before (it is not stalled)."""
        stream.paused_since = None
        slot = self._slot(asyncio.get_running_loop().time())
        if slot != stream.slot and not stream.gone:
            self._unfile(stream)
            self._file(stream, slot)

    def remove(self, stream: SweptStream) -> None:
        stream.connection.on_lost = None
        if not stream.gone:
            self._unfile(stream)
            stream.gone = True
        self._count -= 1

    def _slot(self, now: float) -> int:
        return math.floor(now / self._tick)

    def _file(self, stream: SweptStream, slot: int) -> None:
        stream.slot = slot
        self._buckets.setdefault(slot, set()).add(stream)

    def _unfile(self, stream: SweptStream) -> None:
        bucket = self._buckets.get(stream.slot)
        if bucket is not None:
            bucket.discard(stream)
            if not bucket:
                del self._buckets[stream.slot]

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        due = self._slot(now - self._interval)
        slot = self._slot(now)
        for key in [k for k in self._buckets if k <= due]:
            for stream in self._buckets.pop(key):
                if stream.connection.write_paused and not self._stalled(stream, now):
                    self._file(stream, slot)
                elif stream.connection.write_body(PING):
                    stream.paused_since = None
                    self._file(stream, slot)
                else:
                    self._end(stream)
        if self._count:
            self._arm()

    def _stalled(self, stream: SweptStream, now: float) -> bool:
        """Whether the stream, unable to write now, has been so for ``stall_seconds``:
        then its connection is closed (and ``write_body`` fails, which ends it)."""
        if stream.paused_since is None:
            stream.paused_since = now
            return False
        if now - stream.paused_since < self._stall_seconds:
            return False
        log.warning(
            "a stream's client took no byte for %g s: its connection is closed (the client"
            " resumes with Last-Event-ID)",
            now - stream.paused_since,
        )
        stream.connection.abort()
        if self._on_stalled is not None:
            self._on_stalled()
        return True

    def _lost(self, stream: SweptStream) -> None:
        if not stream.gone:
            self._unfile(stream)
            self._end(stream)

    def _end(self, stream: SweptStream) -> None:
        stream.gone = True
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
