"""Telemetry observes the execution log: one span, metrics and a Kafka record per execution.

Registered as a listener on the store, it sees every event as it is appended:
the first opens the execution's span (its parent is the caller's
``traceparent``), state changes become span events, and the terminal event
ends the span, records the metrics and queues the Kafka record.
"""

from __future__ import annotations

import logging

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.store.base import Store
from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.tracelog import KafkaTraceLog, trace_record

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class ExecutionObserver:
    def __init__(
        self,
        store: Store,
        *,
        backend: str,
        service_id: str,
        tracer: Tracer | None,
        instruments: Instruments | None,
        tracelog: KafkaTraceLog | None,
    ) -> None:
        self._store = store
        self._backend = backend
        self._service_id = service_id
        self._tracer = tracer
        self._instruments = instruments
        self._tracelog = tracelog
        self._spans: dict[str, Span] = {}
        self._seen: set[str] = set()

    @property
    def active(self) -> int:
        """Executions begun and not finished in this process."""
        return len(self._seen)

    def span_of(self, execution_id: str) -> Span | None:
        return self._spans.get(execution_id)

    def on_event(self, event: Event) -> None:
        try:
            if event.execution_id not in self._seen:
                execution = self._store.get(event.execution_id)
                if execution is None:
                    return
                self._begin(execution)
            if event.kind is EventKind.TERMINAL:
                self._end(event)
            else:
                span = self._spans.get(event.execution_id)
                if span is not None:
                    span.add_event(
                        f"rpa.{event.kind.value}", _event_attributes(event), timestamp=_ns(event.at)
                    )
        except Exception:
            log.exception("telemetry failed on an event of execution %s", event.execution_id)

    def _begin(self, execution: Execution) -> None:
        self._seen.add(execution.id)
        request = execution.request
        if self._tracer is None:
            return
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

    def _end(self, event: Event) -> None:
        self._seen.discard(event.execution_id)
        code = int(event.data.get("code") or 0)
        execution = self._store.get(event.execution_id)
        project_id = execution.request.project_id if execution is not None else ""
        if self._instruments is not None:
            attributes = {"code": str(code), "project_id": project_id, "backend": self._backend}
            self._instruments.executions.add(1, attributes)
            if execution is not None:
                self._instruments.execution_duration.record(
                    event.at - execution.created_at, attributes
                )
        span = self._spans.pop(event.execution_id, None)
        if span is not None:
            span.add_event("rpa.terminal", _event_attributes(event), timestamp=_ns(event.at))
            span.set_attribute("code", code)
            span.set_attribute("message", str(event.data.get("message", "")))
            if execution is not None and execution.upstream_id:
                span.set_attribute("upstream_id", execution.upstream_id)
            if code != 0:
                span.set_status(Status(StatusCode.ERROR, str(event.data.get("message", ""))))
            span.end(end_time=_ns(event.at))
        if self._tracelog is not None and execution is not None:
            events = self._store.events_after(execution.id, 0)
            self._tracelog.send(trace_record(execution, events, self._service_id, self._backend))


def _event_attributes(event: Event) -> dict[str, str | int | float]:
    attributes: dict[str, str | int | float] = {"seq": event.seq}
    for key, value in event.data.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            attributes[key] = value
    return attributes
