"""The store seam: executions, their append-only event logs, and live notification."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    JsonObject,
    Outcome,
    Status,
)
from rpa_gateway.store.hub import Listener


class StoreError(Exception):
    """The store could not read or write."""


class DuplicateIdempotencyKey(StoreError):
    """The owner already has an execution under this idempotency key."""


class Subscription(Protocol):
    """Live events of one execution, in order, from the moment of subscribing."""

    async def get(self) -> Event | None:
        """The next event; ``None`` once the service is shutting down."""
        ...


@dataclass(frozen=True, slots=True)
class ListQuery:
    owner: str
    status: Status | None = None
    project_id: str | None = None
    limit: int = 50
    before: tuple[float, str] | None = None  # (created_at, id) of the last item seen


class Store(Protocol):
    def create(self, execution: Execution, sealed_token: bytes | None) -> Event:
        """Record a new execution and its first event.  Raises DuplicateIdempotencyKey."""
        ...

    def save(self, execution: Execution) -> None:
        """Persist the execution's flags and counters without an event."""
        ...

    def append(
        self,
        execution: Execution,
        kind: EventKind,
        data: JsonObject,
        status: Status | None = None,
    ) -> Event:
        """Append a non-terminal event, saving the execution's status and counters."""
        ...

    def finish(
        self, execution: Execution, outcome: Outcome, *, announce: bool = True
    ) -> Event | None:
        """Append the terminal event and forget the sealed token.

        ``None`` when the execution had already ended.  ``announce=False`` stores an end
        already handed to live streams by :meth:`publish_only`, without publishing it again.
        """
        ...

    def get(self, execution_id: str) -> Execution | None: ...

    def find_idempotent(self, owner: str, key: str) -> Execution | None: ...

    def sealed_token(self, execution_id: str) -> bytes | None: ...

    def events_after(self, execution_id: str, seq: int) -> list[Event]: ...

    def unfinished(self) -> list[Execution]: ...

    def list_executions(self, query: ListQuery) -> list[Execution]:
        """The owner's executions, newest first, after ``query.before``."""
        ...

    def purge_finished(self, finished_before: float, batch: int) -> int:
        """Delete up to ``batch`` executions finished before the time, with their events."""
        ...

    def subscribe(self, execution_id: str) -> AbstractAsyncContextManager[Subscription]: ...

    def publish_only(self, event: Event, execution: Execution) -> None:
        """Deliver an event to live subscribers without storing it (store is failing)."""
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event appended or published, and its execution."""
        ...

    def drain(self) -> None:
        """Tell every live subscriber, now and later, that the service is shutting down."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve (read, or write)."""
        ...

    def writable(self) -> None:
        """Raise :class:`StoreError` while writes are known to fail (cheap otherwise)."""
        ...

    def close(self) -> None: ...
