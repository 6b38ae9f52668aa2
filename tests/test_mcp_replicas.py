"""MCP across replicas: two gateways on one Redis, behind nginx (the shipped configuration) or
addressed one by one, driving runs on the scripted upstream.  Nothing of a client lives in
one process: a session opened on one replica is good on the other and ended on either; a
wait on one replica for a run the other drives ends when the run ends; an HTTP+SSE
stream held by one replica gets the answers of messages posted to the other."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rpa_gateway.security import new_key
from tests.conftest import FAST
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.mcp_support import (
    GENERATIONS,
    TOKEN,
    headers,
    initialize,
    messages,
    post,
    sdk_client,
)
from tests.nginx_proxy import NginxProxy
from tests.redis_servers import RedisServer


class Pair:
    def __init__(self, workdir: Path, fake: FakeUpstream, redis: RedisServer) -> None:
        env = {
            **FAST,
            **fake.env(),
            "LOG_LEVEL": "INFO",
            "REDIS_ADDR": redis.addr,
            "RPA_TOKEN_KEY": new_key(),
            "RPA_MCP_WAIT_SECONDS": "1",
            "XIAOWU_RPA_PING_INTERVAL": "0.5",
        }
        self.replicas = []
        for index in range(2):
            (workdir / f"replica{index}").mkdir()
            self.replicas.append(GatewayProcess(env, workdir / f"replica{index}"))
        self.nginx = NginxProxy(workdir / "nginx", [r.port for r in self.replicas])

    def start(self) -> Pair:
        for replica in self.replicas:
            replica.start()
        self.nginx.start()
        return self

    def stop(self) -> None:
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop(signal.SIGTERM)

    def calls_answered(self) -> list[int]:
        """MCP tool calls each replica answered (from their logs)."""
        return [replica.log_text().count("MCP call ") for replica in self.replicas]


@pytest.fixture
def pair(tmp_path: Path, fake: FakeUpstream) -> Iterator[Pair]:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    started = Pair(tmp_path, fake, redis).start()
    yield started
    started.stop()
    redis.stop()


def call(base_url: str, session: str, request_id: int, name: str, arguments: Any) -> Any:
    response = post(
        base_url,
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        },
        extra={"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert response.status_code == 200, response.text
    return messages(response)[-1]["result"]["structuredContent"]


def test_a_session_and_a_wait_span_replicas(pair: Pair, fake: FakeUpstream) -> None:
    project = new_project_id()
    fake.script(project, duration=3.0)
    first, second = (replica.base_url for replica in pair.replicas)
    session = initialize(first)
    # Started on the first replica, which drives it; waited for on the second.
    running = call(first, session, 1, "rpa_run", {"project_id": project, "params": {"n": 1}})
    assert running["status"] == "running"
    ended = call(
        second,
        session,
        2,
        "rpa_wait",
        {"execution_id": running["execution_id"], "wait_seconds": 20},
    )
    assert (ended["status"], ended["code"]) == ("succeeded", 0)
    assert ended["result"]["params"] == {"n": 1}
    # Ended on the second: unknown on the first as well.
    deleted = httpx.delete(
        second + "/mcp", headers={**headers(), "Mcp-Session-Id": session}, timeout=10
    )
    assert deleted.status_code == 204
    gone = post(
        first,
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        extra={"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert gone.status_code == 404


def test_a_cancel_reaches_the_replica_answering_the_call(pair: Pair, fake: FakeUpstream) -> None:
    project = new_project_id()
    fake.script(project, duration=6.0)
    first, second = (replica.base_url for replica in pair.replicas)
    session = initialize(first)
    extra = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    answered: dict[str, Any] = {}

    def long_call() -> None:
        answered["response"] = post(
            first,
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {
                    "name": "rpa_run",
                    "arguments": {"project_id": project, "wait_seconds": 60},
                },
            },
            extra=extra,
            timeout=60,
        )

    caller = threading.Thread(target=long_call)
    caller.start()
    fake.wait_for_creates(project, 1, timeout=30)
    cancel = post(
        second,
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}},
        extra=extra,
    )
    assert cancel.status_code == 202
    caller.join(20)
    assert not caller.is_alive(), "the cancelled call is still waiting"
    assert "cancelled by its client" in pair.replicas[0].log_text()
    # No result for a cancelled request: a stream ends without one, a JSON answer says so.
    for message in messages(answered["response"]):
        assert message["error"]["code"] == -32800, message
    # The run goes on: a cancel ends the wait, not the robot.
    listed = call(second, session, 8, "rpa_list", {"project_id": project})
    (only,) = listed["executions"]
    ended = call(second, session, 9, "rpa_wait", {"execution_id": only["execution_id"]})
    assert ended["status"] in ("running", "succeeded")
    assert not any(run.cancelled for run in fake.runs_for(project))


def test_an_sse_stream_gets_answers_posted_to_the_other_replica(pair: Pair) -> None:
    first, second = (replica.base_url for replica in pair.replicas)

    async def scenario() -> list[dict[str, Any]]:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", first + "/mcp/sse", headers=headers()) as stream,
        ):
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            endpoint = await _event(lines, "endpoint")
            assert endpoint.startswith("messages/?session_id=")
            url = f"{second}/mcp/{endpoint}"
            received = []
            for request_id, method in enumerate(("initialize", "tools/list", "ping"), 1):
                params: dict[str, Any] = (
                    {
                        "protocolVersion": "2024-11-05",
                        "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"},
                    }
                    if method == "initialize"
                    else {}
                )
                posted = await client.post(
                    url,
                    json={"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
                    headers=headers(),
                )
                assert posted.status_code == 202, posted.text
                received.append(json.loads(await _event(lines, "message")))
            return received

    received = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [m["id"] for m in received] == [1, 2, 3]
    assert received[0]["result"]["protocolVersion"] == "2024-11-05"
    assert "rpa_run" in [t["name"] for t in received[1]["result"]["tools"]]


async def _event(lines: Any, name: str) -> str:
    event = None
    async for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event == name:
            return str(line.split(":", 1)[1].strip())
    raise AssertionError(f"the stream ended before a {name} event")


@pytest.mark.parametrize("mode", GENERATIONS)
def test_the_sdk_client_through_nginx(pair: Pair, fake: FakeUpstream, mode: str) -> None:
    project = new_project_id()
    fake.script(project, duration=2.5)

    async def scenario() -> tuple[Any, Any]:
        async with sdk_client(pair.nginx.base_url, mode, token=TOKEN) as client:
            running = await client.call_tool("rpa_run", {"project_id": project, "params": {"n": 2}})
            execution_id = running.structured_content["execution_id"]
            for _ in range(3):  # spread over both replicas by nginx
                await client.call_tool("rpa_get", {"execution_id": execution_id})
            ended = await client.call_tool(
                "rpa_wait", {"execution_id": execution_id, "wait_seconds": 20}
            )
            return running, ended

    running, ended = asyncio.run(scenario())
    assert running.structured_content["status"] == "running"
    assert ended.structured_content["status"] == "succeeded"
    assert ended.structured_content["result"]["params"] == {"n": 2}
    assert all(count > 0 for count in pair.calls_answered()), pair.calls_answered()
