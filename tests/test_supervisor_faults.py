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
from rpa_gateway.backends.base import TaskState
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    Outcome,
    Status,
)
from rpa_gateway.security import TokenVault
from rpa_gateway.service import ExecutionService
from rpa_gateway.stewardship import Stewardship
from rpa_gateway.store.base import StoreError
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.supervisor import PollPolicy, Supervisor
from tests.fakes.rpa_upstream import CREATE_PATH, QUERY_PATH, FakeUpstream

VAULT = TokenVault(b"f" * 32, b"s" * 32)
POLICY = PollPolicy(
    first_delay=0.01,
    backoff=2,
    ceiling=0.05,
    retry_base_delay=0.01,
    max_consecutive_faults=3,
    create_connect_retries=0,
)


def one_process(store: SqliteStore, supervisor: Supervisor) -> Stewardship:
    """The stewardship of a service alone on its store (every claim granted)."""
    return Stewardship(store, supervisor, holder="test", lease_seconds=60, runs_here=False)


class StoreThatCannotFinish(SqliteStore):
    async def finish(
        self, execution: Execution, outcome: Outcome, *, announce: bool = True
    ) -> Event | None:
        raise StoreError("disk I/O error")


class BackendWithABug(AstronBackend):
    async def status(self, task_id: str, token: str, *, managed: bool = False) -> TaskState:
        raise KeyError("execution")


async def run_one(store: SqliteStore, backend: AstronBackend, project_id: str) -> list[Event]:
    supervisor = Supervisor(store, backend, POLICY)
    service = ExecutionService(
        store, supervisor, VAULT, backend, timeout=10, stewardship=one_process(store, supervisor)
    )
    try:
        execution, _ = await service.create(ExecutionRequest(project_id=project_id, sid="s"), "tok")
        events = []
        async with asyncio.timeout(10):
            async for event in service.follow(execution.id, 0):
                if isinstance(event, Event):
                    events.append(event)
        return events
    finally:
        await supervisor.stop()
        await backend.aclose()
        await store.close()


def backend(fake: FakeUpstream, cls: type[AstronBackend] = AstronBackend) -> AstronBackend:
    return cls(create_url=fake.base_url + CREATE_PATH, query_url=fake.base_url + QUERY_PATH)


def test_store_failing_at_the_end_hands_the_real_end_to_live_streams(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {"ok": True}}}])
    store = StoreThatCannotFinish(tmp_path / "db")

    async def scenario() -> list[Event]:
        return await run_one(store, backend(fake), pid)

    events = asyncio.run(scenario())
    terminal = [e for e in events if e.kind is EventKind.TERMINAL]
    assert len(terminal) == 1
    assert terminal[0].data["code"] == 0 and terminal[0].data["data"] == {"ok": True}

    async def reopen() -> list[Execution]:
        reopened = SqliteStore(tmp_path / "db")
        try:
            return await reopened.unfinished()
        finally:
            await reopened.close()

    (unfinished,) = asyncio.run(reopen())
    assert terminal[0].seq == unfinished.last_seq + 1, "the seq the store will give it"


def test_a_bug_in_the_backend_ends_with_55999(tmp_path: Path, fake: FakeUpstream) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    store = SqliteStore(tmp_path / "db")

    async def scenario() -> list[Event]:
        return await run_one(store, backend(fake, BackendWithABug), pid)

    events = asyncio.run(scenario())
    assert [e.kind for e in events].count(EventKind.TERMINAL) == 1
    assert events[-1].data["code"] == 55999
    assert events[-1].data["message"] == "Unknown error: KeyError: 'execution'"

    async def reread() -> Execution | None:
        reopened = SqliteStore(tmp_path / "db")
        try:
            return await reopened.get(events[-1].execution_id)
        finally:
            await reopened.close()

    stored = asyncio.run(reread())
    assert stored is not None and stored.status is Status.FAILED


def left_by_a_dead_process(project_id: str, *, age: float, deadline_in: float) -> Execution:
    """An unfinished execution as a killed process left it in the store."""
    now = time.time()
    return Execution(
        id=uuid.uuid4().hex,
        request=ExecutionRequest(project_id=project_id, sid="s"),
        status=Status.ACCEPTED,
        created_at=now - age,
        updated_at=now - age,
        deadline_at=now + deadline_in,
        owner=VAULT.fingerprint("tok"),
    )


def resume_after_restart(
    store: SqliteStore, fake: FakeUpstream, left: Execution, *, create_started: bool
) -> list[Event]:
    """Record ``left``, then start a new process on the store: the events it ends with."""

    async def restart() -> list[Event]:
        await store.create(left, VAULT.seal("tok", left.id))
        if create_started:
            left.create_started = True
            await store.save(left)
        upstream = backend(fake)
        supervisor = Supervisor(store, upstream, POLICY)
        service = ExecutionService(
            store,
            supervisor,
            VAULT,
            upstream,
            timeout=10,
            stewardship=one_process(store, supervisor),
        )
        assert await service.resume_unfinished() == (1, 0)
        await supervisor.wait(left.id)
        await upstream.aclose()
        events = await store.events_after(left.id, 0)
        await store.close()
        return events

    return asyncio.run(restart())


def test_a_create_interrupted_by_a_crash_is_not_sent_again(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """The process died after the create went out but before its reply was recorded."""
    pid = f"p-{uuid.uuid4().hex[:8]}"
    crashed = left_by_a_dead_process(pid, age=0, deadline_in=60)
    events = resume_after_restart(SqliteStore(tmp_path / "db"), fake, crashed, create_started=True)
    assert events[-1].kind is EventKind.TERMINAL
    assert events[-1].data["code"] == 55001
    assert "not created again" in events[-1].data["message"]
    assert fake.creates_for(pid) == 0


def test_an_execution_resumed_after_its_deadline_starts_no_robot(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """Left by a process that died before creating its run, and found after the deadline:
    it times out without a create (a robot started then would be cancelled at once)."""
    pid = f"p-{uuid.uuid4().hex[:8]}"
    late = left_by_a_dead_process(pid, age=120, deadline_in=-60)
    events = resume_after_restart(SqliteStore(tmp_path / "db"), fake, late, create_started=False)
    assert events[-1].kind is EventKind.TERMINAL and events[-1].data["code"] == 55003
    assert fake.creates_for(pid) == 0
