"""MCP tasks are executions: the 2025-11-25 tasks utility and the 2026-07-28 tasks extension,
over raw JSON-RPC (the SDK clients do not drive tasks), against a real gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway_process import GatewayProcess
from tests.mcp_support import (
    TOKEN,
    initialize,
    initialize_body,
    local_env,
    make_projects,
    messages,
    modern_call,
    post,
)
from tests.native_client import auth

TASKS = {"extensions": {"io.modelcontextprotocol/tasks": {}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("mcp-tasks")
    env = local_env(make_projects(workdir / "projects"), RPA_MCP_WAIT_SECONDS="1")
    process = GatewayProcess(env, workdir).start()
    yield process
    process.stop()


class Session:
    """A 2025-11-25 session over raw JSON-RPC."""

    def __init__(self, gateway: GatewayProcess, token: str = TOKEN) -> None:
        self.base_url = gateway.base_url
        self.token = token
        self.id = initialize(self.base_url, "2025-11-25", token=token)
        self.next_id = 1

    def call(self, method: str, params: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        response = post(
            self.base_url,
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params},
            token=self.token,
            extra={"Mcp-Session-Id": self.id, "MCP-Protocol-Version": "2025-11-25"},
            timeout=timeout,
        )
        assert response.status_code == 200, response.text
        answer = messages(response)[-1]
        assert answer["id"] == self.next_id
        return answer


def status_of(gateway: GatewayProcess, execution_id: str) -> str:
    response = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}", headers=auth(TOKEN), timeout=10
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def test_2025_11_25_server_announces_tasks_and_tools_say_which_take_them(
    gateway: GatewayProcess,
) -> None:
    response = post(gateway.base_url, initialize_body("2025-11-25", request_id=1))
    capabilities = response.json()["result"]["capabilities"]
    assert capabilities["tasks"]["requests"] == {"tools": {"call": {}}}
    assert {"list", "cancel"} <= set(capabilities["tasks"])
    session = Session(gateway)
    tools = {t["name"]: t for t in session.call("tools/list", {})["result"]["tools"]}
    assert tools["sleeper"]["execution"] == {"taskSupport": "optional"}
    assert tools["rpa_run"]["execution"] == {"taskSupport": "optional"}
    assert "execution" not in tools["rpa_get"]  # absent: forbidden


def test_2025_11_25_a_task_is_the_execution_from_start_to_result(gateway: GatewayProcess) -> None:
    session = Session(gateway)
    started = time.monotonic()
    created = session.call(
        "tools/call", {"name": "sleeper", "arguments": {"seconds": 1.5}, "task": {"ttl": 60000}}
    )
    assert time.monotonic() - started < 1.0  # at once, not after the run
    task = created["result"]["task"]
    assert task["status"] == "working"
    assert {"createdAt", "lastUpdatedAt", "ttl", "pollInterval"} <= set(task)
    task_id = task["taskId"]
    assert status_of(gateway, task_id) in ("ACCEPTED", "PENDING", "RUNNING")  # an execution
    got = session.call("tasks/get", {"taskId": task_id})["result"]
    assert got["taskId"] == task_id and got["status"] == "working"
    listed = session.call("tasks/list", {})["result"]["tasks"]
    assert task_id in [t["taskId"] for t in listed]
    result = session.call("tasks/result", {"taskId": task_id})["result"]  # blocks to the end
    assert result["isError"] is False
    assert result["structuredContent"]["result"] == {"slept": 1.5}
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert session.call("tasks/get", {"taskId": task_id})["result"]["status"] == "completed"


def test_2025_11_25_tasks_cancel_stops_the_run_once(gateway: GatewayProcess) -> None:
    session = Session(gateway)
    created = session.call(
        "tools/call", {"name": "sleeper", "arguments": {"seconds": 30}, "task": {}}
    )
    task_id = created["result"]["task"]["taskId"]
    cancelled = session.call("tasks/cancel", {"taskId": task_id})["result"]
    assert cancelled["status"] == "cancelled"
    assert status_of(gateway, task_id) == "CANCELLED"
    again = session.call("tasks/cancel", {"taskId": task_id})
    assert again["error"]["code"] == -32602  # a terminal task cannot be cancelled
    failed = session.call("tools/call", {"name": "failing", "arguments": {}, "task": {}})
    failed_id = failed["result"]["task"]["taskId"]
    deadline = time.monotonic() + 20
    while session.call("tasks/get", {"taskId": failed_id})["result"]["status"] == "working":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert session.call("tasks/get", {"taskId": failed_id})["result"]["status"] == "failed"


def test_2025_11_25_task_refusals(gateway: GatewayProcess) -> None:
    session = Session(gateway)
    forbidden = session.call(
        "tools/call", {"name": "rpa_get", "arguments": {"execution_id": "x"}, "task": {}}
    )
    assert forbidden["error"]["code"] == -32601
    unknown = session.call("tasks/get", {"taskId": "no-such-task"})
    assert unknown["error"]["code"] == -32602
    mine = session.call(
        "tools/call", {"name": "sleeper", "arguments": {"seconds": 0.2}, "task": {}}
    )
    task_id = mine["result"]["task"]["taskId"]
    stranger = Session(gateway, token="another-callers-key")
    assert stranger.call("tasks/get", {"taskId": task_id})["error"]["code"] == -32602
    assert task_id not in str(stranger.call("tasks/list", {}))


def test_2026_a_task_capable_client_gets_a_task_for_a_long_run(gateway: GatewayProcess) -> None:
    quick = modern_call(
        gateway.base_url,
        "tools/call",
        name="greet",
        arguments={"name": "Di"},
        capabilities=TASKS,
    )
    answer = messages(quick)[-1]["result"]
    assert answer["resultType"] == "complete"  # it ended within the grace: a plain result
    assert answer["structuredContent"]["result"] == {"greeting": "Hello, Di!"}

    slow = modern_call(
        gateway.base_url,
        "tools/call",
        name="sleeper",
        arguments={"seconds": 2.5},
        capabilities=TASKS,
    )
    task = messages(slow)[-1]["result"]
    assert task["resultType"] == "task"
    assert task["status"] == "working"
    assert {"ttlMs", "pollIntervalMs", "createdAt"} <= set(task)
    task_id = task["taskId"]

    def get() -> dict[str, Any]:
        response = modern_call(gateway.base_url, "tasks/get", taskId=task_id, capabilities=TASKS)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        return result

    assert get()["status"] == "working"
    deadline = time.monotonic() + 20
    while (got := get())["status"] == "working":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert got["status"] == "completed"
    assert got["result"]["structuredContent"]["result"] == {"slept": 2.5}


def test_2026_tasks_cancel_and_the_extensions_rules(gateway: GatewayProcess) -> None:
    slow = modern_call(
        gateway.base_url,
        "tools/call",
        name="sleeper",
        arguments={"seconds": 30},
        capabilities=TASKS,
    )
    task_id = messages(slow)[-1]["result"]["taskId"]
    cancel = modern_call(gateway.base_url, "tasks/cancel", taskId=task_id, capabilities=TASKS)
    assert cancel.json()["result"]["resultType"] == "complete"
    assert status_of(gateway, task_id) == "CANCELLED"
    got = modern_call(gateway.base_url, "tasks/get", taskId=task_id, capabilities=TASKS)
    assert got.json()["result"]["status"] == "cancelled"
    # Without the extension in the request's capabilities: refused, saying what is missing.
    bare = modern_call(gateway.base_url, "tasks/get", taskId=task_id)
    assert bare.status_code == 400
    assert bare.json()["error"]["code"] == -32021
    # The extension has no tasks/result nor tasks/list.
    for method in ("tasks/result", "tasks/list"):
        params: dict[str, Any] = {"taskId": task_id} if method == "tasks/result" else {}
        response = modern_call(gateway.base_url, method, capabilities=TASKS, **params)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == -32601
    # A client without the extension gets the plain "running" answer and the id to wait on.
    plain = modern_call(gateway.base_url, "tools/call", name="sleeper", arguments={"seconds": 3})
    result = messages(plain)[-1]["result"]
    assert result["structuredContent"]["status"] == "running"
    assert result["resultType"] == "complete"
