"""The store seam: executions, their append-only event logs, and live notification."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    JsonObject,
    Outcome,
    Status,
)


class StoreError(Exception):
    """The store could not read or write."""


class Subscription(Protocol):
    """Live events of one execution, in order, from the moment of subscribing."""

    async def get(self) -> Event: ...


class Store(Protocol):
    def create(self, execution: Execution) -> Event:
        """Record a new execution and its first event (its ``ACCEPTED`` state)."""
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

    def finish(self, execution: Execution, outcome: Outcome) -> Event | None:
        """Append the terminal event; ``None`` when the execution had already ended."""
        ...

    def get(self, execution_id: str) -> Execution | None: ...

    def events_after(self, execution_id: str, seq: int) -> list[Event]: ...

    def unfinished(self) -> list[Execution]: ...

    def subscribe(self, execution_id: str) -> AbstractAsyncContextManager[Subscription]: ...

    def publish_only(self, event: Event) -> None:
        """Deliver an event to live subscribers without storing it (store is failing)."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve."""
        ...

    def close(self) -> None: ...
