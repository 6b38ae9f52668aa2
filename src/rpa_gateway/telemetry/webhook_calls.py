"""Webhook delivery attempts in telemetry: a span each (``webhook deliver``, its URL never
recorded: a query may hold a token), ``rpa_webhook_deliveries_total{outcome}`` and the
attempt's latency."""

from __future__ import annotations

import time

from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.spans import Attributes, SpanRecorder
from rpa_gateway.webhooks.model import Attempt, Delivery


def record_webhook_attempt(
    spans: SpanRecorder | None,
    instruments: Instruments | None,
    delivery: Delivery,
    attempt: Attempt,
    outcome: str,
    started_ns: int,
) -> None:
    if instruments is not None:
        instruments.webhook_deliveries.add(outcome)
        instruments.webhook_duration.record(attempt.latency_ms / 1000)
    if spans is None:
        return
    attributes: Attributes = {
        "rpa.webhook.id": delivery.webhook_id,
        "rpa.webhook.delivery_id": delivery.id,
        "rpa.webhook.event_type": delivery.event_type,
        "rpa.webhook.attempt": delivery.attempts,
        "rpa.webhook.outcome": outcome,
    }
    if delivery.execution_id is not None:
        attributes["rpa.execution_id"] = delivery.execution_id
    if attempt.status is not None:
        attributes["http.response.status_code"] = attempt.status
    span = spans.begin(
        "webhook deliver", traceparent=None, start_ns=started_ns, attributes=attributes
    )
    error = None if attempt.delivered else (attempt.error or f"HTTP {attempt.status}")
    spans.finish(span, events=(), end_ns=time.time_ns(), error=error)
