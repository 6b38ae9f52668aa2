"""Telemetry observes the execution log: one span, metrics and a Kafka record per execution.

Registered as a listener on the store, it sees every event as it is appended,
with the execution as it stands: the first event opens the execution's span
(its parent is the caller's ``traceparent``) and state changes are kept; the
terminal event's work — the span with its events and calls, the metrics, the
Kafka record — is deferred to the next batch (see ``deferred``).  It never
reads the store.
"""

from __future__ import annotations

import logging

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.telemetry.deferred import Deferred
from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.spans import Attributes, OpenSpan, SpanRecorder
from rpa_gateway.telemetry.tracelog import KafkaTraceLog, trace_record

log = logging.getLogger(__name__)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class ExecutionObserver:
    def __init__(
        self,
        *,
        backend: str,
        service_id: str,
        spans: SpanRecorder | None,
        instruments: Instruments | None,
        tracelog: KafkaTraceLog | None,
        deferred: Deferred,
    ) -> None:
        self._backend = backend
        self._service_id = service_id
        self._recorder = spans
        self._instruments = instruments
        self._tracelog = tracelog
        self._deferred = deferred
        self._spans: dict[str, OpenSpan] = {}
        # Events of each execution this process has seen begin: for its span and Kafka record.
        self._events: dict[str, list[Event]] = {}
        self._keep_events = spans is not None or tracelog is not None

    @property
    def active(self) -> int:
        """Executions begun and not finished in this process."""
        return len(self._events)

    def span_for(self, execution: Execution) -> OpenSpan | None:
        """The execution's span, opened now if this process has seen none of its events yet
        (an execution resumed after a restart polls before anything new happens to it)."""
        if execution.finished_at is None:
            self._seen(execution)
        return self._spans.get(execution.id)

    def on_event(self, event: Event, execution: Execution) -> None:
        try:
            events = self._seen(execution)
            if self._keep_events and event.kind is not EventKind.PROGRESS:
                events.append(event)  # state changes and the end: a handful per execution
            if event.kind is EventKind.TERMINAL:
                self._deferred.defer(self._end, event, execution)
        except Exception:
            log.exception("telemetry failed on an event of execution %s", event.execution_id)

    def _seen(self, execution: Execution) -> list[Event]:
        """The events kept of the execution; the first sight of it opens its span."""
        events = self._events.get(execution.id)
        if events is None:
            events = self._events[execution.id] = []
            self._begin(execution)
        return events

    def _begin(self, execution: Execution) -> None:
        if self._recorder is None:
            return
        request = execution.request
        self._spans[execution.id] = self._recorder.begin(
            "rpa.execution",
            traceparent=request.trace_parent,
            start_ns=_ns(execution.created_at),
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
            project_id = execution.request.project_id
            self._instruments.executions.add(str(code), project_id, self._backend)
            self._instruments.execution_duration.record(
                event.at - execution.created_at,
                {"code": str(code), "project_id": project_id, "backend": self._backend},
            )
        span = self._spans.pop(event.execution_id, None)
        if span is not None and self._recorder is not None:
            span.attributes["code"] = code
            span.attributes["message"] = message
            if execution.upstream_id:
                span.attributes["upstream_id"] = execution.upstream_id
            self._recorder.finish(
                span,
                events=((f"rpa.{e.kind.value}", _event_attributes(e), _ns(e.at)) for e in events),
                end_ns=_ns(event.at),
                error=message if code else None,
            )
        if self._tracelog is not None:
            self._tracelog.send(
                trace_record(execution, event, events, self._service_id, self._backend)
            )


def _event_attributes(event: Event) -> Attributes:
    attributes: Attributes = {"seq": event.seq}
    for key, value in event.data.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            attributes[key] = value
    return attributes
