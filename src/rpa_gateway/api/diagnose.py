"""``GET /rpa/v1/diagnose``: the checklist of ``diagnosis`` for the caller's key, run by
the service itself (its store, its backend, its settings)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from rpa_gateway.api.auth import Caller
from rpa_gateway.api.components import components
from rpa_gateway.api.openapi_docs import errors
from rpa_gateway.diagnosis import Check, check_backend, check_store

router = APIRouter(tags=["service"])


@router.get(
    "/rpa/v1/diagnose",
    responses=errors(401),
    summary="What stands between the caller and its robots, check by check",
    description="Each check is ok, or failed with what to do: the store; on the astron "
    "backend the platform reachable, its create and query routes, the caller's key, the "
    "clock, the contract and the account's RPA client; on the local backend its projects. "
    "`ok` is true only when every check passed. Nothing is started.",
)
async def diagnose(request: Request, token: Caller) -> JSONResponse:
    parts = components(request)
    checks = [Check("settings", True, "the service started with them")]
    checks.append(await check_store(parts.store))
    checks += await check_backend(parts.settings, parts.backend, token)
    return JSONResponse({"ok": all(c.ok for c in checks), "checks": [c.as_json() for c in checks]})
