"""A real OTLP/HTTP receiver: decodes the protobuf payloads the gateway exports."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.fakes.threaded import ThreadedServer


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    kind: str
    status: tuple[str, str]  # (code name, message)
    duration_ns: int


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set)
    raw: list[bytes] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadedServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        message = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.raw.append(body)
            for resource_spans in message.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes=_attributes(span.attributes),
                                events=[(e.name, _attributes(e.attributes)) for e in span.events],
                                resource=resource,
                                kind=Span.SpanKind.Name(span.kind),
                                status=(
                                    Status.StatusCode.Name(span.status.code),
                                    span.status.message,
                                ),
                                duration_ns=span.end_time_unix_nano - span.start_time_unix_nano,
                            )
                        )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await request.read()
        message = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            self.raw.append(body)
            for resource_metrics in message.resource_metrics:
                for scope in resource_metrics.scope_metrics:
                    self.metric_names.update(metric.name for metric in scope.metrics)
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def wait_for_span(self, predicate: Any, timeout: float = 15) -> ReceivedSpan:
        return self.wait_for_spans(predicate, 1, timeout)[0]

    def wait_for_spans(self, predicate: Any, count: int, timeout: float = 15) -> list[ReceivedSpan]:
        """The matching spans once at least ``count`` have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if predicate(s)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"fewer than {count} such spans after {timeout}s; got {[s.name for s in self.spans]}"
        )

    def start(self) -> OtlpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._server = ThreadedServer(app)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        self._server.stop()


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
