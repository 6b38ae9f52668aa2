"""The backend seam: start a robot run, ask how it is doing, cancel it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from rpa_gateway.executions import ExecutionRequest, JsonObject


class TaskPhase(Enum):
    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TaskState:
    phase: TaskPhase
    upstream_status: str
    data: JsonObject | None = None
    error: str | None = None


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


class Backend(Protocol):
    name: str

    @property
    def can_cancel(self) -> bool: ...

    async def start(self, request: ExecutionRequest, token: str) -> str:
        """Start a run; return the backend's id for it.  Raises :class:`CreateFailed`."""
        ...

    async def status(self, task_id: str, token: str) -> TaskState:
        """The run's state now.  Raises :class:`QueryFault`."""
        ...

    async def cancel(self, task_id: str, token: str) -> bool:
        """Ask the backend to stop the run; true when it accepted."""
        ...

    async def aclose(self) -> None: ...
