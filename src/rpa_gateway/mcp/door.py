"""The MCP door's parts, built once at start-up and shared by its transports, and the shape
of their ASGI endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rpa_gateway.config import Settings
from rpa_gateway.lifecycle import Lifecycle
from rpa_gateway.mcp.gate import Refusal, check_host_and_origin, cors_headers
from rpa_gateway.mcp.messages import McpMessages
from rpa_gateway.mcp.responses import refusal_response
from rpa_gateway.mcp.sessions import McpSessions
from rpa_gateway.ping_sweep import PingSweep
from rpa_gateway.store.base import Store


@dataclass(frozen=True, slots=True)
class McpDoor:
    settings: Settings
    store: Store
    messages: McpMessages
    sessions: McpSessions
    lifecycle: Lifecycle
    pings: PingSweep


class McpAsgiEndpoint:
    """An MCP endpoint as an ASGI app: its parts from ``app.state.mcp``; a refusal (raised
    before any message is read) answered as a JSON-RPC error without id; the CORS headers
    of an allowed browser origin on whatever it answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        door: McpDoor = request.app.state.mcp
        preflight = request.method == "OPTIONS"
        try:
            if preflight:  # a browser asking first: only an allowed origin is told yes
                check_host_and_origin(request, door.settings)
                response = Response(status_code=204)
            else:
                response = await self.respond(request, door)
        except Refusal as refusal:
            response = refusal_response(refusal)
        cors = cors_headers(request, door.settings, preflight=preflight)
        if cors:
            response.raw_headers = [
                *response.raw_headers,
                *((name.encode(), value.encode()) for name, value in cors.items()),
            ]
        await response(scope, receive, send)

    async def respond(self, request: Request, door: McpDoor) -> Response:
        raise NotImplementedError
