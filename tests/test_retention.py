"""Finished executions are deleted after the retention; running ones never are."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
import uuid
from pathlib import Path

from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.native_client import get
from tests.sse_client import exec_stream
from tests.store_reader import wait_for_finished


def rows(database: Path, execution_id: str) -> tuple[int, int]:
    with sqlite3.connect(database) as db:
        (executions,) = db.execute(
            "SELECT count(*) FROM executions WHERE id=?", (execution_id,)
        ).fetchone()
        (events,) = db.execute(
            "SELECT count(*) FROM events WHERE execution_id=?", (execution_id,)
        ).fetchone()
    return executions, events


def test_finished_executions_are_purged_after_retention(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_RETENTION_SECONDS="1", RPA_RETENTION_SWEEP_SECONDS="0.2")
    quick = f"p-{uuid.uuid4().hex[:8]}"
    slow = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(slow, duration=30)
    done = exec_stream(gateway.base_url, {"project_id": quick}).ids[0].rsplit(":", 1)[0]
    running = (
        exec_stream(gateway.base_url, {"project_id": slow}, stop_after_lines=1)
        .ids[0]
        .rsplit(":", 1)[0]
    )
    assert rows(gateway.database, done)[1] >= 2

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and rows(gateway.database, done) != (0, 0):
        time.sleep(0.1)
    assert rows(gateway.database, done) == (0, 0)
    assert get(gateway.base_url, done).status_code == 404
    assert get(gateway.base_url, running).json()["status"] in ("PENDING", "RUNNING")
    assert "purged 1 finished executions" in gateway.log_text()


def test_orphaned_executions_expire_at_their_deadline(tmp_path: Path, fake: FakeUpstream) -> None:
    """Without RPA_TOKEN_KEY nobody can poll them after a crash; they end as timeouts."""
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, duration=60)
    settings = {
        **FAST,
        **fake.env(),
        "XIAOWU_RPA_TIMEOUT": "2",
        "RPA_RETENTION_SWEEP_SECONDS": "0.2",
    }
    first = GatewayProcess(settings, tmp_path).start()
    first_id = (
        exec_stream(first.base_url, {"project_id": pid}, stop_after_lines=2)
        .ids[0]
        .rsplit(":", 1)[0]
    )
    first.stop(signal.SIGKILL)
    second = GatewayProcess(settings, tmp_path).start()
    try:
        row = wait_for_finished(second.database, first_id, timeout=15)
    finally:
        second.stop()
    assert (row["status"], row["code"], row["message"]) == ("TIMED_OUT", 55003, "Timeout error")


def test_purging_returns_space_to_the_file_system(tmp_path: Path) -> None:
    from rpa_gateway.executions import Execution, ExecutionRequest, Outcome, Status
    from rpa_gateway.store.sqlite import SqliteStore

    def page_counts() -> tuple[int, int]:
        with sqlite3.connect(tmp_path / "db") as db:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
        return pages, free

    async def fill_and_purge() -> tuple[int, int, int, int]:
        store = SqliteStore(tmp_path / "db")
        now = time.time()
        for i in range(2000):
            execution = Execution(
                id=f"e{i}",
                request=ExecutionRequest("p", "s", {"pad": "x" * 500}),
                status=Status.ACCEPTED,
                created_at=now,
                updated_at=now,
                deadline_at=now + 60,
            )
            await store.create(execution, None)
            outcome = Outcome(Status.SUCCEEDED, 0, "Success", {"pad": "y" * 500})
            await store.finish(execution, outcome)
        pages_before, _ = page_counts()
        purged = await store.purge_finished(time.time() + 1, 5000)
        pages_after, free = page_counts()
        await store.close()
        return purged, pages_before, pages_after, free

    purged, pages_before, pages_after, free = asyncio.run(fill_and_purge())
    assert purged == 2000
    assert free == 0
    assert pages_after < pages_before / 10
