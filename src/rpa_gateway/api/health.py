"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from rpa_gateway.api.components import components
from rpa_gateway.api.openapi_docs import errors
from rpa_gateway.store.base import StoreError

router = APIRouter()


@router.get("/rpa/v1/ping", summary='Liveness: answers "pong"', responses=errors())
async def ping() -> str:
    return "pong"


@router.get(
    "/rpa/v1/ready",
    responses=errors(),
    summary="Readiness: the execution store answers and the service is not shutting down",
)
async def ready(request: Request) -> JSONResponse:
    parts = components(request)
    if parts.lifecycle.draining:
        return JSONResponse(
            {"status": "draining", "reason": "shutting down: open streams are finishing"},
            status_code=503,
        )
    try:
        await parts.store.check()
    except StoreError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})
