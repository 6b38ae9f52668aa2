"""Executions as tool results: ``structuredContent`` for programs, one text for models.

The text comes first in what the model (or astron-agent's workflow, which reads only
text content) sees: a failure says so, with its code and message, before the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rpa_gateway.executions import Execution, JsonObject

# What an unfinished execution is doing, in a word.
STATE_WORDS = {"ACCEPTED": "accepted", "PENDING": "queued", "RUNNING": "running"}


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool call's answer, before it is shaped for the wire."""

    structured: JsonObject | None
    text: str
    is_error: bool = False
    status: str = "ok"  # for metrics and logs: an execution's status, or how the call went

    def wire(self) -> dict[str, Any]:
        """As a ``CallToolResult``."""
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": self.text}],
            "isError": self.is_error,
        }
        if self.structured is not None:
            result["structuredContent"] = self.structured
        return result


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def execution_outcome(
    execution: Execution, progress: JsonObject | None = None, waited: float | None = None
) -> ToolOutcome:
    """The execution as a tool result: ended (its code, message and result), or still
    running (its id, to wait on)."""
    outcome = execution.outcome
    if execution.finished_at is None or outcome is None:
        running: JsonObject = {
            "execution_id": execution.id,
            "project_id": execution.request.project_id,
            "status": "running",
            "state": execution.status.value.lower(),
        }
        if progress:
            running["progress"] = progress
        how_long = f" after {waited:g} s" if waited is not None else ""
        text = (
            f"Still running{how_long} (execution {execution.id}). Call rpa_wait with "
            f'execution_id "{execution.id}" to get its result.\n{dumps(running)}'
        )
        return ToolOutcome(running, text, status="running")
    status = execution.status.value.lower()  # finished: succeeded, failed, timed_out, cancelled
    ended: JsonObject = {
        "execution_id": execution.id,
        "project_id": execution.request.project_id,
        "status": status,
        "code": outcome.code,
        "message": outcome.message,
    }
    if outcome.data is not None:
        ended["result"] = outcome.data
    if outcome.code == 0:
        return ToolOutcome(ended, dumps(ended), status=status)
    text = f"{status.upper()} (code {outcome.code}): {outcome.message}\n{dumps(ended)}"
    return ToolOutcome(ended, text, is_error=True, status=status)


def tool_error(message: str, status: str = "error") -> ToolOutcome:
    """A call that could not do what it was asked (no such execution, a key reused...):
    text only, as no output schema describes it."""
    return ToolOutcome(None, f"ERROR: {message}", is_error=True, status=status)
