"""One request through the official SDK's server kernel, with our handlers.

The kernel (``mcp.server.runner.serve_one``) does what the SDK is for: ``initialize``
and version negotiation, ``ping``, ``server/discover``, each method's parameters
checked and each result shaped as the request's protocol version has it, ``-32601``
for what is not served.  It runs one request at a time with no connection state:
everything a request needs comes with it (its version, and the caller in
:data:`~rpa_gateway.mcp.call_scope.current_scope`), so any process can serve it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.caching import CacheHint
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_one
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    CallToolRequestParams,
    CancelTaskRequestParams,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    RequestParams,
    ServerTasksCapability,
    TaskMetadata,
)
from pydantic import ConfigDict, Field, ValidationError

from rpa_gateway import __version__
from rpa_gateway.mcp.call_scope import CallScope, current_scope
from rpa_gateway.mcp.catalog import Tool, ToolCatalog
from rpa_gateway.mcp.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    TASKS_VERSION,
)
from rpa_gateway.mcp.results import ToolOutcome
from rpa_gateway.mcp.tasks import TASK_GRACE, Tasks, declares_tasks
from rpa_gateway.mcp.tool_calls import InvalidArguments, ToolCalls, UnknownTool
from rpa_gateway.telemetry import Telemetry
from rpa_gateway.telemetry.mcp_calls import McpCallRecord

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Runs RPA robots. Each project is a tool; rpa_run runs any project by id. A call "
    "answers with the run's result, or, when the run takes longer than the call may wait, "
    "with its execution_id and status 'running': then call rpa_wait with that id (the run "
    "goes on meanwhile, and nothing is lost if the connection drops). rpa_cancel stops a "
    "run; rpa_list shows your runs."
)


class TaskUpdateParams(RequestParams):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    task_id: str = Field(alias="taskId")


class _Server(Server[dict[str, Any]]):
    """The SDK's low-level server, announcing the 2025-11-25 tasks utility as well."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = super().create_initialization_options(
            notification_options, experimental_capabilities, extensions
        )
        tasks = ServerTasksCapability.model_validate(
            {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        )
        capabilities = options.capabilities.model_copy(update={"tasks": tasks})
        return options.model_copy(update={"capabilities": capabilities})


class _Request:
    """The SDK's per-request dispatch context, for a transport that answers each request
    itself: no back channel (the server sends no requests of its own), and progress goes
    through our reporter (:class:`~rpa_gateway.mcp.call_scope.ProgressReporter`)."""

    __slots__ = ("_cancel", "request_id", "transport")

    def __init__(self, request_id: str | int | None, transport: TransportContext) -> None:
        self.request_id = request_id
        self.transport = transport
        self._cancel: anyio.Event | None = None

    @property
    def can_send_request(self) -> bool:
        return False

    @property
    def message_metadata(self) -> None:
        return None

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel is None:
            self._cancel = anyio.Event()
        return self._cancel

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Any = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> None:
        return None

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        return None


_TRANSPORT = TransportContext(kind="streamable-http", can_send_request=False)


class McpKernel:
    def __init__(self, calls: ToolCalls, tools: ToolCatalog, tasks: Tasks, telemetry: Telemetry):
        self._calls = calls
        self._tools = tools
        self._tasks = tasks
        self._telemetry = telemetry
        server = _Server(
            "rpa-gateway",
            version=__version__,
            title="RPA gateway",
            instructions=INSTRUCTIONS,
            # Projects come and go with their folders: clients look again after a minute.
            cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="private")},
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        server.add_request_handler("tasks/get", GetTaskRequestParams, self._tasks_get)
        server.add_request_handler("tasks/result", GetTaskPayloadRequestParams, self._tasks_result)
        server.add_request_handler("tasks/list", PaginatedRequestParams, self._tasks_list)
        server.add_request_handler("tasks/cancel", CancelTaskRequestParams, self._tasks_cancel)
        server.add_request_handler("tasks/update", TaskUpdateParams, self._tasks_update)
        server.extensions["io.modelcontextprotocol/tasks"] = {}
        server.middleware.clear()  # our own spans, not the SDK's OpenTelemetry middleware
        server.middleware.append(self._guard)
        self._server = server

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        """The tool's input schema (its ``Mcp-Param-*`` headers are checked by it)."""
        tool = self._tools.find(name)
        return tool.definition["inputSchema"] if tool is not None else None

    async def request(
        self,
        scope: CallScope,
        request_id: str | int,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        client_info: Any = None,
        client_capabilities: Any = None,
    ) -> dict[str, Any]:
        """The request's result.  Raises MCPError (the JSON-RPC error to answer)."""
        reset = current_scope.set(scope)
        try:
            result = await serve_one(
                self._server,
                _Request(request_id, _TRANSPORT),
                method,
                params,
                connection=Connection.from_envelope(
                    scope.protocol_version, client_info, client_capabilities
                ),
                lifespan_state={},
            )
            if method == "initialize" and result.get("protocolVersion") != TASKS_VERSION:
                # The tasks utility belongs to 2025-11-25 alone.
                capabilities = result.get("capabilities")
                if isinstance(capabilities, dict):
                    capabilities.pop("tasks", None)
            return result
        except ValidationError as exc:  # raised before our middleware saw the request
            raise MCPError(INVALID_PARAMS, _describe(exc)) from None
        finally:
            current_scope.reset(reset)

    # --- middleware: errors, and 2025-11-25 task-augmented calls ----------------------------
    async def _guard(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        try:
            params = ctx.params
            if (
                ctx.method == "tools/call"
                and isinstance(params, Mapping)
                and params.get("task") is not None
                and ctx.protocol_version == TASKS_VERSION
            ):
                # Answered here: the kernel's result check knows no CreateTaskResult.
                return await self._start_task(params)
            return await call_next(ctx)
        except (MCPError, asyncio.CancelledError):
            raise
        except ValidationError as exc:
            raise MCPError(INVALID_PARAMS, _describe(exc)) from None
        except InvalidArguments as exc:
            raise MCPError(INVALID_PARAMS, exc.message, {"field": exc.field}) from None
        except UnknownTool as exc:
            raise MCPError(INVALID_PARAMS, str(exc), {"field": "name"}) from None
        except Exception:
            log.exception("MCP %s failed", ctx.method)
            raise MCPError(INTERNAL_ERROR, "internal error; the service's log says more") from None

    # --- handlers ----------------------------------------------------------------------------
    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> Any:
        return _shaped({"tools": [tool.definition for tool in self._tools.tools()]})

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> Any:
        scope = current_scope.get()
        known = self._tools.find(params.name)
        record = self._call_record(known.name if known is not None else "unknown", scope)
        outcome = "error"
        execution_id: str | None = None
        try:
            arguments = dict(params.arguments or {})
            try:
                tool = self._calls.tool(params.name, arguments)
            except (InvalidArguments, UnknownTool):
                outcome = "invalid"
                raise
            if (
                scope.protocol_version in MODERN_VERSIONS
                and declares_tasks(scope)
                and self._calls.runs(tool)
            ):
                answer, outcome, execution_id = await self._call_as_task(tool, arguments, scope)
                return _shaped(answer)
            result = await self._calls.call(tool, arguments, scope)
            outcome = result.status
            execution_id = _execution_of(result)
            log.info(
                "MCP call %s: %s%s",
                tool.name,
                result.status,
                f" (execution {execution_id})" if execution_id else "",
            )
            return _shaped(result.wire())
        except asyncio.CancelledError:
            outcome = "abandoned"  # the client went away or cancelled; the run goes on
            raise
        finally:
            record.end(outcome, execution_id)

    def _call_record(self, tool_name: str, scope: CallScope) -> McpCallRecord:
        """The call's span and count; what it starts becomes a child of its span."""
        record = self._telemetry.mcp_call(tool_name, scope.traceparent)
        if record.traceparent is not None:
            scope.traceparent = record.traceparent
        return record

    async def _call_as_task(
        self, tool: Tool, arguments: dict[str, Any], scope: CallScope
    ) -> tuple[dict[str, Any], str, str | None]:
        """A 2026 client that takes tasks: the result if the run ends within the grace (or
        the wait it asked for), else the task to poll."""
        run = self._calls.run_request(tool, arguments)
        started = await self._calls.start(run, scope)
        if isinstance(started, ToolOutcome):
            return started.wire(), started.status, None
        execution, first = started
        seconds = TASK_GRACE if run.wait_seconds is None else run.wait_seconds
        result = await self._calls.wait(execution, scope, seconds, first=first)
        if result.status != "running":
            return result.wire(), result.status, execution.id
        log.info("MCP call %s: answered with task %s", tool.name, execution.id)
        current = await self._calls.execution(execution.id, scope)
        return {"resultType": "task", **self._tasks.task(current, modern=True)}, "task", current.id

    async def _start_task(self, params: Mapping[str, Any]) -> dict[str, Any]:
        scope = current_scope.get()
        arguments = params.get("arguments") or {}
        name = params.get("name")
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise MCPError(INVALID_PARAMS, "tools/call needs a name and an arguments object")
        TaskMetadata.model_validate(params["task"])  # {"ttl"?: int}: else -32602, nothing runs
        tool = self._calls.tool(name, arguments)
        if not self._calls.runs(tool):
            raise MCPError(METHOD_NOT_FOUND, f"{name} does not run as a task (taskSupport)")
        record = self._call_record(tool.name, scope)
        try:
            created = await self._tasks.start(self._calls.run_request(tool, arguments), scope)
        except BaseException:
            record.end("error")
            raise
        record.end("task", str(created["task"]["taskId"]))
        log.info("MCP call %s: task %s", tool.name, created["task"]["taskId"])
        return created

    async def _tasks_get(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams
    ) -> Any:
        scope = _tasks_scope("tasks/get")
        return await self._tasks.get(params.task_id, scope, modern=_modern(scope))

    async def _tasks_result(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskPayloadRequestParams
    ) -> Any:
        scope = _tasks_scope("tasks/result")
        if _modern(scope):  # the 2026 extension has no tasks/result: tasks/get carries it
            raise MCPError(METHOD_NOT_FOUND, "Method not found", "tasks/result")
        return await self._tasks.result(params.task_id, scope)

    async def _tasks_list(
        self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> Any:
        scope = _tasks_scope("tasks/list")
        if _modern(scope):
            raise MCPError(METHOD_NOT_FOUND, "Method not found", "tasks/list")
        return await self._tasks.list(params.cursor if params is not None else None, scope)

    async def _tasks_cancel(
        self, ctx: ServerRequestContext[Any, Any], params: CancelTaskRequestParams
    ) -> Any:
        scope = _tasks_scope("tasks/cancel")
        return await self._tasks.cancel(params.task_id, scope, modern=_modern(scope))

    async def _tasks_update(
        self, ctx: ServerRequestContext[Any, Any], params: TaskUpdateParams
    ) -> Any:
        scope = current_scope.get()
        if not _modern(scope):
            raise MCPError(METHOD_NOT_FOUND, "Method not found", "tasks/update")
        return await self._tasks.update(params.task_id, scope)


def _modern(scope: CallScope) -> bool:
    return scope.protocol_version in MODERN_VERSIONS


def _tasks_scope(method: str) -> CallScope:
    """The request's scope, at a version that has tasks (2025-11-25 or later)."""
    scope = current_scope.get()
    if scope.protocol_version != TASKS_VERSION and not _modern(scope):
        raise MCPError(METHOD_NOT_FOUND, "Method not found", method)
    return scope


def _shaped(result: dict[str, Any]) -> dict[str, Any]:
    """A result as the request's version needs it: 2026-07-28 results say their type."""
    if _modern(current_scope.get()):
        result.setdefault("resultType", "complete")
    return result


def _execution_of(result: ToolOutcome) -> str | None:
    structured = result.structured
    value = structured.get("execution_id") if structured is not None else None
    return value if isinstance(value, str) else None


def _describe(exc: ValidationError) -> str:
    """Which parameters are wrong and how, without echoing their values."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        where = ".".join(loc if loc[:1] == ["params"] else ["params", *loc])
        problems.append(f"{where}: {error['msg']}")
    return "Invalid params: " + "; ".join(problems[:5])


__all__ = ["McpKernel"]
