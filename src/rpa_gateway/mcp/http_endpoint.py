"""``/mcp``: the Streamable HTTP transport, both protocol generations on one endpoint.

- ``2026-07-28`` (a request whose ``MCP-Protocol-Version`` or ``_meta`` says so):
  stateless; the ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` and ``Mcp-Param-*``
  headers must match the body (400, ``-32020`` otherwise), an unsupported version is 400
  ``-32022`` naming the supported ones, an unknown method 404 ``-32601``, GET and DELETE 405.
  Closing the response stream cancels the request.
- ``2024-11-05`` to ``2025-11-25``: ``initialize`` issues an ``Mcp-Session-Id`` kept in
  the store (valid on every replica; DELETE ends it, 404 after); requests without one are
  served too, as ``MCP-Protocol-Version`` says (``2025-03-26`` without it).  Batches
  only at ``2025-03-26``.  ``notifications/cancelled`` works within a session.  GET is
  405: the server sends nothing unasked.

A ``tools/call`` or ``tasks/result`` answered within a quarter of a second is answered as
JSON, a longer one as an event stream (progress, pings, then the answer) when the client
takes one.  Nothing here knows executions: the kernel and the tools do.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    decode_header_value,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from starlette.requests import Request
from starlette.responses import Response

from rpa_gateway.api.body import is_json_media_type, trace_parent
from rpa_gateway.mcp import jsonrpc
from rpa_gateway.mcp.call_scope import CallScope, Emit
from rpa_gateway.mcp.door import McpAsgiEndpoint, McpDoor
from rpa_gateway.mcp.gate import Refusal, caller, check_host_and_origin, sessions_unavailable
from rpa_gateway.mcp.jsonrpc import RpcError
from rpa_gateway.mcp.protocol import (
    DEFAULT_HANDSHAKE_VERSION,
    HANDSHAKE_VERSIONS,
    HEADER_MISMATCH,
    INVALID_REQUEST,
    MODERN_VERSIONS,
    NAME_HEADER,
    PROTOCOL_VERSION_HEADER,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_CANCELLED,
    SESSION_HEADER,
    SUPPORTED_VERSIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from rpa_gateway.mcp.responses import answered, json_response, read_body, rpc_error_response
from rpa_gateway.mcp.sessions import HTTP
from rpa_gateway.store.base import McpSession, StoreError

log = logging.getLogger(__name__)

STREAMED = frozenset({"tools/call", "tasks/result"})  # may wait: answered as a stream
_TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/cancel", "tasks/update"})
_ALLOW = {"Allow": "POST, DELETE"}


class McpEndpoint(McpAsgiEndpoint):
    """The ASGI app at ``/mcp``."""

    async def respond(self, request: Request, door: McpDoor) -> Response:
        check_host_and_origin(request, door.settings)
        if request.method not in ("POST", "DELETE"):
            return json_response(
                jsonrpc.error_response(None, INVALID_REQUEST, "Method Not Allowed: POST only"),
                405,
                _ALLOW,
            )
        token, admin = caller(request, door.settings)
        if request.method == "DELETE":
            return await self._delete(request, door, token)
        return await _Post(request, door, token, admin).respond()

    async def _delete(self, request: Request, door: McpDoor, token: str) -> Response:
        if request.headers.get(PROTOCOL_VERSION_HEADER) in MODERN_VERSIONS:
            return json_response(
                jsonrpc.error_response(None, INVALID_REQUEST, "2026-07-28 has no sessions"),
                405,
                {"Allow": "POST"},
            )
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            raise Refusal(400, "DELETE ends a session: Mcp-Session-Id is missing")
        try:
            ended = await door.sessions.end(session_id, token, HTTP)
        except StoreError as exc:
            raise sessions_unavailable(exc) from None
        if not ended:
            raise Refusal(404, "Session not found")
        return Response(status_code=204)


class _Post:
    """One POST: its messages, answered."""

    def __init__(self, request: Request, door: McpDoor, token: str, admin: bool) -> None:
        self.request = request
        self.door = door
        self.token = token
        self.admin = admin
        self.headers = request.headers
        accepted = _media_ranges(self.headers.get("accept") or "*/*")
        self.takes_stream = bool({"*/*", "text/*", "text/event-stream"} & accepted)
        self.takes_json = bool({"*/*", "application/*", "application/json"} & accepted)

    async def respond(self) -> Response:
        if not (self.takes_json or self.takes_stream):
            raise Refusal(406, "Accept must include application/json or text/event-stream")
        content_type = self.headers.get("content-type")
        if content_type is not None and not is_json_media_type(content_type):
            raise Refusal(415, "Content-Type must be application/json")
        settings = self.door.settings
        body = await read_body(self.request, settings.rpa_max_body_bytes, settings.rpa_body_timeout)
        try:
            value = jsonrpc.decode(body)
        except RpcError as error:
            return rpc_error_response(error)
        version = self.headers.get(PROTOCOL_VERSION_HEADER)
        if version in MODERN_VERSIONS or (version is None and _modern_envelope(value)):
            return await self._modern(value)
        if version is not None and version not in HANDSHAKE_VERSIONS:
            return rpc_error_response(_unsupported(version, value))
        return await self._handshake(value, version)

    # --- 2026-07-28 ------------------------------------------------------------------------
    async def _modern(self, value: Any) -> Response:
        try:
            message = jsonrpc.message(value)
        except RpcError as error:
            return rpc_error_response(error)
        if isinstance(message, jsonrpc.Response):
            return rpc_error_response(
                RpcError(INVALID_REQUEST, "Invalid Request: clients send no responses")
            )
        if isinstance(message, jsonrpc.Notification):
            return Response(status_code=202)
        duplicated = find_duplicated_routing_header(
            (name.decode("latin-1"), "") for name, _ in self.request.headers.raw
        )
        if duplicated is not None:
            return _mismatch(message, f"the {duplicated} header is given more than once")
        route = classify_inbound_request(value, headers=self.headers)
        if isinstance(route, InboundLadderRejection):
            status = ERROR_CODE_HTTP_STATUS.get(route.code, 400)
            return json_response(
                jsonrpc.error_response(message.id, route.code, route.message, route.data), status
            )
        params = message.params or {}
        task_id = params.get("taskId")
        named = decode_header_value(self.headers.get(NAME_HEADER))
        if message.method in _TASK_METHODS and isinstance(task_id, str) and named != task_id:
            return _mismatch(message, "the Mcp-Name header does not match params.taskId")
        if message.method == "tools/call":
            mismatch = self._param_headers(params)
            if mismatch is not None:
                return _mismatch(message, mismatch)
        scope = self._scope(route.protocol_version, params.get("_meta"))
        return await self._answer(
            message,
            scope,
            conversation=None,  # cancelled by closing the stream, not by notification
            modern=True,
            client_info=route.client_info,
            client_capabilities=route.client_capabilities,
        )

    def _param_headers(self, params: dict[str, Any]) -> str | None:
        """What is wrong with the ``Mcp-Param-*`` headers a tool's schema asks for."""
        name, arguments = params.get("name"), params.get("arguments")
        tool = self.door.messages.tool_schema(name) if isinstance(name, str) else None
        if tool is None or not isinstance(arguments, dict):
            return None  # the kernel says what is wrong with the call itself
        rejection = validate_mcp_param_headers(tool, arguments, self.request.headers)
        return rejection.message if rejection is not None else None

    # --- 2024-11-05 to 2025-11-25 --------------------------------------------------------------
    async def _handshake(self, value: Any, version: str | None) -> Response:
        session: McpSession | None = None
        session_id = self.headers.get(SESSION_HEADER)
        if session_id:
            try:
                session = await self.door.sessions.find(session_id, self.token, HTTP)
            except StoreError as exc:
                raise sessions_unavailable(exc) from None
            if session is None:
                raise Refusal(404, "Session not found: initialize a new one")
        version = version or (session.protocol_version if session else DEFAULT_HANDSHAKE_VERSION)
        # A client's request ids are its own only within a session: cancels need one.
        conversation = f"session {session.id}" if session else None
        if isinstance(value, list):
            return await self._batch(value, version, conversation)
        try:
            message = jsonrpc.message(value)
        except RpcError as error:
            return rpc_error_response(error)
        if isinstance(message, jsonrpc.Notification):
            await self.door.messages.notified(message, conversation)
            return Response(status_code=202)
        if isinstance(message, jsonrpc.Response):
            return Response(status_code=202)
        scope = self._scope(version, (message.params or {}).get("_meta"))
        if message.method == "initialize":
            return await self._initialize(message, scope)
        return await self._answer(message, scope, conversation=conversation, modern=False)

    async def _initialize(self, message: jsonrpc.Request, scope: CallScope) -> Response:
        response = await self.door.messages.answer(scope, message, None)
        result = response.get("result") if response is not None else None
        if response is None or not isinstance(result, dict):
            return json_response(response or _cancelled(message))
        negotiated = str(result.get("protocolVersion", scope.protocol_version))
        try:
            session = await self.door.sessions.open(self.token, negotiated, HTTP)
        except StoreError as exc:
            raise sessions_unavailable(exc) from None
        log.info("MCP session opened at %s", negotiated)
        return json_response(response, headers={"Mcp-Session-Id": session.id})

    async def _batch(self, values: list[Any], version: str, conversation: str | None) -> Response:
        try:
            messages = jsonrpc.batch(values, version)
        except RpcError as error:
            return rpc_error_response(error)
        answers: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message, RpcError):
                answers.append(message.response())
            elif isinstance(message, jsonrpc.Notification):
                await self.door.messages.notified(message, conversation)
            elif isinstance(message, jsonrpc.Request):
                if message.method == "initialize":
                    answers.append(
                        RpcError(
                            INVALID_REQUEST,
                            "Invalid Request: initialize cannot be batched",
                            request_id=message.id,
                        ).response()
                    )
                    continue
                scope = self._scope(version, (message.params or {}).get("_meta"))
                answer = await self.door.messages.answer(scope, message, conversation)
                answers.append(answer or _cancelled(message))
        if not answers:
            return Response(status_code=202)
        return json_response(answers)

    # --- answering one request ---------------------------------------------------------------
    def _scope(self, version: str, meta: Any) -> CallScope:
        return CallScope(
            token=self.token,
            admin=self.admin,
            protocol_version=version,
            meta=meta if isinstance(meta, dict) else {},
            traceparent=trace_parent(self.request),
        )

    async def _answer(
        self,
        message: jsonrpc.Request,
        scope: CallScope,
        *,
        conversation: str | None,
        modern: bool,
        client_info: Any = None,
        client_capabilities: Any = None,
    ) -> Response:
        messages = self.door.messages

        async def answer(emit: Emit | None) -> dict[str, Any] | None:
            scope.emit = emit
            return await messages.answer(
                scope,
                message,
                conversation,
                client_info=client_info,
                client_capabilities=client_capabilities,
            )

        def status_of(response: dict[str, Any]) -> int:
            error = response.get("error")
            if modern and isinstance(error, dict):
                return ERROR_CODE_HTTP_STATUS.get(int(error.get("code", 0)), 200)
            return 200

        if message.method in STREAMED and self.takes_stream:
            return await answered(
                answer,
                status_of,
                _cancelled(message),
                json_ok=self.takes_json,
                counter=self.door.lifecycle,
                pings=self.door.pings,
            )
        response = await answer(None) or _cancelled(message)
        return json_response(response, status_of(response))


def _media_ranges(accept: str) -> set[str]:
    """The media ranges an ``Accept`` header takes (those with ``q=0`` refused)."""
    taken = set()
    for item in accept.lower().split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parameters):
            continue
        if media:
            taken.add(media)
    return taken


def _modern_envelope(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    params = value.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


def _unsupported(version: str, value: Any) -> RpcError:
    request_id = value.get("id") if isinstance(value, dict) else None
    return RpcError(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(SUPPORTED_VERSIONS), "requested": version},
        request_id=request_id if jsonrpc.is_id(request_id) else None,
    )


def _mismatch(message: jsonrpc.Request, text: str) -> Response:
    return json_response(
        jsonrpc.error_response(message.id, HEADER_MISMATCH, f"Header mismatch: {text}"), 400
    )


def _cancelled(message: jsonrpc.Request) -> dict[str, Any]:
    return jsonrpc.error_response(message.id, REQUEST_CANCELLED, "Request cancelled")
