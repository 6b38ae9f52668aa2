"""In-process fan-out of new events to the streams following an execution."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from rpa_gateway.executions import Event, Execution

# Called with every new event and the execution as it stands after it.
Listener = Callable[[Event, Execution], None]


class QueueSubscription:
    __slots__ = ("_queue",)

    def __init__(self) -> None:
        # ``None`` in the queue means: the service is shutting down.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def deliver(self, event: Event | None) -> None:
        self._queue.put_nowait(event)

    async def get(self) -> Event | None:
        return await self._queue.get()


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[QueueSubscription]] = {}
        self._listeners: list[Listener] = []
        self._draining = False

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: Event, execution: Execution) -> None:
        for listener in self._listeners:
            listener(event, execution)
        for subscription in self._subscribers.get(event.execution_id, ()):
            subscription.deliver(event)

    def drain(self) -> None:
        self._draining = True
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.deliver(None)

    @asynccontextmanager
    async def subscribe(self, execution_id: str) -> AsyncIterator[QueueSubscription]:
        subscription = QueueSubscription()
        if self._draining:
            subscription.deliver(None)
        self._subscribers.setdefault(execution_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(execution_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[execution_id]
