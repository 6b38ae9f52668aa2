"""LazyEvent behaves as asyncio.Event: waiters woken by set(), none kept once woken, a set
event passes at once, clear() makes it wait again.  (Its use on uvicorn's connections is
covered by the slow-client and request-body tests, over sockets.)"""

from __future__ import annotations

import asyncio

from rpa_gateway.lazy_event import LazyEvent


def test_waiters_are_woken_by_set_and_a_set_event_passes() -> None:
    async def scenario() -> None:
        event = LazyEvent()
        assert not event.is_set() and len(event._waiters) == 0
        waiting = [asyncio.create_task(event.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in waiting)
        event.set()
        assert await asyncio.gather(*waiting) == [True, True, True]
        assert len(event._waiters) == 0
        assert await asyncio.wait_for(event.wait(), 1) is True
        event.clear()
        again = asyncio.create_task(event.wait())
        await asyncio.sleep(0)
        assert not again.done()
        event.set()
        assert await again is True
        assert await asyncio.wait_for(LazyEvent(is_set=True).wait(), 1) is True

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        event = LazyEvent()
        waiter = asyncio.create_task(event.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert len(event._waiters) == 0
        event.set()

    asyncio.run(scenario())
