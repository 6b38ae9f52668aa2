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
    started_at: str | None = None  # when the robot began, as the platform says it
    # The platform's code for a state it cannot vouch for (e.g. STOP_UNCONFIRMED): an
    # execution that times out in it says so.
    upstream_code: str | None = None

    @property
    def running(self) -> bool:
        """The robot has begun (as opposed to waiting for it)."""
        return self.upstream_status == "RUNNING" or self.started_at is not None


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

    ``retryable`` is true only when starting again cannot run the robot twice: the
    request certainly never reached the backend (the connection was never made), or
    (``idempotent``) the backend returns the original run to a repeat, so a create
    whose reply was lost is repeated until the execution's deadline.  ``bug``: the
    backend says this service sent something it never should (logged as a fault here).
    ``legacy_only``: a prepared (managed) create was refused, creating nothing, because
    the platform can take only a legacy create for this caller now.
    """

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool = False,
        idempotent: bool = False,
        bug: bool = False,
        legacy_only: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable or idempotent
        self.idempotent = idempotent
        self.bug = bug
        self.legacy_only = legacy_only


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


class CancelReply(Enum):
    """What a backend said to a cancel."""

    STOPPED = "stopped"  # stopped, or taken as the legacy routes take it: it ends now
    REQUESTED = "requested"  # intent recorded: the run's own state confirms the stop
    UNSUPPORTED = "unsupported"  # the backend cannot cancel this run
    FAILED = "failed"  # the backend could not be told, or refused


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

    async def prepare(
        self, execution_id: str, request: ExecutionRequest, token: str, seconds_left: float
    ) -> str | None:
        """Before anything is recorded: the exact create body to keep with the execution
        when its create can be repeated safely (see ``ExecutionRequest.managed_body``), or
        None.  Raises :class:`InvalidRequest` for a request the backend's limits refuse."""
        ...

    def info(self, task_id: str) -> TaskInfo | None: ...

    async def start(self, request: ExecutionRequest, token: str) -> str:
        """Start a run; return the backend's id for it.  Raises :class:`CreateFailed`."""
        ...

    async def status(self, task_id: str, token: str, *, managed: bool = False) -> TaskState:
        """The run's state now (``managed``: created with a prepared body).  Raises
        :class:`QueryFault`."""
        ...

    def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        """Every change of the run as it happens, ending with its final state (push only)."""
        ...

    async def cancel(self, task_id: str, token: str, *, managed: bool = False) -> CancelReply:
        """Ask the backend to stop the run."""
        ...

    async def aclose(self) -> None: ...
