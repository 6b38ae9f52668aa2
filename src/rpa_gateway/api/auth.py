"""The caller's token: ``Authorization: Bearer <token>`` or the token alone.

A dependency of every route that needs one, so it is checked before anything
else about the request (query parameters included), and the OpenAPI document
declares it.  With ``RPA_API_KEYS`` set, only those keys are callers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from rpa_gateway.access import admitted, bearer_token
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected

_AUTHORIZATION = APIKeyHeader(
    name="Authorization",
    scheme_name="token",
    description="`Bearer <token>`, or the token alone (as astron-agent's node sends it)",
    auto_error=False,
)


def caller_token(request: Request) -> str:
    """The caller's token; 401 when there is none, or it is not one of ``RPA_API_KEYS``."""
    token = bearer_token(request.headers.get("authorization") or "")
    if not token:
        raise RequestRejected(401, "unauthorized", "Authorization header is missing or empty")
    settings = components(request).settings
    if not admitted(token, settings.api_keys, settings.admin_keys):
        raise RequestRejected(401, "unauthorized", "the token in Authorization is not accepted")
    return token


def is_admin(request: Request, token: str) -> bool:
    """An operator's key (``RPA_ADMIN_KEYS``): sees and may cancel every caller's executions."""
    admins = components(request).settings.admin_keys
    return admins is not None and admins.admits(token)


async def _caller(request: Request, _: Annotated[str | None, Depends(_AUTHORIZATION)]) -> str:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool (a hand-off a request).
    return caller_token(request)


Caller = Annotated[str, Depends(_caller)]
# For a route that reads the token itself (the compat hot path: no dependency to solve),
# declared in the OpenAPI document all the same.
TOKEN_SECURITY: dict[str, object] = {"security": [{"token": []}]}
