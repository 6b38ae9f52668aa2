"""Metrics through the OpenTelemetry SDK: exported by OTLP and/or served on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry

from rpa_gateway.config import Settings
from rpa_gateway.telemetry.tracing import otlp_url, resource

Gauge = Callable[[], int]


@dataclass(frozen=True, slots=True)
class Instruments:
    executions: Counter
    execution_duration: Histogram
    upstream_duration: Histogram
    upstream_errors: Counter
    kafka_records: Counter

    @classmethod
    def on(cls, meter: Meter, *, active_executions: Gauge, open_streams: Gauge) -> Instruments:
        # Levels are observed at collection time from the counts the service keeps anyway.
        meter.create_observable_gauge(
            "rpa_active_executions",
            callbacks=[_observe(active_executions)],
            description="executions begun and not finished in this process",
        )
        meter.create_observable_gauge(
            "rpa_open_streams", callbacks=[_observe(open_streams)], description="open SSE responses"
        )
        return cls(
            executions=meter.create_counter(
                "rpa_executions", description="finished executions by code, project, backend"
            ),
            execution_duration=meter.create_histogram(
                "rpa_execution_duration", unit="s", description="acceptance to terminal event"
            ),
            upstream_duration=meter.create_histogram(
                "rpa_upstream_request_duration",
                unit="s",
                description="calls to the backend by operation",
            ),
            upstream_errors=meter.create_counter(
                "rpa_upstream_errors", description="failed backend calls by operation and kind"
            ),
            kafka_records=meter.create_counter(
                "rpa_kafka_records", description="trace records by outcome: sent or dropped"
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
