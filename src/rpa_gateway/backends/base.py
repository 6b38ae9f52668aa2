"""The backend seam: start a robot run, learn how it is doing, cancel it.

A backend either answers ``status`` when polled (``pushes`` false: the RPA
OpenAPI) or pushes every change through ``watch`` the moment it happens
(``pushes`` true: local runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from rpa_gateway.executions import ExecutionRequest, JsonObject


class TaskPhase(Enum):
    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class TaskState:
    phase: TaskPhase
    upstream_status: str
    data: JsonObject | None = None
    error: str | None = None
    # Seconds the run took, by the platform's own clock (its start and end times), when
    # it ended and said so: what learned poll schedules are made from.
    ran_for: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    message: str
    percent: float | None = None

    def as_data(self) -> JsonObject:
        data: JsonObject = {"message": self.message}
        if self.percent is not None:
            data["percent"] = self.percent
        return data


TaskUpdate = TaskState | Progress


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a backend can tell about a run beyond its state (shown in the execution view)."""

    queue_position: int | None = None
    logs: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolHints:
    """What a project's run does to the world, as MCP tool annotations say it.  The
    defaults assume the worst (MCP's own defaults): it writes, destructively, not
    idempotently, beyond this machine."""

    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    name: str
    description: str
    timeout: float | None
    params_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None = None
    hints: ToolHints = field(default_factory=ToolHints)


class CreateFailed(Exception):
    """The run could not be started.

    ``retryable`` is true only when the request certainly never reached the
    backend (the connection was never made), so starting again cannot run the
    robot twice.
    """

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class QueryFault(Exception):
    """Asking for a run's state failed; asking again may succeed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRequest(Exception):
    """The request cannot run on this backend; ``field`` names the part at fault.

    The message is cut to :data:`MAX_MESSAGE` characters: validators quote the
    offending value, which may be as large as the request.
    """

    MAX_MESSAGE = 500

    def __init__(self, message: str, field: str) -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.message = message
        self.field = field


class Overloaded(Exception):
    """This caller has as much under way as it may; retrying later may work."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def caller_key(token: str) -> str:
    """Tells callers apart in memory (fair shares) without keeping their tokens."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Backend(Protocol):
    name: str

    @property
    def can_cancel(self) -> bool: ...

    @property
    def pushes(self) -> bool: ...

    @property
    def runs_here(self) -> bool:
        """Runs are processes of this service: another replica cannot follow them."""
        ...

    def describe(self) -> str:
        """Where runs go, for the start-up log (no secrets)."""
        ...

    def check(self, request: ExecutionRequest, token: str) -> None:
        """Before anything is recorded: raise :class:`InvalidRequest` when the backend can
        tell the request cannot run, :class:`Overloaded` when this caller must wait."""
        ...

    def projects(self) -> list[ProjectInfo] | None:
        """The projects this backend runs, or ``None`` when it cannot list them."""
        ...

    def info(self, task_id: str) -> TaskInfo | None: ...

    async def start(self, request: ExecutionRequest, token: str) -> str:
        """Start a run; return the backend's id for it.  Raises :class:`CreateFailed`."""
        ...

    async def status(self, task_id: str, token: str) -> TaskState:
        """The run's state now.  Raises :class:`QueryFault`."""
        ...

    def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        """Every change of the run as it happens, ending with its final state (push only)."""
        ...

    async def cancel(self, task_id: str, token: str) -> bool:
        """Ask the backend to stop the run; true when it did or accepted."""
        ...

    async def aclose(self) -> None: ...
