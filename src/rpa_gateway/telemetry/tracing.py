"""OpenTelemetry traces: the OTLP exporter behind a batch processor, and the span recorder."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from rpa_gateway.config import Settings
from rpa_gateway.telemetry.spans import SpanRecorder


def otlp_url(settings: Settings, signal: str) -> str | None:
    """``OTLP_ENDPOINT`` + ``/v1/<signal>``; ``None`` leaves it to the ``OTEL_*`` variables."""
    endpoint = settings.otlp_endpoint.strip().rstrip("/")
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return f"{endpoint}/v1/{signal}"


def resource(settings: Settings) -> Resource:
    attributes: dict[str, str] = {"service.name": settings.otlp_service_name}
    if settings.otlp_dc:
        attributes["dc"] = settings.otlp_dc
    return Resource.create(attributes)


def span_recorder(settings: Settings) -> tuple[SpanRecorder, TracerProvider]:
    """The recorder, and the provider whose ``shutdown`` flushes what it recorded."""
    provider = TracerProvider(resource=resource(settings))
    exporter = OTLPSpanExporter(
        endpoint=otlp_url(settings, "traces"), timeout=settings.otlp_trace_timeout / 1000
    )
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=settings.otlp_trace_max_queue_size,
        schedule_delay_millis=settings.otlp_trace_schedule_delay_millis,
        max_export_batch_size=settings.otlp_trace_max_export_batch_size,
        export_timeout_millis=settings.otlp_trace_export_timeout_millis,
    )
    provider.add_span_processor(processor)
    return SpanRecorder(provider, processor, "rpa_gateway"), provider
