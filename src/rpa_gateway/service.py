"""Execution operations the HTTP layer calls: create, attach, list, cancel, follow."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from enum import Enum

from rpa_gateway import codes
from rpa_gateway.backends.base import Backend, CancelReply, Overloaded, ProjectInfo, TaskInfo
from rpa_gateway.codes import Code
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    Outcome,
    Status,
    new_execution_id,
    snapshot_change,
    stored_size,
)
from rpa_gateway.security import TokenVault
from rpa_gateway.stewardship import Stewardship
from rpa_gateway.store.base import DuplicateIdempotencyKey, ListQuery, Store, StoreError
from rpa_gateway.store.hub import LOST, Change
from rpa_gateway.supervisor import Supervisor
from rpa_gateway.telemetry.context import current_execution

log = logging.getLogger(__name__)

_CANCEL_WAIT = 10.0  # seconds a cancel waits for the end, at least (see cancel_wait)
_CANCEL_ASK = 10.0  # seconds the platform gets to answer whether it can cancel a run
CHANGES_REPLAYED = 10_000  # executions, at most, whose changes a resumed feed replays
_REPLAY_PAGE = 500
CHANGES_MARGIN = 2.0  # seconds before the resume point a replay starts
_DEADLINE_SLACK = 60.0  # seconds an execution may take past its deadline to end
# Seconds, past a third of the lease, that the other processes have to write back what
# they drive after the store lost its data, before streams of what is missing end.
_LOST_GRACE = 1.5
CHANGES_BATCH = 0.2  # seconds a feed gathers changes before it writes them
STORED_BYTES_CHECK = 5.0  # seconds between asking the store what a caller holds
_STORED_CALLERS_KEPT = 10_000
CANCEL = "cancel"  # notice: the caller cancels an execution another process may drive


class ExecutionNotFound(Exception):
    """No such execution for this caller (another owner's look the same: absent)."""


class AlreadyFinished(Exception):
    def __init__(self, execution: Execution) -> None:
        super().__init__(execution.id)
        self.execution = execution


class CancelUnsupported(Exception):
    """The platform cannot cancel this execution's run (CANCEL_UNSUPPORTED): nothing was
    changed; its deadline still ends it."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(execution.id)
        self.execution = execution


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request."""


class CursorBeyondEnd(Exception):
    """A resume cursor past the execution's last event: nothing would ever come after it."""

    def __init__(self, execution: Execution, after: int) -> None:
        super().__init__(execution.id)
        self.execution = execution
        self.after = after


class Signal(Enum):
    RECONNECT = "reconnect"  # the service is shutting down; the execution goes on
    STORE_FAILED = "store_failed"  # its events cannot be read now; the execution goes on
    LOST = "lost"  # the store lost its data and nobody wrote the execution back


class FeedEnd(Enum):
    """Why a feed of changes ends; its client resumes with its last change's id."""

    RECONNECT = "reconnect"  # the service is shutting down
    STORE_FAILED = "store_failed"  # the executions to resume from cannot be read now
    FELL_BEHIND = "fell_behind"  # its client did not take its changes (hub.CHANGES_BACKLOG)


class ExecutionService:
    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        vault: TokenVault,
        backend: Backend,
        *,
        timeout: float,
        stewardship: Stewardship,
        max_unfinished_per_caller: int = 1000,
        max_stored_bytes_per_caller: int | None = None,
        cancel_wait: float = _CANCEL_WAIT,
    ) -> None:
        # A managed platform confirms a stop within RPA_CANCEL_CONFIRM_SECONDS: the
        # cancel's answer waits that long for the end it reports.
        self._cancel_wait = max(_CANCEL_WAIT, cancel_wait)
        self._stewardship = stewardship
        store.add_notice_listener(self._on_notice)
        self._max_unfinished_per_caller = max_unfinished_per_caller
        self._max_stored_bytes = max_stored_bytes_per_caller
        # Per caller: (when the store was asked, the bytes then plus those created since).
        self._stored: dict[str, tuple[float, int]] = {}
        self._store = store
        self._supervisor = supervisor
        self._backend = backend
        self._vault = vault
        self._timeout = timeout
        self._notice_tasks: set[asyncio.Task[None]] = set()

    async def create(
        self,
        request: ExecutionRequest,
        token: str,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[Execution, Event | None]:
        """A new execution handed to the supervisor, or the one this key already made.

        Returns the execution and, when it is new, its first event.  Raises InvalidRequest (the
        backend refuses it before anything runs), IdempotencyConflict and StoreError.
        """
        owner = self._vault.fingerprint(token)
        if idempotency_key is not None:
            existing = await self._store.find_idempotent(owner, idempotency_key)
            if existing is not None:
                if existing.request_hash != request_hash:
                    raise IdempotencyConflict(idempotency_key)
                await self._resume_if_parked(existing, token)
                return existing, None
        await self._store.writable()  # a store that cannot write gets no new work (503)
        if self._supervisor.running_for(owner) >= self._max_unfinished_per_caller:
            raise Overloaded(
                f"{self._max_unfinished_per_caller} executions of this caller are unfinished"
                " already (RPA_MAX_UNFINISHED_PER_TOKEN); retry when some have ended"
            )
        await self._check_stored_bytes(owner)
        self._backend.check(request, token)
        execution_id = new_execution_id()
        now = time.time()
        deadline_at = now + self._timeout
        request.managed_body = await self._backend.prepare(
            execution_id, request, token, deadline_at - time.time()
        )
        execution = Execution(
            id=execution_id,
            request=request,
            status=Status.ACCEPTED,
            created_at=now,
            updated_at=now,
            deadline_at=deadline_at,
            owner=owner,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            # Its supervisor starts at once: recorded now, the create needs no write of its
            # own.  A crash before it is sent fails it rather than creating it later.
            create_started=True,
        )
        try:
            first = await self._store.create(
                execution,
                self._vault.seal(token, execution.id),
                holder=self._stewardship.holder,
                lease_seconds=self._stewardship.lease_seconds,
            )
        except DuplicateIdempotencyKey:
            raise IdempotencyConflict(idempotency_key) from None
        if owner in self._stored:
            asked_at, held = self._stored[owner]
            self._stored[owner] = (asked_at, held + stored_size(execution))
        current_execution.set(execution)
        log.info(
            "execution %s accepted: project %s, sid %s",
            execution.id,
            request.project_id,
            request.sid,
        )
        # Leased to this process by the create.
        self._supervisor.start(execution, token, create_recorded=True)
        return execution, first

    async def _check_stored_bytes(self, owner: str) -> None:
        """Refuse (429) a caller whose executions hold RPA_MAX_STORED_MB_PER_TOKEN in the
        store.  The store is asked at most every STORED_BYTES_CHECK seconds per caller
        (a sum over its executions); creates in between add their own sizes."""
        bound = self._max_stored_bytes
        if bound is None:
            return
        now = time.monotonic()
        asked_at, held = self._stored.get(owner, (-math.inf, 0))
        if now - asked_at >= STORED_BYTES_CHECK:
            held = await self._store.stored_bytes(owner)
            if len(self._stored) >= _STORED_CALLERS_KEPT:
                self._stored.clear()
            self._stored[owner] = (now, held)
        if held >= bound:
            raise Overloaded(
                f"this caller's executions hold {held / 1048576:.1f} MB in the store"
                f" (RPA_MAX_STORED_MB_PER_TOKEN is {bound / 1048576:g}); older ones free"
                " room as retention removes them",
                retry_after=60,
            )

    async def attach(
        self,
        execution_id: str,
        token: str,
        *,
        resume: bool = True,
        after: int = 0,
        every_owner: bool = False,
    ) -> Execution:
        """The caller's execution; one waiting for its owner's token is resumed with it.

        ``after`` is where the caller's event stream resumes; past the last event it
        raises :class:`CursorBeyondEnd`.  ``every_owner`` (an operator): any caller's
        execution, resumed only when it is the operator's own.
        """
        execution = await self._store.get(execution_id)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        own = self._vault.owns(execution.owner, token)
        if not own and not every_owner:
            raise ExecutionNotFound(execution_id)
        unrecorded = self._supervisor.unrecorded_end(execution_id)
        if after > (unrecorded.seq if unrecorded is not None else execution.last_seq):
            raise CursorBeyondEnd(execution, after)
        if resume and own:
            await self._resume_if_parked(execution, token)
        return execution

    async def latest_event(self, execution: Execution) -> Event | None:
        """The execution's last stored event (its latest state or progress)."""
        if execution.last_seq < 1:
            return None
        events = await self._store.events_after(execution.id, execution.last_seq - 1)
        return events[-1] if events else None

    @property
    def runs_outlive_the_service(self) -> bool:
        """False for local runs: processes of this service, they stop with it."""
        return not self._backend.runs_here

    def run_info(self, execution: Execution) -> TaskInfo | None:
        """Live details of a running execution's run (queue position, logs so far)."""
        if execution.finished_at is not None or execution.upstream_id is None:
            return None
        return self._backend.info(execution.upstream_id)

    def projects(self) -> list[ProjectInfo] | None:
        return self._backend.projects()

    async def list_executions(
        self, token: str, query: ListQuery, *, every_owner: bool = False
    ) -> list[Execution]:
        return await self._store.list_executions(
            ListQuery(
                owner=None if every_owner else self._vault.fingerprint(token),
                status=query.status,
                project_id=query.project_id,
                limit=query.limit,
                before=query.before,
            )
        )

    async def cancel(
        self, execution_id: str, token: str, *, every_owner: bool = False
    ) -> Execution:
        """Cancel and wait (briefly) for the end.  Raises ExecutionNotFound, AlreadyFinished.

        ``every_owner`` (an operator): any caller's execution; its driver cancels it with
        the owner's token (one that nobody drives is cancelled when it is next driven)."""
        # Not resumed first: a waiting execution is started by the cancel itself, flag set.
        execution = await self.attach(execution_id, token, resume=False, every_owner=every_owner)
        if execution.finished_at is not None:
            if execution.cancel_requested and execution.status is Status.CANCELLED:
                return execution  # cancelled already: asking again changes nothing
            raise AlreadyFinished(execution)
        await self._refuse_uncancellable(execution, token)
        if not self._vault.owns(execution.owner, token):
            if self._supervisor.is_running(execution_id):
                await self._supervisor.cancel_driven(execution_id)
            else:
                await self._store.request_cancel(execution_id)
                await self._store.notify(CANCEL, execution_id)
        elif self._supervisor.is_running(execution_id) or await self._stewardship.claim(
            execution_id
        ):
            await self._supervisor.cancel(execution, token)
        else:  # another process drives it: told at once, and at its next renewal for sure
            await self._store.request_cancel(execution_id)
            await self._store.notify(CANCEL, execution_id)
        try:
            wait = self._cancel_wait if execution.request.managed else _CANCEL_WAIT
            async with asyncio.timeout(wait):
                await self._until_finished(execution_id)
        except TimeoutError:
            log.warning("execution %s: cancel still in progress", execution_id)
        return await self._store.get(execution_id) or execution

    async def _refuse_uncancellable(self, execution: Execution, token: str) -> None:
        """Raise CancelUnsupported when the platform says it cannot cancel the run.  Only a
        managed run is asked first (its cancel route records intent, asking twice does no
        harm); the driver then asks again and waits for the stop."""
        if not execution.request.managed or execution.upstream_id is None:
            return  # asked by its driver once the create has answered
        if not self._vault.owns(execution.owner, token):  # an operator: the owner's key asks
            sealed = await self._store.sealed_token(execution.id)
            owner_token = self._vault.open(sealed, execution.id) if sealed is not None else None
            if owner_token is None:
                return
            token = owner_token
        try:
            async with asyncio.timeout(_CANCEL_ASK):
                reply = await self._backend.cancel(execution.upstream_id, token, managed=True)
        except TimeoutError:
            return  # its driver asks again, and says so if it cannot be told
        if reply is CancelReply.UNSUPPORTED:
            raise CancelUnsupported(execution)

    async def _until_finished(self, execution_id: str) -> None:
        if self._supervisor.is_running(execution_id):
            await self._supervisor.wait(execution_id)
            return
        async with self._store.subscribe(execution_id) as subscription:
            execution = await self._store.get(execution_id)
            while execution is not None and execution.finished_at is None:
                event = await subscription.get()
                if event is None or event.kind is EventKind.TERMINAL:
                    return

    def _on_notice(self, topic: str, execution_id: str) -> None:
        if topic == CANCEL and self._supervisor.is_running(execution_id):
            task = asyncio.get_running_loop().create_task(
                self._supervisor.cancel_driven(execution_id)
            )
            self._notice_tasks.add(task)
            task.add_done_callback(self._notice_tasks.discard)

    async def resume_unfinished(self, limit: int = 1_000_000) -> tuple[int, int]:
        """Supervise what no process drives: left by a previous process, or by a replica
        whose lease lapsed.

        Executions whose token is sealed resume now; the others wait for their
        owner to come back with the token.  Returns (resumed, waiting).
        """
        resumed = waiting = 0
        for execution in await self._store.claimable(limit):
            if self._supervisor.is_running(execution.id):
                continue
            sealed = await self._store.sealed_token(execution.id)
            token = self._vault.open(sealed, execution.id) if sealed is not None else None
            if token is None:
                waiting += 1
                continue
            if await self._stewardship.claim(execution.id):
                self._supervisor.start(execution, token)
                resumed += 1
        return resumed, waiting

    async def take_over(self, limit: int) -> int:
        """One round of :meth:`resume_unfinished` for the stewardship; how many started."""
        resumed, _ = await self.resume_unfinished(limit)
        return resumed

    async def recover_lost_store(self) -> None:
        """The store lost its data (Redis restarted empty, or flushed): write back what
        this process drives, from memory, and carry on; a little later (once the other
        processes have written back theirs), end the streams here that follow an
        execution nobody wrote back, saying it was lost."""
        stewardship = self._stewardship
        restored = 0
        for execution, token in self._supervisor.driven_executions():
            sealed = self._vault.seal(token, execution.id) if token is not None else None
            if await self._store.restore(
                execution,
                sealed,
                holder=stewardship.holder,
                lease_seconds=stewardship.lease_seconds,
            ):
                restored += 1
        log.error(
            "the store lost its data: %d executions this process drives are written back"
            " and go on; finished executions and those no process drives are gone",
            restored,
        )
        grace = stewardship.lease_seconds / 3 + _LOST_GRACE
        task = asyncio.get_running_loop().create_task(self._end_lost_streams(after=grace))
        self._notice_tasks.add(task)
        task.add_done_callback(self._notice_tasks.discard)

    async def _end_lost_streams(self, after: float) -> None:
        await asyncio.sleep(after)
        lost = []
        for execution_id in self._store.followed():
            try:
                if await self._store.get(execution_id) is None:
                    lost.append(execution_id)
            except StoreError as exc:
                log.warning("execution %s: cannot tell whether it was lost: %s", execution_id, exc)
        for execution_id in lost:
            self._store.end_lost(execution_id)
        if lost:
            log.error(
                "%d executions followed here were lost with the store's data (no process"
                " wrote them back): their streams end saying so",
                len(lost),
            )

    async def expire_waiting(self, now: float) -> int:
        """End executions past their deadline that nobody drives (no token to poll with).

        Only those created a timeout ago are read: the others cannot be past their deadline
        (one made under a shorter timeout than today's ends that much past its deadline).
        Reading every open execution each sweep cost each replica a transient ~1.4 KB per
        open stream (all replicas' streams, on Redis) and its round trips."""
        expired = 0
        for execution in await self._store.unfinished(created_before=now - self._timeout):
            if execution.deadline_at <= now and not self._supervisor.is_running(execution.id):
                if not await self._stewardship.claim(execution.id):
                    continue  # another process drives it to its own deadline
                if self._supervisor.is_running(execution.id):
                    continue  # started here meanwhile: its supervisor ends it
                outcome = Outcome(Status.TIMED_OUT, Code.TIMEOUT, codes.timeout_message())
                if await self._store.finish(execution, outcome) is not None:
                    expired += 1
        return expired

    async def _resume_if_parked(self, execution: Execution, token: str) -> None:
        if execution.finished_at is not None or self._supervisor.is_running(execution.id):
            return
        if await self._stewardship.claim(execution.id):
            log.info("execution %s resumed by its owner", execution.id)
            self._supervisor.start(execution, token)

    async def follow(
        self,
        execution_id: str,
        after_seq: int,
        *,
        known: Event | None = None,
    ) -> AsyncIterator[Event | Signal]:
        """The execution's events after ``after_seq``, then live ones until the terminal one.

        ``known``: the event after ``after_seq`` when the caller has it (the first event of
        an execution it just created); when it is the last one written, the stored log
        need not be read.

        Ends with ``Signal.RECONNECT`` if the service shuts down first, or
        ``Signal.STORE_FAILED`` if the store cannot be read: never with a made-up
        terminal event, which would give an event id an outcome it does not have.
        (Idle streams are pinged by the response, not from here.)
        """
        cursor = after_seq
        here = self._supervisor.last_written(execution_id) is not None
        try:
            async with self._store.subscribe(execution_id, written_here=here) as subscription:
                if (
                    known is not None
                    and known.seq == cursor + 1
                    and self._supervisor.last_written(execution_id) == known.seq
                ):
                    backlog = [known]  # written here and nothing since: later ones come live
                else:
                    backlog = await self._store.events_after(execution_id, cursor)
                for event in backlog:
                    yield event
                    cursor = event.seq
                    if event.kind is EventKind.TERMINAL:
                        return
                unrecorded = self._supervisor.unrecorded_end(execution_id)
                if unrecorded is not None and unrecorded.seq >= cursor:
                    # Ended while the store could not write (sent again to one resuming at it).
                    yield unrecorded
                    return
                if after_seq > 0:
                    # Resumed at or past the end (EventSource reconnects after the last
                    # event): nothing more will come, so send the end again.
                    finished = await self._store.get(execution_id)
                    if finished is not None and finished.finished_at is not None:
                        for event in await self._store.events_after(
                            execution_id, finished.last_seq - 1
                        ):
                            yield event
                        return
                while True:
                    event_or_drain = await subscription.get()
                    if event_or_drain is None:
                        yield Signal.RECONNECT
                        return
                    if event_or_drain is LOST:
                        yield Signal.LOST
                        return
                    if event_or_drain.seq <= cursor:
                        continue
                    backlog = (
                        await self._events_after(execution_id, cursor, event_or_drain)
                        if event_or_drain.seq > cursor + 1
                        else [event_or_drain]
                    )
                    for event in backlog:
                        yield event
                        cursor = event.seq
                        if event.kind is EventKind.TERMINAL:
                            return
        except StoreError:
            log.exception("execution %s: cannot read its events", execution_id)
            yield Signal.STORE_FAILED

    async def changes(
        self, token: str, since: float | None, *, every_owner: bool = False
    ) -> AsyncIterator[list[Change] | FeedEnd]:
        """The caller's execution changes as they happen (:func:`executions.change_of`).

        ``since`` (epoch seconds, a previous change's ``updated_at``): first the state of
        each of the caller's executions changed after it, less a margin (changes of
        different executions may be written slightly out of order), oldest first: every
        one, up to CHANGES_REPLAYED (a client cut off for falling behind loses nothing).
        First an empty batch, once subscribed (a client that lists the executions after it
        misses nothing).  Changes come in batches: what arrived within CHANGES_BATCH s of the first
        (one write for many, as a busy service makes hundreds a second).  The end as
        :meth:`follow` has it.  ``every_owner``: every caller's."""
        owner = None if every_owner else self._vault.fingerprint(token)
        async with self._store.subscribe_changes(owner) as subscription:
            yield []  # subscribed: from here on nothing is missed
            if since is not None:
                try:
                    changed = await self._changed_since(owner, since - CHANGES_MARGIN)
                except StoreError:
                    log.exception("the feed cannot read the executions it resumes")
                    yield FeedEnd.STORE_FAILED
                    return
                if changed:
                    yield [Change(snapshot_change(e)) for e in changed]
            while True:
                first = await subscription.get()
                if first is not None:
                    await asyncio.sleep(CHANGES_BATCH)
                batch = [first, *subscription.ready()]
                changes = [c for c in batch if c is not None]
                if changes:
                    yield changes
                if len(changes) < len(batch):
                    yield FeedEnd.FELL_BEHIND if subscription.fell_behind else FeedEnd.RECONNECT
                    return

    async def _changed_since(self, owner: str | None, since: float) -> list[Execution]:
        """The owner's executions changed after ``since``, oldest change first.  Newest
        first by creation, page by page, back to the oldest creation that can still have
        changed since then: an execution ends by its deadline, ``timeout`` after it began."""
        oldest_possible = since - self._timeout - _DEADLINE_SLACK
        changed: list[Execution] = []
        before: tuple[float, str] | None = None
        while len(changed) < CHANGES_REPLAYED:
            page = await self._store.list_executions(
                ListQuery(owner=owner, limit=_REPLAY_PAGE, before=before)
            )
            changed += [e for e in page if e.updated_at > since]
            if len(page) < _REPLAY_PAGE or page[-1].created_at < oldest_possible:
                break
            before = (page[-1].created_at, page[-1].id)
        changed.sort(key=lambda e: e.updated_at)
        return changed[-CHANGES_REPLAYED:]

    async def _events_after(self, execution_id: str, cursor: int, live: Event) -> list[Event]:
        """The stored events between the cursor and a live one, and that one (which may be an
        end the store could not take)."""
        stored = await self._store.events_after(execution_id, cursor)
        missed = [e for e in stored if e.seq < live.seq]
        return [*missed, live]
