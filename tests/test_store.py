"""The store conformance suite: what a user of any store can count on.

Each test runs against every store: SQLite (a file in a tmp dir), Redis on a standalone
server, and Redis on a three-master cluster.  What only a store shared by several
processes does (leases, events and notices from another process) runs on the Redis
stores, each process being a second RedisStore on the same servers.  The servers live
for the session; every test has its own key prefix, so tests do not see each other.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpa_gateway.duration_models import DurationModels, SchedulePolicy
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    JsonObject,
    Outcome,
    Status,
    new_execution_id,
    terminal_data,
)
from rpa_gateway.poll_schedule import MIN_SAMPLES, backoff_schedule
from rpa_gateway.store.base import (
    DuplicateIdempotencyKey,
    LeaseLost,
    ListQuery,
    McpSession,
    Renewal,
    Store,
    StoreError,
    Subscription,
)
from rpa_gateway.store.hub import ChangeSubscription, MessageSubscription
from rpa_gateway.store.redis import RedisStore
from rpa_gateway.store.sqlite import SqliteStore
from tests.redis_servers import (
    RedisServer,
    standalone_server,
)
from tests.stores import PASSWORD, SCENARIO_TIMEOUT, Stores

WAIT = 5.0  # for what should come at once: an event, a notice


# --- helpers -----------------------------------------------------------------------------


def new_execution(
    owner: str = "owner-a",
    *,
    project_id: str = "project-1",
    created_at: float | None = None,
    idempotency_key: str | None = None,
) -> Execution:
    now = time.time() if created_at is None else created_at
    return Execution(
        id=new_execution_id(),
        request=ExecutionRequest(project_id=project_id, sid="sid-1", params={"n": 1}),
        status=Status.ACCEPTED,
        created_at=now,
        updated_at=now,
        deadline_at=now + 600,
        owner=owner,
        idempotency_key=idempotency_key,
    )


SUCCEEDED = Outcome(Status.SUCCEEDED, 0, "done", {"result": [1, "二"]})
FAILED = Outcome(Status.FAILED, 55002, "failed", None)


async def next_event(subscription: Subscription, within: float = WAIT) -> Event | None:
    async with asyncio.timeout(within):
        return await subscription.get()


async def event_from(subscription: Subscription, seq: int) -> Event | None:
    """The next event from ``seq`` on: one written before subscribing may still come in
    first from another process (followers skip what they have)."""
    while True:
        event = await next_event(subscription)
        if event is None or event.seq >= seq:
            return event


async def nothing_more(subscription: Subscription, wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await next_event(subscription, wait)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


# --- records -----------------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = Execution(
            id=new_execution_id(),
            request=ExecutionRequest(
                project_id="项目-1",
                sid="sid-ü",
                params={"text": "héllo 世界 🚀", "nested": {"list": [1, 2.5, None, True]}},
                exec_position="EXECUTOR",
                version=3,
                phone_number="+86 138 0000 0000",
                trace_parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            status=Status.ACCEPTED,
            created_at=1_700_000_000.123456,
            updated_at=1_700_000_000.123456,
            deadline_at=1_700_000_600.5,
            owner="owner-ø",
            idempotency_key="key-ключ",
            request_hash="sha256:abc",
        )
        first = await store.create(execution, b"sealed\x00token")
        assert first == Event(
            execution.id, 1, EventKind.STATE, {"status": "ACCEPTED"}, execution.created_at
        )
        assert execution.last_seq == 1
        stored = await store.get(execution.id)
        assert stored == execution
        assert await store.sealed_token(execution.id) == b"sealed\x00token"
        assert await store.get(new_execution_id()) is None
        assert await store.sealed_token(new_execution_id()) is None

    stores.run(scenario)


def test_save_keeps_flags_and_counters(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        assert await store.sealed_token(execution.id) is None
        execution.upstream_id = "task-9"
        execution.create_started = True
        execution.cancel_requested = True
        execution.polls = 7
        execution.retries = 2
        await store.save(execution)
        assert await store.get(execution.id) == execution
        await store.save(new_execution())  # an unknown execution: nothing recorded
        assert await store.unfinished() == [execution]

    stores.run(scenario)


def test_events_after_are_in_order_from_the_cursor(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        running = await store.append(
            execution, EventKind.STATE, {"status": "RUNNING"}, Status.RUNNING
        )
        progress = await store.append(execution, EventKind.PROGRESS, {"步": 1})
        assert (running.seq, progress.seq) == (2, 3)
        assert execution.last_seq == 3
        stored = await store.get(execution.id)
        assert stored is not None
        assert (stored.status, stored.last_seq) == (Status.RUNNING, 3)

        events = await store.events_after(execution.id, 0)
        assert seqs(events) == [1, 2, 3]
        assert events[1:] == [running, progress]
        assert await store.events_after(execution.id, 2) == [progress]
        assert await store.events_after(execution.id, 3) == []
        assert await store.events_after(execution.id, 99) == []
        assert await store.events_after(new_execution_id(), 0) == []
        with pytest.raises(ValueError, match="finish"):
            await store.append(execution, EventKind.TERMINAL, {})

    stores.run(scenario)


def test_append_refuses_a_finished_or_unknown_execution(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        await store.finish(execution, SUCCEEDED)
        with pytest.raises(StoreError):
            await store.append(execution, EventKind.PROGRESS, {"late": True})
        with pytest.raises(StoreError):
            await store.append(new_execution(), EventKind.PROGRESS, {})
        assert seqs(await store.events_after(execution.id, 0)) == [1, 2]

    stores.run(scenario)


def test_finish_happens_once_and_forgets_the_token(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, b"token")
        execution.logs = ["line 1", "line 2"]
        end = await store.finish(execution, SUCCEEDED)
        assert end is not None
        assert (end.seq, end.kind, end.data) == (2, EventKind.TERMINAL, terminal_data(SUCCEEDED))
        assert (execution.status, execution.outcome, execution.last_seq) == (
            Status.SUCCEEDED,
            SUCCEEDED,
            2,
        )
        assert await store.finish(execution, FAILED) is None
        assert await store.finish(new_execution(), FAILED) is None

        stored = await store.get(execution.id)
        assert stored is not None
        assert stored.outcome == SUCCEEDED
        assert stored.finished_at == end.at == execution.finished_at
        assert stored.logs == ["line 1", "line 2"]
        assert await store.sealed_token(execution.id) is None
        events = await store.events_after(execution.id, 0)
        assert [e.kind for e in events] == [EventKind.STATE, EventKind.TERMINAL]
        assert events[-1] == end

    stores.run(scenario)


def test_what_a_caller_stores_is_counted_until_retention_removes_it(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        assert await store.stored_bytes("owner-a") == 0
        mine, other = new_execution("owner-a"), new_execution("owner-b")
        mine.request.params = {"blob": "x" * 5000}
        await store.create(mine, None)
        await store.create(other, None)
        created = await store.stored_bytes("owner-a")
        assert 5000 < created < 6000, created
        mine.logs = ["y" * 1000]
        await store.finish(mine, Outcome(Status.SUCCEEDED, 0, "done", {"z": "z" * 3000}))
        finished = await store.stored_bytes("owner-a")
        assert 9000 < finished < 10_500, finished
        assert await store.stored_bytes("owner-b") < 1000  # each caller its own

        async def purged() -> bool:
            await store.purge_finished(time.time() + 1, 100)
            return await store.stored_bytes("owner-a") == 0

        await eventually(purged)

    stores.run(scenario, retention_seconds=RETENTION)


def test_a_result_is_stored_once(stores: Stores) -> None:
    """A result can be large (up to RPA_MAX_FRAME_BYTES): the record holds it, and the
    terminal event, read back whole, is stored without it."""
    big = Outcome(Status.SUCCEEDED, 0, "done", {"rows": ["x" * 1000] * 200})

    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        end = await store.finish(execution, big)
        assert end is not None and end.data["data"] == big.data
        (read,) = await store.events_after(execution.id, 1)
        assert read == end
        stored = await store.get(execution.id)
        assert stored is not None and stored.outcome == big
        if isinstance(store, SqliteStore):
            raw = sqlite3.connect(stores.tmp_path / "store.db").execute(
                "SELECT data FROM events WHERE execution_id=? AND kind='terminal'",
                (execution.id,),
            )
            (terminal,) = [row[0] for row in raw]
        elif stores.server is not None:
            client = stores.server.client()
            terminal = client.lindex(f"{stores.prefix}:{{{execution.id}}}:ev", -1)
        else:
            return  # a cluster's node is not known from here; the same code as one server
        assert len(terminal) < 1000, "the terminal event holds the result a second time"

    stores.run(scenario)


def test_concurrent_finishes_from_two_processes_have_one_winner(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        for _ in range(10):
            execution = new_execution()
            await a.create(execution, b"token")
            copy = await b.get(execution.id)
            assert copy is not None
            ends = await asyncio.gather(a.finish(execution, SUCCEEDED), b.finish(copy, FAILED))
            winners = [end for end in ends if end is not None]
            assert len(winners) == 1
            events = await a.events_after(execution.id, 0)
            assert [e.kind for e in events] == [EventKind.STATE, EventKind.TERMINAL]
            assert events[-1] == winners[0]
            stored = await b.get(execution.id)
            assert stored is not None
            assert terminal_data(stored.outcome) == winners[0].data  # type: ignore[arg-type]

    shared_stores.run(scenario, instances=2)


def test_a_duplicate_idempotency_key_records_nothing(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        first = new_execution(idempotency_key="same")
        await store.create(first, b"t1")
        duplicate = new_execution(idempotency_key="same")
        with pytest.raises(DuplicateIdempotencyKey):
            await store.create(duplicate, b"t2")
        assert await store.get(duplicate.id) is None
        assert await store.events_after(duplicate.id, 0) == []
        assert await store.sealed_token(duplicate.id) is None
        assert await store.unfinished() == [first]
        assert await store.list_executions(ListQuery(owner="owner-a")) == [first]
        assert await store.find_idempotent("owner-a", "same") == first
        assert await store.find_idempotent("owner-a", "other") is None
        assert await store.find_idempotent("owner-b", "same") is None

        other_owner = new_execution("owner-b", idempotency_key="same")
        await store.create(other_owner, None)  # keys are per owner
        assert await store.find_idempotent("owner-b", "same") == other_owner

    stores.run(scenario)


# --- listing -----------------------------------------------------------------------------


def test_listing_is_newest_first_filtered_paged_and_per_owner(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        base = time.time() - 1000
        created: list[Execution] = []
        for i in range(9):
            # Two pairs share a created_at: the id orders them.
            execution = new_execution(
                project_id=f"project-{i % 2}", created_at=base + (i // 2 if i < 4 else i)
            )
            await store.create(execution, None)
            created.append(execution)
        for execution in created[:3]:
            await store.append(execution, EventKind.STATE, {"status": "RUNNING"}, Status.RUNNING)
        await store.finish(created[5], FAILED)
        await store.create(new_execution("owner-b", created_at=base + 5), None)

        newest_first = sorted(created, key=lambda e: (e.created_at, e.id), reverse=True)
        assert await store.list_executions(ListQuery(owner="owner-a")) == newest_first

        pages: list[Execution] = []
        before: tuple[float, str] | None = None
        while True:
            page = await store.list_executions(ListQuery(owner="owner-a", limit=2, before=before))
            if not page:
                break
            assert len(page) <= 2
            pages += page
            before = (page[-1].created_at, page[-1].id)
        assert pages == newest_first

        def only(status: Status | None = None, project: str | None = None) -> list[Execution]:
            return [
                e
                for e in newest_first
                if (status is None or e.status is status)
                and (project is None or e.request.project_id == project)
            ]

        running = ListQuery(owner="owner-a", status=Status.RUNNING)
        assert await store.list_executions(running) == only(Status.RUNNING)
        failed = ListQuery(owner="owner-a", status=Status.FAILED)
        assert await store.list_executions(failed) == only(Status.FAILED)
        project = ListQuery(owner="owner-a", project_id="project-0", limit=3)
        assert await store.list_executions(project) == only(project="project-0")[:3]
        cursor = (newest_first[2].created_at, newest_first[2].id)
        both = ListQuery(
            owner="owner-a", status=Status.ACCEPTED, project_id="project-1", before=cursor
        )
        assert await store.list_executions(both) == [
            e for e in only(Status.ACCEPTED, "project-1") if newest_first.index(e) > 2
        ]
        assert len(await store.list_executions(ListQuery(owner="owner-b"))) == 1
        assert await store.list_executions(ListQuery(owner="nobody")) == []

    stores.run(scenario)


def test_unfinished_and_claimable_leave_out_finished_ones(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        base = time.time() - 100
        executions = [new_execution(created_at=base + i) for i in range(3)]
        for execution in reversed(executions):
            await store.create(execution, None)
        await store.finish(executions[1], SUCCEEDED)
        assert [e.id for e in await store.unfinished()] == [executions[0].id, executions[2].id]
        assert await store.unfinished(created_before=base + 1.5) == [executions[0]]
        assert await store.unfinished(created_before=base + 2) == [executions[0], executions[2]]
        assert await store.unfinished(created_before=base - 1) == []
        assert await store.claimable(10) == [executions[0], executions[2]]
        assert await store.claimable(1) == [executions[0]]

    stores.run(scenario)


# --- leases ------------------------------------------------------------------------------


def test_a_lease_has_one_holder_at_a_time(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        first, second = new_execution(), new_execution()
        await a.create(first, None)
        await a.create(second, None)
        assert await a.claim(first.id, "holder-a", 30)
        assert not await b.claim(first.id, "holder-b", 30)
        assert await a.claim(first.id, "holder-a", 30)  # the holder's again: refreshed
        assert await b.claim(second.id, "holder-b", 30)

        assert await a.renew("holder-a", [first.id], 30) == Renewal([], [])
        assert await b.renew("holder-b", [first.id, second.id], 30) == Renewal([first.id], [])
        assert await a.renew("holder-a", [], 30) == Renewal([], [])

        await b.release("holder-b", [first.id])  # not its lease: nothing happens
        assert not await b.claim(first.id, "holder-b", 30)
        await a.release("holder-a", [first.id])
        assert await b.claim(first.id, "holder-b", 30)
        assert await a.renew("holder-a", [first.id], 30) == Renewal([first.id], [])

    shared_stores.run(scenario, instances=2)


def test_a_create_can_take_the_lease_in_the_same_step(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        execution = new_execution()
        await a.create(execution, None, holder="holder-a", lease_seconds=30)
        assert not await b.claim(execution.id, "holder-b", 30)
        assert [e.id for e in await b.claimable(10) if e.id == execution.id] == []
        assert await a.renew("holder-a", [execution.id], 30) == Renewal([], [])

    shared_stores.run(scenario, instances=2)


def test_a_cancel_requested_elsewhere_reaches_the_holder_at_its_next_renewal(
    shared_stores: Stores,
) -> None:
    """Should the cancel notice go astray (pub/sub down), the renewal still tells."""

    async def scenario(holding: Store, other: Store) -> None:
        execution, finished = new_execution(), new_execution()
        await holding.create(execution, None, holder="holder-a", lease_seconds=30)
        await holding.create(finished, None, holder="holder-a", lease_seconds=30)
        await holding.finish(finished, SUCCEEDED)
        await other.request_cancel(execution.id)
        await other.request_cancel(finished.id)  # ended already: nothing to cancel
        renewal = await holding.renew("holder-a", [execution.id, finished.id], 30)
        assert renewal == Renewal([], [execution.id])
        # The holder saving what it knows, not having heard of it yet, keeps the request.
        await holding.save(execution)
        stored = await other.get(execution.id)
        assert stored is not None and stored.cancel_requested
        assert await other.renew("holder-b", [execution.id], 30) == Renewal([execution.id], [])

    shared_stores.run(scenario, instances=2)


def test_a_process_that_stops_announcing_itself_is_reported_once(
    shared_stores: Stores,
) -> None:
    async def scenario(a: Store, b: Store) -> None:
        reported = await a.announce("holder-a", 0.3)
        reported += await b.announce("holder-b", 30)
        reported += await a.announce("holder-c", 30)
        await a.retire("holder-c")  # stopped cleanly: never reported

        async def a_departed() -> bool:
            reported.extend(await b.announce("holder-b", 30))
            return "holder-a" in reported

        await eventually(a_departed)
        reported.extend(await a.announce("holder-d", 30))
        assert reported == ["holder-a"]  # once, and neither the live nor the retired one

    shared_stores.run(scenario, instances=2)


def test_an_expired_lease_can_be_taken(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        execution = new_execution()
        await a.create(execution, None)
        assert await a.claim(execution.id, "holder-a", 0.2)
        assert not await b.claim(execution.id, "holder-b", 30)

        async def taken() -> bool:
            return await b.claim(execution.id, "holder-b", 30)

        await eventually(taken)
        assert await a.renew("holder-a", [execution.id], 30) == Renewal([execution.id], [])

    shared_stores.run(scenario, instances=2)


def test_a_process_past_its_lease_cannot_write_what_another_took_over(
    shared_stores: Stores,
) -> None:
    """Fencing: once another process holds an execution's lease, the writes of the one
    that lost it (paused, cut off) are refused, so an execution is never written by two."""

    async def main() -> None:
        old = await shared_stores.open(holder="old")
        new = await shared_stores.open(holder="new")
        try:
            execution = new_execution()
            await old.create(execution, b"token", holder="old", lease_seconds=0.3)
            await old.append(execution, EventKind.STATE, {"status": "RUNNING"}, Status.RUNNING)
            await asyncio.sleep(0.4)  # the lease lapses; "old" does not know
            assert await new.claim(execution.id, "new", 10)
            with pytest.raises(LeaseLost):
                await old.append(execution, EventKind.PROGRESS, {"message": "late"})
            with pytest.raises(LeaseLost):
                await old.save(execution)
            with pytest.raises(LeaseLost):
                await old.finish(execution, FAILED)
            taken = await new.get(execution.id)
            assert taken is not None and taken.last_seq == 2
            assert (await new.finish(taken, SUCCEEDED)) is not None
            assert [e.seq for e in await new.events_after(execution.id, 0)] == [1, 2, 3]
        finally:
            await old.close()
            await new.close()

    asyncio.run(main())


def test_claimable_leaves_out_leased_executions(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        base = time.time() - 100
        executions = [new_execution(created_at=base + i) for i in range(3)]
        for execution in executions:
            await a.create(execution, None)
        assert await a.claim(executions[0].id, "holder-a", 30)
        assert await b.claimable(10) == executions[1:]
        assert await b.claimable(1) == executions[1:2]
        await a.release("holder-a", [executions[0].id])
        assert await b.claimable(10) == executions

    shared_stores.run(scenario, instances=2)


# --- live events -------------------------------------------------------------------------


def test_a_subscription_gets_live_events_in_order(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        async with store.subscribe(execution.id) as subscription:
            written = [await store.create(execution, None)]
            for i in range(5):
                written.append(await store.append(execution, EventKind.PROGRESS, {"i": i}))
            end = await store.finish(execution, SUCCEEDED)
            assert end is not None
            written.append(end)
            assert [await next_event(subscription) for _ in written] == written
            await nothing_more(subscription)

    stores.run(scenario)


def test_events_written_by_another_process_arrive_in_order(shared_stores: Stores) -> None:
    async def scenario(reader: Store, writer: Store) -> None:
        execution = new_execution()
        async with reader.subscribe(execution.id) as subscription:
            written = [await writer.create(execution, None)]
            for i in range(20):
                written.append(await writer.append(execution, EventKind.PROGRESS, {"i": i}))
            end = await writer.finish(execution, SUCCEEDED)
            assert end is not None
            written.append(end)
            assert [await next_event(subscription) for _ in written] == written
            await nothing_more(subscription)

    shared_stores.run(scenario, instances=2)


def test_an_event_written_right_after_subscribing_is_never_missed(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        for _ in range(20):
            execution = new_execution()
            await store.create(execution, None)
            async with store.subscribe(execution.id) as subscription:
                written = await store.append(execution, EventKind.PROGRESS, {})
                assert await next_event(subscription) == written

    stores.run(scenario)


def test_an_event_another_process_writes_right_after_subscribing_arrives(
    shared_stores: Stores,
) -> None:
    async def scenario(reader: Store, writer: Store) -> None:
        for _ in range(20):
            execution = new_execution()
            await writer.create(execution, None)
            async with reader.subscribe(execution.id) as subscription:
                written = await writer.append(execution, EventKind.PROGRESS, {})
                assert await event_from(subscription, written.seq) == written

    shared_stores.run(scenario, instances=2)


def test_publish_only_reaches_subscribers_without_being_stored(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        unstored = Event(execution.id, 2, EventKind.TERMINAL, terminal_data(FAILED), time.time())
        async with store.subscribe(execution.id) as subscription:
            await store.publish_only(unstored, execution)
            assert await next_event(subscription) == unstored
        assert seqs(await store.events_after(execution.id, 0)) == [1]
        # Stored later without announcing it again.
        end = await store.finish(execution, FAILED, announce=False)
        assert end is not None
        assert end.seq == unstored.seq

    stores.run(scenario)


def test_a_subscription_follows_the_writer_when_it_moves_to_another_process(
    shared_stores: Stores,
) -> None:
    """A process following what it writes hears nothing from the others - until it stops
    writing (the execution's lease went elsewhere): then it gets what the new writer wrote
    since, and what it writes next."""

    async def scenario(first: Store, second: Store) -> None:
        execution = new_execution()
        created = await first.create(execution, None)
        async with first.subscribe(execution.id, written_here=True) as subscription:
            own = await first.append(execution, EventKind.PROGRESS, {"by": "first"})
            assert await next_event(subscription) == own
            taken = await second.get(execution.id)
            assert taken is not None
            missed = await second.append(taken, EventKind.PROGRESS, {"by": "second"})
            await nothing_more(subscription)  # not sent to a process that writes it
            first.written_elsewhere(execution.id)
            assert await event_from(subscription, missed.seq) == missed
            end = await second.finish(taken, SUCCEEDED)
            assert await next_event(subscription) == end
            assert created.seq < own.seq < missed.seq
            await nothing_more(subscription)

    shared_stores.run(scenario, instances=2)


async def next_change(subscription: ChangeSubscription) -> JsonObject | None:
    async with asyncio.timeout(WAIT):
        change = await subscription.get()
    return None if change is None else change.data


def test_a_feed_gets_the_changes_of_its_owner_s_executions(shared_stores: Stores) -> None:
    """Written by any process, heard by the feed of the execution's owner and by the feed
    of every owner's executions - not by another owner's."""

    async def scenario(writer: Store, reader: Store) -> None:
        mine, theirs = new_execution("owner-a"), new_execution("owner-b")
        async with (
            reader.subscribe_changes("owner-a") as own_feed,
            reader.subscribe_changes(None) as everyone,
            writer.subscribe_changes("owner-a") as local_feed,
        ):
            await writer.create(mine, None)
            await writer.append(mine, EventKind.PROGRESS, {"message": "half", "percent": 50})
            await writer.append(mine, EventKind.STATE, {"status": "RUNNING"}, Status.RUNNING)
            await writer.finish(mine, SUCCEEDED)
            await writer.create(theirs, None)
            for feed in (own_feed, local_feed):
                changes = [await next_change(feed) for _ in range(4)]
                assert {c["id"] for c in changes if c} == {mine.id}
                assert [c["status"] for c in changes if c] == [
                    "ACCEPTED",
                    "ACCEPTED",
                    "RUNNING",
                    "SUCCEEDED",
                ]
                first, progress, _, end = changes
                assert first is not None and first["project_id"] == "project-1"
                assert first["sid"] == "sid-1" and first["finished_at"] is None
                assert progress is not None
                assert progress["progress"] == {"message": "half", "percent": 50}
                assert end is not None and (end["code"], end["message"]) == (0, "done")
                assert end["finished_at"] == end["updated_at"]
            seen = {
                (c["id"], c["status"]) for c in [await next_change(everyone) for _ in range(5)] if c
            }
            assert (theirs.id, "ACCEPTED") in seen and (mine.id, "SUCCEEDED") in seen
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await own_feed.get()  # owner-b's execution is not in owner-a's feed

    shared_stores.run(scenario, instances=2)


def test_publish_only_and_unannounced_ends_reach_other_processes(shared_stores: Stores) -> None:
    async def scenario(writer: Store, reader: Store) -> None:
        execution = new_execution()
        await writer.create(execution, None)
        unstored = Event(execution.id, 2, EventKind.TERMINAL, terminal_data(FAILED), time.time())
        async with reader.subscribe(execution.id) as subscription:
            await writer.publish_only(unstored, execution)
            assert await event_from(subscription, unstored.seq) == unstored
            # One that missed the published end (Redis was failing) gets the stored one.
            end = await writer.finish(execution, FAILED, announce=False)
            assert await next_event(subscription) == end

    shared_stores.run(scenario, instances=2)


def test_listeners_hear_this_store_s_writes(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        heard: list[tuple[Event, str]] = []
        store.add_listener(lambda event, execution: heard.append((event, execution.id)))
        execution = new_execution()
        created = await store.create(execution, None)
        appended = await store.append(execution, EventKind.PROGRESS, {})
        published = Event(execution.id, 3, EventKind.PROGRESS, {}, time.time())
        await store.publish_only(published, execution)
        await store.finish(execution, SUCCEEDED, announce=False)
        assert heard == [(e, execution.id) for e in (created, appended, published)]

    stores.run(scenario)


def test_listeners_hear_nothing_of_other_processes_writes(shared_stores: Stores) -> None:
    async def scenario(listening: Store, writer: Store) -> None:
        heard: list[Event] = []
        listening.add_listener(lambda event, _: heard.append(event))
        execution = new_execution()
        async with listening.subscribe(execution.id) as subscription:
            await writer.create(execution, None)
            await next_event(subscription)  # the event has reached the other process
        assert heard == []
        copy = await listening.get(execution.id)
        assert copy is not None
        own = await listening.append(copy, EventKind.PROGRESS, {})
        assert heard == [own]

    shared_stores.run(scenario, instances=2)


def test_notices_reach_the_sender_s_listeners(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        heard: list[tuple[str, str]] = []
        store.add_notice_listener(lambda topic, execution_id: heard.append((topic, execution_id)))
        await store.notify("cancel", "exec-1")
        assert heard == [("cancel", "exec-1")]

    stores.run(scenario)


def test_notices_reach_every_process(shared_stores: Stores) -> None:
    async def scenario(sender: Store, other: Store) -> None:
        heard_here: list[tuple[str, str]] = []
        heard_there: list[tuple[str, str]] = []
        sender.add_notice_listener(lambda *notice: heard_here.append(notice))
        other.add_notice_listener(lambda *notice: heard_there.append(notice))
        await sender.notify("cancel", "exec-1")
        await sender.notify("resume", "exec-2")

        async def both_heard() -> bool:
            return len(heard_there) == 2

        await eventually(both_heard)
        assert heard_here == heard_there == [("cancel", "exec-1"), ("resume", "exec-2")]

    shared_stores.run(scenario, instances=2)


def test_drain_ends_every_subscription_now_and_later(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        async with store.subscribe(execution.id) as subscription:
            waiting = asyncio.create_task(next_event(subscription))
            await asyncio.sleep(0.01)
            store.drain()
            assert await waiting is None
        async with store.subscribe(execution.id) as late:
            assert await next_event(late) is None

    stores.run(scenario)


def test_after_a_pubsub_reconnect_subscribers_get_the_latest_event(
    shared_stores: Stores,
) -> None:
    async def scenario(reader: Store, writer: Store) -> None:
        execution = new_execution()
        await writer.create(execution, None)
        async with reader.subscribe(execution.id) as subscription:
            shared_stores.kill_pubsub()
            # Published while nobody listens: lost on pub/sub, kept in the store.
            await writer.append(execution, EventKind.PROGRESS, {"missed": 1})
            end = await writer.finish(execution, SUCCEEDED)
            assert end is not None
            # Without a hand-over of the latest event at reconnect, this would wait forever.
            assert await event_from(subscription, end.seq) == end
            # The connection works again for what follows.
            other = new_execution()
            async with reader.subscribe(other.id) as following:
                created = await writer.create(other, None)
                assert await next_event(following) == created

    shared_stores.run(scenario, instances=2)


def test_after_a_pubsub_reconnect_feeds_end_so_their_clients_resume(
    shared_stores: Stores,
) -> None:
    """Changes published while the connection was down are gone: a feed that went on as
    if nothing happened would show them never; ended, its client resumes and replays."""

    async def scenario(reader: Store, writer: Store) -> None:
        async with reader.subscribe_changes("owner-a") as feed:
            shared_stores.kill_pubsub()
            ended = False
            async with asyncio.timeout(WAIT):
                while not ended:
                    ended = await feed.get() is None
        async with reader.subscribe_changes("owner-a") as resumed:  # the connection works
            execution = new_execution("owner-a")
            await writer.create(execution, None)
            assert (await next_change(resumed) or {})["id"] == execution.id

    shared_stores.run(scenario, instances=2)


# --- retention ---------------------------------------------------------------------------

RETENTION = 0.3


def test_a_finished_execution_goes_after_retention(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        finished, unfinished = new_execution(idempotency_key="k"), new_execution()
        await store.create(finished, b"token")
        await store.create(unfinished, b"token")
        await store.finish(finished, SUCCEEDED)

        purged = 0

        async def gone() -> bool:
            # What the housekeeping loop does, with the store's configured retention.
            nonlocal purged
            purged += await store.purge_finished(time.time() - RETENTION, 100)
            return await store.get(finished.id) is None

        await eventually(gone)
        # The count housekeeping logs: the one finished execution.  Redis may have expired
        # it by itself, and a reader dropped its index entry, before a purge came to it.
        assert purged == 1 if isinstance(store, SqliteStore) else purged in (0, 1), purged
        assert await store.events_after(finished.id, 0) == []
        assert await store.find_idempotent("owner-a", "k") is None
        assert await store.list_executions(ListQuery(owner="owner-a")) == [unfinished]
        assert await store.get(unfinished.id) == unfinished
        # Its key is free again.
        await store.create(new_execution(idempotency_key="k"), None)

    stores.run(scenario, retention_seconds=RETENTION)


def test_redis_keys_expire_without_a_purge(shared_stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        execution = new_execution()
        await store.create(execution, None)
        await store.finish(execution, SUCCEEDED)

        async def gone() -> bool:
            return await store.get(execution.id) is None

        await eventually(gone)
        assert await store.events_after(execution.id, 0) == []
        assert await store.list_executions(ListQuery(owner="owner-a")) == []

    shared_stores.run(scenario, retention_seconds=RETENTION)


# --- faults (Redis) ----------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, to stop and restart (its data kept on disk)."""
    with standalone_server(tmp_path / "own", password=PASSWORD, appendonly=True) as server:
        yield server


async def _fails_promptly(call: Awaitable[Any], within: float = 2.0) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as failure:
        await call
    assert time.monotonic() - started < within
    assert PASSWORD not in str(failure.value)


def test_an_unreachable_redis_fails_calls_promptly_until_it_is_back(
    own_server: RedisServer,
) -> None:
    async def scenario() -> None:
        store = await RedisStore.connect(own_server.addr, password=PASSWORD, prefix="faults")
        other = await RedisStore.connect(own_server.addr, password=PASSWORD, prefix="faults")
        try:
            execution = new_execution()
            await store.create(execution, b"token")
            stored = await store.get(execution.id)
            await store.check()
            await store.writable()

            own_server.stop()
            await _fails_promptly(store.check())
            await _fails_promptly(store.get(execution.id))
            await _fails_promptly(store.append(execution, EventKind.PROGRESS, {}))
            await _fails_promptly(store.writable())
            await _fails_promptly(store.writable())  # between probes: known to fail

            own_server.start()
            await eventually(_works(store.check))
            await eventually(_works(store.writable))
            assert await store.get(execution.id) == stored
            async with store.subscribe(execution.id) as subscription:
                # From another process: its reader has to be connected again.
                copy = await other.get(execution.id)
                assert copy is not None
                written = await other.append(copy, EventKind.PROGRESS, {"back": True})
                assert await event_from(subscription, written.seq) == written
        finally:
            await store.close()
            await other.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))


def _works(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await call()
        except StoreError:
            return False
        return True

    return check


def test_connecting_with_a_wrong_password_is_a_store_error(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        with pytest.raises(StoreError) as failure:
            await RedisStore.connect(redis_server.addr, password="wrong-password-xyz")
        assert "wrong-password-xyz" not in str(failure.value)

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))


def test_connect_takes_one_address_or_cluster_seeds() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="exactly one"):
            await RedisStore.connect()
        with pytest.raises(ValueError, match="exactly one"):
            await RedisStore.connect("127.0.0.1:1", cluster_seeds=["127.0.0.1:2"])

    asyncio.run(scenario())


def test_many_concurrent_calls_all_succeed(stores: Stores) -> None:
    """More calls at once than the store has connections: they wait their turn."""

    async def scenario(store: Store) -> None:
        executions = [new_execution() for _ in range(100)]
        await asyncio.gather(*(store.create(e, b"token") for e in executions))
        appended = await asyncio.gather(
            *(store.append(e, EventKind.PROGRESS, {"i": i}) for i, e in enumerate(executions))
        )
        assert {event.seq for event in appended} == {2}
        ended = await asyncio.gather(*(store.finish(e, SUCCEEDED) for e in executions))
        assert all(end is not None and end.seq == 3 for end in ended)
        assert await store.unfinished() == []

    stores.run(scenario)


def test_concurrent_creates_with_one_key_record_one_execution(shared_stores: Stores) -> None:
    async def scenario(a: Store, b: Store) -> None:
        for i in range(10):
            first, second = (new_execution(idempotency_key=f"key-{i}") for _ in range(2))
            results = await asyncio.gather(
                a.create(first, None), b.create(second, None), return_exceptions=True
            )
            refused = [r for r in results if isinstance(r, DuplicateIdempotencyKey)]
            assert len(refused) == 1, results
            recorded = [e for e in (first, second) if await a.get(e.id) is not None]
            assert len(recorded) == 1
            assert await b.find_idempotent("owner-a", f"key-{i}") == recorded[0]

    shared_stores.run(scenario, instances=2)


# --- run durations -------------------------------------------------------------------------


def test_run_durations_keep_the_newest_per_project(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        await store.add_durations({"p1": [1.0, 2.0, 3.0], "p2@v2": [9.5]}, keep=4)
        await store.add_durations({"p1": [4.0, 5.0]}, keep=4)
        found = await store.durations(["p1", "p2@v2", "never-ran"], keep=4)
        assert found == {"p1": [2.0, 3.0, 4.0, 5.0], "p2@v2": [9.5]}
        assert await store.durations(["p1"], keep=2) == {"p1": [4.0, 5.0]}

    stores.run(scenario)


def test_replicas_learn_from_each_other_s_runs(shared_stores: Stores) -> None:
    async def scenario(here: Store, there: Store) -> None:
        today = backoff_schedule(1.0, 2.0, 10.0)
        policy = SchedulePolicy(today, target_latency=2.0, ceiling=10.0)
        learning, asking = DurationModels(here, policy), DurationModels(there, policy)
        assert await asking.schedule_for("p") == today
        for _ in range(MIN_SAMPLES):
            learning.observe("p", 10.0)
        await learning.sync()
        await asking.sync()
        learned = asking.current("p")
        assert learned.learned
        assert learned.catches(10.0)[1] == 1
        fresh = DurationModels(there, policy)  # a process started later
        assert (await fresh.schedule_for("p")).learned

    shared_stores.run(scenario, instances=2)


# --- MCP sessions and messages ------------------------------------------------------------
def test_an_mcp_session_round_trips_changes_ends_and_expires(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        now = time.time()
        session = McpSession("s-1", "owner-a", "2024-11-05", now + 60, "sse")
        await store.put_mcp_session(session)
        found = await store.mcp_session("s-1")
        assert found is not None
        assert (found.owner, found.protocol_version, found.transport) == (
            "owner-a",
            "2024-11-05",
            "sse",
        )
        assert found.expires_at == pytest.approx(now + 60, abs=1)
        assert await store.update_mcp_session("s-1", protocol_version="2025-03-26")
        assert await store.update_mcp_session("s-1", expires_at=now + 600)
        changed = await store.mcp_session("s-1")
        assert changed is not None and changed.protocol_version == "2025-03-26"
        assert changed.expires_at == pytest.approx(now + 600, abs=1)
        assert await store.end_mcp_session("s-1") is True
        assert await store.mcp_session("s-1") is None
        # Ended is ended: a late renewal or version change does not bring it back.
        assert await store.update_mcp_session("s-1", expires_at=now + 600) is False
        assert await store.update_mcp_session("s-1", protocol_version="2025-03-26") is False
        assert await store.mcp_session("s-1") is None
        assert await store.end_mcp_session("s-1") is False
        await store.put_mcp_session(McpSession("s-2", "owner-a", "2025-11-25", now + 0.3))
        await asyncio.sleep(0.5)
        assert await store.mcp_session("s-2") is None
        assert await store.update_mcp_session("s-2", expires_at=now + 600) is False
        await store.purge_mcp_sessions(time.time())
        assert await store.mcp_session("s-2") is None

    stores.run(scenario)


def test_an_mcp_session_is_known_to_every_process(shared_stores: Stores) -> None:
    async def scenario(opener: Store, other: Store) -> None:
        await opener.put_mcp_session(McpSession("s-9", "owner-b", "2025-11-25", time.time() + 60))
        seen = await other.mcp_session("s-9")
        assert seen is not None and seen.owner == "owner-b"
        assert await other.end_mcp_session("s-9")
        assert await opener.mcp_session("s-9") is None
        assert await opener.update_mcp_session("s-9", expires_at=time.time() + 60) is False

    shared_stores.run(scenario, instances=2)


async def next_message(subscription: MessageSubscription) -> str | None:
    async with asyncio.timeout(WAIT):
        return await subscription.get()


def test_messages_reach_the_subscribers_of_their_channel(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        async with (
            store.subscribe_messages("c-1") as one,
            store.subscribe_messages("c-2") as two,
        ):
            await store.send_message("c-1", "first")
            await store.send_message("c-1", "second")
            await store.send_message("c-3", "to nobody")
            assert [await next_message(one), await next_message(one)] == ["first", "second"]
            store.drain()
            assert await next_message(two) is None  # only the end: nothing sent to c-2
            assert await next_message(one) is None

    stores.run(scenario)


def test_messages_sent_by_one_process_reach_another(shared_stores: Stores) -> None:
    async def scenario(sender: Store, holder: Store) -> None:
        async with holder.subscribe_messages("stream-7") as held:
            for n in range(5):
                await sender.send_message("stream-7", f"answer {n}")
            assert [await next_message(held) for _ in range(5)] == [f"answer {n}" for n in range(5)]
        await sender.send_message("stream-7", "after the stream ended")  # nobody: not kept
        async with holder.subscribe_messages("stream-7") as again:
            await sender.send_message("stream-7", "new")
            assert await next_message(again) == "new"

    shared_stores.run(scenario, instances=2)
