"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from rpa_gateway.api.components import components
from rpa_gateway.store.base import StoreError

router = APIRouter()


@router.get("/rpa/v1/ping", summary='Liveness: answers "pong"')
async def ping() -> str:
    return "pong"


@router.get("/rpa/v1/ready", summary="Readiness: the execution store answers")
async def ready(request: Request) -> JSONResponse:
    try:
        components(request).store.check()
    except StoreError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})
