"""``/monitor``: the web monitor's page and assets, shipped in the package (no build step).

The page holds no data: it asks the API with the token the user signs in with."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from rpa_gateway.api.errors import RequestRejected

router = APIRouter(include_in_schema=False)

_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "monitor.js": "text/javascript; charset=utf-8",
    "monitor.css": "text/css; charset=utf-8",
}
_HEADERS = {
    # Only this page's own script and style; fetches only to this origin.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none';"
    " form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("rpa_gateway.monitor").joinpath(name).read_bytes()


@router.get("/monitor")
@router.get("/monitor/")
async def monitor_page() -> Response:
    return _response("index.html")


@router.get("/monitor/{name}")
async def monitor_asset(name: str) -> Response:
    if name not in _ASSETS or name == "index.html":
        raise RequestRejected(404, "not_found", "no such file of the monitor")
    return _response(name)


def _response(name: str) -> Response:
    return Response(_asset(name), media_type=_ASSETS[name], headers=_HEADERS)
