"""Delivers what the outbox holds: beside the supervisor, never in its way.

It claims due deliveries (a lease, so a process killed mid-delivery leaves them to the
next claim), sends each with bounded concurrency (overall and per endpoint), and records
what came of it: a 2xx delivers; a 410 disables the endpoint; anything else is retried on
the schedule, with jitter, then fails.  An endpoint failing longer than ``disable_after``
is disabled.  A terminal event wakes it at once when its caller has endpoints; retries
fall due on their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.store.base import Store, StoreError
from rpa_gateway.webhooks import payload
from rpa_gateway.webhooks.model import (
    TERMINAL_EVENTS,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
)
from rpa_gateway.webhooks.secrets import SecretSealer
from rpa_gateway.webhooks.sender import Sender
from rpa_gateway.webhooks.signing import signed_headers
from rpa_gateway.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

_IDLE_CHECK = 1.0  # seconds between looks for retries falling due
_FAILED_STORE_PAUSE = 2.0
_DEPTH_EVERY = 5.0  # seconds between counts of the outbox (for its gauge)
# Seconds an endpoint read is used for (a change or a removal takes effect within it).
ENDPOINT_FRESHNESS = 1.0
_ENDPOINTS_KEPT = 10_000
# Seconds a wake waits for more ends to come, so one claim takes several.
_GATHER = 0.1
# Executions that just ended, kept for the bodies of their deliveries (attempted within a
# moment as a rule) so they are not read back: at most so many, for so long.
_ENDED_KEPT = 64
_ENDED_SECONDS = 5.0
# Seconds a caller found without endpoints is taken to have none, so that its runs' starts
# and ends do not wake the loop (a look at the outbox each: most of a replica's upkeep per
# execution where nobody registered a webhook).  One registered meanwhile at another
# process still gets its deliveries at the next idle look, _IDLE_CHECK later at most.
_OWNERS_FRESHNESS = 5.0
_OWNERS_KEPT = 10_000
_UNSEALED = (
    "the endpoint's secret cannot be opened: it was sealed with another RPA_TOKEN_KEY"
    " (rotate the secret, or give the service that key)"
)
# (delivery, attempt, outcome, start in ns since the epoch): telemetry of one attempt.
AttemptObserver = Callable[[Delivery, Attempt, str, int], None]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    retry_schedule: Sequence[float]  # seconds before each retry
    disable_after: float  # seconds an endpoint may fail before it is disabled
    max_result_bytes: int
    max_in_flight: int = 64
    max_per_endpoint: int = 8
    jitter: float = 0.2  # each retry delay is spread by ± this fraction

    def retry_delay(self, attempts: int) -> float | None:
        """Seconds before the next attempt after ``attempts`` failed ones, or None: give up."""
        if attempts > len(self.retry_schedule):
            return None
        base = self.retry_schedule[attempts - 1]
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        webhooks: WebhookStore,
        sender: Sender,
        policy: DeliveryPolicy,
        *,
        holder: str,
        lease_seconds: float,
        render: Callable[[Execution], bytes],
        sealer: SecretSealer,
        observe: AttemptObserver = lambda delivery, attempt, outcome, started_ns: None,
        outbox_depth: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self._render = render  # the execution in JSON, as GET /rpa/v1/executions/{id} shows it
        self._sealer = sealer
        self._observe = observe
        self._outbox_depth = outbox_depth
        self._depth_counted_at = 0.0
        self._store = store
        self._webhooks = webhooks
        self._sender = sender
        self._policy = policy
        self._holder = holder
        self._lease = lease_seconds
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._endpoints: dict[str, tuple[float, Endpoint | None]] = {}
        self._ended: OrderedDict[str, tuple[float, Execution]] = OrderedDict()
        # Caller -> (when looked up, whether it has endpoints); and those to look up.
        self._owners: dict[str, tuple[float, bool]] = {}
        self._owners_to_check: set[str] = set()
        self._gather = False
        # Due deliveries were left unclaimed (their endpoints at their share): an attempt's
        # end frees a turn, so it wakes the loop.  Otherwise ends do not: a claim per end
        # was most of what a delivery cost.
        self._held_back = False
        self._task: asyncio.Task[None] | None = None
        store.add_listener(self._on_event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    def wake(self) -> None:
        """New deliveries were recorded: gather more for a moment, then claim them."""
        self._gather = True
        self._wake.set()

    def endpoints_added(self, owner: str) -> None:
        """The caller registered an endpoint here: its next events wake the loop."""
        self._owners[owner] = (time.monotonic(), True)

    def _on_event(self, event: Event, execution: Execution) -> None:
        # An end, or a run the platform took (execution.started): deliveries may be due.
        terminal = event.kind is EventKind.TERMINAL
        if not terminal and "upstream_id" not in event.data:
            return
        now = time.monotonic()
        ended = self._ended
        while ended and (
            len(ended) >= _ENDED_KEPT or next(iter(ended.values()))[0] < now - _ENDED_SECONDS
        ):
            ended.popitem(last=False)
        if not self._may_have_endpoints(execution.owner, now):
            return
        if terminal:
            ended[execution.id] = (now, execution)
        self.wake()

    def _may_have_endpoints(self, owner: str, now: float) -> bool:
        """False when the caller was found without endpoints a moment ago; a caller not
        looked up lately is looked up at the loop's next turn (and may have some)."""
        known = self._owners.get(owner)
        if known is not None and now - known[0] < _OWNERS_FRESHNESS:
            return known[1]
        self._owners_to_check.add(owner)
        return True

    async def _look_up_owners(self) -> None:
        """Whether each caller due a look-up has endpoints.  One that cannot be looked up
        is taken to have some (its events wake the loop) until its next look-up."""
        owners, self._owners_to_check = self._owners_to_check, set()
        if len(self._owners) + len(owners) > _OWNERS_KEPT:
            self._owners.clear()
        for owner in owners:
            asked_at = time.monotonic()
            try:
                found = bool(await self._webhooks.endpoints(owner))
            except Exception as exc:  # a store fault, or an endpoint that does not parse
                if not isinstance(exc, StoreError):
                    log.exception("webhook endpoints of a caller cannot be read")
                found = True
            known = self._owners.get(owner)
            if known is None or known[0] <= asked_at:  # not registered here meanwhile
                self._owners[owner] = (asked_at, found)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._sender.aclose()

    async def _run(self) -> None:
        try:
            released = await self._webhooks.release_claims()
        except StoreError as exc:
            log.warning("webhook delivery claims cannot be released: %s", exc)
        else:
            if released:
                log.info(
                    "%d webhook deliveries left in flight by the last process are due", released
                )
        while True:
            self._wake.clear()
            try:
                await self._count_outbox()
                wait = await self._send_due()
                await self._look_up_owners()  # after the look it was woken for
            except Exception as exc:  # a store fault, or a bug: the loop must go on
                if not isinstance(exc, StoreError):
                    log.exception("webhook deliveries: a fault inside the service")
                log.warning("webhook deliveries cannot be read now: %s", exc)
                wait = _FAILED_STORE_PAUSE
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                if self._gather:  # not for an attempt's end: its endpoint's turn is free
                    self._gather = False
                    await asyncio.sleep(_GATHER)

    async def _send_due(self) -> float:
        """Start what is due; the seconds until more may be (0: look again at once)."""
        now = time.time()
        due = await self._webhooks.next_due(now)
        if due is None or due > now:  # nothing to claim: no write
            return min(_IDLE_CHECK, due - now) if due is not None else _IDLE_CHECK
        room = self._policy.max_in_flight - len(self._in_flight)
        if room <= 0:
            self._held_back = True
            return _IDLE_CHECK  # a finishing attempt wakes the loop
        self._held_back = True  # until known: an attempt ending meanwhile wakes the loop
        claimed = await self._webhooks.claim_due(
            self._holder, now, room, self._lease, self._policy.max_per_endpoint
        )
        wait = 0.0
        if len(claimed) < room:
            left = await self._webhooks.next_due(now)
            self._held_back = left is not None and left <= now
            wait = _IDLE_CHECK if left is None or left <= now else min(_IDLE_CHECK, left - now)
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        # As many as there was room for: more may be due.  Fewer (endpoints at their
        # share): an attempt ending wakes the loop.
        return wait

    async def _count_outbox(self) -> None:
        now = time.monotonic()
        if now - self._depth_counted_at >= _DEPTH_EVERY:
            self._depth_counted_at = now
            self._outbox_depth(await self._webhooks.outbox_depth())

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._attempt(delivery)
        except StoreError as exc:  # the claim lapses: the delivery is attempted again
            log.warning("webhook delivery %s: cannot be recorded: %s", delivery.id, exc)
        except Exception:
            log.exception("webhook delivery %s failed inside the service", delivery.id)
        finally:
            # A retry scheduled: the loop times its next look by it.
            if self._held_back or delivery.status is DeliveryStatus.PENDING:
                self._wake.set()

    async def _endpoint(self, webhook_id: str, *, fresh: bool = False) -> Endpoint | None:
        """The endpoint as read at most ENDPOINT_FRESHNESS seconds ago (``fresh``: now)."""
        now = time.monotonic()
        known = self._endpoints.get(webhook_id)
        if known is not None and now - known[0] < ENDPOINT_FRESHNESS and not fresh:
            return known[1]
        endpoint = await self._webhooks.endpoint(webhook_id)
        if endpoint is not None:
            endpoint = self._opened(endpoint)
        if len(self._endpoints) > _ENDPOINTS_KEPT:
            self._endpoints.clear()
        self._endpoints[webhook_id] = (now, endpoint)
        return endpoint

    def _opened(self, endpoint: Endpoint) -> Endpoint:
        """Its secrets as they sign ("" for one that cannot be opened)."""
        previous = endpoint.previous_secret
        return dataclasses.replace(
            endpoint,
            secret=self._sealer.opened(endpoint.secret, endpoint.id) or "",
            previous_secret=(
                self._sealer.opened(previous, endpoint.id) if previous is not None else None
            ),
        )

    async def _attempt(self, delivery: Delivery) -> None:
        endpoint = await self._endpoint(delivery.webhook_id)
        if endpoint is None or not endpoint.enabled:  # as read: it may be back since
            endpoint = await self._endpoint(delivery.webhook_id, fresh=True)
        if endpoint is None or not endpoint.enabled:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = (
                "the endpoint was removed" if endpoint is None else "the endpoint is disabled"
            )
            await self._webhooks.save_delivery(delivery)
            return
        if delivery.body is None:
            delivery.body = await self._body(delivery)
        now = time.time()
        started_ns = time.time_ns()
        if endpoint.secret:
            keys = endpoint.signing_keys(now)
            headers = signed_headers(keys, delivery.id, int(now), delivery.body)
            attempt = await self._sender.send(endpoint.url, headers, delivery.body)
        else:  # retried as any failure: the key may come back (or the secret be rotated)
            attempt = Attempt(None, 0.0, error=_UNSEALED)
        outcome = await self._record(delivery, endpoint, attempt, time.time())
        self._observe(delivery, attempt, outcome, started_ns)

    async def _body(self, delivery: Delivery) -> bytes:
        execution = None
        if delivery.execution_id is not None:
            known = self._ended.get(delivery.execution_id)
            if known is not None and delivery.event_type in TERMINAL_EVENTS:
                execution = known[1]
            else:
                execution = await self._store.get(delivery.execution_id)
        return payload.body(
            delivery.event_type,
            delivery.event_at,
            self._render(execution) if execution is not None else None,
            self._policy.max_result_bytes,
        )

    async def _record(
        self, delivery: Delivery, endpoint: Endpoint, attempt: Attempt, now: float
    ) -> str:
        """Store what the attempt came to; the outcome: delivered, gone, retried, failed."""
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.last_status = attempt.status
        delivery.last_latency_ms = attempt.latency_ms
        delivery.last_response = attempt.response
        delivery.last_error = attempt.error
        if attempt.delivered:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            # The endpoint's failure record is cleared always: another attempt to it may
            # have failed since it was read.
            await self._webhooks.save_delivery(delivery, endpoint_ok=True)
            return "delivered"
        if attempt.gone:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            await self._webhooks.save_delivery(delivery)
            await self._disable(endpoint, "the endpoint answered 410 Gone")
            return "gone"
        delay = self._policy.retry_delay(delivery.attempts)
        if delay is None:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = now + delay
        await self._webhooks.save_delivery(delivery)
        failing_since = await self._webhooks.endpoint_failed(endpoint.id, now)
        if failing_since is not None and now - failing_since >= self._policy.disable_after:
            days = self._policy.disable_after / 86400
            await self._disable(endpoint, f"every delivery failed for {days:g} days")
        return "failed" if delivery.status is DeliveryStatus.FAILED else "retried"

    async def _disable(self, endpoint: Endpoint, reason: str) -> None:
        await self._webhooks.disable_endpoint(endpoint.id, reason)
        self._endpoints.pop(endpoint.id, None)
        host = urlsplit(endpoint.url).hostname  # not the URL: its query may hold a token
        log.warning("webhook %s (to %s) disabled: %s", endpoint.id, host, reason)
