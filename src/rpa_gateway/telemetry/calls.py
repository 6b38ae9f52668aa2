"""Instrumenting backend calls: a child span of the execution's span, latency, errors.

Backends wrap each call in ``calls.call("query")``; the span's context travels
on in the returned headers (``traceparent``), so the upstream joins the trace.
With telemetry off, :data:`NO_CALLS` costs one shared object per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from rpa_gateway.executions import Execution
from rpa_gateway.telemetry.context import current_execution
from rpa_gateway.telemetry.deferred import Deferred
from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.spans import CallSpan, OpenSpan, SpanRecorder


class Call:
    """One backend call in progress: headers to send, and how it failed, if it did."""

    __slots__ = ("error", "headers")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.error: str | None = None

    def failed(self, kind: str) -> None:
        self.error = kind

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


class Calls(Protocol):
    def call(self, operation: str) -> Call: ...


class _NoCalls:
    def __init__(self) -> None:
        self._call = Call()

    def call(self, operation: str) -> Call:
        return self._call


NO_CALLS: Calls = _NoCalls()


class _InstrumentedCall(Call):
    __slots__ = ("_deferred", "_instruments", "_operation", "_recorder", "_span", "_started")

    def __init__(
        self,
        operation: str,
        span: CallSpan | None,
        recorder: SpanRecorder | None,
        instruments: Instruments | None,
        deferred: Deferred,
    ) -> None:
        super().__init__()
        self._operation = operation
        self._span = span
        self._recorder = recorder
        self._instruments = instruments
        self._deferred = deferred
        self._started = time.perf_counter()
        if span is not None:
            self.headers = span.headers()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and self.error is None:
            self.error = kind.__name__
        if self._instruments is not None:
            self._deferred.defer(
                self._instruments.upstream_duration.record,
                time.perf_counter() - self._started,
                {"operation": self._operation},
            )
            if self.error is not None:
                self._instruments.upstream_errors.add(self._operation, self.error)
        if self._span is not None and self._recorder is not None:
            self._deferred.defer(self._recorder.end_call, self._span, self.error, time.time_ns())


class InstrumentedCalls:
    def __init__(
        self,
        recorder: SpanRecorder | None,
        instruments: Instruments | None,
        span_for: Callable[[Execution], OpenSpan | None],
        deferred: Deferred,
    ) -> None:
        self._recorder = recorder
        self._instruments = instruments
        self._span_for = span_for
        self._deferred = deferred

    def call(self, operation: str) -> Call:
        span: CallSpan | None = None
        if self._recorder is not None:
            driven = current_execution.get()
            parent = self._span_for(driven) if driven is not None else None
            if parent is not None:
                span = self._recorder.start_call(f"rpa.backend.{operation}", parent)
        return _InstrumentedCall(operation, span, self._recorder, self._instruments, self._deferred)
