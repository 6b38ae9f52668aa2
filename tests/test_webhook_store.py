"""The webhook store suite: what the delivery worker and the API can count on, on every
store (SQLite, Redis on one server, Redis Cluster).  Each test has its own key prefix
(its own database for SQLite) and its own owners."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from rpa_gateway.executions import EventKind, Outcome, Status
from rpa_gateway.store.base import Store
from rpa_gateway.store.redis import RedisStore
from rpa_gateway.webhooks import model
from rpa_gateway.webhooks.model import Delivery, DeliveryStatus, Endpoint
from rpa_gateway.webhooks.store import DeliveryBusy, TooManyEndpoints, WebhookStore
from tests.redis_servers import RedisClusterNodes
from tests.stores import Stores
from tests.test_store import FAILED, SUCCEEDED, new_execution

LEASE = 30.0


def new_endpoint(owner: str, **fields: object) -> Endpoint:
    now = time.time()
    values: dict[str, object] = {
        "id": f"wh_{uuid.uuid4().hex[:16]}",
        "owner": owner,
        "url": "https://hooks.example.com/in",
        "events": model.TERMINAL_EVENTS,
        "project_id": None,
        "description": "",
        "enabled": True,
        "secret": "whsec_c2VjcmV0",
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    return Endpoint(**values)  # type: ignore[arg-type]


def hooks(store: Store) -> WebhookStore:
    assert store.webhooks is not None
    return store.webhooks


async def finish_one(store: Store, owner: str, outcome: Outcome = SUCCEEDED, **kw: str) -> str:
    execution = new_execution(owner, **kw)
    await store.create(execution, None)
    await store.finish(execution, outcome)
    return execution.id


async def claim(webhooks: WebhookStore, limit: int = 64, per_endpoint: int = 8) -> list[Delivery]:
    return await webhooks.claim_due("me", time.time() + 0.001, limit, LEASE, per_endpoint)


def test_an_end_is_delivered_to_each_endpoint_that_wants_it(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        wanted = new_endpoint("ann")
        other_project = new_endpoint("ann", project_id="elsewhere")
        failures_only = new_endpoint("ann", events=(model.FAILED,))
        switched_off = new_endpoint("ann", enabled=False)
        someone_else = new_endpoint("bob")
        for endpoint in (wanted, other_project, failures_only, switched_off, someone_else):
            await webhooks.add_endpoint(endpoint, 20)
        execution_id = await finish_one(store, "ann")
        [delivery] = await claim(webhooks)
        assert (delivery.webhook_id, delivery.execution_id, delivery.event_type) == (
            wanted.id,
            execution_id,
            model.SUCCEEDED,
        )
        assert delivery.status is DeliveryStatus.PENDING and delivery.body is None
        assert await webhooks.outbox_depth() == 1
        failed_id = await finish_one(store, "ann", FAILED)
        claimed = await claim(webhooks)
        assert sorted((d.webhook_id, d.execution_id) for d in claimed) == sorted(
            [(wanted.id, failed_id), (failures_only.id, failed_id)]
        )

    stores.run(scenario)


def test_a_delivery_is_claimed_once_until_its_lease_lapses(shared_stores: Stores) -> None:
    async def scenario(one: Store, two: Store) -> None:
        endpoint = new_endpoint("ann")
        await hooks(one).add_endpoint(endpoint, 20)
        await finish_one(one, "ann")
        now = time.time() + 0.001
        [first] = await hooks(one).claim_due("one", now, 64, 1.0, 8)
        assert await hooks(two).claim_due("two", now, 64, 1.0, 8) == []
        # "one" died: its claim lapses, and the other replica takes the delivery.
        [again] = await hooks(two).claim_due("two", now + 1.5, 64, LEASE, 8)
        assert again.id == first.id
        again.status, again.attempts = DeliveryStatus.DELIVERED, 1
        await hooks(two).save_delivery(again, endpoint_ok=True)
        assert await hooks(one).claim_due("one", now + 100, 64, LEASE, 8) == []
        assert await hooks(one).outbox_depth() == 0

    shared_stores.run(scenario, instances=2)


def test_an_endpoint_gets_its_share_and_no_more(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        busy, quiet = new_endpoint("ann"), new_endpoint("bob")
        await webhooks.add_endpoint(busy, 20)
        await webhooks.add_endpoint(quiet, 20)
        for _ in range(20):
            await finish_one(store, "ann")
        await finish_one(store, "bob")
        claimed = await claim(webhooks, per_endpoint=8)
        assert sorted(d.webhook_id for d in claimed).count(busy.id) == 8
        assert [d.webhook_id for d in claimed].count(quiet.id) == 1, "a backlog takes no turn"
        assert await claim(webhooks) == [], "its share is claimed already"
        done = claimed[0] if claimed[0].webhook_id == busy.id else claimed[1]
        done.status = DeliveryStatus.DELIVERED
        await webhooks.save_delivery(done)
        assert len(await claim(webhooks)) == 1, "one attempt ended: one more"
        assert await webhooks.outbox_depth() == 20

    stores.run(scenario)


def test_a_failed_attempt_is_due_again_then_fails_and_can_be_sent_again(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann")
        await webhooks.add_endpoint(endpoint, 20)
        await finish_one(store, "ann")
        [delivery] = await claim(webhooks)
        with_body = b'{"type":"execution.succeeded"}'
        delivery.body, delivery.attempts, delivery.last_status = with_body, 1, 500
        delivery.next_attempt_at = time.time() + 60
        await webhooks.save_delivery(delivery)
        assert await claim(webhooks) == [], "not due yet"
        due = await webhooks.next_due(time.time())
        assert due is not None and due > time.time() + 50
        [retried] = await webhooks.claim_due("me", time.time() + 61, 64, LEASE, 8)
        assert (retried.attempts, retried.body) == (1, with_body), "the same body again"
        # Due by then, and still held by the claim just taken: nobody else gets it.
        assert await webhooks.claim_due("other", time.time() + 62, 64, LEASE, 8) == []
        retried.status, retried.next_attempt_at = DeliveryStatus.FAILED, None
        retried.attempts = 2
        await webhooks.save_delivery(retried)
        assert await webhooks.outbox_depth() == 0
        [failed] = await webhooks.deliveries(endpoint.id, DeliveryStatus.FAILED, None, 10)
        assert (failed.id, failed.attempts, failed.last_status) == (delivery.id, 2, 500)
        assert await webhooks.recover(endpoint.id, failed.created_at - 1, time.time()) == 1
        [back] = await claim(webhooks)
        assert (back.id, back.attempts, back.status) == (delivery.id, 0, DeliveryStatus.PENDING)
        with pytest.raises(DeliveryBusy):  # in flight: it cannot be queued again
            await webhooks.requeue(endpoint.id, back.id, time.time())
        assert await webhooks.requeue("wh_other", back.id, time.time()) is None

    stores.run(scenario)


def test_deliveries_are_listed_newest_first_by_page_and_status(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann")
        await webhooks.add_endpoint(endpoint, 20)
        for _ in range(5):
            await finish_one(store, "ann")
        claimed = await claim(webhooks)
        claimed[0].status = DeliveryStatus.DELIVERED
        await webhooks.save_delivery(claimed[0])
        first = await webhooks.deliveries(endpoint.id, None, None, 3)
        rest = await webhooks.deliveries(endpoint.id, None, (first[-1].created_at, first[-1].id), 3)
        listed = first + rest
        assert len(listed) == 5 and len({d.id for d in listed}) == 5
        keys = [(d.created_at, d.id) for d in listed]
        assert keys == sorted(keys, reverse=True)
        [delivered] = await webhooks.deliveries(endpoint.id, DeliveryStatus.DELIVERED, None, 10)
        assert delivered.id == claimed[0].id
        assert len(await webhooks.deliveries(endpoint.id, DeliveryStatus.PENDING, None, 10)) == 4

    stores.run(scenario)


def test_endpoints_are_kept_changed_disabled_and_removed(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann", description="first")
        await webhooks.add_endpoint(endpoint, 2)
        await webhooks.add_endpoint(new_endpoint("ann"), 2)
        with pytest.raises(TooManyEndpoints):
            await webhooks.add_endpoint(new_endpoint("ann"), 2)
        assert len(await webhooks.endpoints("ann")) == 2
        assert len(await webhooks.endpoints(None)) == 2
        endpoint.description = "second"
        await webhooks.update_endpoint(endpoint)
        stored = await webhooks.endpoint(endpoint.id)
        assert stored is not None and stored.description == "second"
        assert stored.secret == endpoint.secret
        since = await webhooks.endpoint_failed(endpoint.id, 1000.0)
        assert since == 1000.0 and await webhooks.endpoint_failed(endpoint.id, 2000.0) == 1000.0
        await webhooks.disable_endpoint(endpoint.id, "every delivery failed")
        stored = await webhooks.endpoint(endpoint.id)
        assert stored is not None and not stored.enabled
        assert (stored.disabled_reason, stored.failing_since) == ("every delivery failed", 1000.0)
        await finish_one(store, "ann")
        assert endpoint.id not in [d.webhook_id for d in await claim(webhooks)], "disabled"
        stored.enabled = True
        await webhooks.update_endpoint(stored, reenabled=True)
        again = await webhooks.endpoint(endpoint.id)
        assert again is not None and again.enabled
        assert (again.disabled_reason, again.failing_since) == (None, None)
        await finish_one(store, "ann")
        await finish_one(store, "ann")
        assert await webhooks.remove_endpoint(endpoint.id)
        assert not await webhooks.remove_endpoint(endpoint.id)
        assert await webhooks.endpoint(endpoint.id) is None
        assert await webhooks.endpoint_failed(endpoint.id, 3000.0) is None
        failed = await webhooks.deliveries(endpoint.id, DeliveryStatus.FAILED, None, 10)
        assert [d.last_error for d in failed] == ["the endpoint was removed"] * 2

    stores.run(scenario)


def test_done_deliveries_are_purged_and_pending_ones_stay(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann")
        await webhooks.add_endpoint(endpoint, 20)
        for _ in range(3):
            await finish_one(store, "ann")
        [done, *_] = await claim(webhooks)
        done.status = DeliveryStatus.DELIVERED
        await webhooks.save_delivery(done)
        assert await webhooks.purge(time.time() + 1, 100) == 1
        assert await webhooks.delivery(done.id) is None
        assert len(await webhooks.deliveries(endpoint.id, None, None, 10)) == 2
        assert await webhooks.outbox_depth() == 2

    stores.run(scenario)


def test_started_events_go_to_endpoints_that_ask(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann", events=(model.STARTED,))
        await webhooks.add_endpoint(endpoint, 20)
        execution = new_execution("ann")
        await store.create(execution, None)
        await store.append(execution, EventKind.STATE, {"status": "running"}, Status.RUNNING)
        assert await claim(webhooks) == [], "not before the platform took the run"
        execution.upstream_id = "up-1"
        await store.append(execution, EventKind.STATE, {"upstream_id": "up-1"})
        [delivery] = await claim(webhooks)
        assert (delivery.event_type, delivery.execution_id) == (model.STARTED, execution.id)

    stores.run(scenario)


def test_a_test_delivery_is_added_apart_from_events(stores: Stores) -> None:
    async def scenario(store: Store) -> None:
        webhooks = hooks(store)
        endpoint = new_endpoint("ann")
        await webhooks.add_endpoint(endpoint, 20)
        now = time.time()
        test = Delivery(
            id=f"msg_{uuid.uuid4().hex}",
            webhook_id=endpoint.id,
            execution_id=None,
            event_type=model.TEST,
            event_at=now,
            status=DeliveryStatus.PENDING,
            created_at=now,
            next_attempt_at=now,
        )
        await webhooks.add_delivery(test)
        [claimed] = await claim(webhooks)
        assert (claimed.id, claimed.event_type, claimed.execution_id) == (test.id, model.TEST, None)

    stores.run(scenario)


def test_a_cluster_end_whose_deliveries_were_cut_off_gets_them_from_the_sweep(
    tmp_path: Path, redis_cluster: RedisClusterNodes
) -> None:
    """A cluster writes an end's deliveries after the end (two slots): a crash between the
    two leaves the execution in the unfinished index, and its sweep writes them, once
    however often it runs before the entry goes."""

    async def scenario(store: Store) -> None:
        assert isinstance(store, RedisStore)
        webhooks = hooks(store)
        await webhooks.add_endpoint(new_endpoint("ann"), 20)
        written_apart = store._fan_out_apart

        async def crashed(*args: object) -> bool:
            return False

        store._fan_out_apart = crashed  # type: ignore[method-assign]
        execution_id = await finish_one(store, "ann")
        assert await claim(webhooks) == [], "the crash: no delivery written"
        store._fan_out_apart = written_apart  # type: ignore[method-assign]
        ended = await store.get(execution_id)
        assert ended is not None
        assert await store._fan_out_late(ended), "a sweep that wrote them and died"
        assert await store.unfinished() == []  # the next sweep: again, then the entry goes
        [delivery] = await claim(webhooks)
        assert delivery.execution_id == execution_id
        assert await webhooks.outbox_depth() == 1

    Stores(tmp_path, cluster=redis_cluster).run(scenario)
