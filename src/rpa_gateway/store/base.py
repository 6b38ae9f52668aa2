"""The store seam: executions, their append-only event logs, and live notification.

Every operation is awaitable, so a networked store never blocks the loop; the
SQLite store answers without suspending (its statements are cheaper than a hop
to a thread).  ``tests/test_store.py`` is the conformance suite every store passes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    JsonObject,
    Outcome,
    Status,
)
from rpa_gateway.store.hub import ChangeSubscription, Listener, MessageSubscription
from rpa_gateway.webhooks.store import WebhookStore


class StoreError(Exception):
    """The store could not read or write."""


class LeaseLost(StoreError):
    """Another process holds the execution's lease: this one drives it no more and must not
    write it (its writes are fenced off by the store)."""


class DuplicateIdempotencyKey(StoreError):
    """The owner already has an execution under this idempotency key."""


# Called with (topic, execution id) for every notice sent by any process of the service.
NoticeListener = Callable[[str, str], None]


class Renewal(NamedTuple):
    lost: list[str]  # no longer held: another process drives them
    cancel_requested: list[str]  # still held, and a caller asked to cancel them


class Subscription(Protocol):
    """Live events of one execution, in order, from the moment of subscribing.

    A store shared by several processes may also hand over an event from just before
    the subscription, repeat the latest one after a reconnect, or skip some: readers
    skip what they have and read the backlog when a sequence number jumps.
    """

    def get(self) -> Awaitable[Event | None]:
        """The next event (awaited); ``None`` once the service is shutting down."""
        ...


@dataclass(frozen=True, slots=True)
class McpSession:
    """An MCP client's session, valid on every process of the service until it expires or
    its client ends it."""

    id: str
    owner: str  # keyed fingerprint of the token that opened it
    protocol_version: str
    expires_at: float  # epoch seconds
    transport: str = "http"  # the transport that opened it: "http" (/mcp) or "sse"


@dataclass(frozen=True, slots=True)
class ListQuery:
    owner: str | None  # None: every owner's
    status: Status | None = None
    project_id: str | None = None
    limit: int = 50
    before: tuple[float, str] | None = None  # (created_at, id) of the last item seen


class Store(Protocol):
    # Webhook endpoints and deliveries.
    webhooks: WebhookStore

    async def create(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str | None = None,
        lease_seconds: float = 0.0,
    ) -> Event:
        """Record a new execution and its first event, leased to ``holder`` when given (in
        the same step: no other process can claim it in between).  Raises
        DuplicateIdempotencyKey."""
        ...

    async def save(self, execution: Execution) -> None:
        """Persist the execution's flags and counters without an event."""
        ...

    async def append(
        self,
        execution: Execution,
        kind: EventKind,
        data: JsonObject,
        status: Status | None = None,
    ) -> Event:
        """Append a non-terminal event, saving the execution's status and counters."""
        ...

    async def finish(
        self, execution: Execution, outcome: Outcome, *, announce: bool = True
    ) -> Event | None:
        """Append the terminal event and forget the sealed token.

        ``None`` when the execution had already ended.  ``announce=False`` stores an end
        already handed to this process's streams by :meth:`publish_only`, without handing
        it to them again (a shared store still tells the other processes).
        """
        ...

    async def get(self, execution_id: str) -> Execution | None: ...

    async def stored_bytes(self, owner: str) -> int:
        """About the bytes the owner's executions hold in the store: requests, results
        and logs (``executions.stored_size``); less as retention removes them."""
        ...

    async def find_idempotent(self, owner: str, key: str) -> Execution | None: ...

    async def sealed_token(self, execution_id: str) -> bytes | None: ...

    async def events_after(self, execution_id: str, seq: int) -> list[Event]: ...

    async def unfinished(self, created_before: float | None = None) -> list[Execution]:
        """Executions not finished, oldest first; only those created before the time when
        given (a sweep for executions past their deadline need not read every open one)."""
        ...

    async def list_executions(self, query: ListQuery) -> list[Execution]:
        """The owner's executions, newest first, after ``query.before``."""
        ...

    async def purge_finished(self, finished_before: float, batch: int) -> int:
        """Delete up to ``batch`` executions finished before the time, with their events."""
        ...

    def subscribe(
        self, execution_id: str, *, written_here: bool = False
    ) -> AbstractAsyncContextManager[Subscription]:
        """Live events of the execution.  ``written_here``: this process writes them now
        (it drives the execution), so a shared store need not bring them from other
        processes - until :meth:`written_elsewhere` says otherwise."""
        ...

    def subscribe_changes(
        self, owner: str | None
    ) -> AbstractAsyncContextManager[ChangeSubscription]:
        """Changes of the owner's executions (every owner's for ``None``) as any process of
        the service writes them: ``executions.change_of`` objects, ``None`` once the service
        is shutting down."""
        ...

    def written_elsewhere(self, execution_id: str) -> None:
        """This process stopped writing the execution's events (it no longer drives it):
        its subscribers follow another process's writes from now on."""
        ...

    async def publish_only(self, event: Event, execution: Execution) -> None:
        """Deliver an event to live subscribers without storing it (store is failing).

        This process's subscribers get it first; a shared store then raises StoreError
        when the other processes could not be told."""
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event appended or published, and its execution."""
        ...

    def drain(self) -> None:
        """Tell every live subscriber, now and later, that the service is shutting down."""
        ...

    async def check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve (read, or write)."""
        ...

    async def writable(self) -> None:
        """Raise :class:`StoreError` while writes are known to fail (cheap otherwise)."""
        ...

    # --- recent run durations per project, for learned poll schedules ---------------------
    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None:
        """Append run durations (seconds) per model key, keeping each key's newest ``keep``."""
        ...

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]:
        """The newest ``keep`` durations of each key that has any, oldest first."""
        ...

    # --- MCP sessions, and messages to the process holding a session's stream ------------
    async def put_mcp_session(self, session: McpSession) -> None:
        """Record a new session."""
        ...

    async def update_mcp_session(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        expires_at: float | None = None,
    ) -> bool:
        """Change a session that still exists (never bring back one ended meanwhile);
        False when there is none."""
        ...

    async def mcp_session(self, session_id: str) -> McpSession | None:
        """The session, or ``None`` when unknown, ended or expired."""
        ...

    async def end_mcp_session(self, session_id: str) -> bool:
        """Forget the session; False when there was none."""
        ...

    async def purge_mcp_sessions(self, now: float) -> int:
        """Delete the sessions expired by ``now`` (a store whose entries expire by themselves
        deletes none)."""
        ...

    async def send_message(self, channel: str, message: str) -> None:
        """Hand ``message`` to the subscribers of ``channel`` in every process (none when
        nobody subscribes: it is not kept)."""
        ...

    def subscribe_messages(self, channel: str) -> AbstractAsyncContextManager[MessageSubscription]:
        """Messages sent to ``channel`` from now on, by any process; ``None`` once the service
        is shutting down."""
        ...

    # --- supervision by several processes ------------------------------------------------
    # A lease names the one process (``holder``) that supervises an unfinished execution.
    # A store that serves one process only grants every claim.

    async def claim(self, execution_id: str, holder: str, ttl: float) -> bool:
        """Take the lease for ``ttl`` seconds: True when it was free, expired or the holder's."""
        ...

    async def renew(self, holder: str, execution_ids: Sequence[str], ttl: float) -> Renewal:
        """Extend the holder's leases by ``ttl`` seconds."""
        ...

    async def request_cancel(self, execution_id: str) -> None:
        """Record that the caller cancels an unfinished execution another process drives:
        its holder learns of it at the next renewal, should the notice go astray."""
        ...

    async def release(self, holder: str, execution_ids: Sequence[str]) -> None:
        """Give up the holder's leases now (others may claim them at once)."""
        ...

    async def announce(self, holder: str, ttl: float) -> list[str]:
        """This process is alive for ``ttl`` seconds more (its leases may be renewed).

        Returns the processes that announced themselves and stopped, each reported once:
        their leases have lapsed, or will within a renewal interval."""
        ...

    async def retire(self, holder: str) -> None:
        """This process stops cleanly: no longer announced, not reported as departed."""
        ...

    async def claimable(self, limit: int) -> list[Execution]:
        """Unfinished executions whose lease is free or expired, oldest first."""
        ...

    async def notify(self, topic: str, execution_id: str) -> None:
        """Send a notice to every process of the service (this one included)."""
        ...

    def add_notice_listener(self, listener: NoticeListener) -> None: ...

    # --- the store's contents, lost (Redis restarted empty or flushed) -------------------
    async def epoch(self) -> str:
        """Names the store's contents: the same until it loses them all (Redis restarted
        empty, or flushed), another one after.  Recorded when there is none."""
        ...

    async def restore(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str,
        lease_seconds: float,
    ) -> bool:
        """Write back an unfinished execution this process drives after the store lost
        it: its record as it stands, its index entries, its token and lease, and, the
        event log being gone, one state event (its status then) for each event it had,
        so that later events keep their sequence numbers.  False when it is there."""
        ...

    def followed(self) -> list[str]:
        """The executions some stream of this process follows."""
        ...

    def end_lost(self, execution_id: str) -> None:
        """The streams of this process following the execution are told it was lost:
        its record is gone and nobody wrote it back (``hub.LOST``)."""
        ...

    async def close(self) -> None: ...
