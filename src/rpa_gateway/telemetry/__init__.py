"""Traces, metrics and the Kafka trace log, built from settings; all off by default.

Off, nothing is registered: the store has no listener, backends get
:data:`~rpa_gateway.telemetry.calls.NO_CALLS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from rpa_gateway.config import Settings
from rpa_gateway.store.base import Store
from rpa_gateway.telemetry.calls import NO_CALLS, Calls, InstrumentedCalls
from rpa_gateway.telemetry.deferred import Deferred
from rpa_gateway.telemetry.mcp_calls import McpCallRecord
from rpa_gateway.telemetry.metrics import Instruments, meter_provider
from rpa_gateway.telemetry.observer import ExecutionObserver
from rpa_gateway.telemetry.spans import SpanRecorder
from rpa_gateway.telemetry.tracelog import KafkaTraceLog
from rpa_gateway.telemetry.tracing import span_recorder
from rpa_gateway.telemetry.webhook_calls import record_webhook_attempt
from rpa_gateway.webhooks.model import Attempt, Delivery

log = logging.getLogger(__name__)

# How often collected telemetry work is done, and Kafka's delivery callbacks served.
_BATCH_INTERVAL = 0.1
# The most telemetry's last flush may hold up an exit (then the rest is dropped).
_SHUTDOWN_SECONDS = 5.0


__all__ = ["Telemetry"]


class Telemetry:
    def __init__(self, settings: Settings, open_streams: Callable[[], int]) -> None:
        self._tracer_provider: TracerProvider | None = None
        self._spans: SpanRecorder | None = None
        self._meter_provider: MeterProvider | None = None
        self.prometheus: CollectorRegistry | None = None
        self.instruments: Instruments | None = None
        self.tracelog: KafkaTraceLog | None = None
        self.calls: Calls = NO_CALLS
        self._observer: ExecutionObserver | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deferred = Deferred()
        self._settings = settings
        self.outbox_depth = 0  # webhook deliveries pending, as the worker last counted
        if settings.otlp_enable:
            self._spans, self._tracer_provider = span_recorder(settings)
        if settings.otlp_enable or settings.rpa_prometheus_enable:
            self._meter_provider, self.prometheus = meter_provider(settings)
            self.instruments = Instruments.on(
                self._meter_provider.get_meter("rpa_gateway"),
                active_executions=lambda: self._observer.active if self._observer else 0,
                open_streams=open_streams,
                outbox_depth=lambda: self.outbox_depth,
            )
        if settings.kafka_on:
            self.tracelog = KafkaTraceLog(
                settings.kafka_servers,
                settings.kafka_topic,
                timeout=settings.kafka_timeout,
                queue_size=settings.rpa_kafka_queue_size,
                on_outcome=self._kafka_outcome,
            )

    @property
    def enabled(self) -> bool:
        return bool(self._tracer_provider or self.instruments or self.tracelog)

    def attach(self, store: Store, backend_name: str) -> None:
        """Start observing the store's events (only when something is switched on)."""
        if not self.enabled:
            return
        self._observer = ExecutionObserver(
            backend=backend_name,
            service_id=self._settings.otlp_service_name,
            spans=self._spans,
            instruments=self.instruments,
            tracelog=self.tracelog,
            deferred=self._deferred,
        )
        store.add_listener(self._observer.on_event)
        self.calls = InstrumentedCalls(
            self._spans, self.instruments, self._observer.span_for, self._deferred
        )
        then = self.tracelog.poll if self.tracelog is not None else None
        self._tasks.append(
            asyncio.create_task(self._deferred.run(_BATCH_INTERVAL, then), name="telemetry")
        )
        log.info(
            "telemetry on: traces %s, metrics %s, kafka %s",
            "OTLP" if self._spans else "off",
            "+".join(
                n
                for n, on in (
                    ("OTLP", self._settings.otlp_enable),
                    ("/metrics", self.prometheus is not None),
                )
                if on
            )
            or "off",
            f"topic {self._settings.kafka_topic}" if self.tracelog else "off",
        )

    def count_outbox(self, depth: int) -> None:
        """The pending webhook deliveries, as the worker counted them (a gauge)."""
        self.outbox_depth = depth

    def webhook_attempt(
        self, delivery: Delivery, attempt: Attempt, outcome: str, started_ns: int
    ) -> None:
        """One delivery attempt: its span, its outcome counted, its latency."""
        record_webhook_attempt(
            self._spans, self.instruments, delivery, attempt, outcome, started_ns
        )

    def mcp_call(self, tool: str, traceparent: str | None) -> McpCallRecord:
        """A tool call begins: its span and its count."""
        return McpCallRecord(tool, self._spans, self.instruments, traceparent)

    def slow_client(self, reason: str) -> None:
        """A stream ended because its client did not read (``fell_behind``, ``stalled``)."""
        if self.instruments is not None:
            self.instruments.slow_clients.add(reason)

    def _kafka_outcome(self, outcome: str, reason: str) -> None:
        if self.instruments is not None:
            self.instruments.kafka_records.add(outcome, reason)

    def flush(self) -> None:
        """Do the telemetry work collected so far (before ``/metrics`` is read)."""
        self._deferred.run_now()

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._deferred.run_now()
        closers: list[Callable[[], object]] = []
        if self.tracelog is not None:
            closers.append(self.tracelog.close)
        if self._tracer_provider is not None:
            closers.append(self._tracer_provider.shutdown)
        if self._meter_provider is not None:
            closers.append(self._meter_provider.shutdown)
        if closers and not await _within(_SHUTDOWN_SECONDS, closers):
            log.warning(
                "telemetry did not flush within %g s (a receiver or broker is down?);"
                " what was not sent is dropped",
                _SHUTDOWN_SECONDS,
            )


async def _within(seconds: float, calls: list[Callable[[], object]]) -> bool:
    """Run the blocking calls one after the other in a daemon thread; whether they finished.

    A daemon thread, not the loop's executor, whose threads the interpreter waits for at
    exit: exporters retrying against a receiver that is gone must not hold the process.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        for call in calls:
            try:
                call()
            except Exception:
                log.exception("telemetry shutdown step failed")
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="telemetry-shutdown", daemon=True).start()
    try:
        async with asyncio.timeout(seconds):
            await done
    except TimeoutError:
        return False
    return True
