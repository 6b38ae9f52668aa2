"""Tool calls as execution operations: run, get, wait, cancel, list, logs.

A call that waits is a reader of the execution's log, like an SSE stream: it follows
the events until the terminal one or until its wait ends, and going away (a client's
cancel, a dropped connection) stops only the reading, never the robot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from jsonschema.exceptions import ValidationError as SchemaError

from rpa_gateway.backends.base import InvalidRequest, Overloaded
from rpa_gateway.backends.projects import schema_error_path
from rpa_gateway.cursors import decode_cursor, encode_cursor
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    JsonObject,
    Status,
    new_execution_id,
    outcome_of,
    request_hash,
)
from rpa_gateway.mcp import catalog
from rpa_gateway.mcp.call_scope import CallScope
from rpa_gateway.mcp.catalog import Tool, ToolCatalog
from rpa_gateway.mcp.results import ToolOutcome, dumps, execution_outcome, tool_error
from rpa_gateway.service import (
    AlreadyFinished,
    CancelUnsupported,
    ExecutionNotFound,
    ExecutionService,
    IdempotencyConflict,
    Signal,
)
from rpa_gateway.store.base import ListQuery, StoreError

log = logging.getLogger(__name__)

_LOGS_TAIL = 50


class UnknownTool(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown tool: {name}")
        self.name = name


class InvalidArguments(Exception):
    """The arguments fail the tool's input schema (or the project's); ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run-type call asks for, checked."""

    project_id: str
    params: JsonObject | None
    version: int | None
    idempotency_key: str | None
    wait_seconds: float | None
    own_tool: bool = False  # a project's tool: its arguments are the params


class ToolCalls:
    def __init__(
        self,
        service: ExecutionService,
        tools: ToolCatalog,
        *,
        wait_seconds: float,
        max_wait_seconds: float,
        accepting: Callable[[], bool],
    ) -> None:
        self._service = service
        self._tools = tools
        self._wait = wait_seconds
        self._max_wait = max_wait_seconds
        self._accepting = accepting  # False while draining: no new executions

    # --- the surface the kernel uses ----------------------------------------------------
    def tool(self, name: str, arguments: JsonObject) -> Tool:
        """The tool called, its arguments checked.  Raises UnknownTool, InvalidArguments."""
        tool = self._tools.find(name)
        if tool is None:
            raise UnknownTool(name)
        error = next(iter(tool.validator.iter_errors(arguments)), None)
        if error is not None:
            where = _field_of(error)
            raise InvalidArguments(where, f"Invalid arguments for {name}: {where}: {error.message}")
        return tool

    def runs(self, tool: Tool) -> bool:
        """Whether calling it starts a robot run (and so may be a task)."""
        return tool.project_id is not None or tool.name == catalog.RUN

    async def call(self, tool: Tool, arguments: JsonObject, scope: CallScope) -> ToolOutcome:
        if self.runs(tool):
            run = self.run_request(tool, arguments)
            started = await self.start(run, scope)
            if isinstance(started, ToolOutcome):
                return started
            execution, first = started
            seconds = self._wait if run.wait_seconds is None else run.wait_seconds
            return await self.wait(execution, scope, seconds, first=first)
        execution_id = str(arguments.get("execution_id", ""))
        if tool.name == catalog.GET:
            return await self._get(execution_id, scope)
        if tool.name == catalog.WAIT:
            asked = arguments.get("wait_seconds")
            return await self._wait_for(
                execution_id, scope, self._wait if asked is None else float(asked)
            )
        if tool.name == catalog.CANCEL:
            return await self._cancel(execution_id, scope)
        if tool.name == catalog.LIST:
            return await self._list(arguments, scope)
        if tool.name == catalog.LOGS:
            return await self._logs(execution_id, int(arguments.get("tail", _LOGS_TAIL)), scope)
        raise UnknownTool(tool.name)  # a catalog tool without an operation: a bug

    def run_request(self, tool: Tool, arguments: JsonObject) -> RunRequest:
        if tool.project_id is not None:
            return RunRequest(tool.project_id, arguments, None, None, None, own_tool=True)
        wait = arguments.get("wait_seconds")
        params = arguments.get("params")
        version = arguments.get("version")
        key = arguments.get("idempotency_key")
        return RunRequest(
            str(arguments["project_id"]),
            params if isinstance(params, dict) else None,
            version if isinstance(version, int) else None,
            key if isinstance(key, str) else None,
            min(float(wait), self._max_wait) if wait is not None else None,
        )

    async def start(
        self, run: RunRequest, scope: CallScope
    ) -> tuple[Execution, Event | None] | ToolOutcome:
        """A new execution (and its first event), the one its idempotency key made before
        (no event), or the tool error saying why there is none."""
        if not self._accepting():
            return tool_error("the service is restarting; call again in a moment", "refused")
        request = ExecutionRequest(
            project_id=run.project_id,
            sid=new_execution_id(),
            params=run.params or {},
            version=run.version,
            trace_parent=scope.traceparent,
        )
        key = run.idempotency_key
        try:
            return await self._service.create(
                request,
                scope.token,
                idempotency_key=key,
                request_hash=request_hash(run.project_id, run.params, version=run.version)
                if key is not None
                else None,
            )
        except InvalidRequest as exc:
            field = exc.field.removeprefix("params.") if run.own_tool else exc.field
            raise InvalidArguments(field, exc.message) from None
        except IdempotencyConflict:
            return tool_error(
                f"idempotency_key {key!r} was used before with other arguments; use a new "
                "key for a new run, or the same arguments to get the run it started",
                "conflict",
            )
        except Overloaded as exc:
            return tool_error(f"{exc.message} (retry in {exc.retry_after} s)", "refused")
        except StoreError:
            log.exception("MCP: an execution could not be created")
            return tool_error("the service cannot take new runs now; retry shortly", "refused")

    async def wait(
        self, execution: Execution, scope: CallScope, seconds: float, *, first: Event | None
    ) -> ToolOutcome:
        """Follow the execution until it ends or ``seconds`` pass; its outcome then."""
        reporter = scope.progress_reporter()
        progress: JsonObject | None = None
        current = execution
        after = 0 if first is not None else max(0, execution.last_seq - 1)
        try:
            async with asyncio.timeout(seconds if math.isfinite(seconds) else None):
                async for item in self._service.follow(execution.id, after, known=first):
                    if isinstance(item, Signal):  # shutting down, or the store failed
                        break
                    current = _after(current, item)
                    if item.kind is EventKind.TERMINAL:
                        break
                    if item.kind is EventKind.PROGRESS:
                        progress = item.data
                    if reporter is not None:
                        reporter.event(item)
        except TimeoutError:
            pass
        finally:
            if reporter is not None:
                reporter.close()
        if current.finished_at is None:
            log.info("MCP: execution %s still running after %g s", current.id, seconds)
        return execution_outcome(current, progress, waited=seconds)

    async def execution(self, execution_id: str, scope: CallScope) -> Execution:
        """The caller's execution (any caller's, for an operator).  Raises ExecutionNotFound."""
        return await self._service.attach(
            execution_id, scope.token, resume=True, every_owner=scope.admin
        )

    # --- the other tools ------------------------------------------------------------------
    async def _get(self, execution_id: str, scope: CallScope) -> ToolOutcome:
        try:
            execution = await self.execution(execution_id, scope)
        except ExecutionNotFound:
            return _not_found(execution_id)
        progress = None
        if execution.finished_at is None:
            latest = await self._service.latest_event(execution)
            if latest is not None and latest.kind is EventKind.PROGRESS:
                progress = latest.data
        return self.with_queue(execution_outcome(execution, progress), execution)

    async def _wait_for(self, execution_id: str, scope: CallScope, seconds: float) -> ToolOutcome:
        try:
            execution = await self.execution(execution_id, scope)
        except ExecutionNotFound:
            return _not_found(execution_id)
        if execution.finished_at is not None:
            return execution_outcome(execution)
        return await self.wait(execution, scope, min(seconds, self._max_wait), first=None)

    async def cancel_execution(self, execution_id: str, scope: CallScope) -> Execution:
        """Cancel it (the robot too) and wait briefly for its end.  Raises
        ExecutionNotFound, AlreadyFinished."""
        return await self._service.cancel(execution_id, scope.token, every_owner=scope.admin)

    async def list_page(self, scope: CallScope, query: ListQuery) -> list[Execution]:
        """The caller's executions (every caller's for an operator), newest first."""
        return await self._service.list_executions(scope.token, query, every_owner=scope.admin)

    async def _cancel(self, execution_id: str, scope: CallScope) -> ToolOutcome:
        try:
            execution = await self.cancel_execution(execution_id, scope)
        except ExecutionNotFound:
            return _not_found(execution_id)
        except AlreadyFinished as exc:
            ended = execution_outcome(exc.execution)
            return tool_error(
                f"execution {execution_id} had already ended ({ended.status}), so it was not "
                "cancelled",
                "conflict",
            )
        except CancelUnsupported:
            return tool_error(
                f"the RPA platform cannot cancel execution {execution_id}'s run"
                " (CANCEL_UNSUPPORTED); it goes on until it ends or its deadline ends it",
                "conflict",
            )
        outcome = execution_outcome(execution)
        # Cancelled as asked: the call did its job, though the run ended in failure.
        return dataclasses.replace(outcome, is_error=outcome.status not in ("cancelled", "running"))

    async def _list(self, arguments: JsonObject, scope: CallScope) -> ToolOutcome:
        limit = int(arguments.get("limit", 20))
        cursor = arguments.get("cursor")
        before = decode_cursor(str(cursor)) if cursor else None
        if cursor and before is None:
            raise InvalidArguments("cursor", "cursor: not one rpa_list returned")
        status = arguments.get("status")
        project = arguments.get("project_id")
        items = await self.list_page(
            scope,
            ListQuery(
                owner="",
                status=Status(str(status).upper()) if status else None,
                project_id=str(project) if project else None,
                limit=limit + 1,
                before=before,
            ),
        )
        page, more = items[:limit], len(items) > limit
        listed: JsonObject = {"executions": [_brief(e) for e in page]}
        if more and page:
            listed["next_cursor"] = encode_cursor(page[-1])
        return ToolOutcome(listed, dumps(listed))

    async def _logs(self, execution_id: str, tail: int, scope: CallScope) -> ToolOutcome:
        try:
            execution = await self.execution(execution_id, scope)
        except ExecutionNotFound:
            return _not_found(execution_id)
        info = self._service.run_info(execution)
        lines = (info.logs if info is not None else execution.logs)[-tail:]
        logged: JsonObject = {"execution_id": execution.id, "logs": lines}
        if not lines:
            text = (
                f"No log lines for execution {execution.id} (runs on an RPA platform keep "
                "their logs there)."
            )
            return ToolOutcome(logged, text)
        return ToolOutcome(logged, "\n".join(lines))

    def with_queue(self, outcome: ToolOutcome, execution: Execution) -> ToolOutcome:
        """A waiting local run's place in the queue, when it has one."""
        info = self._service.run_info(execution)
        if info is None or info.queue_position is None or outcome.structured is None:
            return outcome
        structured = {**outcome.structured, "queue_position": info.queue_position}
        return dataclasses.replace(outcome, structured=structured)


def _after(execution: Execution, event: Event) -> Execution:
    """The execution as this event leaves it (without reading the store again)."""
    if event.kind is EventKind.PROGRESS:
        return execution
    if event.kind is EventKind.TERMINAL:
        outcome = outcome_of(event.data)
        return dataclasses.replace(
            execution,
            status=outcome.status,
            finished_at=event.at,
            updated_at=event.at,
            last_seq=event.seq,
            outcome=outcome,
        )
    status = event.data.get("status")
    if isinstance(status, str) and status in Status.__members__:
        return dataclasses.replace(
            execution, status=Status(status), updated_at=event.at, last_seq=event.seq
        )
    return execution


def _brief(execution: Execution) -> JsonObject:
    brief: JsonObject = {
        "execution_id": execution.id,
        "project_id": execution.request.project_id,
        "status": execution.status.value.lower(),
        "created_at": execution.created_at,
    }
    if execution.outcome is not None:
        brief["code"] = execution.outcome.code
        brief["message"] = execution.outcome.message
        brief["finished_at"] = execution.finished_at
    return brief


def _not_found(execution_id: str) -> ToolOutcome:
    return tool_error(
        f"no execution {execution_id!r} for this caller (it may belong to another key, or "
        "be past retention)",
        "not_found",
    )


def _field_of(error: SchemaError) -> str:
    return ".".join(schema_error_path(error)) or "arguments"
