"""Who may reach the MCP endpoints: Host and Origin (DNS rebinding), then the caller's key.

- ``Host`` must be one of ``RPA_MCP_ALLOWED_HOSTS`` (421 otherwise).  Unset, a service on
  loopback answers only loopback names, any name otherwise.  ``name`` or ``name:*``
  allows that name on any port, ``name:port`` on that port only.
- A browser's ``Origin`` must be one of ``RPA_MCP_ALLOWED_ORIGINS`` (403 otherwise);
  requests without one (every non-browser client) pass.  An allowed origin gets the CORS
  headers a browser needs to read the answers (and its preflight ``OPTIONS`` a 204).
- The key: ``Authorization`` as on the REST API, or ``?key=`` where the operator allows it
  (``RPA_MCP_ALLOW_QUERY_KEY``) for clients that cannot send headers.  401 with
  ``WWW-Authenticate: Bearer`` otherwise.
"""

from __future__ import annotations

from starlette.requests import Request

from rpa_gateway.access import admitted, bearer_token
from rpa_gateway.config import Settings
from rpa_gateway.mcp.protocol import INVALID_REQUEST

QUERY_KEY = "key"


class Refusal(Exception):
    """Refused before any message is read: an HTTP status and a JSON-RPC error without id."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.code = INVALID_REQUEST


def sessions_unavailable(exc: Exception) -> Refusal:
    """The store holding sessions failed: 503, try again."""
    return Refusal(503, f"MCP sessions are unavailable now ({exc}); retry", {"Retry-After": "1"})


def check_host_and_origin(request: Request, settings: Settings) -> None:
    allowed = settings.mcp_allowed_hosts
    if allowed is not None and not host_allowed(request.headers.get("host", ""), allowed):
        raise Refusal(
            421,
            "this service does not answer MCP requests for that Host; add the name to "
            "RPA_MCP_ALLOWED_HOSTS",
        )
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.mcp_allowed_origins:
        raise Refusal(
            403,
            "requests from that Origin are not allowed; add it to RPA_MCP_ALLOWED_ORIGINS",
        )


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.strip().lower()
    name, port = _split(host)
    for pattern in allowed:
        pattern_name, pattern_port = _split(pattern)
        if pattern_name == name and pattern_port in ("", "*", port):
            return True
    return False


def _split(host: str) -> tuple[str, str]:
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[: end + 1], host[end + 2 :] if end >= 0 else ""
    name, _, port = host.partition(":")
    return name, port


_EXPOSED = "Mcp-Session-Id, WWW-Authenticate"
_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Accept, MCP-Protocol-Version, Mcp-Session-Id, "
        "Mcp-Method, Mcp-Name, Last-Event-ID, traceparent"
    ),
    "Access-Control-Max-Age": "600",
}


def cors_headers(
    request: Request, settings: Settings, *, preflight: bool = False
) -> dict[str, str]:
    """The CORS headers for a request from an allowed browser origin (none otherwise)."""
    origin = request.headers.get("origin")
    if origin is None or origin not in settings.mcp_allowed_origins:
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": _EXPOSED,
        "Vary": "Origin",
    }
    return {**headers, **_PREFLIGHT} if preflight else headers


def caller(request: Request, settings: Settings) -> tuple[str, bool]:
    """The caller's token, and whether it is an operator's.  Raises Refusal (401)."""
    token = bearer_token(request.headers.get("authorization") or "")
    if not token and settings.rpa_mcp_allow_query_key:
        token = request.query_params.get(QUERY_KEY, "").strip()
    if not token:
        where = "Authorization: Bearer <key>" + (
            " or ?key=<key>" if settings.rpa_mcp_allow_query_key else ""
        )
        raise Refusal(401, f"a key is needed: {where}", {"WWW-Authenticate": "Bearer"})
    if not admitted(token, settings.api_keys, settings.admin_keys):
        raise Refusal(401, "the key is not accepted", {"WWW-Authenticate": "Bearer"})
    admins = settings.admin_keys
    return token, admins is not None and admins.admits(token)


def key_in_query(request: Request, settings: Settings) -> bool:
    """The caller's key came in the URL (so the URLs this service hands it must carry it)."""
    return (
        settings.rpa_mcp_allow_query_key
        and not request.headers.get("authorization")
        and bool(request.query_params.get(QUERY_KEY))
    )
