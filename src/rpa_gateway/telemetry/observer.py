"""Telemetry observes the execution log: one span, metrics and a Kafka record per execution.

Registered as a listener on the store, it sees every event as it is appended,
with the execution as it stands: the first event opens the execution's span
(its parent is the caller's ``traceparent``), state changes become span events,
and the terminal event ends the span, records the metrics and queues the Kafka
record.  It never reads the store.
"""

from __future__ import annotations

import logging

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.tracelog import KafkaTraceLog, trace_record

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class ExecutionObserver:
    def __init__(
        self,
        *,
        backend: str,
        service_id: str,
        tracer: Tracer | None,
        instruments: Instruments | None,
        tracelog: KafkaTraceLog | None,
    ) -> None:
        self._backend = backend
        self._service_id = service_id
        self._tracer = tracer
        self._instruments = instruments
        self._tracelog = tracelog
        self._spans: dict[str, Span] = {}
        # Events of each execution this process has seen begin (kept for the Kafka record).
        self._events: dict[str, list[Event]] = {}

    @property
    def active(self) -> int:
        """Executions begun and not finished in this process."""
        return len(self._events)

    def span_of(self, execution_id: str) -> Span | None:
        return self._spans.get(execution_id)

    def on_event(self, event: Event, execution: Execution) -> None:
        try:
            events = self._events.get(event.execution_id)
            if events is None:
                events = self._events[event.execution_id] = []
                self._begin(execution)
            if self._tracelog is not None and event.kind is not EventKind.PROGRESS:
                events.append(event)
            if event.kind is EventKind.TERMINAL:
                self._end(event, execution)
            else:
                span = self._spans.get(event.execution_id)
                if span is not None:
                    span.add_event(
                        f"rpa.{event.kind.value}", _event_attributes(event), timestamp=_ns(event.at)
                    )
        except Exception:
            log.exception("telemetry failed on an event of execution %s", event.execution_id)

    def _begin(self, execution: Execution) -> None:
        if self._tracer is None:
            return
        request = execution.request
        carrier = {"traceparent": request.trace_parent} if request.trace_parent else {}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        self._spans[execution.id] = self._tracer.start_span(
            "rpa.execution",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=_ns(execution.created_at),
            attributes={
                "sid": request.sid,
                "project_id": request.project_id,
                "tool_id": request.project_id,
                "execution_id": execution.id,
                "backend": self._backend,
            },
        )

    def _end(self, event: Event, execution: Execution) -> None:
        events = self._events.pop(event.execution_id, [])
        code = int(event.data.get("code") or 0)
        message = str(event.data.get("message", ""))
        if self._instruments is not None:
            attributes = {
                "code": str(code),
                "project_id": execution.request.project_id,
                "backend": self._backend,
            }
            self._instruments.executions.add(1, attributes)
            self._instruments.execution_duration.record(event.at - execution.created_at, attributes)
        span = self._spans.pop(event.execution_id, None)
        if span is not None:
            span.add_event("rpa.terminal", _event_attributes(event), timestamp=_ns(event.at))
            span.set_attribute("code", code)
            span.set_attribute("message", message)
            if execution.upstream_id:
                span.set_attribute("upstream_id", execution.upstream_id)
            if code != 0:
                span.set_status(Status(StatusCode.ERROR, message))
            span.end(end_time=_ns(event.at))
        if self._tracelog is not None:
            self._tracelog.send(
                trace_record(execution, event, events, self._service_id, self._backend)
            )


def _event_attributes(event: Event) -> dict[str, str | int | float]:
    attributes: dict[str, str | int | float] = {"seq": event.seq}
    for key, value in event.data.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            attributes[key] = value
    return attributes
