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

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rpa_gateway.telemetry.context import current_execution
from rpa_gateway.telemetry.metrics import Instruments

# Only the W3C trace context travels upstream (no baggage: nothing of ours to carry).
_PROPAGATOR = TraceContextTextMapPropagator()


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
    __slots__ = ("_instruments", "_operation", "_span", "_started")

    def __init__(self, operation: str, span: Span | None, instruments: Instruments | None) -> None:
        super().__init__()
        self._operation = operation
        self._span = span
        self._instruments = instruments
        self._started = time.perf_counter()
        if span is not None:
            _PROPAGATOR.inject(self.headers, context=trace.set_span_in_context(span))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and self.error is None:
            self.error = kind.__name__
        attributes = {"operation": self._operation}
        if self._instruments is not None:
            self._instruments.upstream_duration.record(
                time.perf_counter() - self._started, attributes
            )
            if self.error is not None:
                self._instruments.upstream_errors.add(1, {**attributes, "kind": self.error})
        if self._span is not None:
            if self.error is not None:
                self._span.set_status(Status(StatusCode.ERROR, self.error))
            self._span.end()


class InstrumentedCalls:
    def __init__(
        self,
        tracer: Tracer | None,
        instruments: Instruments | None,
        span_of: Callable[[str], Span | None],
    ) -> None:
        self._tracer = tracer
        self._instruments = instruments
        self._span_of = span_of

    def call(self, operation: str) -> Call:
        span: Span | None = None
        if self._tracer is not None:
            where = current_execution.get()
            parent = self._span_of(where.execution_id) if where is not None else None
            context = trace.set_span_in_context(parent) if parent is not None else None
            span = self._tracer.start_span(
                f"rpa.backend.{operation}",
                context=context,
                kind=SpanKind.CLIENT,
            )
        return _InstrumentedCall(operation, span, self._instruments)
