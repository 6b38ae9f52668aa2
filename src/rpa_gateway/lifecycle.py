"""Shutdown without failing callers: refuse new work, let open streams finish, then stop.

On SIGTERM the service turns not-ready and refuses new executions at once, but
keeps serving every open stream until it ends (its execution finished) or the
drain deadline passes; only streams still open then are told to reconnect (on
the compat stream: a 55005 frame).  Clients that cannot resume, like
astron-agent's node, so notice nothing of a restart that lets their runs end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rpa_gateway.store.base import Store

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self.open_streams = 0
        self._store: Store | None = None
        self._streams_ended = asyncio.Event()
        self._cut_short = asyncio.Event()
        self._drain_hooks: list[Callable[[], Awaitable[object]]] = []

    def on_drain(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run ``hook`` when the drain begins (before waiting for open streams)."""
        self._drain_hooks.append(hook)

    def attach(self, store: Store) -> None:
        self._store = store

    # --- the StreamCounter of every SSE response ------------------------------------
    def opened(self) -> None:
        self.open_streams += 1

    def closed(self) -> None:
        self.open_streams -= 1
        if self.open_streams == 0 and self.draining:
            self._streams_ended.set()

    # --- draining ---------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Turn not-ready and refuse new executions; open streams and executions go on."""
        if self.draining:
            return
        self.draining = True
        if self.open_streams == 0:
            self._streams_ended.set()

    async def drain(self, seconds: float) -> None:
        """Refuse new work, wait for open streams to end (at most ``seconds``), release the rest.

        :meth:`cut_short` (a second signal) ends the wait at once.
        """
        self.begin_drain()
        log.info(
            "shutting down: new executions are refused; waiting up to %.0f s for %d open streams",
            seconds,
            self.open_streams,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # The drain steps (a hand-over waits for creates in flight) count against the same
        # deadline, and a second signal cuts them short too.
        steps = asyncio.ensure_future(self._run_drain_hooks())
        await self._until(steps, deadline)
        ended = asyncio.ensure_future(self._streams_ended.wait())
        await self._until(ended, deadline)
        if self.open_streams:
            reason = "drain cut short" if self._cut_short.is_set() else "drain deadline passed"
            log.info("%s: %d open streams are told to reconnect", reason, self.open_streams)
        else:
            log.info("every open stream has ended")
        self.release_streams()

    async def _run_drain_hooks(self) -> None:
        for hook in self._drain_hooks:
            try:
                await hook()
            except Exception:
                log.exception("a drain step failed; open streams are still served")

    async def _until(self, waited: asyncio.Future[Any], deadline: float) -> None:
        """Wait for ``waited`` until the deadline or a second signal; cancel it then."""
        cut = asyncio.ensure_future(self._cut_short.wait())
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait({waited, cut}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (waited, cut):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def cut_short(self) -> None:
        self._cut_short.set()

    def release_streams(self) -> None:
        """End every open stream now with a reconnect hint; their executions go on."""
        self.begin_drain()
        if self._store is not None:
            self._store.drain()
