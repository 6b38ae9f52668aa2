"""Spans of executions and backend calls: kept as plain values, handed to the SDK when finished.

Why not ``Tracer.start_span``: measured inside the running service under load (1000 streams
at 100/s, see bench/README.md), a live SDK span cost ~50 µs to start and ~13 µs to end, and
each state change as a span event ~12 µs more — over half of what telemetry cost an
execution, and the reason it missed its overhead budget.  Here a span is a few fields until
it ends; then it becomes one SDK ``ReadableSpan`` handed to the same batch processor and
OTLP exporter a tracer would have used.  The tracer provider still decides what matters to
operators: its sampler (``OTEL_TRACES_SAMPLER``; asked once per execution, calls follow their
execution), its id generator and its resource.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

Attributes = dict[str, AttributeValue]
SpanEvent = tuple[str, Attributes, int]  # name, attributes, time in ns

# Only the W3C trace context travels (no baggage: nothing of ours to carry).
_PROPAGATOR = TraceContextTextMapPropagator()
_UNSET = Status(StatusCode.UNSET)


def traceparent(trace_id: int, span_id: int, trace_flags: int) -> str:
    """A W3C ``traceparent`` line (version 00)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{trace_flags:02x}"


@dataclass(slots=True)
class OpenSpan:
    """An execution's span until its terminal event."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    start_ns: int
    attributes: Attributes

    @property
    def sampled(self) -> bool:
        return self.context.trace_flags.sampled


@dataclass(slots=True)
class CallSpan:
    """A backend call in progress under its execution's span."""

    name: str
    span_id: int
    parent: OpenSpan
    start_ns: int

    def headers(self) -> dict[str, str]:
        """The W3C trace context headers that carry this call to the upstream.

        Written out here rather than by the propagator's ``inject``, which costs ~13 µs a
        call in the service for the same fixed-format line.
        """
        context = self.parent.context
        headers = {"traceparent": traceparent(context.trace_id, self.span_id, context.trace_flags)}
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers


class SpanRecorder:
    def __init__(self, provider: TracerProvider, processor: SpanProcessor, scope: str) -> None:
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._processor = processor
        self._scope = InstrumentationScope(scope)

    def begin(
        self, name: str, *, traceparent: str | None, start_ns: int, attributes: Attributes
    ) -> OpenSpan:
        """Open a server span, a child of the caller's ``traceparent`` when there is one."""
        caller: Context | None = (
            _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        )
        parent: SpanContext | None = trace.get_current_span(caller).get_span_context()
        if parent is None or not parent.is_valid:
            parent, trace_id = None, self._ids.generate_trace_id()
        else:
            trace_id = parent.trace_id
        sampling = self._sampler.should_sample(caller, trace_id, name, SpanKind.SERVER, attributes)
        flags = trace.TraceFlags(
            trace.TraceFlags.SAMPLED
            if sampling.decision is Decision.RECORD_AND_SAMPLE
            else trace.TraceFlags.DEFAULT
        )
        context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=sampling.trace_state,
        )
        if sampling.attributes:
            attributes = {**attributes}
            attributes.update(sampling.attributes)
        return OpenSpan(name, context, parent, start_ns, attributes)

    def finish(
        self, span: OpenSpan, *, events: Iterable[SpanEvent], end_ns: int, error: str | None
    ) -> None:
        """End the span: it goes to the exporter with its events."""
        if not span.sampled:
            return
        self._processor.on_end(
            ReadableSpan(
                span.name,
                context=span.context,
                parent=span.parent,
                attributes=span.attributes,
                events=[Event(name, attributes, at) for name, attributes, at in events],
                kind=SpanKind.SERVER,
                start_time=span.start_ns,
                end_time=end_ns,
                status=_status(error),
                resource=self._resource,
                instrumentation_scope=self._scope,
            )
        )

    def start_call(self, name: str, parent: OpenSpan) -> CallSpan:
        return CallSpan(name, self._ids.generate_span_id(), parent, time.time_ns())

    def end_call(self, call: CallSpan, error: str | None, end_ns: int) -> None:
        parent = call.parent.context
        if not parent.trace_flags.sampled:
            return
        self._processor.on_end(
            ReadableSpan(
                call.name,
                context=SpanContext(
                    parent.trace_id,
                    call.span_id,
                    is_remote=False,
                    trace_flags=parent.trace_flags,
                    trace_state=parent.trace_state,
                ),
                parent=parent,
                kind=SpanKind.CLIENT,
                start_time=call.start_ns,
                end_time=end_ns,
                status=_status(error),
                resource=self._resource,
                instrumentation_scope=self._scope,
            )
        )


def _status(error: str | None) -> Status:
    return _UNSET if error is None else Status(StatusCode.ERROR, error)
