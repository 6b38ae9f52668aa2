"""What the MCP tests share: a gateway on the local backend with test projects, raw JSON-RPC
over HTTP, and the official Python SDK client on either protocol generation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.local_projects import make_project

# Long enough that scrubbing it from messages cannot garble them (issue 21).
TOKEN = "mcp-caller-key"
MODERN = "2026-07-28"
LATEST_HANDSHAKE = "2025-11-25"
# The SDK client's connection modes: the initialize handshake, and the 2026 stateless one.
GENERATIONS = ["legacy", MODERN]

GREETING_OUTPUT = {
    "type": "object",
    "required": ["greeting"],
    "properties": {"greeting": {"type": "string"}},
}

# A run that reports progress every 0.2 s for params.seconds, then its result.
SLEEPER = """
    import json, sys, time
    seconds = json.load(sys.stdin).get("seconds", 1)
    steps = max(1, int(seconds / 0.2))
    for step in range(steps):
        percent = round(100 * step / steps, 1)
        print(json.dumps({"event": "progress", "message": f"step {step}", "percent": percent}),
              flush=True)
        time.sleep(0.2)
    print(json.dumps({"event": "result", "data": {"slept": seconds}}), flush=True)
"""
GREETER = """
    import json, sys
    params = json.load(sys.stdin)
    print("greeting", params.get("name"))
    print(json.dumps({"event": "result", "data": {"greeting": "Hello, " + params["name"] + "!"}}))
"""
FAILING = """
    import sys
    sys.stderr.write("the robot could not find the button")
    sys.exit(3)
"""
BAD_OUTPUT = """
    import json
    print(json.dumps({"event": "result", "data": {"greeting": 42}}))
"""


def make_projects(root: Path) -> Path:
    """The test projects: greet (with an output schema and hints), sleeper, failing,
    bad_output (breaks its output schema)."""
    root.mkdir(parents=True, exist_ok=True)
    make_project(
        root,
        "greet",
        GREETER,
        description="Greets a person by name",
        schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
        output_schema=GREETING_OUTPUT,
        hints={"read_only": True, "destructive": False, "idempotent": True, "open_world": False},
    )
    make_project(
        root,
        "sleeper",
        SLEEPER,
        schema={"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}}},
    )
    make_project(root, "failing", FAILING)
    make_project(root, "bad_output", BAD_OUTPUT, output_schema=GREETING_OUTPUT)
    return root


def local_env(projects: Path, **extra: str) -> dict[str, str]:
    return {
        "RPA_BACKEND": "local",
        "RPA_PROJECTS_DIR": str(projects),
        "RPA_LOCAL_KILL_GRACE": "0.5",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def headers(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    found = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        found["Authorization"] = f"Bearer {token}"
    return {**found, **extra}


def post(
    base_url: str,
    body: Any,
    *,
    token: str | None = TOKEN,
    path: str = "/mcp",
    extra: dict[str, str] | None = None,
    content: bytes | None = None,
    timeout: float = 30,
) -> httpx.Response:
    """One POST to the MCP endpoint, read whole (an event stream too)."""
    return httpx.post(
        base_url + path,
        content=content if content is not None else json.dumps(body).encode(),
        headers=headers(token, **(extra or {})),
        timeout=timeout,
    )


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response: its JSON body, or its event stream's data."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        found = []
        for line in response.text.splitlines():
            if line.startswith("data:"):
                found.append(json.loads(line[5:]))
        return found
    body = response.json()
    return body if isinstance(body, list) else [body]


def envelope(method: str, **params: Any) -> dict[str, Any]:
    """A 2026-07-28 request's params: ``params`` with the per-request ``_meta``."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": params.pop("capabilities", {}),
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }
    meta.update(params.pop("meta", {}))
    return {"_meta": meta, **params}


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    found = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        found["Mcp-Name"] = name
    return found


def modern_call(
    base_url: str, method: str, *, request_id: int = 1, token: str = TOKEN, **params: Any
) -> httpx.Response:
    name = params.get("name") or params.get("taskId")
    return post(
        base_url,
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": method,
            "params": envelope(method, **params),
        },
        token=token,
        extra=modern_headers(method, name),
    )


def initialize_body(version: str = LATEST_HANDSHAKE, request_id: int = 0) -> dict[str, Any]:
    """An initialize request asking ``version``."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }


def open_session(
    base_url: str, version: str = LATEST_HANDSHAKE, token: str = TOKEN
) -> tuple[str, dict[str, Any]]:
    """initialize asking ``version``: the session id and the result."""
    response = post(base_url, initialize_body(version), token=token)
    assert response.status_code == 200, response.text
    session_id = response.headers.get("mcp-session-id")
    assert session_id, response.headers
    result: dict[str, Any] = response.json()["result"]
    return session_id, result


def initialize(base_url: str, version: str = LATEST_HANDSHAKE, token: str = TOKEN) -> str:
    """A new session at ``version`` (asserted); its id."""
    session_id, result = open_session(base_url, version, token)
    assert result["protocolVersion"] == version
    return session_id


@asynccontextmanager
async def sdk_client(base_url: str, mode: str, token: str = TOKEN) -> AsyncIterator[Client]:
    """The official Python SDK's client over Streamable HTTP, in ``mode`` ("legacy": the
    initialize handshake; "2026-07-28": stateless)."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with (
        http,
        Client(streamable_http_client(base_url + "/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def execution_count(database: Path) -> int:
    """Executions recorded so far (read from the gateway's SQLite file)."""
    import sqlite3

    with sqlite3.connect(database) as db:
        count: int = db.execute("SELECT count(*) FROM executions").fetchone()[0]
    return count
