"""MCP tasks as executions: a task id is the execution id, readable from any process.

Two shapes of one idea:

- ``2025-11-25``, the tasks utility: the client asks for a task (``params.task`` on
  ``tools/call``) and gets one at once; ``tasks/get``, ``tasks/result`` (blocks until
  the end), ``tasks/list`` and ``tasks/cancel``.  A failed run is a ``failed`` task.
- ``2026-07-28``, the ``io.modelcontextprotocol/tasks`` extension: a client that
  declares it on a request may get a task instead of a result (here: when the run has
  not ended within :data:`TASK_GRACE` seconds); ``tasks/get`` carries the result once
  it is there, ``tasks/update`` and ``tasks/cancel`` acknowledge.  The extension has no
  ``tasks/result`` and no ``tasks/list`` (they answer "method not found"), and a run
  that failed is a ``completed`` task whose result is a tool error.

``tasks/cancel`` stops the robot, as ``rpa_cancel`` does.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from mcp.shared.exceptions import MCPError

from rpa_gateway.cursors import decode_cursor, encode_cursor
from rpa_gateway.executions import Execution, Status
from rpa_gateway.mcp.call_scope import CallScope
from rpa_gateway.mcp.protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    RELATED_TASK_META_KEY,
    TASKS_EXTENSION,
)
from rpa_gateway.mcp.results import STATE_WORDS, execution_outcome
from rpa_gateway.mcp.tool_calls import RunRequest, ToolCalls
from rpa_gateway.service import AlreadyFinished, CancelUnsupported, ExecutionNotFound
from rpa_gateway.store.base import ListQuery

TASK_GRACE = 1.0  # seconds a 2026 task-capable call waits before it answers with a task
POLL_INTERVAL_MS = 2000
TASKS_PAGE = 50


def declares_tasks(scope: CallScope) -> bool:
    """A 2026 request whose client takes tasks (the extension in its capabilities)."""
    capabilities = scope.meta.get(CLIENT_CAPABILITIES_META_KEY)
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


class Tasks:
    def __init__(self, calls: ToolCalls, *, retention_seconds: float) -> None:
        self._calls = calls
        self._ttl_ms = round(retention_seconds * 1000) if retention_seconds > 0 else None

    # --- 2025-11-25 ------------------------------------------------------------------------
    async def start(self, run: RunRequest, scope: CallScope) -> dict[str, Any]:
        """``CreateTaskResult`` for a task-augmented ``tools/call``: the run, begun."""
        started = await self._calls.start(run, scope)
        if not isinstance(started, tuple):  # refused: busy, restarting, a key reused
            code = INVALID_PARAMS if started.status == "conflict" else INTERNAL_ERROR
            raise MCPError(code, started.text.removeprefix("ERROR: "))
        execution, _ = started
        return {"task": self.task(execution)}

    def task(self, execution: Execution, *, modern: bool = False) -> dict[str, Any]:
        """The execution as a task (the 2026 extension's field names when ``modern``)."""
        outcome = execution.outcome
        if execution.finished_at is None or outcome is None:
            status, message = "working", STATE_WORDS.get(execution.status.value, "running")
        elif execution.status is Status.SUCCEEDED:
            status, message = "completed", outcome.message
        elif execution.status is Status.CANCELLED:
            status, message = "cancelled", outcome.message
        else:  # a tool error: a failed task, or (2026) a completed one whose result says so
            status, message = ("completed" if modern else "failed"), outcome.message
        task: dict[str, Any] = {
            "taskId": execution.id,
            "status": status,
            "statusMessage": message,
            "createdAt": _iso(execution.created_at),
            "lastUpdatedAt": _iso(execution.updated_at),
        }
        if modern:
            task["ttlMs"] = self._ttl_ms
            task["pollIntervalMs"] = POLL_INTERVAL_MS
        else:
            task["ttl"] = self._ttl_ms
            task["pollInterval"] = POLL_INTERVAL_MS
        return task

    async def get(self, task_id: str, scope: CallScope, *, modern: bool) -> dict[str, Any]:
        execution = await self._execution(task_id, scope, modern=modern)
        task = self.task(execution, modern=modern)
        if modern:
            task["resultType"] = "complete"
            if task["status"] == "completed":
                task["result"] = {**execution_outcome(execution).wire(), "resultType": "complete"}
        return task

    async def result(self, task_id: str, scope: CallScope) -> dict[str, Any]:
        """What the ``tools/call`` would have returned, once the run has ended."""
        execution = await self._execution(task_id, scope, modern=False)
        if execution.finished_at is None:
            ended = await self._calls.wait(execution, scope, math.inf, first=None)
            if ended.status == "running":  # the service is shutting down first
                raise MCPError(
                    INTERNAL_ERROR, f"the service restarts before task {task_id} ended: ask again"
                )
        else:
            ended = execution_outcome(execution)
        result = ended.wire()
        result["_meta"] = {RELATED_TASK_META_KEY: {"taskId": execution.id}}
        return result

    async def list(self, cursor: str | None, scope: CallScope) -> dict[str, Any]:
        before = decode_cursor(cursor) if cursor else None
        if cursor and before is None:
            raise MCPError(INVALID_PARAMS, "cursor: not one tasks/list returned")
        executions = await self._calls.list_page(
            scope, ListQuery(owner="", limit=TASKS_PAGE + 1, before=before)
        )
        page = executions[:TASKS_PAGE]
        listed: dict[str, Any] = {"tasks": [self.task(e) for e in page]}
        if len(executions) > TASKS_PAGE and page:
            listed["nextCursor"] = encode_cursor(page[-1])
        return listed

    async def cancel(self, task_id: str, scope: CallScope, *, modern: bool) -> dict[str, Any]:
        execution = await self._execution(task_id, scope, modern=modern)
        try:
            if execution.finished_at is not None:
                raise AlreadyFinished(execution)
            execution = await self._calls.cancel_execution(task_id, scope)
        except CancelUnsupported:
            raise MCPError(
                INVALID_PARAMS,
                f"task {task_id}: the RPA platform cannot cancel its run (CANCEL_UNSUPPORTED);"
                " it goes on until it ends or its deadline ends it",
            ) from None
        except AlreadyFinished as exc:
            if modern:  # cooperative: the task ends as it ended
                return {"resultType": "complete"}
            raise MCPError(
                INVALID_PARAMS,
                f"task {task_id} is already {self.task(exc.execution)['status']}: a task in a"
                " terminal status cannot be cancelled",
            ) from None
        if modern:
            return {"resultType": "complete"}
        if execution.finished_at is not None and execution.status is not Status.CANCELLED:
            raise MCPError(
                INVALID_PARAMS,
                f"task {task_id} ended ({self.task(execution)['status']}) before it was cancelled",
            )
        cancelled = self.task(execution)
        if cancelled["status"] == "working":  # recorded: its robot is being stopped
            cancelled.update(status="cancelled", statusMessage="cancelled: the robot is stopping")
        return cancelled

    async def update(self, task_id: str, scope: CallScope) -> dict[str, Any]:
        """A run never asks for input, so there is nothing to update: acknowledged."""
        await self._execution(task_id, scope, modern=True)
        return {"resultType": "complete"}

    async def _execution(self, task_id: str, scope: CallScope, *, modern: bool) -> Execution:
        if modern and not declares_tasks(scope):
            raise MCPError(
                MISSING_REQUIRED_CLIENT_CAPABILITY,
                f"tasks need the {TASKS_EXTENSION} extension in the request's client capabilities",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        try:
            return await self._calls.execution(task_id, scope)
        except ExecutionNotFound:
            raise MCPError(INVALID_PARAMS, f"no task {task_id!r} for this caller") from None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
