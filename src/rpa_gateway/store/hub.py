"""In-process fan-out of new events to the streams following an execution, and of
execution changes to the feeds following an owner's executions (or everyone's).

Every subscriber's backlog is bounded: a reader that stops reading (a client that
does not read its socket stalls its stream's writes) must not grow the process.
Past :data:`EVENTS_BACKLOG` events a stream's oldest are dropped (its reader reads
them back from the store when the next one's sequence number jumps); past
:data:`CHANGES_BACKLOG` changes a feed is told it fell behind and ends (its client
resumes with Last-Event-ID); past :data:`MESSAGES_BACKLOG` messages a session's
stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from rpa_gateway.executions import Event, EventKind, Execution, JsonObject, change_of

# Called with every new event and the execution as it stands after it.
Listener = Callable[[Event, Execution], None]

T = TypeVar("T")

EVENTS_BACKLOG = 1_000
# Delivered instead of an event: the execution's record is gone (the store lost its data)
# and no process could write it back; its outcome is unknown.
LOST = Event("", 0, EventKind.TERMINAL, {}, 0.0)
CHANGES_BACKLOG = 10_000  # about ten seconds of a busy service's changes
MESSAGES_BACKLOG = 1_000


class QueueSubscription:
    """Events of one execution delivered and not yet taken, in order, for one reader;
    subscribed while used as an async context manager.

    Not an ``asyncio.Queue`` nor a generator-based context manager: every open stream
    holds one, mostly waiting, and those bring four deques and a suspended generator
    where a list and a future do.
    """

    __slots__ = ("_execution_id", "_hub", "_ready", "_waiter")

    def __init__(self, hub: Hub, execution_id: str) -> None:
        self._hub = hub
        self._execution_id = execution_id
        # ``None`` among them means: the service is shutting down.
        self._ready: list[Event | None] = []
        self._waiter: asyncio.Future[Event | None] | None = None

    async def __aenter__(self) -> QueueSubscription:
        self._hub._add(self._execution_id, self)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._hub._discard(self._execution_id, self)

    def deliver(self, event: Event | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
        if len(self._ready) >= EVENTS_BACKLOG and event is not None:
            # The oldest goes; the reader reads the gap back from the store.
            del self._ready[: len(self._ready) - EVENTS_BACKLOG + 1]
        self._ready.append(event)

    def get(self) -> Awaitable[Event | None]:
        """The next event (awaited)."""
        taken: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        if self._ready:
            taken.set_result(self._ready.pop(0))
        else:
            self._waiter = taken
        return taken


class Change:
    """One execution change, the same object for every feed that gets it: ``wire`` keeps
    its first rendering (feeds render it alike), so it is encoded once, not once a feed."""

    __slots__ = ("data", "wire")

    def __init__(self, data: JsonObject) -> None:
        self.data = data
        self.wire: bytes | None = None


class _Bounded(Generic[T]):
    """Items for one reader, in order; ``None`` ends the reading (the service is shutting
    down, or ``fell_behind``).  Past ``limit`` items not taken, what is pending is dropped,
    the reader gets ``None`` and nothing more comes."""

    __slots__ = ("_limit", "_queue", "fell_behind")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self.fell_behind = False

    def deliver(self, item: T | None) -> None:
        if self.fell_behind:
            return
        if item is not None and self._queue.qsize() >= self._limit:
            self.fell_behind = True
            while not self._queue.empty():
                self._queue.get_nowait()
            item = None
        self._queue.put_nowait(item)

    async def get(self) -> T | None:
        return await self._queue.get()


class ChangeSubscription(_Bounded[Change]):
    """A feed's changes (at most CHANGES_BACKLOG not taken)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(CHANGES_BACKLOG)

    def ready(self) -> list[Change | None]:
        """What has arrived since, without waiting."""
        found = []
        while not self._queue.empty():
            found.append(self._queue.get_nowait())
        return found


class MessageSubscription(_Bounded[str]):
    """Messages sent to one channel, for one reader (at most MESSAGES_BACKLOG not taken)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(MESSAGES_BACKLOG)


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[QueueSubscription]] = {}
        self._message_subscribers: dict[str, set[MessageSubscription]] = {}
        # Per owner; under None, the feeds of every owner's executions.
        self._change_subscribers: dict[str | None, set[ChangeSubscription]] = {}
        self._listeners: list[Listener] = []
        self._draining = False

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: Event, execution: Execution) -> None:
        for listener in self._listeners:
            listener(event, execution)
        for subscription in self._subscribers.get(event.execution_id, ()):
            subscription.deliver(event)
        if self._change_subscribers:
            change = change_of(execution, event.kind, event.data, event.at)
            self.deliver_change(execution.owner, change)

    def deliver_change(self, owner: str, data: JsonObject) -> None:
        change = Change(data)
        for key in (owner, None):
            for subscription in self._change_subscribers.get(key, ()):
                subscription.deliver(change)

    def end_change_subscriptions(self) -> None:
        """Every feed ends (``None``), to be resumed by its client from its last change."""
        for changes in self._change_subscribers.values():
            for subscription in changes:
                subscription.deliver(None)

    @property
    def follows_changes(self) -> bool:
        return bool(self._change_subscribers)

    def deliver_message(self, channel: str, message: str) -> None:
        for subscription in self._message_subscribers.get(channel, ()):
            subscription.deliver(message)

    def follows_messages(self, channel: str) -> bool:
        return channel in self._message_subscribers

    @asynccontextmanager
    async def subscribe_messages(self, channel: str) -> AsyncIterator[MessageSubscription]:
        subscription = MessageSubscription()
        if self._draining:
            subscription.deliver(None)
        self._message_subscribers.setdefault(channel, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._message_subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._message_subscribers[channel]

    def drain(self) -> None:
        self._draining = True
        for messages in self._message_subscribers.values():
            for message_subscription in messages:
                message_subscription.deliver(None)
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.deliver(None)
        for changes in self._change_subscribers.values():
            for change_subscription in changes:
                change_subscription.deliver(None)

    @asynccontextmanager
    async def subscribe_changes(self, owner: str | None) -> AsyncIterator[ChangeSubscription]:
        subscription = ChangeSubscription()
        if self._draining:
            subscription.deliver(None)
        self._change_subscribers.setdefault(owner, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._change_subscribers.get(owner)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._change_subscribers[owner]

    def followed(self) -> list[str]:
        """The executions some stream of this process follows."""
        return list(self._subscribers)

    def end_lost(self, execution_id: str) -> None:
        """Every stream following the execution is told it was lost (:data:`LOST`)."""
        for subscription in self._subscribers.get(execution_id, ()):
            subscription.deliver(LOST)

    def subscribe(self, execution_id: str) -> QueueSubscription:
        """Live events of the execution, while used as ``async with``."""
        return QueueSubscription(self, execution_id)

    def _add(self, execution_id: str, subscription: QueueSubscription) -> None:
        if self._draining:
            subscription.deliver(None)
        self._subscribers.setdefault(execution_id, set()).add(subscription)

    def _discard(self, execution_id: str, subscription: QueueSubscription) -> None:
        subscribers = self._subscribers.get(execution_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[execution_id]
