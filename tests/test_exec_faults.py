"""Upstream faults: queries are retried, creates are never duplicated, every stream ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

import pytest

from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import QUERY_PATH, FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess, free_port
from tests.sse_client import exec_stream
from tests.store_reader import execution_row

QUERY_FAULTS = ["http500", "html502", "malformed", "reset", "slow", "code5001"]


@pytest.mark.parametrize("fault", QUERY_FAULTS)
def test_transient_query_fault_is_retried_to_success(
    gateway: GatewayProcess, fake: FakeUpstream, fault: str
) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"fault": fault, "seconds": 2},
            {"fault": fault, "seconds": 2},
            {"status": "COMPLETED", "result": {"data": {"survived": fault}}},
        ],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal == {
        "code": 0,
        "message": "Success",
        "sid": "s",
        "data": {"survived": fault},
    }
    assert fake.creates_for(pid) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http500", "HTTP 500: reply is not JSON"),
        ("html502", "HTTP 502: reply is not JSON (<html><body><h1>502 Bad Gateway"),
        ("malformed", "HTTP 200: reply is not JSON"),
        ("reset", "connection failed"),
        ("slow", "timed out"),
        ("code5001", "Execution not found"),
    ],
)
def test_persistent_query_fault_fails_with_55002_naming_the_reason(
    gateway: GatewayProcess, fake: FakeUpstream, fault: str, reason: str
) -> None:
    pid = new_project_id()
    fake.script(pid, steps=[{"fault": fault, "seconds": 2}])
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55002
    assert result.terminal["message"].startswith("Query task error: ")
    assert reason in result.terminal["message"]
    row = execution_row(gateway.database, result.ids[0].rsplit(":", 1)[0])
    assert row is not None
    assert row["polls"] == 3, "RPA_QUERY_MAX_FAILURES=3 consecutive faults end it"
    assert fake.creates_for(pid) == 1


def test_faults_must_be_consecutive_to_fail(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        steps=[
            {"fault": "http500"},
            {"fault": "reset"},
            {"status": "PENDING"},
            {"fault": "html502"},
            {"fault": "malformed"},
            {"status": "RUNNING"},
            {"status": "COMPLETED", "result": {"data": {"n": 1}}},
        ],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 0


@pytest.mark.parametrize(
    ("create", "detail"),
    [
        (
            {"fault": "code5001", "msg": "Workflow with project_id X not found"},
            "Workflow with project_id X not found",
        ),
        ({"fault": "http500"}, "HTTP 500"),
        ({"fault": "html502"}, "HTTP 502"),
        ({"fault": "malformed"}, "reply is not JSON"),
        ({"fault": "reset"}, "connection failed"),
        ({"fault": "slow", "seconds": 2}, "timed out"),
        ({"fault": "unauthorized"}, "the platform rejected the key (HTTP 401: Invalid API key)"),
    ],
)
def test_create_failure_is_55001_and_never_retried(
    gateway: GatewayProcess, fake: FakeUpstream, create: dict[str, object], detail: str
) -> None:
    pid = new_project_id()
    fake.script(pid, create=create)
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55001
    assert result.terminal["message"].startswith("Create task error, detail: ")
    assert detail in result.terminal["message"]
    assert fake.creates_for(pid) == 1, "a create that may have reached upstream is not repeated"


def test_unreachable_upstream_is_retried_then_55001(start_gateway: GatewayFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(
        upstream=False,
        XIAOWU_RPA_TASK_CREATE_URL=closed + "/create",
        XIAOWU_RPA_TASK_QUERY_URL=closed + "/query",
        RPA_CREATE_CONNECT_RETRIES="2",
    )
    result = exec_stream(gateway.base_url, {"project_id": "p", "sid": "s"})
    assert result.terminal["code"] == 55001
    assert "cannot connect to the RPA platform" in result.terminal["message"]
    assert gateway.log_text().count("create failed") == 1
    row = execution_row(gateway.database, result.ids[0].rsplit(":", 1)[0])
    assert row is not None
    assert row["retries"] == 2, "a connection that never opened is safe to retry"


def test_upstream_execution_id_is_escaped_in_the_query_path(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        create={"execution_id": "../admin?x=1#frag"},
        steps=[{"status": "COMPLETED", "result": {"data": {}}}],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 0
    (path,) = [p for p in fake.query_paths if "admin" in p]
    segment = path.removeprefix(QUERY_PATH + "/")
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert unquote(segment) == "../admin?x=1#frag"


def test_a_fault_inside_the_stream_ends_it_with_a_non_zero_frame() -> None:
    """In-process: no fault can be provoked there over the wire on cue.  A stream whose
    events fail mid-way must not just close (an HTTP/1.0 close is a clean end, which
    astron-agent's node, reading only data frames, would take for success)."""
    import asyncio
    import json

    from rpa_gateway.api import compat_wire
    from rpa_gateway.executions import Event, EventKind

    async def failing() -> AsyncIterator[Event]:
        yield Event("x", 1, EventKind.STATE, {"status": "RUNNING"}, 0.0)
        raise RuntimeError("a bug")

    async def frames() -> list[bytes]:
        rendered = compat_wire.render(
            failing(), "s-1", with_progress=False, retry_ms=1000, last_event_id="", max_line=4096
        )
        return [frame async for frame in rendered]

    sent = b"".join(asyncio.run(frames())).decode()
    data = [json.loads(line[5:]) for line in sent.splitlines() if line.startswith("data:")]
    assert [(d["code"], d["sid"]) for d in data] == [(55999, "s-1")], sent
