"""Which execution the running code works for: read by logs and child spans."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from rpa_gateway.executions import Execution


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    execution_id: str
    sid: str
    # The execution being driven, when there is one: its calls' spans hang under it.
    execution: Execution | None = None


current_execution: ContextVar[ExecutionContext | None] = ContextVar(
    "current_execution", default=None
)
