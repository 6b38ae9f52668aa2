"""``notifications/progress`` for a call, from its execution's events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rpa_gateway.executions import Event, EventKind
from rpa_gateway.mcp.results import STATE_WORDS

# A notification for the call's response stream (e.g. ``notifications/progress``).
Emit = Callable[[dict[str, Any]], None]

PROGRESS_INTERVAL = 0.25  # seconds: at most one progress notification per call as often


_REPORTED = ("PENDING", "RUNNING")  # (accepted is the call's own doing: no news)


class ProgressReporter:
    """``notifications/progress`` from an execution's events: at most one every
    :data:`PROGRESS_INTERVAL` seconds (the latest wins), ``progress`` always increasing
    (the robot's percent when it gives one, out of a ``total`` of 100)."""

    __slots__ = ("_emit", "_held", "_last", "_sent_at", "_timer", "_token")

    def __init__(self, token: str | int, emit: Emit) -> None:
        self._token = token
        self._emit = emit
        self._last: float | None = None
        self._sent_at = float("-inf")
        self._held: tuple[float | None, str] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def event(self, event: Event) -> None:
        """Report a state or progress event (others are not progress)."""
        if event.kind is EventKind.PROGRESS:
            percent = event.data.get("percent")
            message = str(event.data.get("message") or "")
            self.report(float(percent) if isinstance(percent, int | float) else None, message)
        elif event.kind is EventKind.STATE:
            status = event.data.get("status")
            if isinstance(status, str) and status in _REPORTED:
                self.report(None, STATE_WORDS[status])

    def report(self, percent: float | None, message: str) -> None:
        self._held = (percent, message)
        now = asyncio.get_running_loop().time()
        wait = self._sent_at + PROGRESS_INTERVAL - now
        if wait <= 0:
            self._send(now)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._send_held)

    def close(self) -> None:
        """The call has its answer: nothing more is sent."""
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send_held(self) -> None:
        self._timer = None
        self._send(asyncio.get_running_loop().time())

    def _send(self, now: float) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        percent, message = held
        value = percent if percent is not None else (self._last or 0.0)
        if self._last is not None and value <= self._last:
            value = round(self._last + 0.01, 2)  # the spec: it must increase every time
        self._last = value
        self._sent_at = now
        params: dict[str, Any] = {"progressToken": self._token, "progress": value}
        if value <= 100:
            params["total"] = 100
        if message:
            params["message"] = message
        self._emit({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
