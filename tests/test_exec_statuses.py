"""Every upstream status ends the stream with exactly one terminal frame of the right code."""

from __future__ import annotations

import pytest

from tests.conftest import ON_BOTH_STORES
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream

pytestmark = ON_BOTH_STORES


def test_completed_run_returns_result_data_as_outputs(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {
                "status": "COMPLETED",
                "result": {"data": {"answer": 42}, "ignored": True},
                "error": "noise alongside success",
            },
        ],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "wf-1", "params": {"q": 1}})
    assert result.status_code == 200
    assert result.terminal == {
        "code": 0,
        "message": "Success",
        "sid": "wf-1",
        "data": {"answer": 42},
    }
    assert result.workflow_node_outputs() == {"answer": 42}
    assert fake.creates_for(pid) == 1


def test_completed_without_outputs_gives_empty_object(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": None}])
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 0
    assert result.terminal["data"] == {}


def test_failed_run_reports_upstream_error(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = new_project_id()
    fake.script(
        pid, steps=[{"status": "PENDING"}, {"status": "FAILED", "error": "robot crashed on step 3"}]
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55002
    assert result.terminal["message"] == "Query task error: robot crashed on step 3"
    with pytest.raises(RuntimeError, match="robot crashed"):
        result.workflow_node_outputs()


def test_cancelled_upstream_gets_its_own_code(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "RUNNING"}, {"status": "CANCELLED"}])
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55004
    assert result.terminal["message"].startswith("Task cancelled")


def test_running_and_unknown_statuses_keep_waiting(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {"status": "RUNNING"},
            {"status": "PAUSED_BY_OPERATOR"},
            {"status": "COMPLETED", "result": {"data": {"ok": True}}},
        ],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 0
    assert result.terminal["data"] == {"ok": True}
    (run,) = fake.runs_for(pid)
    assert run.queries == 5
    assert "unknown upstream status 'PAUSED_BY_OPERATOR'" in gateway.log_text()


def test_each_state_change_sends_an_id_only_event(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {"status": "COMPLETED", "result": {"data": {}}},
        ],
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    ids = result.ids
    execution_ids = {event_id.rsplit(":", 1)[0] for event_id in ids}
    assert len(execution_ids) == 1, "every id names the same execution"
    seqs = [int(event_id.rsplit(":", 1)[1]) for event_id in ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # accepted, upstream created (PENDING), RUNNING, then the terminal frame's id
    assert len(ids) == 4
    first_data = next(i for i, line in enumerate(result.lines) if line.startswith("data:"))
    assert result.lines[0].startswith("id:")
    assert first_data == len(result.lines) - 1, "the data frame is the last thing sent"
