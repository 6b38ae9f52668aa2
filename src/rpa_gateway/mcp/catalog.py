"""Which tools there are: the generic execution tools, and one per local project.

A project's tool name comes from its id alone, so it never changes or moves to another
project as folders come and go: the id itself when it is a name every client takes (MCP
allows letters, digits, ``_``, ``-`` and ``.`` up to 128 characters, but the models' own
function-calling APIs take no ``.`` and at most 64) and not a generic tool's name; else
the id with ``.`` made ``_``, cut to 55 characters, then ``_`` and eight hex digits of the
id's SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from rpa_gateway.backends.base import ProjectInfo
from rpa_gateway.executions import Status

log = logging.getLogger(__name__)

RUN, GET, WAIT, CANCEL, LIST, LOGS = (
    "rpa_run",
    "rpa_get",
    "rpa_wait",
    "rpa_cancel",
    "rpa_list",
    "rpa_logs",
)
GENERIC_TOOLS = (RUN, GET, WAIT, CANCEL, LIST, LOGS)

MAX_NAME = 64
REREAD_SECONDS = 1.0  # the projects folder is read again at most this often
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")
_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME}}}")
_EXECUTION_ID = {"type": "string", "minLength": 1, "maxLength": 256}


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    definition: dict[str, Any]  # as tools/list gives it
    validator: Draft202012Validator  # of its arguments
    project_id: str | None = None  # a project's own tool


def tool_name(project_id: str) -> str:
    """The project's tool name (see the module's docstring)."""
    if _NAME.fullmatch(project_id) and project_id not in GENERIC_TOOLS:
        return project_id
    base = _NOT_IN_NAME.sub("_", project_id)[: MAX_NAME - 9]
    return f"{base}_{hashlib.sha256(project_id.encode()).hexdigest()[:8]}"


def outcome_schema(result_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a call that runs a project returns as ``structuredContent``: the execution's
    state, and once it succeeded its ``result`` (as the project's output schema says)."""
    return {
        "type": "object",
        "properties": {
            "execution_id": {"type": "string"},
            "project_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["running", "succeeded", "failed", "timed_out", "cancelled"],
            },
            "state": {"type": "string", "description": "accepted, pending or running"},
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "progress": {"type": "object"},
            "result": dict(result_schema) if result_schema is not None else {"type": "object"},
        },
        "required": ["execution_id", "status"],
    }


class ToolCatalog:
    """The tools, made afresh from the backend's projects (their folders may change)."""

    def __init__(
        self,
        projects: Callable[[], list[ProjectInfo] | None],
        *,
        wait_seconds: float,
        max_wait_seconds: float,
    ) -> None:
        self._projects = projects
        self._wait = wait_seconds
        self._generic = [
            _tool(name, definition) for name, definition in _generic(max_wait_seconds).items()
        ]
        self._made: tuple[tuple[ProjectInfo, ...], list[Tool], dict[str, Tool]] | None = None
        self._read_at = -REREAD_SECONDS

    def tools(self) -> list[Tool]:
        return self._current()[1]

    def find(self, name: str) -> Tool | None:
        return self._current()[2].get(name)

    def _current(self) -> tuple[tuple[ProjectInfo, ...], list[Tool], dict[str, Tool]]:
        made = self._made
        now = time.monotonic()
        if made is not None and now - self._read_at < REREAD_SECONDS:
            return made
        self._read_at = now
        projects = tuple(self._projects() or ())
        if made is None or made[0] != projects:
            tools = list(self._generic)
            for project in projects:
                tools.append(self._project_tool(tool_name(project.id), project))
            by_name: dict[str, Tool] = {}
            for tool in tools:  # a hashed name taken by a folder so named: the folder's
                if by_name.setdefault(tool.name, tool) is not tool:
                    log.warning(
                        "two projects would be the tool %s: %s is left out",
                        tool.name,
                        tool.project_id,
                    )
            made = self._made = (projects, list(by_name.values()), by_name)
        return made

    def _project_tool(self, name: str, project: ProjectInfo) -> Tool:
        schema = dict(project.params_schema or {})
        schema.setdefault("type", "object")
        about = project.description.strip()
        if about and not about.endswith("."):
            about += "."
        definition: dict[str, Any] = {
            "name": name,
            "title": project.name,
            "description": (
                f"{about} Runs the RPA project '{project.id}' with these inputs and returns "
                f"its result. A run still going after {self._wait:g} s returns its "
                "execution_id with status 'running' instead: call rpa_wait with it."
            ).strip(),
            "inputSchema": schema,
            "annotations": _annotations(project),
            "execution": {"taskSupport": "optional"},
        }
        if project.output_schema is not None:
            definition["outputSchema"] = outcome_schema(project.output_schema)
        return Tool(name, definition, Draft202012Validator(schema), project.id)


def _annotations(project: ProjectInfo) -> dict[str, Any]:
    hints = project.hints
    return {
        "title": project.name,
        "readOnlyHint": hints.read_only,
        "destructiveHint": hints.destructive,
        "idempotentHint": hints.idempotent,
        "openWorldHint": hints.open_world,
    }


def _tool(name: str, definition: dict[str, Any]) -> Tool:
    definition = {"name": name, **definition}
    return Tool(name, definition, Draft202012Validator(definition["inputSchema"]))


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _generic(max_wait: float) -> dict[str, dict[str, Any]]:
    wait = {
        "type": "number",
        "minimum": 0,
        "maximum": max_wait,
        "description": "seconds to wait for the end before answering 'running'",
    }
    reading = {"readOnlyHint": True, "openWorldHint": False}
    return {
        RUN: {
            "title": "Run an RPA project",
            "description": (
                "Start a run of an RPA project and wait for its result. If it is still "
                "going when the wait ends you get its execution_id and status 'running': "
                "call rpa_wait with that id. Give idempotency_key to retry safely: the "
                "same key returns the same run instead of starting another."
            ),
            "inputSchema": _object(
                {
                    "project_id": {"type": "string", "minLength": 1, "maxLength": 256},
                    "params": {"type": "object", "description": "the robot's inputs"},
                    "version": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
                    "wait_seconds": wait,
                },
                ["project_id"],
            ),
            "annotations": {"title": "Run an RPA project", "openWorldHint": True},
            "execution": {"taskSupport": "optional"},
        },
        GET: {
            "title": "Look at an execution",
            "description": (
                "An execution's state now, without waiting: its status and progress, and "
                "once it has ended its result or error."
            ),
            "inputSchema": _object({"execution_id": _EXECUTION_ID}, ["execution_id"]),
            "annotations": {"title": "Look at an execution", **reading},
        },
        WAIT: {
            "title": "Wait for an execution",
            "description": (
                "Wait for a running execution to end and return its result. If it is "
                "still running when the wait ends, call rpa_wait again with the same id."
            ),
            "inputSchema": _object(
                {"execution_id": _EXECUTION_ID, "wait_seconds": wait}, ["execution_id"]
            ),
            "annotations": {"title": "Wait for an execution", **reading},
        },
        CANCEL: {
            "title": "Cancel an execution",
            "description": "Stop a running execution and its robot. It ends as cancelled.",
            "inputSchema": _object({"execution_id": _EXECUTION_ID}, ["execution_id"]),
            "annotations": {
                "title": "Cancel an execution",
                "destructiveHint": True,
                "idempotentHint": True,
                "openWorldHint": True,
            },
        },
        LIST: {
            "title": "List executions",
            "description": (
                "Your executions, newest first, optionally only one status or project. "
                "Pass next_cursor back as cursor for more."
            ),
            "inputSchema": _object(
                {
                    "status": {"type": "string", "enum": [s.value.lower() for s in Status]},
                    "project_id": {"type": "string", "minLength": 1, "maxLength": 256},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200},
                    "cursor": {"type": "string", "maxLength": 1024},
                },
                [],
            ),
            "annotations": {"title": "List executions", **reading},
        },
        LOGS: {
            "title": "Read a run's log",
            "description": "The last log lines a local run printed (tail lines, 50 unless set).",
            "inputSchema": _object(
                {
                    "execution_id": _EXECUTION_ID,
                    "tail": {"type": "integer", "minimum": 1, "maximum": 200},
                },
                ["execution_id"],
            ),
            "annotations": {"title": "Read a run's log", **reading},
        },
    }
