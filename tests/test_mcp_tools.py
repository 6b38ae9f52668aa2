"""The MCP tools, through the official Python SDK client on both protocol generations (the
initialize handshake, and 2026-07-28's stateless requests), against a real gateway on the
local backend: tools listed from the projects, runs to their result, progress, runs longer
than a call may wait, cancel, idempotency, privacy between callers, failures."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.gateway_process import GatewayProcess
from tests.local_projects import group_alive, make_project, wait_for_file
from tests.mcp_support import (
    GENERATIONS,
    GREETING_OUTPUT,
    TOKEN,
    local_env,
    make_projects,
    sdk_client,
)
from tests.native_client import auth

WAIT_SECONDS = 1.5  # what a call waits for its run here (RPA_MCP_WAIT_SECONDS)

CHATTY = """
    import json, time
    for step in range(50):
        print(json.dumps({"event": "progress", "message": f"step {step}", "percent": step * 2}),
              flush=True)
        time.sleep(0.025)
    print(json.dumps({"event": "result", "data": {"steps": 50}}), flush=True)
"""
# Records its process group, then works until it is stopped.
STAYS = """
    import json, os, sys, time
    params = json.load(sys.stdin)
    open(params["pid_file"], "w").write(str(os.getpgid(0)))
    print(json.dumps({"event": "progress", "message": "working"}), flush=True)
    time.sleep(params.get("seconds", 60))
    print(json.dumps({"event": "result", "data": {}}), flush=True)
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("mcp-tools")
    projects = make_projects(workdir / "projects")
    make_project(projects, "chatty", CHATTY)
    make_project(projects, "stays", STAYS)
    env = local_env(projects, RPA_MCP_WAIT_SECONDS=str(WAIT_SECONDS), RPA_LOCAL_MAX_RUNS="16")
    process = GatewayProcess(env, workdir).start()
    yield process
    process.stop()


def structured(result: Any) -> dict[str, Any]:
    content = result.structured_content
    assert isinstance(content, dict), result
    return content


def execution(gateway: GatewayProcess, execution_id: str, token: str = TOKEN) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}", headers=auth(token), timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("mode", GENERATIONS)
def test_every_project_is_a_tool_described_from_its_project_toml(
    gateway: GatewayProcess, mode: str
) -> None:
    async def scenario() -> None:
        async with sdk_client(gateway.base_url, mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"greet", "sleeper", "failing", "chatty", "rpa_run", "rpa_wait"} <= set(tools)
        assert {"rpa_get", "rpa_cancel", "rpa_list", "rpa_logs"} <= set(tools)
        greet = tools["greet"]
        assert greet.title == "greet"
        assert greet.description is not None
        assert greet.description.startswith("Greets a person by name.")
        assert "rpa_wait" in greet.description  # what a model does with a long run
        assert greet.input_schema["required"] == ["name"]
        assert greet.output_schema is not None
        assert greet.output_schema["properties"]["result"] == GREETING_OUTPUT
        assert greet.annotations is not None
        assert greet.annotations.read_only_hint is True
        assert greet.annotations.idempotent_hint is True
        # Without hints, the safe defaults: it may change things, destructively.
        sleeper = tools["sleeper"].annotations
        assert sleeper is not None
        assert (sleeper.read_only_hint, sleeper.destructive_hint) == (False, True)
        assert tools["failing"].input_schema == {"type": "object"}
        assert tools["failing"].output_schema is None

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", GENERATIONS)
def test_a_call_runs_its_project_to_the_result(gateway: GatewayProcess, mode: str) -> None:
    async def scenario() -> Any:
        async with sdk_client(gateway.base_url, mode) as client:
            return await client.call_tool("greet", {"name": "Ada"})

    result = asyncio.run(scenario())
    assert result.is_error is False
    content = structured(result)
    assert content["status"] == "succeeded"
    assert (content["code"], content["result"]) == (0, {"greeting": "Hello, Ada!"})
    # The same execution as the REST API knows it.
    assert execution(gateway, content["execution_id"])["status"] == "SUCCEEDED"


@pytest.mark.parametrize("mode", GENERATIONS)
def test_progress_reaches_the_call_at_most_every_quarter_second(
    gateway: GatewayProcess, mode: str
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def scenario() -> Any:
        async with sdk_client(gateway.base_url, mode) as client:
            started = time.monotonic()
            result = await client.call_tool("chatty", {}, progress_callback=on_progress)
            return result, time.monotonic() - started

    result, took = asyncio.run(scenario())
    assert structured(result)["status"] == "succeeded"
    values = [progress for progress, _, _ in seen]
    assert len(values) >= 2, seen
    assert values == sorted(values) and len(set(values)) == len(values), seen
    assert any(message and message.startswith("step ") for _, _, message in seen)
    assert all(total == 100 for _, total, _ in seen)
    # 50 reports in ~1.3 s (the run passes on one in 0.1 s): one notification per 0.25 s.
    assert len(seen) <= took / 0.25 + 2, (took, seen)


@pytest.mark.parametrize("mode", GENERATIONS)
def test_a_run_longer_than_the_wait_returns_its_id_and_rpa_wait_its_result(
    gateway: GatewayProcess, mode: str
) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        async with sdk_client(gateway.base_url, mode) as client:
            started = time.monotonic()
            first = await client.call_tool("sleeper", {"seconds": 3})
            waited = time.monotonic() - started
            assert WAIT_SECONDS - 0.1 <= waited < WAIT_SECONDS + 5, waited
            execution_id = structured(first)["execution_id"]
            looked = await client.call_tool("rpa_get", {"execution_id": execution_id})
            ended = await client.call_tool(
                "rpa_wait", {"execution_id": execution_id, "wait_seconds": 30}
            )
            return first, looked, ended

    first, looked, ended = asyncio.run(scenario())
    running = structured(first)
    assert first.is_error is False
    assert running["status"] == "running"
    assert "rpa_wait" in first.content[0].text and running["execution_id"] in first.content[0].text
    assert structured(looked)["status"] in ("running", "succeeded")
    done = structured(ended)
    assert done["execution_id"] == running["execution_id"]
    assert (done["status"], done["result"]) == ("succeeded", {"slept": 3})


@pytest.mark.parametrize("mode", GENERATIONS)
def test_rpa_cancel_stops_the_robot(gateway: GatewayProcess, mode: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pgid"

    async def scenario() -> tuple[Any, Any]:
        async with sdk_client(gateway.base_url, mode) as client:
            started = await client.call_tool(
                "rpa_run",
                {"project_id": "stays", "params": {"pid_file": str(pid_file)}, "wait_seconds": 0},
            )
            execution_id = structured(started)["execution_id"]
            await asyncio.to_thread(wait_for_file, pid_file)
            cancelled = await client.call_tool("rpa_cancel", {"execution_id": execution_id})
            return started, cancelled

    started, cancelled = asyncio.run(scenario())
    assert structured(started)["status"] == "running"
    ended = structured(cancelled)
    assert (ended["status"], ended["code"]) == ("cancelled", 55004)
    assert cancelled.is_error is False  # the cancel did what it was asked
    assert execution(gateway, ended["execution_id"])["status"] == "CANCELLED"
    pgid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_alive(pgid) == []


@pytest.mark.parametrize("mode", GENERATIONS)
def test_an_idempotency_key_returns_the_same_run_through_mcp_and_rest(
    gateway: GatewayProcess, mode: str
) -> None:
    key = f"key-{mode}-{time.time_ns()}"
    name = f"Bo {time.time_ns()}"  # this test's own runs, whatever ran before on the gateway
    arguments = {"project_id": "greet", "params": {"name": name}, "idempotency_key": key}

    async def scenario() -> tuple[Any, Any, Any]:
        async with sdk_client(gateway.base_url, mode) as client:
            first = await client.call_tool("rpa_run", arguments)
            again = await client.call_tool("rpa_run", arguments)
            other = await client.call_tool(
                "rpa_run", {**arguments, "params": {"name": "somebody else"}}
            )
            return first, again, other

    first, again, other = asyncio.run(scenario())
    execution_id = structured(first)["execution_id"]
    assert structured(again)["execution_id"] == execution_id
    assert structured(again)["result"] == {"greeting": f"Hello, {name}!"}
    assert other.is_error is True
    assert "idempotency_key" in other.content[0].text
    rest = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions",
        json={"project_id": "greet", "params": {"name": name}},
        headers={**auth(TOKEN), "Idempotency-Key": key},
        timeout=10,
    )
    assert rest.status_code == 202, rest.text
    assert rest.json()["id"] == execution_id
    listed = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions",
        params={"project_id": "greet", "limit": 200},
        headers=auth(TOKEN),
        timeout=10,
    ).json()["items"]
    assert sum(1 for item in listed if item["params"] == {"name": name}) == 1


@pytest.mark.parametrize("mode", GENERATIONS)
def test_another_callers_execution_is_not_found(gateway: GatewayProcess, mode: str) -> None:
    async def scenario() -> tuple[str, list[Any], Any]:
        async with sdk_client(gateway.base_url, mode, token="owner") as owner:
            created = await owner.call_tool("greet", {"name": "Cy"})
        execution_id = structured(created)["execution_id"]
        async with sdk_client(gateway.base_url, mode, token="stranger") as stranger:
            refused = [
                await stranger.call_tool(tool, {"execution_id": execution_id})
                for tool in ("rpa_get", "rpa_wait", "rpa_cancel", "rpa_logs")
            ]
            listed = await stranger.call_tool("rpa_list", {"limit": 200})
        return execution_id, refused, listed

    execution_id, refused, listed = asyncio.run(scenario())
    for result in refused:
        assert result.is_error is True
        assert "no execution" in result.content[0].text
    assert execution_id not in str(structured(listed))
    assert execution(gateway, execution_id, token="owner")["status"] == "SUCCEEDED"


@pytest.mark.parametrize("mode", GENERATIONS)
def test_a_failed_run_is_a_tool_error_with_its_code_first(
    gateway: GatewayProcess, mode: str
) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with sdk_client(gateway.base_url, mode) as client:
            failed = await client.call_tool("failing", {})
            broken = await client.call_tool("bad_output", {})
            return failed, broken

    failed, broken = asyncio.run(scenario())
    assert failed.is_error is True
    text = failed.content[0].text
    assert text.startswith("FAILED (code 55002): ")
    assert "could not find the button" in text.splitlines()[0]
    assert structured(failed)["code"] == 55002
    # A result that breaks the project's output schema is a failed run, not a success.
    assert broken.is_error is True
    assert structured(broken)["code"] == 55002
    assert "output_schema" in structured(broken)["message"]
    assert "result.greeting" in structured(broken)["message"]
    assert execution(gateway, structured(broken)["execution_id"])["status"] == "FAILED"


def test_a_cancelled_call_ends_the_wait_not_the_robot(gateway: GatewayProcess) -> None:
    """The SDK client sends notifications/cancelled when a call times out on its side."""

    async def scenario() -> str:
        async with sdk_client(gateway.base_url, "legacy") as client:
            with pytest.raises(MCPError):
                await client.call_tool(
                    "rpa_run",
                    {"project_id": "sleeper", "params": {"seconds": 2}, "wait_seconds": 30},
                    read_timeout_seconds=0.5,
                )
            listed = await client.call_tool("rpa_list", {"project_id": "sleeper", "limit": 1})
            newest: str = structured(listed)["executions"][0]["execution_id"]
            return newest

    execution_id = asyncio.run(scenario())
    deadline = time.monotonic() + 20
    while execution(gateway, execution_id)["status"] != "SUCCEEDED":
        assert time.monotonic() < deadline, execution(gateway, execution_id)
        time.sleep(0.1)
    log = gateway.log_text()
    assert "cancelled by its client" in log


def test_tool_names_come_from_ids_alone_and_never_move_to_another_project(
    tmp_path: Path,
) -> None:
    projects = tmp_path / "projects"
    long_id = "a" * 70
    result = 'print(\'{"event": "result", "data": {}}\')'
    for project_id in ("rpa_run", "x.y", long_id, long_id + "b", "plain-name_1"):
        make_project(projects, project_id, result)

    def names() -> dict[str, str]:
        gateway = GatewayProcess(local_env(projects), tmp_path / f"gw{time.time_ns()}")
        gateway.workdir.mkdir()
        gateway.start()
        try:

            async def scenario() -> dict[str, str]:
                async with sdk_client(gateway.base_url, "legacy") as client:
                    tools = (await client.list_tools()).tools
                    ran = await client.call_tool("plain-name_1", {})
                    assert structured(ran)["project_id"] == "plain-name_1"
                generic = {"rpa_run", "rpa_get", "rpa_wait", "rpa_cancel", "rpa_list", "rpa_logs"}
                return {t.title or "": t.name for t in tools if t.name not in generic}

            return asyncio.run(scenario())
        finally:
            gateway.stop()

    first = names()
    assert first["plain-name_1"] == "plain-name_1"  # a valid name already: itself
    assert first["x.y"].startswith("x_y_") and len(first["x.y"]) == len("x_y_") + 8
    assert len({first[long_id], first[long_id + "b"]}) == 2
    assert all(len(name) <= 64 for name in first.values())
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in first.values())
    # A project never shadows a generic tool: rpa_run is the generic tool, still.
    assert first["rpa_run"].startswith("rpa_run_")
    # A folder named like another project's tool takes nothing from it.
    make_project(projects, "x_y", result)
    again = names()
    assert {title: again[title] for title in first} == first
    assert again["x_y"] == "x_y"
