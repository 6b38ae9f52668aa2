"""The ``local`` backend: runs project folders on this machine, pushing every change.

At most ``max_runs`` run at once; later ones wait in FIFO order (their queue
position is shown in the execution view).  Runs are processes of this service:
they do not survive it (each is killed if the service dies), so after a restart
an execution whose run is gone fails with a clear message.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from rpa_gateway.backends.base import (
    CancelReply,
    CreateFailed,
    InvalidRequest,
    Overloaded,
    ProjectInfo,
    TaskInfo,
    TaskPhase,
    TaskState,
    TaskUpdate,
    caller_key,
)
from rpa_gateway.backends.fair_queue import FairQueue
from rpa_gateway.backends.local_run import LocalRun, OutputLimits
from rpa_gateway.backends.projects import ProjectCatalog, ProjectError
from rpa_gateway.backends.spawn import kill_leftovers
from rpa_gateway.executions import ExecutionRequest
from rpa_gateway.telemetry.calls import NO_CALLS, Calls

_LOST = "the run was lost: the service restarted while it ran"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        projects_dir: Path,
        *,
        max_runs: int,
        kill_grace: float,
        run_owner: str,
        max_runs_per_caller: int | None = None,
        max_queued_per_caller: int = 1000,
        limits: OutputLimits | None = None,
        calls: Calls = NO_CALLS,
    ) -> None:
        self._calls = calls
        self._run_owner = run_owner
        kill_leftovers(run_owner)
        self._catalog = ProjectCatalog(projects_dir)
        self._max_runs = max_runs
        self._kill_grace = kill_grace
        self._limits = limits or OutputLimits()
        # A caller may take all slots but a quarter (at least one) kept for the others.
        self._max_per_caller = max_runs_per_caller or max(1, max_runs - max(1, max_runs // 4))
        self._max_queued_per_caller = max_queued_per_caller
        self._runs: dict[str, LocalRun] = {}
        self._waiting = FairQueue()
        self._running_by_caller: Counter[str] = Counter()
        self._caller_of: dict[str, str] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._contexts: dict[str, contextvars.Context] = {}

    @property
    def can_cancel(self) -> bool:
        return True

    @property
    def pushes(self) -> bool:
        return True

    @property
    def runs_here(self) -> bool:
        return True

    def describe(self) -> str:
        return (
            f"local projects in {self._catalog.root} (at most {self._max_runs} at once,"
            f" {self._max_per_caller} for one caller)"
        )

    def check(self, request: ExecutionRequest, token: str) -> None:
        try:
            self._catalog.get(request.project_id).check_params(request.params)
        except ProjectError as exc:
            raise InvalidRequest(exc.message, exc.field) from None
        if self._waiting.count(caller_key(token)) >= self._max_queued_per_caller:
            raise Overloaded(
                f"{self._max_queued_per_caller} runs of this caller wait for a free slot"
                " already (RPA_LOCAL_MAX_QUEUED_PER_TOKEN); retry when some have run"
            )

    def projects(self) -> list[ProjectInfo]:
        return [
            ProjectInfo(
                p.id,
                p.name,
                p.description,
                p.timeout,
                p.params_schema,
                p.output_schema,
                p.hints,
            )
            for p in self._catalog.all()
        ]

    def info(self, task_id: str) -> TaskInfo | None:
        run = self._runs.get(task_id)
        if run is None:
            return None
        return TaskInfo(queue_position=self._waiting.position(task_id), logs=list(run.logs))

    async def start(self, request: ExecutionRequest, token: str) -> str:
        try:
            project = self._catalog.get(request.project_id)
        except ProjectError as exc:
            raise CreateFailed(exc.message) from None
        task_id = uuid.uuid4().hex
        self._runs[task_id] = LocalRun(
            task_id, project, request.params, self._limits, self._kill_grace, self._run_owner
        )
        # Runs launched later from the queue still belong to this execution's trace and logs.
        self._contexts[task_id] = contextvars.copy_context()
        self._caller_of[task_id] = caller_key(token)
        self._waiting.add(self._caller_of[task_id], task_id)
        self._launch_waiting()
        return task_id

    def _launch_waiting(self) -> None:
        while len(self._active) < self._max_runs:
            task_id = self._waiting.pop_next(
                lambda caller: self._running_by_caller[caller] < self._max_per_caller
            )
            if task_id is None:
                return
            run = self._runs[task_id]
            caller = self._caller_of[task_id]
            self._running_by_caller[caller] += 1
            task = asyncio.create_task(
                self._run(run),
                name=f"local-run-{task_id}",
                context=self._contexts.pop(task_id),
            )
            self._active.add(task)
            task.add_done_callback(functools.partial(self._run_done, caller))

    async def _run(self, run: LocalRun) -> None:
        with self._calls.call("run") as call:
            await run.run()
            if run.final is not None and run.final.phase is not TaskPhase.COMPLETED:
                call.failed(run.final.phase.value)

    def _run_done(self, caller: str, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._running_by_caller[caller] -= 1
        if self._running_by_caller[caller] <= 0:
            del self._running_by_caller[caller]
        self._launch_waiting()

    async def prepare(
        self, execution_id: str, request: ExecutionRequest, token: str, seconds_left: float
    ) -> str | None:
        return None  # a run here dies with the service: there is nothing to repeat

    async def status(self, task_id: str, token: str, *, managed: bool = False) -> TaskState:
        run = self._runs.get(task_id)
        if run is None:
            return TaskState(TaskPhase.FAILED, "LOST", error=_LOST)
        if run.final is not None:
            return run.final
        waiting = self._waiting.position(task_id) is not None
        return TaskState(TaskPhase.WORKING, "PENDING" if waiting else "RUNNING")

    async def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        run = self._runs.get(task_id)
        if run is None:
            yield TaskState(TaskPhase.FAILED, "LOST", error=_LOST)
            return
        try:
            if self._waiting.position(task_id) is not None:
                yield TaskState(TaskPhase.WORKING, "PENDING")
            async for update in run.updates():
                yield update
        finally:
            if run.final is not None:
                self._runs.pop(task_id, None)
                self._caller_of.pop(task_id, None)

    async def cancel(self, task_id: str, token: str, *, managed: bool = False) -> CancelReply:
        run = self._runs.get(task_id)
        if run is None:
            return CancelReply.FAILED
        if self._waiting.remove(task_id):
            self._contexts.pop(task_id, None)
            run.end_before_start(TaskPhase.CANCELLED, "cancelled while queued")
        else:
            await run.stop(TaskPhase.CANCELLED)
        # The supervisor stopped watching (cancel or deadline): nobody else will drop it.
        self._runs.pop(task_id, None)
        self._caller_of.pop(task_id, None)
        return CancelReply.STOPPED

    async def aclose(self) -> None:
        for task_id in self._waiting.drain():
            self._runs[task_id].end_before_start(TaskPhase.CANCELLED, "service stopped")
        await asyncio.gather(
            *(run.stop(TaskPhase.CANCELLED) for run in self._runs.values()), return_exceptions=True
        )
        await asyncio.gather(*self._active, return_exceptions=True)
