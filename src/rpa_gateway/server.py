"""The HTTP server: uvicorn, with a shutdown that drains streams first."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from rpa_gateway.api.edge import Edge
from rpa_gateway.config import Settings
from rpa_gateway.http_limits import HttpLimits, LimitedHttpToolsProtocol
from rpa_gateway.lifecycle import Lifecycle

log = logging.getLogger(__name__)

# A repeat of the stop signal this soon is the same request (see DrainingServer).
SAME_REQUEST_SECONDS = 2.0


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, drain first (open streams finish), then shut down as usual.

    The listener stays open while draining, so new requests get a clear refusal
    instead of a refused connection - unless ``leave_balancer`` (a replica behind
    a load balancer): then it stops listening and closes idle keep-alive
    connections at once, so the balancer's next attempt fails to connect and goes
    to another replica (nginx resends a request only when it could not be sent).

    A second signal cuts the drain short, unless it comes within
    ``SAME_REQUEST_SECONDS`` of the first: a process-group signal (systemd's default
    KillMode, a container runtime, Ctrl-C under ``make run``) reaches the service
    twice, once directly and once forwarded by its parent, and that is one request
    to stop.  One during uvicorn's own shutdown is uvicorn's (SIGINT forces the exit).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_seconds: float,
        *,
        leave_balancer: bool = False,
    ) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._leave_balancer = leave_balancer
        self._first_signal_at: float | None = None
        self._drain: asyncio.Task[None] | None = None  # held: the loop keeps weak references
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_asked: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    async def main_loop(self) -> None:
        """uvicorn's, ticking once a second instead of ten times: its tick only renews the
        Date header (a second's resolution) and looks for a request to exit, which wakes
        this loop at once instead.  An idle replica woke 15.7 times a second, 10 of them
        for this tick (6.1 now)."""
        self._exit_asked = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000  # uvicorn's tenths: each tick a whole second
            try:
                async with asyncio.timeout(1.0):
                    await self._exit_asked.wait()
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's exit (or forced exit on a repeated SIGINT), its main loop woken."""
        super().handle_exit(sig, frame)
        loop, asked = self._loop, self._exit_asked
        if loop is not None and asked is not None and not loop.is_closed():
            loop.call_soon_threadsafe(asked.set)  # from a signal handler as well

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if loop is None or self.should_exit:
            self._exit(sig, frame)
            return
        # A signal handler interrupts the loop anywhere; act (and log) from the loop itself.
        now = time.monotonic()
        if self._first_signal_at is None:
            self._first_signal_at = now
            loop.call_soon_threadsafe(self._start_drain, sig)
        elif now - self._first_signal_at < SAME_REQUEST_SECONDS:
            loop.call_soon_threadsafe(_repeat_ignored, sig)
        else:
            loop.call_soon_threadsafe(self._lifecycle.cut_short)

    def _start_drain(self, sig: int) -> None:
        self._drain = asyncio.create_task(self._drain_then_exit(sig), name="drain")

    async def _drain_then_exit(self, sig: int) -> None:
        if self._leave_balancer:
            self._stop_taking_connections()
        try:
            await self._lifecycle.drain(self._drain_seconds)
        finally:
            self._exit(sig, None)

    def _stop_taking_connections(self) -> None:
        for server in self.servers:
            server.close()
        # Idle keep-alive connections close now; busy ones (open streams) after their response.
        for connection in list(self.server_state.connections):
            connection.shutdown()


def _repeat_ignored(sig: int) -> None:
    log.info(
        "signal %d again within %g s of the first: the same request to stop (a second one"
        " later cuts the drain short)",
        sig,
        SAME_REQUEST_SECONDS,
    )


def tune_collector(threshold: int) -> None:
    """Collect young objects every ``threshold`` allocations instead of Python's 700.

    Streams and executions keep many objects alive; with the default, objects
    that live a few polls get promoted and full collections walk the whole heap
    (100-130 ms each with a thousand open streams).  Measured with
    bench/load.py, 1000 executions: collector time 0.47 s -> 0.08 s with
    telemetry off, 0.72 s -> 0.09 s with it on; RSS per stream unchanged.
    """
    if threshold > 0:
        gc.set_threshold(threshold, 20, 20)


def raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (each open stream holds a socket); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def http_limits(settings: Settings, file_limit: int) -> HttpLimits:
    # Descriptors kept for the rest: the store, logs, the upstream pool, local runs (3 pipes
    # and a pidfd each).
    reserved = 128 + settings.rpa_upstream_max_connections + 4 * settings.rpa_local_max_runs
    return HttpLimits(
        max_header_bytes=settings.rpa_max_header_bytes,
        header_timeout=settings.rpa_header_timeout,
        max_connections=settings.rpa_max_connections or max(16, file_limit - reserved),
    )


def serve(app: FastAPI, settings: Settings) -> None:
    tune_collector(settings.rpa_gc_threshold)
    limits = http_limits(settings, raise_file_limit())
    log.info(
        "at most %d connections, request heads of %d bytes within %g s",
        limits.max_connections,
        limits.max_header_bytes,
        limits.header_timeout,
    )
    if not settings.service_host and settings.listen_host == "127.0.0.1":
        log.warning(
            "local backend without RPA_API_KEYS: listening on 127.0.0.1 only, since anyone "
            "reaching the port could run its projects; set RPA_API_KEYS (rpa-gateway apikey) "
            "or SERVICE_HOST to listen elsewhere"
        )
    config = uvicorn.Config(
        Edge(app),
        host=settings.listen_host,
        port=settings.service_port,
        loop="uvloop",
        http=LimitedHttpToolsProtocol.with_limits(limits),
        lifespan="on",
        access_log=settings.rpa_access_log,
        log_config=None,
        timeout_graceful_shutdown=settings.rpa_shutdown_grace,
        backlog=2048,
        server_header=False,
    )
    lifecycle: Lifecycle = app.state.lifecycle
    DrainingServer(
        config, lifecycle, settings.drain_seconds, leave_balancer=bool(settings.redis_seeds)
    ).run()
