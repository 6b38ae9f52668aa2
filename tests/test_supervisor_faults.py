"""Faults inside the service itself still end every execution with one terminal event.

These run the supervisor in-process on a real SQLite store and the real astron
backend against the fake upstream.  A failing disk and a programming error
cannot be produced on demand, so each is stood in for by the smallest subclass
that raises where the real part would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    Outcome,
    Status,
)
from rpa_gateway.service import ExecutionService
from rpa_gateway.store.base import StoreError
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.supervisor import PollPolicy, Supervisor
from tests.fakes.rpa_upstream import CREATE_PATH, QUERY_PATH, FakeUpstream

POLICY = PollPolicy(
    first_delay=0.01,
    backoff=2,
    ceiling=0.05,
    retry_base_delay=0.01,
    max_consecutive_faults=3,
    create_connect_retries=0,
)


class StoreThatCannotFinish(SqliteStore):
    def finish(self, execution: Execution, outcome: Outcome) -> Event | None:
        raise StoreError("disk I/O error")


class BackendWithABug(AstronBackend):
    async def status(self, task_id: str, token: str):  # type: ignore[no-untyped-def]
        raise KeyError("execution")


async def run_one(store: SqliteStore, backend: AstronBackend, project_id: str) -> list[Event]:
    supervisor = Supervisor(store, backend, POLICY)
    service = ExecutionService(store, supervisor, timeout=10)
    try:
        execution = service.create(ExecutionRequest(project_id=project_id, sid="s"), "tok")
        events = []
        async with asyncio.timeout(10):
            async for event in service.follow(execution.id, 0, idle_interval=1):
                if event is not None:
                    events.append(event)
        return events
    finally:
        await supervisor.stop()
        await backend.aclose()
        store.close()


def backend(fake: FakeUpstream, cls: type[AstronBackend] = AstronBackend) -> AstronBackend:
    return cls(create_url=fake.base_url + CREATE_PATH, query_url=fake.base_url + QUERY_PATH)


def test_store_failing_at_the_end_still_delivers_a_terminal_event(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {}}}])

    async def scenario() -> list[Event]:
        return await run_one(StoreThatCannotFinish(tmp_path / "db"), backend(fake), pid)

    events = asyncio.run(scenario())
    terminal = [e for e in events if e.kind is EventKind.TERMINAL]
    assert len(terminal) == 1
    assert terminal[0].data["code"] == 55999
    assert "store failed" in terminal[0].data["message"]


def test_a_bug_in_the_backend_ends_with_55999(tmp_path: Path, fake: FakeUpstream) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    store = SqliteStore(tmp_path / "db")

    async def scenario() -> list[Event]:
        return await run_one(store, backend(fake, BackendWithABug), pid)

    events = asyncio.run(scenario())
    assert [e.kind for e in events].count(EventKind.TERMINAL) == 1
    assert events[-1].data["code"] == 55999
    assert events[-1].data["message"] == "Unknown error: KeyError: 'execution'"
    reopened = SqliteStore(tmp_path / "db")
    (stored,) = [reopened.get(e.execution_id) for e in events[-1:]]
    assert stored is not None and stored.status is Status.FAILED
    reopened.close()


def test_unfinished_executions_of_a_dead_process_are_ended_at_start(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    now = time.time()
    execution = Execution(
        id="e1",
        request=ExecutionRequest(project_id="p", sid="s"),
        status=Status.ACCEPTED,
        created_at=now,
        updated_at=now,
        deadline_at=now + 60,
    )
    store.create(execution)
    store.close()

    async def restart() -> int:
        reopened = SqliteStore(tmp_path / "db")
        unused = backend(FakeUpstream())
        supervisor = Supervisor(reopened, unused, POLICY)
        ended = ExecutionService(reopened, supervisor, timeout=10).close_interrupted()
        await unused.aclose()
        events = reopened.events_after("e1", 0)
        assert [e.kind for e in events] == [EventKind.STATE, EventKind.TERMINAL]
        assert events[-1].data["code"] == 55999
        reopened.close()
        return ended

    assert asyncio.run(restart()) == 1
