"""uvicorn's queue of pipelined requests, made only when a request is pipelined.

uvicorn gives every connection an empty ``collections.deque`` for requests that arrive
while one is being answered (HTTP/1.1 pipelining): some 700 bytes, held for the whole
life of a stream, though no caller of an event stream pipelines.  This stands in for it
with the three operations uvicorn uses.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class PipelineQueue(Generic[Item]):
    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[Item] | None = None

    def appendleft(self, item: Item) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.appendleft(item)

    def pop(self) -> Item:
        if self._queue is None:
            raise IndexError("pop from an empty pipeline")
        item = self._queue.pop()
        if not self._queue:
            self._queue = None
        return item

    def __len__(self) -> int:
        return 0 if self._queue is None else len(self._queue)
