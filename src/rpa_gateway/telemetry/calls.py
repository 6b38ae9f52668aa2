"""Instrumenting backend calls: a child span of the execution's span, latency, errors.

Backends wrap each call in ``calls.call("query")``; the span's context travels
on in the returned headers (``traceparent``), so the upstream joins the trace.
With telemetry off, :data:`NO_CALLS` costs one shared object per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from rpa_gateway.telemetry.context import current_execution
from rpa_gateway.telemetry.metrics import Instruments


class Call:
    __slots__ = ("error", "headers")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.error: str | None = None

    def failed(self, kind: str) -> None:
        self.error = kind


class Calls(Protocol):
    def call(self, operation: str) -> AbstractContextManager[Call]: ...


class _NoCalls:
    def __init__(self) -> None:
        self._call = Call()

    @contextmanager
    def _null(self) -> Iterator[Call]:
        yield self._call

    def call(self, operation: str) -> AbstractContextManager[Call]:
        return self._null()


NO_CALLS: Calls = _NoCalls()


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

    @contextmanager
    def call(self, operation: str) -> Iterator[Call]:
        call = Call()
        span: Span | None = None
        if self._tracer is not None:
            where = current_execution.get()
            parent = self._span_of(where.execution_id) if where is not None else None
            context = trace.set_span_in_context(parent) if parent is not None else None
            span = self._tracer.start_span(
                f"rpa.backend.{operation}",
                context=context,
                kind=SpanKind.CLIENT,
                attributes={"rpa.operation": operation},
            )
            inject(call.headers, context=trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.failed(call.error or type(exc).__name__)
            raise
        finally:
            attributes = {"operation": operation}
            if self._instruments is not None:
                self._instruments.upstream_duration.record(
                    time.perf_counter() - started, attributes
                )
                if call.error is not None:
                    self._instruments.upstream_errors.add(1, {**attributes, "kind": call.error})
            if span is not None:
                if call.error is not None:
                    span.set_status(Status(StatusCode.ERROR, call.error))
                span.end()
