"""The older HTTP+SSE transport (``2024-11-05``, ``2025-03-26``), for clients that speak
only it, astron-agent's among them.

``GET /mcp/sse`` opens the event stream: first an ``endpoint`` event naming where to
POST (``messages/?session_id=…``, relative, so a proxy's path prefix is kept; with the
caller's ``?key=`` when that is how it came, as such clients send no headers), then each
answer as a ``message`` event.  ``POST /mcp/messages/?session_id=…`` is answered 202 at
once; its answer reaches the stream through the store, so the POST may land on another
replica than the stream (nginx spreads them).  The session lives in the store while its
stream is open.  An ``initialize`` asking for a later version is answered ``2025-03-26``,
the newest this transport belongs to.

An idle stream does not hold up a shutdown: the drain waits for the answers under way,
then the streams end (their clients connect again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from rpa_gateway import sse
from rpa_gateway.api.body import trace_parent
from rpa_gateway.api.edge import TRAILING_SLASH
from rpa_gateway.event_stream import EventStreamResponse
from rpa_gateway.mcp import jsonrpc
from rpa_gateway.mcp.call_scope import CallScope
from rpa_gateway.mcp.door import McpAsgiEndpoint, McpDoor
from rpa_gateway.mcp.gate import (
    QUERY_KEY,
    Refusal,
    caller,
    check_host_and_origin,
    key_in_query,
    sessions_unavailable,
)
from rpa_gateway.mcp.jsonrpc import RpcError
from rpa_gateway.mcp.responses import read_body, rpc_error_response
from rpa_gateway.mcp.results import dumps
from rpa_gateway.mcp.sessions import RENEW_AFTER, SSE
from rpa_gateway.store.base import McpSession, StoreError

log = logging.getLogger(__name__)

FIRST_VERSION = "2024-11-05"  # until the session's initialize says otherwise
VERSIONS = ("2024-11-05", "2025-03-26")  # what this transport negotiates


def channel(session_id: str) -> str:
    return f"mcp-sse:{session_id}"


class SseStreamEndpoint(McpAsgiEndpoint):
    """``GET /mcp/sse``."""

    async def respond(self, request: Request, door: McpDoor) -> Response:
        check_host_and_origin(request, door.settings)
        if request.method != "GET":
            raise Refusal(405, "GET opens the event stream", {"Allow": "GET"})
        token, _ = caller(request, door.settings)
        if door.lifecycle.draining:
            raise Refusal(503, "the service is restarting; connect again", {"Retry-After": "1"})
        try:
            session = await door.sessions.open(token, FIRST_VERSION, SSE)
        except StoreError as exc:
            raise sessions_unavailable(exc) from None
        # Relative to the stream's URL as the client wrote it (a proxy's prefix kept).
        base = "../messages/" if request.scope.get(TRAILING_SLASH) else "messages/"
        endpoint = f"{base}?session_id={session.id}"
        if key_in_query(request, door.settings):
            endpoint += f"&{QUERY_KEY}={quote(request.query_params[QUERY_KEY], safe='')}"
        log.info("MCP event stream opened (HTTP+SSE)")
        # Not counted among the streams a drain waits for: see the module's docstring.
        return EventStreamResponse(_stream(door, session, endpoint), pings=door.pings)


async def _stream(door: McpDoor, session: McpSession, endpoint: str) -> AsyncGenerator[bytes, None]:
    try:
        async with door.store.subscribe_messages(channel(session.id)) as messages:
            yield sse.frame(event="endpoint", data=endpoint)  # subscribed: nothing is missed
            while True:
                try:
                    async with asyncio.timeout(RENEW_AFTER):
                        message = await messages.get()
                except TimeoutError:  # a long-lived stream keeps its session
                    await _renew(door, session.id)
                    continue
                if message is None:  # shutting down: the client connects again
                    if messages.fell_behind:
                        log.warning("MCP session %s: its client left its stream unread", session.id)
                    return
                yield sse.frame(event="message", data=message)
    finally:
        try:
            await door.sessions.forget(session.id)
        except StoreError as exc:
            log.warning("MCP session not forgotten (it expires by itself): %s", exc)


async def _renew(door: McpDoor, session_id: str) -> None:
    try:
        await door.sessions.renew(session_id)
    except StoreError as exc:
        log.warning("MCP session not renewed: %s", exc)


class SseMessagesEndpoint(McpAsgiEndpoint):
    """``POST /mcp/messages/?session_id=…``."""

    def __init__(self) -> None:
        self._answering: set[asyncio.Task[None]] = set()

    async def respond(self, request: Request, door: McpDoor) -> Response:
        check_host_and_origin(request, door.settings)
        if request.method != "POST":
            raise Refusal(405, "POST sends a message", {"Allow": "POST"})
        token, admin = caller(request, door.settings)
        session_id = request.query_params.get("session_id", "")
        if not session_id:
            raise Refusal(400, "session_id is missing: use the endpoint the stream announced")
        try:
            session = await door.sessions.find(session_id, token, SSE)
        except StoreError as exc:
            raise sessions_unavailable(exc) from None
        if session is None:
            raise Refusal(404, "Session not found: open a new event stream")
        settings = door.settings
        body = await read_body(request, settings.rpa_max_body_bytes, settings.rpa_body_timeout)
        try:
            value = jsonrpc.decode(body)
            messages = _messages(value, session.protocol_version)
        except RpcError as error:
            return rpc_error_response(error)
        traceparent = trace_parent(request)
        scopes = [
            CallScope(token, admin, session.protocol_version, traceparent=traceparent)
            for _ in messages
        ]
        batch = isinstance(value, list)
        task = asyncio.create_task(self._answer(door, session, scopes, messages, batch))
        self._answering.add(task)
        door.lifecycle.opened()  # a drain waits for the answer, as for an open stream
        task.add_done_callback(self._answered(door))
        return Response("Accepted", status_code=202)

    def _answered(self, door: McpDoor) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            self._answering.discard(task)
            door.lifecycle.closed()
            if not task.cancelled() and task.exception() is not None:
                log.error("MCP message not answered", exc_info=task.exception())

        return done

    async def _answer(
        self,
        door: McpDoor,
        session: McpSession,
        scopes: list[CallScope],
        messages: list[jsonrpc.Message | RpcError],
        batch: bool,
    ) -> None:
        to = channel(session.id)
        outbox = _Outbox(door, to)
        conversation = f"session {session.id}"
        answers: list[dict[str, Any]] = []
        for scope, message in zip(scopes, messages, strict=True):
            if isinstance(message, RpcError):
                answers.append(message.response())
            elif isinstance(message, jsonrpc.Notification):
                await door.messages.notified(message, conversation)
            elif isinstance(message, jsonrpc.Request):
                params = message.params or {}
                meta = params.get("_meta")
                scope.meta = meta if isinstance(meta, dict) else {}
                scope.emit = outbox.put
                if message.method == "initialize":
                    message = _capped(message)
                answer = await door.messages.answer(scope, message, conversation)
                if answer is None:
                    continue  # cancelled by its client: no answer
                result = answer.get("result")
                if message.method == "initialize" and isinstance(result, dict):
                    version = str(result.get("protocolVersion", scope.protocol_version))
                    try:
                        await door.sessions.negotiated(session.id, version)
                    except StoreError as exc:
                        log.warning("MCP session's version not stored: %s", exc)
                answers.append(answer)
        await outbox.flush()
        if not answers:
            return
        body: Any = answers if batch else answers[0]
        try:
            await door.store.send_message(to, dumps(body))
        except StoreError as exc:
            log.error("MCP answer not delivered to its stream: %s", exc)


def _capped(message: jsonrpc.Request) -> jsonrpc.Request:
    """An ``initialize`` asking for a version past this transport's asks for its newest."""
    params = dict(message.params or {})
    if params.get("protocolVersion") in VERSIONS:
        return message
    params["protocolVersion"] = VERSIONS[-1]
    return jsonrpc.Request(message.id, message.method, params)


def _messages(value: Any, version: str) -> list[jsonrpc.Message | RpcError]:
    if isinstance(value, list):
        return jsonrpc.batch(value, version)
    return [jsonrpc.message(value)]


class _Outbox:
    """Notifications (progress) to the stream, in order, without holding up the call."""

    def __init__(self, door: McpDoor, to: str) -> None:
        self._door = door
        self._to = to
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    def put(self, notification: dict[str, Any]) -> None:
        self._queue.put_nowait(notification)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    async def flush(self) -> None:
        if self._sender is not None:
            await self._sender

    async def _send(self) -> None:
        while not self._queue.empty():
            try:
                await self._door.store.send_message(self._to, dumps(self._queue.get_nowait()))
            except StoreError as exc:
                log.warning("MCP progress not delivered to its stream: %s", exc)
