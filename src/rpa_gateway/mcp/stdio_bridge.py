"""``rpa-gateway mcp``: MCP on stdin/stdout, for clients that launch their servers as
processes, forwarded to a running service's ``/mcp``.

Each line on stdin is a JSON-RPC message; it is POSTed as it came, with the headers the
Streamable HTTP transport asks for (the session and version ``initialize`` settled, or a
2026-07-28 request's ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name``), and
whatever the service answers (JSON, or an event stream of progress and then the answer)
is written to stdout, one message a line.  Requests are forwarded concurrently, so a
long ``tools/call`` holds up nothing else; a ``notifications/cancelled`` reaches the
service like any message.  A session the service no longer knows is opened again with
the client's own ``initialize``.  Nothing is kept here: executions live in the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource
from mcp.shared.inbound import encode_header_value

from rpa_gateway.mcp.jsonrpc import error_response
from rpa_gateway.mcp.protocol import (
    METHOD_HEADER,
    MODERN_VERSIONS,
    NAME_HEADER,
    PARSE_ERROR,
    PROTOCOL_VERSION_HEADER,
    PROTOCOL_VERSION_META_KEY,
    SESSION_HEADER,
)

BRIDGE_ERROR = -32000  # implementation-defined: the service could not be asked or answer
_LINE_LIMIT = 64 * 1024 * 1024
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class StdioBridge:
    def __init__(self, url: str, token: str, output: asyncio.StreamWriter | None = None) -> None:
        self._endpoint = url.rstrip("/") + "/mcp"
        self._token = token
        self._output = output
        self._write_lock = asyncio.Lock()
        self._session: str | None = None
        self._version: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, lines: AsyncIterator[bytes]) -> int:
        timeout = httpx.Timeout(30.0, read=None)  # a call streams for as long as it waits
        async with httpx.AsyncClient(timeout=timeout) as http:
            async for line in lines:
                if not line.strip():
                    continue
                task = asyncio.create_task(self._forward(http, line))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            for task in list(self._tasks):  # stdin closed: the client is gone
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._session is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(self._endpoint, headers=self._headers(None))
        return 0

    async def _forward(self, http: httpx.AsyncClient, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError as exc:
            await self._write(error_response(None, PARSE_ERROR, f"Parse error: {exc}"))
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        is_request = isinstance(message, dict) and "method" in message and "id" in message
        if is_request and message.get("method") == "initialize":
            self._initialize = message
            self._session = None
        try:
            status = await self._post(http, message)
            if status == 404 and self._session is not None and is_request:
                await self._reopen(http)  # the session expired: open another, then again
                await self._post(http, message)
        except httpx.HTTPError as exc:
            if is_request:
                text = f"cannot reach the service at {self._endpoint}: {type(exc).__name__}"
                await self._write(error_response(request_id, BRIDGE_ERROR, text))

    async def _post(self, http: httpx.AsyncClient, message: Any, *, echo: bool = True) -> int:
        request_id = message.get("id") if isinstance(message, dict) else None
        async with http.stream(
            "POST", self._endpoint, json=message, headers=self._headers(message)
        ) as response:
            if response.status_code == 404 and self._session is not None:
                return 404
            kind = response.headers.get("content-type", "")
            if kind.startswith("text/event-stream"):
                async for event in EventSource(response).aiter_sse():
                    data = _json(event.data)
                    if data is not None:
                        await self._answer(data, echo)
                return response.status_code
            body = await response.aread()
            if response.status_code == 202 or not body.strip():
                return response.status_code
            answer = _json(body)
            if isinstance(answer, dict | list) and answer:
                if isinstance(answer, dict) and answer.get("id") is None and request_id is not None:
                    answer["id"] = request_id  # a refusal before the message was read
                if isinstance(answer, dict) and "result" in answer:
                    self._remember(response, answer)
                await self._answer(answer, echo)
            elif request_id is not None:
                text = f"the service answered HTTP {response.status_code}"
                await self._answer(error_response(request_id, BRIDGE_ERROR, text), echo)
            return response.status_code

    async def _reopen(self, http: httpx.AsyncClient) -> None:
        self._session = None
        if self._initialize is not None:
            await self._post(http, {**self._initialize, "id": "rpa-gateway-reopen"}, echo=False)
            await self._post(
                http, {"jsonrpc": "2.0", "method": "notifications/initialized"}, echo=False
            )

    def _remember(self, response: httpx.Response, answer: dict[str, Any]) -> None:
        session = response.headers.get(SESSION_HEADER)
        version = (
            answer["result"].get("protocolVersion") if isinstance(answer["result"], dict) else None
        )
        if session:
            self._session = session
        if isinstance(version, str):
            self._version = version

    def _headers(self, message: Any) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json, text/event-stream",
        }
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        modern = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if isinstance(modern, str) and modern in MODERN_VERSIONS and isinstance(message, dict):
            method = str(message.get("method", ""))
            headers[PROTOCOL_VERSION_HEADER] = modern
            headers[METHOD_HEADER] = method
            named = (
                params.get(_NAMED_BY.get(method, "taskId")) if isinstance(params, dict) else None
            )
            if isinstance(named, str):
                headers[NAME_HEADER] = encode_header_value(named)
            return headers
        if self._version is not None:
            headers[PROTOCOL_VERSION_HEADER] = self._version
        if self._session is not None:
            headers[SESSION_HEADER] = self._session
        return headers

    async def _answer(self, answer: Any, echo: bool) -> None:
        if echo:
            await self._write(answer)

    async def _write(self, message: Any) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        async with self._write_lock:
            if self._output is not None:
                self._output.write(data)
                await self._output.drain()
            else:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()


def _json(text: str | bytes) -> Any:
    """The JSON in a body or an event's data; ``None`` when there is none."""
    try:
        return json.loads(text)
    except ValueError:
        return None


async def _stdin_lines() -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line


def serve_stdio(url: str, token: str) -> int:
    """Bridge stdin/stdout to the service until stdin closes."""
    return asyncio.run(StdioBridge(url, token).run(_stdin_lines()))
