"""A store that cannot write: no execution left running forever, no event id with two outcomes.

The store is made full with RPA_STORE_MAX_MB (SQLite's max_page_count: writes fail
with "database or disk is full", as on a full disk); room comes back when an
operator deletes old executions, here with sqlite3 beside the running service.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.astron_node import NodeFailed, node_call
from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.native_client import create
from tests.sse_client import exec_stream
from tests.store_reader import event_kinds, execution_row
from tests.test_drain import _wait_for
from tests.test_restart import wait_until_all_running


def ready(gateway: GatewayProcess) -> int:
    return httpx.get(gateway.base_url + "/rpa/v1/ready").status_code


def fill(gateway: GatewayProcess, project_id: str) -> list[str]:
    """Create executions with big params until the store refuses one; their ids."""
    created = []
    for i in range(500):
        response = create(
            gateway.base_url, {"project_id": project_id, "params": {"blob": "x" * 20_000, "i": i}}
        )
        if response.status_code == 503:
            assert response.json()["error"] == "store_unavailable"
            return created
        assert response.status_code == 202, response.text
        created.append(response.json()["id"])
    raise AssertionError("the store never filled up")


def free_room(gateway: GatewayProcess, execution_ids: list[str]) -> None:
    """What an operator does about a full store: delete what is not needed any more."""
    with sqlite3.connect(gateway.database, timeout=10) as db:
        marks = ",".join("?" * len(execution_ids))
        db.execute(f"DELETE FROM events WHERE execution_id IN ({marks})", execution_ids)  # noqa: S608
        db.execute(f"DELETE FROM executions WHERE id IN ({marks})", execution_ids)  # noqa: S608


def test_a_full_store_refuses_new_work_and_loses_no_end(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_STORE_MAX_MB="1")
    running, filler = new_project_id(), new_project_id()
    # A result larger than what is left once creates are refused: its write must fail.
    result = {"a": 42, "blob": "y" * 60_000}
    fake.script(running, gated=True, steps=[{"status": "COMPLETED", "result": {"data": result}}])
    fake.script(filler, gated=True)  # fillers stay unfinished: nothing may purge them
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(node_call, gateway.base_url, "tok", {"project_id": running})
        wait_until_all_running(gateway.database, 1)
        fillers = fill(gateway, filler)

        # Full: not ready, and new work is refused in a way the node sees.
        assert ready(gateway) == 503
        with pytest.raises(NodeFailed, match="Service unavailable: the execution store"):
            node_call(gateway.base_url, "tok", {"project_id": new_project_id()})

        # The running execution ends meanwhile: its stream gets the end at once.
        fake.open_gate(running)
        assert stream.result(timeout=30) == result
    (row,) = [r for r in _rows(gateway) if r["project_id"] == running]
    assert row["finished_at"] is None, "not stored yet: the store is still full"

    # The owner reconnecting meanwhile (before the end, or at it) gets the same end, and
    # nothing drives the run again.
    before_end, end = (f"{row['id']}:{row['last_seq'] + n}" for n in (0, 1))
    again = exec_stream(gateway.base_url, {}, token="tok", headers={"Last-Event-ID": before_end})
    assert again.terminal["code"] == 0 and again.terminal["data"] == result
    assert again.ids[-1] == end
    at_end = exec_stream(gateway.base_url, {}, token="tok", headers={"Last-Event-ID": end})
    assert at_end.terminal == again.terminal
    assert fake.creates_for(running) == 1

    free_room(gateway, fillers)
    _wait_for(lambda: ready(gateway) == 200, timeout=15)
    _wait_for(lambda: execution_row(gateway.database, row["id"])["finished_at"] is not None)
    stored = execution_row(gateway.database, row["id"])
    assert stored is not None and stored["code"] == 0 and stored["last_seq"] == row["last_seq"] + 1
    assert event_kinds(gateway.database, row["id"]).count("terminal") == 1
    resumed = exec_stream(gateway.base_url, {}, token="tok", headers={"Last-Event-ID": before_end})
    assert resumed.terminal == again.terminal and resumed.ids[-1] == end, "one id, one outcome"
    assert node_call(gateway.base_url, "tok", {"project_id": new_project_id()}) == {"echo": {}}
    assert fake.creates_for(running) == 1
    assert "stored late" in gateway.log_text()


def _rows(gateway: GatewayProcess) -> list[dict[str, object]]:
    with sqlite3.connect(gateway.database) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM executions")]


def test_the_store_bound_is_a_setting_a_user_can_rely_on(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_STORE_MAX_MB="1")
    project = new_project_id()
    fake.script(project, gated=True)
    fill(gateway, project)
    wal = gateway.database.with_name(gateway.database.name + "-wal")
    on_disk = gateway.database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert on_disk <= 1024 * 1024, f"the database and its WAL stay within the bound: {on_disk}"
    assert ready(gateway) == 503
