"""``GET /metrics``: Prometheus exposition of the service's metrics (when enabled)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.api.openapi_docs import errors

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (RPA_PROMETHEUS_ENABLE=true)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(404),
    },
)
async def metrics(request: Request) -> Response:
    telemetry = components(request).telemetry
    registry = telemetry.prometheus
    if registry is None:
        raise RequestRejected(404, "not_enabled", "metrics are off; set RPA_PROMETHEUS_ENABLE")
    telemetry.flush()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
