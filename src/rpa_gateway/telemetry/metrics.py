"""Metrics through the OpenTelemetry SDK: exported by OTLP and/or served on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry

from rpa_gateway.config import Settings
from rpa_gateway.telemetry.tracing import otlp_url, resource

Gauge = Callable[[], int]


class Tally:
    """Counts by label values, reported as an observable counter's cumulative totals.

    Counting is one dict update; the SDK reads the totals only when it collects.  A
    synchronous counter's ``add`` cost ~16 µs in the running service (the SDK cleans and
    hashes the attributes on every call), several times per execution.
    """

    def __init__(self, *labels: str) -> None:
        self._labels = labels
        self._counts: dict[tuple[str, ...], int] = {}

    def add(self, *values: str) -> None:
        self._counts[values] = self._counts.get(values, 0) + 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # list() copies the items in one step, so counting on the loop thread while the
        # reader's thread collects cannot change the dict under the iteration.  Empty
        # values are left out (``reason`` of records sent).
        return [
            Observation(count, {k: v for k, v in zip(self._labels, values, strict=True) if v})
            for values, count in list(self._counts.items())
        ]


@dataclass(frozen=True, slots=True)
class Instruments:
    executions: Tally
    execution_duration: Histogram
    upstream_duration: Histogram
    upstream_errors: Tally
    kafka_records: Tally
    mcp_calls: Tally
    slow_clients: Tally
    webhook_deliveries: Tally
    webhook_duration: Histogram

    @classmethod
    def on(
        cls,
        meter: Meter,
        *,
        active_executions: Gauge,
        open_streams: Gauge,
        outbox_depth: Gauge,
    ) -> Instruments:
        # Levels are observed at collection time from the counts the service keeps anyway.
        meter.create_observable_gauge(
            "rpa_active_executions",
            callbacks=[_observe(active_executions)],
            description="executions begun and not finished in this process",
        )
        meter.create_observable_gauge(
            "rpa_open_streams", callbacks=[_observe(open_streams)], description="open SSE responses"
        )
        executions = Tally("code", "project_id", "backend")
        upstream_errors = Tally("operation", "kind")
        kafka_records = Tally("outcome", "reason")
        mcp_calls = Tally("tool", "outcome")
        slow_clients = Tally("reason")
        webhook_deliveries = Tally("outcome")
        meter.create_observable_gauge(
            "rpa_webhook_outbox_depth",
            callbacks=[_observe(outbox_depth)],
            description="webhook deliveries pending (to be attempted, or attempted again)",
        )
        for name, tally, description in (
            ("rpa_executions", executions, "finished executions by code, project, backend"),
            ("rpa_upstream_errors", upstream_errors, "failed backend calls by operation and kind"),
            ("rpa_kafka_records", kafka_records, "trace records by outcome: sent or dropped"),
            ("rpa_mcp_calls", mcp_calls, "MCP tool calls by tool and outcome"),
            (
                "rpa_webhook_deliveries",
                webhook_deliveries,
                "webhook delivery attempts by outcome: delivered, retried, failed, gone",
            ),
            (
                "rpa_slow_clients",
                slow_clients,
                "streams ended because their client did not read: fell_behind (a feed"
                " CHANGES_BACKLOG changes behind), stalled (no byte taken for"
                " RPA_STREAM_STALL_SECONDS)",
            ),
        ):
            meter.create_observable_counter(name, [tally.observe], description=description)
        return cls(
            executions=executions,
            execution_duration=meter.create_histogram(
                "rpa_execution_duration", unit="s", description="acceptance to terminal event"
            ),
            upstream_duration=meter.create_histogram(
                "rpa_upstream_request_duration",
                unit="s",
                description="calls to the backend by operation",
            ),
            upstream_errors=upstream_errors,
            kafka_records=kafka_records,
            mcp_calls=mcp_calls,
            slow_clients=slow_clients,
            webhook_deliveries=webhook_deliveries,
            webhook_duration=meter.create_histogram(
                "rpa_webhook_delivery_duration",
                unit="s",
                description="one webhook delivery attempt, request to reply",
            ),
        )


def _observe(level: Gauge) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(level())]

    return callback


def meter_provider(settings: Settings) -> tuple[MeterProvider, CollectorRegistry | None]:
    readers: list[MetricReader] = []
    registry: CollectorRegistry | None = None
    if settings.otlp_enable:
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_url(settings, "metrics")),
                export_interval_millis=settings.otlp_metric_export_interval_millis,
            )
        )
    if settings.rpa_prometheus_enable:
        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry))
    return MeterProvider(resource=resource(settings), metric_readers=readers), registry
