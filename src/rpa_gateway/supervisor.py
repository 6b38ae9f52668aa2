"""Drives each execution to exactly one terminal event, independent of any connection.

One asyncio task per live execution: create the upstream run, poll it on its
project's schedule (learned from recent runs, or backing off), retry query faults
with jittered backoff, enforce the deadline (cancelling upstream when it can), and
record the end.  Whatever goes
wrong inside - backend, store, a bug - the task still reaches one terminal event.

A store that cannot write (a full disk) does not stop an execution: state and
progress events that cannot be stored are skipped, and a terminal event that
cannot be stored is handed to live streams as it is and written again until
the store takes it - the same event, so an event id never carries two outcomes.
Until then the execution counts as supervised: nobody drives it a second time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from rpa_gateway import codes
from rpa_gateway.backends.base import (
    Backend,
    CancelReply,
    CreateFailed,
    Progress,
    QueryFault,
    TaskPhase,
    TaskState,
)
from rpa_gateway.codes import Code
from rpa_gateway.duration_models import FixedSchedules, Schedules, model_key
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    JsonObject,
    Outcome,
    Status,
    terminal_data,
)
from rpa_gateway.poll_schedule import Schedule, backoff_schedule
from rpa_gateway.store.base import LeaseLost, Store, StoreError
from rpa_gateway.telemetry.context import current_execution
from rpa_gateway.telemetry.redaction import scrub

log = logging.getLogger(__name__)

_CANCEL_TIMEOUT = 10.0
_RECORD_RETRY_FIRST, _RECORD_RETRY_MAX = 0.5, 5.0


@dataclass(frozen=True, slots=True)
class PollPolicy:
    first_delay: float
    backoff: float
    ceiling: float
    retry_base_delay: float
    max_consecutive_faults: int
    create_connect_retries: int
    # Seconds a cancel the platform only records (the managed contract) waits for a state
    # that says the robot stopped, polled meanwhile.
    cancel_confirm_seconds: float = 15.0

    def today(self) -> Schedule:
        """The schedule of projects without a learned one."""
        return backoff_schedule(self.first_delay, self.backoff, self.ceiling)

    def retry_delay(self, faults: int) -> float:
        """Full-jitter exponential backoff after ``faults`` consecutive faults: anywhere up
        to the cap, so executions that failed together do not retry together."""
        cap = min(self.ceiling, self.retry_base_delay * 2 ** min(faults - 1, 30))
        return random.uniform(0.0, cap)


class Supervisor:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        policy: PollPolicy,
        schedules: Schedules | None = None,
    ) -> None:
        self._store = store
        self._backend = backend
        self._policy = policy
        self._schedules = schedules or FixedSchedules(policy.today())
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._executions: dict[str, Execution] = {}
        self._tokens: dict[str, str] = {}  # of the executions driven (to write them back)
        self._started: set[str] = set()  # tasks whose body has begun (see cancel)
        # Ended, handed to live streams, not yet stored: (execution, outcome, event).
        self._unrecorded: dict[str, tuple[Execution, Outcome, Event]] = {}
        self._recorder: asyncio.Task[None] | None = None
        self._driven_by_owner: Counter[str] = Counter()
        self._creating: set[str] = set()  # executions whose create is under way
        # Executions whose driver is cancelling them already (telling the backend): a
        # second interruption would tell it twice.
        self._cancelling: set[str] = set()
        # New executions recorded with create_started set, to be created by this process.
        self._create_recorded: set[str] = set()
        # Left to another process (lease lost, or handed over while draining): stop driving,
        # record nothing.
        self._abandoned: set[str] = set()
        # The last working state polled of each execution: a deadline reached in the
        # platform's "unknown" names the platform's code.
        self._last_state: dict[str, TaskState] = {}
        self._stopping = False

    def is_running(self, execution_id: str) -> bool:
        return execution_id in self._tasks or execution_id in self._unrecorded

    def driven(self) -> list[str]:
        """The executions this process drives now, or whose end it still has to store."""
        return [*self._tasks, *(i for i in self._unrecorded if i not in self._tasks)]

    def driven_executions(self) -> list[tuple[Execution, str | None]]:
        """What this process drives, as it stands here, with the token it polls with
        (None for an end still to be stored): enough to write it back to a store that
        lost it."""
        driven: list[tuple[Execution, str | None]] = [
            (execution, self._tokens.get(execution_id))
            for execution_id, execution in self._executions.items()
            if execution_id not in self._abandoned
        ]
        driven += [
            (execution, None)
            for execution_id, (execution, _, _) in self._unrecorded.items()
            if execution_id not in self._executions
        ]
        return driven

    def abandon(self, execution_id: str) -> None:
        """Stop driving the execution without ending it: another process drives it now.

        A create under way is let finish (its run id must be recorded, or nobody could
        cancel that run); the task stops right after it.
        """
        task = self._tasks.get(execution_id)
        if task is None:
            return
        self._abandoned.add(execution_id)
        self._store.written_elsewhere(execution_id)  # streams here follow the next driver
        if execution_id in self._started and execution_id not in self._creating:
            task.cancel()

    async def hand_over(self, execution_ids: list[str]) -> list[str]:
        """Abandon these executions and wait until none is driven here any more."""
        # An end not stored yet stays here: only this process has it.
        execution_ids = [i for i in execution_ids if i in self._tasks]
        tasks = [self._tasks[i] for i in execution_ids]
        for execution_id in execution_ids:
            self.abandon(execution_id)
        await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)
        return [i for i in execution_ids if i not in self._tasks]

    def running_for(self, owner: str) -> int:
        """Executions of this owner being driven now."""
        return self._driven_by_owner[owner]

    def last_written(self, execution_id: str) -> int | None:
        """The seq of the last event this process wrote for an execution it drives (while
        it drives it, no other process writes any), or None."""
        execution = self._executions.get(execution_id)
        if execution is None or execution_id in self._abandoned:
            return None
        return execution.last_seq

    def unrecorded_end(self, execution_id: str) -> Event | None:
        """The terminal event of an execution that ended while the store could not write."""
        pending = self._unrecorded.get(execution_id)
        return pending[2] if pending is not None else None

    def start(self, execution: Execution, token: str, *, create_recorded: bool = False) -> None:
        """Drive the execution (new or resumed) unless it is already being driven.

        ``create_recorded``: a new execution stored with ``create_started`` set, so that
        its create needs no write of its own; this process sends it.
        """
        if execution.id in self._tasks:
            return
        if create_recorded:
            self._create_recorded.add(execution.id)
        task = asyncio.create_task(self._drive(execution, token), name=f"exec-{execution.id}")
        self._tasks[execution.id] = task
        self._executions[execution.id] = execution
        self._tokens[execution.id] = token
        self._driven_by_owner[execution.owner] += 1
        task.add_done_callback(lambda _: self._forget(execution.id))

    def _forget(self, execution_id: str) -> None:
        self._started.discard(execution_id)
        self._cancelling.discard(execution_id)
        self._create_recorded.discard(execution_id)
        self._abandoned.discard(execution_id)
        self._tasks.pop(execution_id, None)
        self._tokens.pop(execution_id, None)
        self._last_state.pop(execution_id, None)
        execution = self._executions.pop(execution_id, None)
        if execution is not None:
            self._driven_by_owner[execution.owner] -= 1
            if self._driven_by_owner[execution.owner] <= 0:
                del self._driven_by_owner[execution.owner]

    async def cancel(self, execution: Execution, token: str) -> None:
        """Stop the execution at the caller's request; it ends with the cancelled code."""
        if execution.id in self._unrecorded:
            return  # it has ended already
        driven = self._executions.get(execution.id)
        if driven is None:
            execution.cancel_requested = True
            await self._save(execution)
            driven = self._executions.get(execution.id)  # started meanwhile?
            if driven is None:
                self.start(execution, token)
                return
        if driven.cancel_requested:
            return
        driven.cancel_requested = True
        await self._save(driven)
        # Its driver may have seen the flag during the save, and be telling the backend.
        busy = self._creating | self._cancelling
        if execution.id in self._started and execution.id not in busy:
            self._tasks[execution.id].cancel()
        # Not started yet: a task cancelled before its first step never runs its body, so
        # leave it be; _outcome sees the flag first thing.

    async def cancel_driven(self, execution_id: str) -> None:
        """A cancel another process received for an execution driven here."""
        driven = self._executions.get(execution_id)
        if driven is not None:
            await self.cancel(driven, "")

    async def wait(self, execution_id: str) -> None:
        task = self._tasks.get(execution_id)
        if task is not None:
            await asyncio.shield(task)

    async def stop(self) -> None:
        """Stop driving (shutdown); unfinished executions stay unfinished in the store."""
        self._stopping = True
        if self._unrecorded:
            log.error(
                "%d ended executions could not be stored; the next process resumes them",
                len(self._unrecorded),
            )
        tasks = list(self._tasks.values())
        if self._recorder is not None:
            tasks.append(self._recorder)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self, execution: Execution, token: str) -> None:
        if execution.id in self._abandoned:
            return  # handed over before it began
        self._started.add(execution.id)
        current_execution.set(execution)
        try:
            outcome = await self._outcome_or_cancel(execution, token)
        except Exception as exc:
            log.exception("execution %s failed inside the service", execution.id)
            detail = scrub(f"{type(exc).__name__}: {exc}", token)
            outcome = Outcome(Status.FAILED, Code.UNKNOWN, codes.unknown_error_message(detail))
        await self._finish(execution, _redact_outcome(outcome, token))

    async def _outcome_or_cancel(self, execution: Execution, token: str) -> Outcome:
        """The execution's outcome; a caller's cancel ends it sooner, unless the backend
        cannot cancel its run: then it goes on (its deadline still ends it)."""
        while True:
            try:
                try:
                    return await self._outcome(execution, token)
                except asyncio.CancelledError:
                    if (
                        not execution.cancel_requested
                        or self._stopping
                        or execution.id in self._abandoned
                    ):
                        raise  # shutting down or handed over: another process goes on with it
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    return await self._cancelled_anyway(execution, token)
            except _NotCancellable:
                log.warning(
                    "execution %s: the RPA platform cannot cancel this run"
                    " (CANCEL_UNSUPPORTED); it goes on until it ends or its deadline",
                    execution.id,
                )
                # In memory only (nothing awaited here, so no cancel can slip in between):
                # after a restart the platform is asked again and answers the same.
                execution.cancel_requested = False
                self._cancelling.discard(execution.id)

    async def _cancelled_anyway(self, execution: Execution, token: str) -> Outcome:
        """The caller's cancel ends the execution even when telling the backend fails."""
        try:
            return await self._cancelled(execution, token)
        except _NotCancellable:
            raise
        except Exception:
            log.exception("execution %s: cancelling upstream failed", execution.id)
            return Outcome(
                Status.CANCELLED, Code.CANCELLED, codes.cancelled_message("cancelled by the caller")
            )

    async def _outcome(self, execution: Execution, token: str) -> Outcome:
        if execution.cancel_requested:
            return await self._cancelled(execution, token)
        # When the upstream run began, as near as this process knows: the schedule's zero.
        run_began: float | None = None  # None: before this process drove it
        if execution.upstream_id is None:
            if execution.deadline_at <= time.time():  # resumed too late: start no robot
                return Outcome(Status.TIMED_OUT, Code.TIMEOUT, codes.timeout_message())
            # Neither the deadline nor a caller's cancel interrupts the create (the upstream
            # client's timeouts bound it): once sent it may start the run, whose id is then
            # needed to cancel it.  Both take effect as soon as it has answered.
            self._creating.add(execution.id)
            try:
                failed = await self._start_run(execution, token)
            finally:
                self._creating.discard(execution.id)
            if execution.id in self._abandoned:
                raise asyncio.CancelledError  # handed over during the create: stop now
            if failed is not None:
                return failed
            run_began = time.time()  # the platform has answered the create
            if execution.cancel_requested:
                return await self._cancelled(execution, token)
        assert execution.upstream_id is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, execution.deadline_at - time.time())
        deadline_scope = asyncio.timeout_at(deadline)
        try:
            async with deadline_scope:
                if self._backend.pushes:
                    return await self._follow_pushes(execution, execution.upstream_id)
                return await self._watch(
                    execution, execution.upstream_id, token, run_began, deadline_scope
                )
        except TimeoutError:
            if not deadline_scope.expired():
                raise
            if execution.id in self._cancelling:  # the platform was told to stop already
                return Outcome(
                    Status.CANCELLED,
                    Code.CANCELLED,
                    codes.cancelled_message(
                        "cancelled by the caller; the stop is unconfirmed: the deadline came"
                        " before the RPA platform confirmed the robot stopped"
                    ),
                )
            return await self._timed_out(execution, token)

    async def _start_run(self, execution: Execution, token: str) -> Outcome | None:
        """Create the upstream run, or the outcome that ends the execution instead."""
        if execution.id in self._create_recorded:
            return await self._send_create(execution, token)
        if execution.create_started and execution.request.managed:
            # Sent before, perhaps: the platform returns the same run to the same key and
            # body, and creates it if the first never arrived.
            log.info("execution %s: its create is sent again under its key", execution.id)
            return await self._send_create(execution, token, first_send=False)
        if execution.create_started:
            return Outcome(
                Status.FAILED,
                Code.CREATE_ERROR,
                codes.create_error_message(
                    "the service restarted while creating the upstream run; it is not created"
                    " again, so the robot cannot run twice"
                ),
            )
        execution.create_started = True
        try:
            await self._store.save(execution)
        except StoreError as exc:
            # Unrecorded, a create could be sent again after a restart: do not send it.
            return Outcome(
                Status.FAILED,
                Code.CREATE_ERROR,
                codes.create_error_message(
                    f"the execution store cannot write ({exc}); the run was not started"
                ),
            )
        return await self._send_create(execution, token)

    async def _send_create(
        self, execution: Execution, token: str, *, first_send: bool = True
    ) -> Outcome | None:
        try:
            execution.upstream_id = await self._create(execution, token, first_send=first_send)
        except CreateFailed as exc:
            if exc.bug:
                log.error("execution %s: %s", execution.id, scrub(exc.detail, token))
                return Outcome(Status.FAILED, Code.UNKNOWN, codes.unknown_error_message(exc.detail))
            if exc.idempotent and execution.cancel_requested:
                log.info("execution %s: cancelled while its create went unanswered", execution.id)
                return Outcome(
                    Status.CANCELLED,
                    Code.CANCELLED,
                    codes.cancelled_message(
                        "cancelled by the caller before the RPA platform answered the create;"
                        " if the platform took it, the deadline it was given stops the robot"
                    ),
                )
            if exc.idempotent:  # repeated until the deadline, never answered
                log.info(
                    "execution %s: create unanswered: %s", execution.id, scrub(exc.detail, token)
                )
                return Outcome(
                    Status.TIMED_OUT,
                    Code.TIMEOUT,
                    codes.timeout_message(
                        f"the RPA platform never answered the create ({exc.detail})"
                    ),
                )
            log.info("execution %s: create failed: %s", execution.id, scrub(exc.detail, token))
            return Outcome(Status.FAILED, Code.CREATE_ERROR, codes.create_error_message(exc.detail))
        await self._append(
            execution,
            EventKind.STATE,
            {"status": Status.PENDING.value, "upstream_id": execution.upstream_id},
            Status.PENDING,
        )
        return None

    async def _follow_pushes(self, execution: Execution, task_id: str) -> Outcome:
        upstream_status = "PENDING"
        async for update in self._backend.watch(task_id):
            if isinstance(update, Progress):
                await self._append(execution, EventKind.PROGRESS, update.as_data())
                continue
            outcome = _outcome_of(update)
            if outcome is not None:
                info = self._backend.info(task_id)
                if info is not None:
                    execution.logs = info.logs
                return outcome
            if update.upstream_status != upstream_status:
                upstream_status = update.upstream_status
                await self._record_state(execution, update)
        return Outcome(
            Status.FAILED,
            Code.QUERY_ERROR,
            codes.query_error_message("the run ended without a final state"),
        )

    async def _create(self, execution: Execution, token: str, *, first_send: bool) -> str:
        """The run's id.  A create never sent is tried again a few times; one the backend
        returns the same run to (``idempotent``) until the execution's deadline, unless
        the caller cancels or another process takes the execution over (it repeats it)."""
        attempt = 0
        while True:
            try:
                return await self._attempt_create(execution, token)
            except CreateFailed as exc:
                if exc.legacy_only:
                    if not first_send:
                        raise CreateFailed(
                            f"{exc.detail}; a legacy create may have been sent before the"
                            " service restarted, so none is sent again (the robot cannot run"
                            " twice)"
                        ) from None
                    log.warning(
                        "execution %s: %s: created once by the legacy route instead, without"
                        " an idempotency key or a platform deadline",
                        execution.id,
                        exc.detail,
                    )
                    execution.request.managed_body = None  # this process polls it as legacy
                    continue
                if exc.idempotent:
                    if execution.id in self._abandoned:
                        raise asyncio.CancelledError from None  # the next driver repeats it
                    delay = self._policy.retry_delay(attempt + 1)
                    if execution.cancel_requested or time.time() + delay >= execution.deadline_at:
                        raise
                    log.info(
                        "execution %s: create reply lost (%s)",
                        execution.id,
                        scrub(exc.detail, token),
                    )
                elif not exc.retryable or attempt >= self._policy.create_connect_retries:
                    raise
                else:
                    delay = self._policy.retry_delay(attempt + 1)
                attempt += 1
                execution.retries += 1
                await asyncio.sleep(delay)

    async def _attempt_create(self, execution: Execution, token: str) -> str:
        """One create; a repeatable (managed) one is cut at the execution's deadline."""
        if not execution.request.managed:
            return await self._backend.start(execution.request, token)
        scope = asyncio.timeout(max(0.0, execution.deadline_at - time.time()))
        try:
            async with scope:
                return await self._backend.start(execution.request, token)
        except TimeoutError:
            if not scope.expired():
                raise
            raise CreateFailed("no answer before the deadline", idempotent=True) from None

    async def _watch(
        self,
        execution: Execution,
        task_id: str,
        token: str,
        run_began: float | None,
        deadline: asyncio.Timeout,
    ) -> Outcome:
        """Poll on the project's schedule (times after ``run_began``) until the run ends,
        inside the ``deadline`` scope.

        ``run_began`` None: created before this process drove it (a restart, a takeover),
        so it may have ended meanwhile: the first poll comes soon, then the schedule from
        the execution's creation.
        """
        policy = self._policy
        request = execution.request
        project = model_key(execution.owner, request.project_id, request.version)
        await self._schedules.schedule_for(project)
        faults = 0
        upstream_status = "PENDING"  # what a freshly created upstream run reports
        origin = execution.created_at if run_began is None else run_began
        delay: float | None = policy.first_delay if run_began is None else None
        # The poll time last aimed at: the next is the schedule's after it, not after the
        # time now (a timer may fire a little early: the same poll time again, at once).
        aimed_at = 0.0
        while True:
            if execution.cancel_requested:  # its task's cancel may have been swallowed by a
                return await self._cancelled(execution, token)  # library call it was in
            if delay is None:
                elapsed = time.time() - origin
                aimed_at = self._schedules.current(project).next_poll(max(elapsed, aimed_at))
                delay = aimed_at - elapsed
            with _DeadlineOff(deadline, delay) as off:
                await asyncio.sleep(delay)
            if off.woke_past_it:  # a late loop: the deadline (due now) ends it, not a poll
                await asyncio.sleep(0)
            delay = None
            execution.polls += 1
            try:
                state = await self._backend.status(
                    task_id, token, managed=execution.request.managed
                )
            except QueryFault as exc:
                faults += 1
                execution.retries += 1
                log.info(
                    "execution %s: query fault %d/%d: %s",
                    execution.id,
                    faults,
                    policy.max_consecutive_faults,
                    scrub(exc.reason, token),
                )
                if faults >= policy.max_consecutive_faults:
                    return Outcome(
                        Status.FAILED, Code.QUERY_ERROR, codes.query_error_message(exc.reason)
                    )
                delay = policy.retry_delay(faults)
                continue
            faults = 0
            outcome = _outcome_of(state)
            if outcome is not None:
                if state.ran_for is not None and state.phase is TaskPhase.COMPLETED:
                    self._schedules.observe(project, state.ran_for)
                return outcome
            self._last_state[execution.id] = state
            if state.upstream_status != upstream_status:
                upstream_status = state.upstream_status
                await self._record_state(execution, state)

    async def _record_state(self, execution: Execution, state: TaskState) -> None:
        status = Status.RUNNING if state.running else execution.status
        if status is Status.ACCEPTED:
            status = Status.PENDING
        data: JsonObject = {"status": status.value, "upstream_status": state.upstream_status}
        if state.started_at is not None:
            data["started_at"] = state.started_at
        if state.upstream_code is not None:
            data["upstream_code"] = state.upstream_code
        await self._append(execution, EventKind.STATE, data, status)

    async def _append(
        self, execution: Execution, kind: EventKind, data: JsonObject, status: Status | None = None
    ) -> None:
        """Store and publish a non-terminal event; one the store refuses is skipped."""
        try:
            await self._store.append(execution, kind, data, status)
        except LeaseLost as exc:
            self._fenced_off(execution.id, exc)
        except StoreError as exc:
            log.warning("execution %s: a %s event is not stored: %s", execution.id, kind, exc)

    async def _save(self, execution: Execution) -> None:
        try:
            await self._store.save(execution)
        except LeaseLost as exc:
            self._fenced_off(execution.id, exc)
        except StoreError as exc:
            log.warning("execution %s: its flags are not stored: %s", execution.id, exc)

    def _fenced_off(self, execution_id: str, exc: LeaseLost) -> None:
        """The store refused a write: another process took the execution over (this one
        was cut off past its lease).  It stops driving it at once."""
        log.warning("execution %s: %s; it is left to that process", execution_id, exc)
        self.abandon(execution_id)

    async def _timed_out(self, execution: Execution, token: str) -> Outcome:
        self._cancelling.add(execution.id)
        reply = await self._cancel_upstream(execution, token)
        log.info("execution %s: deadline passed (upstream cancel: %s)", execution.id, reply.value)
        last = self._last_state.get(execution.id)
        if last is not None and last.upstream_code is not None:
            return Outcome(
                Status.TIMED_OUT,
                Code.TIMEOUT,
                codes.timeout_message(
                    "the RPA platform could not say what became of the run"
                    f" ({last.upstream_code}) until the deadline"
                ),
            )
        return Outcome(Status.TIMED_OUT, Code.TIMEOUT, codes.timeout_message())

    async def _cancelled(self, execution: Execution, token: str) -> Outcome:
        """The end of a caller's cancel.  Raises _NotCancellable when the backend says the
        run cannot be cancelled."""
        self._cancelling.add(execution.id)
        reply = await self._cancel_upstream(execution, token)
        log.info(
            "execution %s: cancelled by the caller (upstream cancel: %s)",
            execution.id,
            reply.value,
        )
        if reply is CancelReply.UNSUPPORTED:
            raise _NotCancellable
        if reply is CancelReply.REQUESTED:
            return await self._confirmed_cancel(execution, token)
        if reply is CancelReply.FAILED and execution.request.managed:
            return Outcome(
                Status.CANCELLED,
                Code.CANCELLED,
                codes.cancelled_message(
                    "cancelled by the caller; the stop is unconfirmed: the RPA platform could"
                    " not be asked to stop the robot, which may still run until its deadline"
                ),
            )
        return Outcome(
            Status.CANCELLED, Code.CANCELLED, codes.cancelled_message("cancelled by the caller")
        )

    async def _confirmed_cancel(self, execution: Execution, token: str) -> Outcome:
        """A cancel the platform recorded: ends when the run's state says it stopped (or
        ended otherwise first), or, unconfirmed after the confirm window, says so."""
        assert execution.upstream_id is not None
        window = self._policy.cancel_confirm_seconds
        ends = time.monotonic() + window
        delay = min(self._policy.first_delay, 0.5)
        last: TaskState | None = None
        while (left := ends - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)
            try:
                state = await self._backend.status(execution.upstream_id, token, managed=True)
            except QueryFault:
                continue
            if state.phase is TaskPhase.CANCELLED:
                return Outcome(
                    Status.CANCELLED,
                    Code.CANCELLED,
                    codes.cancelled_message(
                        "cancelled by the caller; the RPA platform confirmed the robot stopped"
                    ),
                )
            outcome = _outcome_of(state)
            if outcome is not None:  # it ended before the stop reached it: its own end
                return outcome
            last = state
        seen = f"{last.upstream_status}" if last is not None else "no state"
        if last is not None and last.upstream_code:
            seen += f", {last.upstream_code}"
        return Outcome(
            Status.CANCELLED,
            Code.CANCELLED,
            codes.cancelled_message(
                f"cancelled by the caller; the stop is unconfirmed: the RPA platform did not"
                f" confirm within {window:g} s that the robot stopped (last state: {seen})"
            ),
        )

    async def _cancel_upstream(self, execution: Execution, token: str) -> CancelReply:
        managed = execution.request.managed
        if execution.upstream_id is None or not (self._backend.can_cancel or managed):
            return CancelReply.FAILED
        try:
            async with asyncio.timeout(_CANCEL_TIMEOUT):
                return await self._backend.cancel(execution.upstream_id, token, managed=managed)
        except TimeoutError:
            log.warning("execution %s: cancel upstream timed out", execution.id)
            return CancelReply.FAILED

    async def _finish(self, execution: Execution, outcome: Outcome) -> None:
        try:
            event = await self._store.finish(execution, outcome)
        except LeaseLost as exc:  # the process that took it over ends it
            log.warning("execution %s: %s; its end here is not stored", execution.id, exc)
            self._store.written_elsewhere(execution.id)
            return
        except StoreError as exc:
            await self._finish_later(execution, outcome, exc)
            return
        except Exception:
            # Not the store failing but this end (a bug, data it cannot hold): end it anyway.
            log.exception("execution %s: its end cannot be stored as it is", execution.id)
            outcome = Outcome(
                Status.FAILED,
                Code.UNKNOWN,
                codes.unknown_error_message("the execution's result could not be stored"),
            )
            try:
                event = await self._store.finish(execution, outcome)
            except StoreError as exc:
                await self._finish_later(execution, outcome, exc)
                return
        if event is not None:
            log.info("execution %s finished: code %d", execution.id, outcome.code)
        elif await self._missing(execution.id):
            # Not ended elsewhere: its record is gone (the store lost its data).  The end
            # is kept, and stored once the record is written back (recover_lost_store).
            await self._finish_later(execution, outcome, StoreError("its record is missing"))
        else:  # ended by another process meanwhile: streams here get that end
            self._store.written_elsewhere(execution.id)

    async def _missing(self, execution_id: str) -> bool:
        try:
            return await self._store.get(execution_id) is None
        except StoreError:
            return False

    async def _finish_later(self, execution: Execution, outcome: Outcome, exc: StoreError) -> None:
        log.error(
            "execution %s: its end (code %d) cannot be stored yet (%s); live streams get"
            " it now, the store when it takes writes again",
            execution.id,
            outcome.code,
            exc,
        )
        await self._hand_over_unrecorded(execution, outcome)

    async def _hand_over_unrecorded(self, execution: Execution, outcome: Outcome) -> None:
        event = Event(
            execution.id,
            execution.last_seq + 1,  # what the store gives it once it writes
            EventKind.TERMINAL,
            terminal_data(outcome),
            time.time(),
        )
        self._unrecorded[execution.id] = (execution, outcome, event)
        try:
            await self._store.publish_only(event, execution)
        except StoreError as exc:  # this process's streams have it; others resume from it
            log.warning("execution %s: its end reached only this process: %s", execution.id, exc)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_unrecorded(), name="recorder")

    async def _record_unrecorded(self) -> None:
        delay = _RECORD_RETRY_FIRST
        while self._unrecorded:
            await asyncio.sleep(delay)
            for execution_id, (execution, outcome, _) in list(self._unrecorded.items()):
                try:
                    stored = await self._store.finish(execution, outcome, announce=False)
                    if stored is None and await self._missing(execution_id):
                        raise StoreError("its record is missing")  # until written back
                except LeaseLost as exc:  # taken over meanwhile: that process ends it
                    log.warning("execution %s: %s; its end here is dropped", execution_id, exc)
                    del self._unrecorded[execution_id]
                    continue
                except StoreError:
                    delay = min(delay * 2, _RECORD_RETRY_MAX)
                    break
                del self._unrecorded[execution_id]
                log.info("execution %s finished: code %d (stored late)", execution_id, outcome.code)
            else:
                delay = _RECORD_RETRY_FIRST


def _outcome_of(state: TaskState) -> Outcome | None:
    if state.phase is TaskPhase.COMPLETED:
        return Outcome(Status.SUCCEEDED, Code.SUCCESS, codes.success_message(), state.data or {})
    if state.phase is TaskPhase.FAILED:
        return Outcome(
            Status.FAILED,
            Code.QUERY_ERROR,
            codes.query_error_message(state.error or "robot failed"),
        )
    if state.phase is TaskPhase.CANCELLED:
        return Outcome(Status.CANCELLED, Code.CANCELLED, codes.cancelled_message(state.error or ""))
    if state.phase is TaskPhase.TIMED_OUT:
        return Outcome(Status.TIMED_OUT, Code.TIMEOUT, codes.timeout_message(state.error or ""))
    return None


class _NotCancellable(Exception):
    """The backend cannot cancel this run (the platform answered CANCEL_UNSUPPORTED)."""


class _DeadlineOff:
    """The ``deadline`` scope's timer off for a sleep of ``delay`` that ends before it, and
    back on after: a waiting execution holds one loop timer, not two (under uvloop a timer
    is some 550 bytes, kept for each open stream's whole wait).  A sleep that would outlast
    the deadline keeps it on: its timer ends the sleep.  (A context manager rather than a
    coroutine around the sleep: a coroutine's frame, held as long, is 250 bytes.)"""

    __slots__ = ("_deadline", "_when", "woke_past_it")

    def __init__(self, deadline: asyncio.Timeout, delay: float) -> None:
        self._deadline = deadline
        when = deadline.when()
        now = asyncio.get_running_loop().time()
        ends_first = not deadline.expired() and when is not None and now + delay < when
        self._when = when if ends_first else None
        self.woke_past_it = False

    def __enter__(self) -> _DeadlineOff:
        if self._when is not None:
            self._deadline.reschedule(None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._when is not None:
            # Past already (the loop woke the sleep late): it expires once the loop runs.
            self.woke_past_it = self._when <= asyncio.get_running_loop().time()
            self._deadline.reschedule(self._when)


def _redact_outcome(outcome: Outcome, token: str) -> Outcome:
    message = scrub(outcome.message, token)
    if message is outcome.message:
        return outcome
    return Outcome(outcome.status, outcome.code, message, outcome.data)
