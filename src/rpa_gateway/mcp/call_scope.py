"""What a request's handlers know of their caller and of their response.

The transport sets :data:`current_scope` before it hands a request to the SDK's kernel;
the handlers read it there (the kernel runs them in the same task), so they need no
part of the SDK's request context beyond their parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from rpa_gateway.mcp.jsonrpc import is_id
from rpa_gateway.mcp.progress import Emit, ProgressReporter


@dataclass(slots=True)
class CallScope:
    token: str
    admin: bool  # an operator's key: every caller's executions
    protocol_version: str
    # The request's ``_meta`` (progress token, the 2026 envelope's client capabilities).
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Writes a notification on the request's own response stream; None: it has none (a
    # JSON response), so no progress can be sent.
    emit: Emit | None = None
    traceparent: str | None = None

    @property
    def progress_token(self) -> str | int | None:
        token = self.meta.get("progressToken")
        return token if is_id(token) else None

    def progress_reporter(self) -> ProgressReporter | None:
        token = self.progress_token
        if token is None or self.emit is None:
            return None
        return ProgressReporter(token, self.emit)


current_scope: ContextVar[CallScope] = ContextVar("mcp_call_scope")


__all__ = ["CallScope", "Emit", "current_scope"]
