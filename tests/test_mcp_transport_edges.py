"""The MCP transports at their edges, over real sockets: cancels scoped to a session, the
HTTP+SSE stream's URL, batches, versions and sessions per transport, what a shutdown waits
for, CORS for an allowed browser origin, task parameters, ``Mcp-Param-*`` headers."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway_process import GatewayProcess
from tests.local_projects import make_project
from tests.mcp_support import (
    TOKEN,
    execution_count,
    headers,
    initialize,
    initialize_body,
    local_env,
    make_projects,
    messages,
    modern_call,
    post,
)

ORIGIN = "https://app.example.com"
REGION_TOOL = """
    import json, sys
    params = json.load(sys.stdin)
    print(json.dumps({"event": "result", "data": {"region": params["region"]}}))
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("mcp-edges")
    projects = make_projects(root / "projects")
    make_project(
        projects,
        "regional",
        REGION_TOOL,
        schema={
            "type": "object",
            "required": ["region"],
            "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
        },
    )
    env = local_env(projects, RPA_MCP_WAIT_SECONDS="60", RPA_MCP_ALLOWED_ORIGINS=ORIGIN)
    (root / "gw").mkdir()
    process = GatewayProcess(env, root / "gw").start()
    yield process
    process.stop()


def run_call(request_id: int, seconds: float) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "rpa_run",
            "arguments": {"project_id": "sleeper", "params": {"seconds": seconds}},
        },
    }


def test_a_cancel_without_a_session_ends_nobody_s_call(gateway: GatewayProcess) -> None:
    """Two clients sharing a key both use id 1: a sessionless cancel cannot say whose it is."""
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(post(gateway.base_url, run_call(1, 1.5), timeout=60))

    runs_before = gateway.log_text().count("accepted: project sleeper")
    callers = [threading.Thread(target=call) for _ in range(2)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 20  # both under way: a cancel before them proves nothing
    while gateway.log_text().count("accepted: project sleeper") < runs_before + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    assert post(gateway.base_url, cancel).status_code == 202
    for caller in callers:
        caller.join(60)
    results = [messages(response)[-1] for response in answers]
    assert [r["result"]["structuredContent"]["status"] for r in results] == ["succeeded"] * 2


def test_a_cancel_in_a_session_ends_only_that_session_s_call(gateway: GatewayProcess) -> None:
    mine, theirs = initialize(gateway.base_url), initialize(gateway.base_url)
    answers: dict[str, httpx.Response] = {}

    def call(session: str) -> None:
        extra = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        answers[session] = post(gateway.base_url, run_call(1, 2), extra=extra, timeout=60)

    runs_before = gateway.log_text().count("accepted: project sleeper")
    callers = [threading.Thread(target=call, args=(s,)) for s in (mine, theirs)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 20
    while gateway.log_text().count("accepted: project sleeper") < runs_before + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    extra = {"Mcp-Session-Id": mine, "MCP-Protocol-Version": "2025-11-25"}
    assert post(gateway.base_url, cancel, extra=extra).status_code == 202
    for caller in callers:
        caller.join(60)
    assert all("result" not in m for m in messages(answers[mine]))  # ended without a result
    assert messages(answers[theirs])[-1]["result"]["structuredContent"]["status"] == "succeeded"


def sse_endpoint(lines: Iterator[str]) -> str:
    return next(line for line in lines if line.startswith("data:"))[5:].strip()


def next_message(lines: Iterator[str]) -> Any:
    return json.loads(next(line for line in lines if line.startswith("data:"))[5:])


def test_the_sse_endpoint_resolves_against_the_url_as_written(gateway: GatewayProcess) -> None:
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("GET", "/mcp/sse/", headers=headers()) as stream,
    ):
        lines = stream.iter_lines()
        endpoint = sse_endpoint(lines)
        assert endpoint.startswith("../messages/?session_id="), endpoint
        url = str(httpx.URL(gateway.base_url + "/mcp/sse/").join(endpoint))
        posted = client.post(
            url, json={"jsonrpc": "2.0", "id": 5, "method": "ping"}, headers=headers()
        )
        assert posted.status_code == 202, posted.text
        assert next_message(lines) == {"jsonrpc": "2.0", "id": 5, "result": {}}


def test_sse_initialize_is_capped_batches_stay_arrays_and_sessions_stay_put(
    gateway: GatewayProcess,
) -> None:
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("GET", "/mcp/sse", headers=headers()) as stream,
    ):
        lines = stream.iter_lines()
        path = "/mcp/" + sse_endpoint(lines)
        session_id = path.split("session_id=", 1)[1]
        init = initialize_body("2025-11-25", request_id=1)
        assert client.post(path, json=init, headers=headers()).status_code == 202
        result = next_message(lines)["result"]
        assert result["protocolVersion"] == "2025-03-26"  # this transport's newest
        assert "tasks" not in result["capabilities"]
        one = [{"jsonrpc": "2.0", "id": 2, "method": "ping"}]
        assert client.post(path, json=one, headers=headers()).status_code == 202
        assert next_message(lines) == [{"jsonrpc": "2.0", "id": 2, "result": {}}]  # an array
        # A session belongs to its transport: this one is unknown to /mcp.
        elsewhere = post(
            gateway.base_url,
            {"jsonrpc": "2.0", "id": 3, "method": "ping"},
            extra={"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-03-26"},
        )
        assert elsewhere.status_code == 404
    http_session = initialize(gateway.base_url)
    refused = post(
        gateway.base_url,
        {"jsonrpc": "2.0", "id": 4, "method": "ping"},
        path=f"/mcp/messages/?session_id={http_session}",
    )
    assert refused.status_code == 404


@pytest.mark.parametrize(("version", "tasks"), [("2025-06-18", False), ("2025-11-25", True)])
def test_the_tasks_utility_is_announced_only_where_it_exists(
    gateway: GatewayProcess, version: str, tasks: bool
) -> None:
    response = post(gateway.base_url, initialize_body(version, request_id=1))
    assert ("tasks" in response.json()["result"]["capabilities"]) is tasks


def test_a_malformed_task_parameter_starts_nothing(gateway: GatewayProcess) -> None:
    session = initialize(gateway.base_url)
    before = execution_count(gateway.database)
    for task in (5, "soon", {"ttl": "long"}):
        response = post(
            gateway.base_url,
            {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "tools/call",
                "params": {"name": "greet", "arguments": {"name": "Al"}, "task": task},
            },
            extra={"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"},
        )
        assert response.json()["error"]["code"] == -32602, (task, response.text)
    assert execution_count(gateway.database) == before


def test_2026_mcp_param_headers_must_carry_what_the_schema_names(
    gateway: GatewayProcess,
) -> None:
    missing = modern_call(
        gateway.base_url, "tools/call", name="regional", arguments={"region": "eu"}
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == -32020
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
            "name": "regional",
            "arguments": {"region": "eu"},
        },
    }
    extra = {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "regional",
    }
    wrong = post(gateway.base_url, body, extra={**extra, "Mcp-Param-Region": "us"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == -32020
    right = post(gateway.base_url, body, extra={**extra, "Mcp-Param-Region": "eu"})
    assert messages(right)[-1]["result"]["structuredContent"]["result"] == {"region": "eu"}


def test_an_allowed_browser_origin_gets_what_cors_needs(gateway: GatewayProcess) -> None:
    preflight = httpx.options(
        gateway.base_url + "/mcp",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "mcp-session-id" in preflight.headers["access-control-allow-headers"].lower()
    answered = post(
        gateway.base_url, initialize_body("2025-11-25", request_id=1), extra={"Origin": ORIGIN}
    )
    assert answered.headers["access-control-allow-origin"] == ORIGIN
    assert "mcp-session-id" in answered.headers["access-control-expose-headers"].lower()
    other = httpx.options(
        gateway.base_url + "/mcp", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


def test_an_idle_sse_stream_does_not_hold_up_a_shutdown(tmp_path: Path) -> None:
    projects = make_projects(tmp_path / "projects")
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(local_env(projects, RPA_DRAIN_SECONDS="60"), tmp_path / "gw")
    gateway.start()
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("GET", "/mcp/sse", headers={"Authorization": f"Bearer {TOKEN}"}) as stream,
    ):
        lines = stream.iter_lines()
        assert sse_endpoint(lines).startswith("messages/")
        started = time.monotonic()
        assert gateway.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 15  # not the 60 s drain
        rest = list(lines)  # ends: the stream closed with the service (else a read timeout)
        assert not any(line.startswith("data:") for line in rest), rest
