"""An asyncio.Event whose queue of waiters is made only when something first waits.

uvicorn gives every connection two events (its flow control's "writable", and the
request's "message"), each with an empty ``collections.deque`` of waiters: about 600
bytes apiece, some 6 % of what an open stream costs.  A stream served here never waits on
either unless the client stops reading (flow control) or the app reads the request again
(messages), so most connections never need the deques.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Literal

_NO_WAITERS: tuple[()] = ()


class LazyEvent(asyncio.Event):
    def __init__(self, *, is_set: bool = False) -> None:
        # Not super().__init__(): that makes the deque.  asyncio.Event's other methods
        # only iterate ``_waiters`` or take its length, which an empty tuple allows.
        self._waiters: Any = _NO_WAITERS
        self._value = is_set

    async def wait(self) -> Literal[True]:
        if not self._value and self._waiters is _NO_WAITERS:
            self._waiters = collections.deque()
        return await super().wait()
