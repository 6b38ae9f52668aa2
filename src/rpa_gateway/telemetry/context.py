"""Which execution the running code works for: read by logs and by backend calls' spans."""

from __future__ import annotations

from contextvars import ContextVar

from rpa_gateway.executions import Execution

current_execution: ContextVar[Execution | None] = ContextVar("current_execution", default=None)
