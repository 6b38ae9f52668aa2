"""The upstream request budget: no more than its rate, first asked first served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from rpa_gateway.backends.request_budget import RequestBudget


def test_requests_beyond_the_budget_wait_their_turn_in_order() -> None:
    async def main() -> tuple[float, list[int]]:
        budget = RequestBudget(50.0)
        granted: list[int] = []

        async def request(i: int) -> None:
            await budget.acquire()
            granted.append(i)

        started = time.monotonic()
        await asyncio.gather(*(request(i) for i in range(150)))
        return time.monotonic() - started, granted

    spent, granted = asyncio.run(main())
    assert granted == list(range(150)), "first asked, first served"
    # A second's worth at once, then 50 a second: the last 100 cannot take less than 2 s.
    assert spent >= 1.9


def test_a_request_given_up_while_waiting_passes_its_turn_on() -> None:
    async def main() -> list[str]:
        budget = RequestBudget(10.0)
        for _ in range(10):
            await budget.acquire()  # the burst is spent
        granted: list[str] = []

        async def request(name: str) -> None:
            await budget.acquire()
            granted.append(name)

        first = asyncio.create_task(request("given up"))
        second = asyncio.create_task(request("second"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.wait_for(second, 1.0)  # one token, 0.1 s away: the second gets it
        return granted

    assert asyncio.run(main()) == ["second"]


def never_suspends(acquire: Coroutine[Any, Any, None]) -> bool:
    """Whether the call completes without waiting for anything."""
    try:
        acquire.send(None)
    except StopIteration:
        return True
    acquire.close()
    return False


def test_no_budget_never_waits() -> None:
    async def main() -> tuple[bool, bool]:
        unlimited, limited = RequestBudget(0.0), RequestBudget(100.0)
        free = all(never_suspends(unlimited.acquire()) for _ in range(10_000))
        held = all(never_suspends(limited.acquire()) for _ in range(101))
        return free, held

    free, held = asyncio.run(main())
    assert free
    assert not held, "a budget of 100 a second holds the 101st request at once"
