"""A budget of requests per second to the RPA platform, shared by every execution.

Requests beyond the budget wait their turn, first asked first served: each execution
has at most one request out at a time, so a burst of new executions delays everyone's
polls by the same bounded amount instead of starving anybody or hammering the platform.
"""

from __future__ import annotations

import asyncio
from collections import deque


class RequestBudget:
    def __init__(self, per_second: float) -> None:
        """``per_second`` <= 0: no budget."""
        self._rate = per_second
        self._capacity = max(1.0, per_second)  # at most a second's worth in one burst
        self._tokens = self._capacity
        self._updated = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> None:
        if self._rate <= 0:
            return
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self._waiting and self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.append(turn)
        self._arm(loop)
        await turn  # cancelled while waiting: the turn passes to the next one

    def _refill(self, now: float) -> None:
        if self._updated:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiting:
            wait = max(0.0, (1.0 - self._tokens) / self._rate)
            self._timer = loop.call_later(wait, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        while self._waiting and self._tokens >= 1.0:
            turn = self._waiting.popleft()
            if not turn.done():
                self._tokens -= 1.0
                turn.set_result(None)
        self._arm(loop)
