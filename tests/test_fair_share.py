"""One caller cannot hold everything: run slots, queue places, unfinished executions."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.astron_node import NodeFailed, node_call
from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.local_projects import make_project
from tests.native_client import auth, create, get

SLEEPS = """
    import json, sys, time
    params = json.load(sys.stdin)
    time.sleep(params.get("seconds", 0))
    print(json.dumps({"event": "result", "data": {"slept": params.get("seconds", 0)}}))
"""


def statuses(base_url: str, ids: list[str], token: str) -> list[str]:
    return [get(base_url, i, token).json()["status"] for i in ids]


def wait_for_status(base_url: str, execution_id: str, token: str, status: str) -> None:
    deadline = time.monotonic() + 20
    while get(base_url, execution_id, token).json()["status"] != status:
        assert time.monotonic() < deadline, f"{execution_id} never became {status}"
        time.sleep(0.05)


def test_a_busy_caller_leaves_a_slot_and_takes_turns(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    projects = tmp_path / "projects"
    make_project(projects, "sleeps", SLEEPS, timeout=120)
    gateway = start_gateway(
        upstream=False,
        RPA_BACKEND="local",
        RPA_PROJECTS_DIR=str(projects),
        RPA_LOCAL_MAX_RUNS="2",  # one caller may hold 1 of them: 2 - max(1, 2 // 4)
        RPA_LOCAL_KILL_GRACE="0.5",
    )
    busy = [
        create(
            gateway.base_url, {"project_id": "sleeps", "params": {"seconds": 60}}, "busy"
        ).json()["id"]
        for _ in range(3)
    ]
    for execution_id, status in zip(busy, ["RUNNING", "PENDING", "PENDING"], strict=True):
        wait_for_status(gateway.base_url, execution_id, "busy", status)
    assert statuses(gateway.base_url, busy, "busy") == ["RUNNING", "PENDING", "PENDING"]
    # Another caller starts at once, on the slot the busy one may not take.
    started = time.monotonic()
    assert node_call(gateway.base_url, "other", {"project_id": "sleeps"}) == {"slept": 0}
    assert time.monotonic() - started < 15
    queued = get(gateway.base_url, busy[2], "busy").json()
    assert queued["queue_position"] == 2
    for execution_id in busy:
        httpx.post(
            f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel", headers=auth("busy")
        )


def test_a_caller_queue_is_bounded_with_a_clear_429(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    projects = tmp_path / "projects"
    make_project(projects, "sleeps", SLEEPS, timeout=120)
    gateway = start_gateway(
        upstream=False,
        RPA_BACKEND="local",
        RPA_PROJECTS_DIR=str(projects),
        RPA_LOCAL_MAX_RUNS="1",
        RPA_LOCAL_MAX_QUEUED_PER_TOKEN="2",
        RPA_LOCAL_KILL_GRACE="0.5",
    )
    body = {"project_id": "sleeps", "params": {"seconds": 60}}
    made = [create(gateway.base_url, body, "busy") for _ in range(3)]  # 1 runs, 2 wait
    assert [r.status_code for r in made] == [202, 202, 202]
    refused = create(gateway.base_url, body, "busy")
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "RPA_LOCAL_MAX_QUEUED_PER_TOKEN" in refused.json()["message"]
    with pytest.raises(NodeFailed, match="Service unavailable: 2 runs of this caller wait"):
        node_call(gateway.base_url, "busy", body)
    assert create(gateway.base_url, body, "other").status_code == 202, "others are not bound"
    for response in made:
        httpx.post(
            f"{gateway.base_url}/rpa/v1/executions/{response.json()['id']}/cancel",
            headers=auth("busy"),
        )


def test_unfinished_executions_per_caller_are_bounded(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_MAX_UNFINISHED_PER_TOKEN="3")
    pid = new_project_id()
    fake.script(pid, gated=True)
    made = [create(gateway.base_url, {"project_id": pid}, "busy") for _ in range(3)]
    assert [r.status_code for r in made] == [202] * 3
    refused = create(gateway.base_url, {"project_id": pid}, "busy")
    assert refused.status_code == 429
    assert "RPA_MAX_UNFINISHED_PER_TOKEN" in refused.json()["message"]
    assert create(gateway.base_url, {"project_id": pid}, "other").status_code == 202
    fake.wait_for_creates(pid, 4)
    fake.open_gate(pid)
    deadline = time.monotonic() + 20
    while create(gateway.base_url, {"project_id": pid}, "busy").status_code != 202:
        assert time.monotonic() < deadline, "room again once executions end"
        time.sleep(0.1)


def test_a_cancel_during_the_create_cancels_the_run_it_made(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_UPSTREAM_READ_TIMEOUT="5")  # the create takes 1 s
    pid = new_project_id()
    fake.script(pid, create={"delay": 1.0}, steps=[{"status": "RUNNING"}])
    execution_id = create(gateway.base_url, {"project_id": pid}).json()["id"]
    fake.wait_for_creates(pid, 1)  # it has reached the fake, which answers after 1 s
    assert not fake.runs_for(pid), "no reply yet: the create is in flight"
    cancelled = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel",
        headers=auth("t-secret"),
        timeout=20,
    ).json()
    assert cancelled["result"]["code"] == 55004
    (run,) = fake.runs_for(pid)
    assert cancelled["upstream_id"] == run.id
    assert fake.cancels.count(run.id) == 1, "the run the create made is cancelled, not orphaned"


def test_a_caller_holding_its_share_of_the_store_is_refused_and_others_are_not(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    """RPA_MAX_STORED_MB_PER_TOKEN (10 KB here): past it a caller's creates are a clear 429
    (on /rpa/v1/exec a non-zero frame) and nothing is stored or run for them; another
    caller is not affected."""
    gateway = start_gateway(RPA_MAX_STORED_MB_PER_TOKEN="0.01")
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {}}}])
    body = {"project_id": pid, "params": {"blob": "x" * 3000}}
    accepted = 0
    while (created := create(gateway.base_url, body, "hoarder")).status_code == 202:
        accepted += 1
        assert accepted < 10, "never refused"
    assert accepted == 4, accepted  # 3 KB each: the fourth takes it past 10 KB
    assert created.status_code == 429, created.text
    assert "RPA_MAX_STORED_MB_PER_TOKEN" in created.json()["message"]
    assert created.headers["retry-after"] == "60"
    with pytest.raises(NodeFailed, match="RPA_MAX_STORED_MB_PER_TOKEN"):
        node_call(gateway.base_url, "hoarder", body)
    assert fake.creates_for(pid) == accepted, "nothing ran for a refused create"
    listed = httpx.get(f"{gateway.base_url}/rpa/v1/executions", headers=auth("hoarder")).json()
    assert len(listed["items"]) == accepted, "nothing stored for a refused create"
    assert create(gateway.base_url, body, "someone-else").status_code == 202
