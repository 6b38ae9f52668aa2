"""The ``local`` backend: runs project folders on this machine, pushing every change.

At most ``max_runs`` run at once; later ones wait in FIFO order (their queue
position is shown in the execution view).  Runs are processes of this service:
they do not survive it (each is killed if the service dies), so after a restart
an execution whose run is gone fails with a clear message.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from rpa_gateway.backends.base import (
    CreateFailed,
    InvalidRequest,
    ProjectInfo,
    TaskInfo,
    TaskPhase,
    TaskState,
    TaskUpdate,
)
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
        self._runs: dict[str, LocalRun] = {}
        self._waiting: deque[str] = deque()
        self._active: set[asyncio.Task[None]] = set()
        self._contexts: dict[str, contextvars.Context] = {}

    @property
    def can_cancel(self) -> bool:
        return True

    @property
    def pushes(self) -> bool:
        return True

    def describe(self) -> str:
        return f"local projects in {self._catalog.root} (at most {self._max_runs} at once)"

    def check(self, request: ExecutionRequest) -> None:
        try:
            self._catalog.get(request.project_id).check_params(request.params)
        except ProjectError as exc:
            raise InvalidRequest(exc.message, exc.field) from None

    def projects(self) -> list[ProjectInfo]:
        return [
            ProjectInfo(p.id, p.name, p.description, p.timeout, p.params_schema)
            for p in self._catalog.all()
        ]

    def info(self, task_id: str) -> TaskInfo | None:
        run = self._runs.get(task_id)
        if run is None:
            return None
        position = self._waiting.index(task_id) + 1 if task_id in self._waiting else None
        return TaskInfo(queue_position=position, logs=list(run.logs))

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
        self._waiting.append(task_id)
        self._launch_waiting()
        return task_id

    def _launch_waiting(self) -> None:
        while self._waiting and len(self._active) < self._max_runs:
            run = self._runs[self._waiting.popleft()]
            task = asyncio.create_task(
                self._run(run),
                name=f"local-run-{run.task_id}",
                context=self._contexts.pop(run.task_id),
            )
            self._active.add(task)
            task.add_done_callback(self._run_done)

    async def _run(self, run: LocalRun) -> None:
        with self._calls.call("run") as call:
            await run.run()
            if run.final is not None and run.final.phase is not TaskPhase.COMPLETED:
                call.failed(run.final.phase.value)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._launch_waiting()

    async def status(self, task_id: str, token: str) -> TaskState:
        run = self._runs.get(task_id)
        if run is None:
            return TaskState(TaskPhase.FAILED, "LOST", error=_LOST)
        if run.final is not None:
            return run.final
        return TaskState(TaskPhase.WORKING, "PENDING" if task_id in self._waiting else "RUNNING")

    async def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        run = self._runs.get(task_id)
        if run is None:
            yield TaskState(TaskPhase.FAILED, "LOST", error=_LOST)
            return
        try:
            if task_id in self._waiting:
                yield TaskState(TaskPhase.WORKING, "PENDING")
            async for update in run.updates():
                yield update
        finally:
            if run.final is not None:
                self._runs.pop(task_id, None)

    async def cancel(self, task_id: str, token: str) -> bool:
        run = self._runs.get(task_id)
        if run is None:
            return False
        if task_id in self._waiting:
            self._waiting.remove(task_id)
            self._contexts.pop(task_id, None)
            run.end_before_start(TaskPhase.CANCELLED, "cancelled while queued")
        else:
            await run.stop(TaskPhase.CANCELLED)
        # The supervisor stopped watching (cancel or deadline): nobody else will drop it.
        self._runs.pop(task_id, None)
        return True

    async def aclose(self) -> None:
        for task_id in list(self._waiting):
            self._runs[task_id].end_before_start(TaskPhase.CANCELLED, "service stopped")
        self._waiting.clear()
        await asyncio.gather(
            *(run.stop(TaskPhase.CANCELLED) for run in self._runs.values()), return_exceptions=True
        )
        await asyncio.gather(*self._active, return_exceptions=True)
