"""Which process supervises which unfinished execution when several share one store.

A process drives an execution only while it holds the execution's lease in the
store (with SQLite, one process per data directory, every claim is granted).
Every third of ``RPA_LEASE_SECONDS`` it renews its leases, abandons at once any
it could not renew (it was cut off and another process took over), and claims
executions whose lease lapsed - a killed replica's - to drive them on: polling
resumes from the stored state, and a create that may have been sent is never
sent again (see ``Supervisor._start_run``).

Draining, a replica hands over the executions whose runs another replica can
follow (not local runs, which are its own processes), releasing their leases and
sending a notice so the others claim them at once instead of after expiry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from rpa_gateway.store.base import Store, StoreError
from rpa_gateway.supervisor import Supervisor

log = logging.getLogger(__name__)

RELEASED = "released"  # notice: an execution's lease was given up; claim it now
TAKEOVER_BATCH = 500
# Lease periods between scans for lapsed leases when no process departed: a safety net
# (departures and releases trigger their own scans), each scan a read of every lease.
SWEEP_LEASES = 6


def new_holder_id() -> str:
    """Names this process in leases (readable in Redis, unique across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Stewardship:
    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        *,
        holder: str,
        lease_seconds: float,
        runs_here: bool,
    ) -> None:
        self._store = store
        self._supervisor = supervisor
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._runs_here = runs_here
        self._wake = asyncio.Event()
        self._draining = False
        self._epoch: str | None = None  # the store's, as first seen
        store.add_notice_listener(self._on_notice)

    async def claim(self, execution_id: str) -> bool:
        """Take the execution's lease; True when this process may drive it.  A draining
        process takes nothing others can follow: it is handing such work away."""
        if self._draining and not self._runs_here:
            return False
        return await self._store.claim(execution_id, self.holder, self.lease_seconds)

    async def release(self, execution_ids: list[str]) -> None:
        """Give the leases up and tell the others, who claim them at once."""
        if execution_ids:
            await self._store.release(self.holder, execution_ids)
            await self._store.notify(RELEASED, execution_ids[0])  # one notice wakes them all

    async def tend(
        self,
        take_over: Callable[[int], Awaitable[int]],
        recover_lost: Callable[[], Awaitable[None]],
    ) -> None:
        """Forever (a task): announce this process twice a second, renew its leases every
        third of the lease, and take over lapsed executions - when another process was
        seen to depart or release one, at start, and every SWEEP_LEASES lease periods as a
        safety net.

        A departed process's leases lapse no later than its announcement (both last a
        lease; the announcement is refreshed more often), so a takeover follows a death
        within about a lease and half a second, and a healthy cluster rarely scans.

        Before each renewal it checks the store's epoch: when the store lost its data
        (Redis restarted empty, or flushed) ``recover_lost`` writes back what this process
        drives, so that its leases can be renewed rather than found lost."""
        loop = asyncio.get_running_loop()
        beat = min(0.5, self.lease_seconds / 3)
        next_renewal = next_sweep = renewed_at = loop.time()
        scans = 1  # rounds that look for lapsed leases
        while True:
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                departed = await self._store.announce(self.holder, self.lease_seconds)
                now = loop.time()
                if now >= next_renewal:
                    await self._check_epoch(recover_lost)
                    await self._renew()
                    renewed_at, next_renewal = now, now + self.lease_seconds / 3
                if departed:
                    log.info("processes gone: %s; taking over their executions", departed)
                    scans = max(scans, 2)
                if woken or now >= next_sweep:
                    scans = max(scans, 1)
                    next_sweep = now + SWEEP_LEASES * self.lease_seconds
                if scans and not self._draining:
                    scans -= 1
                    taken = await take_over(TAKEOVER_BATCH)
                    if taken:
                        log.info("took over %d executions whose lease had lapsed", taken)
                        scans = max(scans, 1)  # there may be more than one batch
            except StoreError as exc:
                log.warning("leases not renewed this round: %s", exc)
                self._give_up_if_lapsed(loop.time() - renewed_at)
            except Exception:
                log.exception("lease upkeep failed this round")
                self._give_up_if_lapsed(loop.time() - renewed_at)
            try:
                async with asyncio.timeout(beat):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _check_epoch(self, recover_lost: Callable[[], Awaitable[None]]) -> None:
        epoch = await self._store.epoch()
        if self._epoch is not None and epoch != self._epoch:
            log.error(
                "the execution store lost its data (Redis restarted empty, or flushed):"
                " writing back the executions this process drives"
            )
            await recover_lost()
        self._epoch = epoch

    def _give_up_if_lapsed(self, since_renewed: float) -> None:
        """Leases not renewed for most of their length may be another process's by now:
        stop driving rather than drive an execution twice (local runs excepted: nobody
        else can follow them)."""
        if self._runs_here or since_renewed < self.lease_seconds * 2 / 3:
            return
        driven = self._supervisor.driven()
        if driven:
            log.error(
                "leases not renewed for %.1f s: leaving %d executions to the others",
                since_renewed,
                len(driven),
            )
            for execution_id in driven:
                self._supervisor.abandon(execution_id)

    async def retire(self) -> None:
        """Stopping cleanly: the leases are released, so nobody waits for a departure."""
        await self._store.retire(self.holder)

    async def hand_over(self) -> int:
        """Draining: let other processes drive what they can follow; returns how many."""
        self._draining = True
        if self._runs_here:
            return 0
        handed = await self._supervisor.hand_over(self._supervisor.driven())
        if handed:
            await self.release(handed)
            log.info("draining: %d executions handed to the other replicas", len(handed))
        return len(handed)

    async def _renew(self) -> None:
        driven = self._supervisor.driven()
        if not driven:
            return
        renewal = await self._store.renew(self.holder, driven, self.lease_seconds)
        for execution_id in renewal.lost:
            log.warning("execution %s: lease lost; another process drives it now", execution_id)
            self._supervisor.abandon(execution_id)
        for execution_id in renewal.cancel_requested:  # the notice may have gone astray
            await self._supervisor.cancel_driven(execution_id)

    def _on_notice(self, topic: str, execution_id: str) -> None:
        if topic == RELEASED and not self._draining:
            self._wake.set()
