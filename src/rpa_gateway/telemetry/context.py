"""Which execution the running code works for: read by logs and child spans."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    execution_id: str
    sid: str


current_execution: ContextVar[ExecutionContext | None] = ContextVar(
    "current_execution", default=None
)
