"""Runs waiting for a slot, taken from each caller in turn: one busy caller cannot make
every other caller wait behind all of its runs."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable


class FairQueue:
    """FIFO per caller; round robin across callers (a caller served goes to the back)."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._caller_of: dict[str, str] = {}

    def add(self, caller: str, item: str) -> None:
        self._queues.setdefault(caller, deque()).append(item)
        self._caller_of[item] = caller

    def count(self, caller: str) -> int:
        queue = self._queues.get(caller)
        return len(queue) if queue is not None else 0

    def pop_next(self, eligible: Callable[[str], bool]) -> str | None:
        """The first item of the first caller in turn that ``eligible`` accepts."""
        for caller in list(self._queues):
            if not eligible(caller):
                continue
            queue = self._queues.pop(caller)
            item = queue.popleft()
            del self._caller_of[item]
            if queue:
                self._queues[caller] = queue
            return item
        return None

    def remove(self, item: str) -> bool:
        caller = self._caller_of.pop(item, None)
        if caller is None:
            return False
        queue = self._queues[caller]
        queue.remove(item)
        if not queue:
            del self._queues[caller]
        return True

    def position(self, item: str) -> int | None:
        """1-based place in the order items would start if every caller could start one."""
        caller = self._caller_of.get(item)
        if caller is None:
            return None
        rounds = self._queues[caller].index(item)  # own items before it
        ahead = rounds
        before_in_turn = True
        for other, queue in self._queues.items():
            if other == caller:
                before_in_turn = False
                continue
            ahead += min(len(queue), rounds + 1 if before_in_turn else rounds)
        return ahead + 1

    def drain(self) -> list[str]:
        items = [item for queue in self._queues.values() for item in queue]
        self._queues.clear()
        self._caller_of.clear()
        return items
