"""The Redis store's reads of executions: records, events, tokens, and the indexes'
listings (whose entries left by a crashed create are dropped as they are met)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.store.base import ListQuery
from rpa_gateway.store.redis_codec import (
    as_bytes,
    as_text,
    decoded,
    event_from,
    execution_from,
    readable,
    reservation,
    with_stored_result,
)
from rpa_gateway.store.redis_connection import PAGE, Connection
from rpa_gateway.store.redis_keys import Keys

# Longest a create takes between its writes: an index entry or idempotency reservation
# pointing at an execution that is still missing after this is a crash's leftover.
GRACE = 30.0


class ExecutionReads:
    def __init__(self, connection: Connection, keys: Keys) -> None:
        self._redis = connection
        self._client = connection.client
        self._keys = keys

    async def get(self, execution_id: str) -> Execution | None:
        async with self._redis.call("read execution"):
            fields = await self._client.hgetall(self._keys.record(execution_id))
        return execution_from(execution_id, fields)

    async def find_idempotent(self, owner: str, key: str) -> Execution | None:
        async with self._redis.call("read execution"):
            value = await self._client.get(self._keys.idempotency(owner, key))
        if value is None:
            return None
        execution = await self.get(reservation(as_text(value))[0])
        if execution is None or execution.owner != owner or execution.idempotency_key != key:
            return None
        return execution

    async def sealed_token(self, execution_id: str) -> bytes | None:
        async with self._redis.call("read execution"):
            token = await self._client.get(self._keys.token(execution_id))
        return None if token is None else as_bytes(token)

    async def stored_bytes(self, owner: str) -> int:
        async with self._redis.call("read what a caller stores"):
            found = await self._client.get(self._keys.stored_bytes(owner))
        return max(0, int(found)) if found is not None else 0

    async def events_after(self, execution_id: str, seq: int) -> list[Event]:
        async with self._redis.call("read events"):
            stored = await self._client.lrange(self._keys.events(execution_id), max(seq, 0), -1)
            first = max(seq, 0) + 1
            events = [
                event_from(execution_id, first + i, as_bytes(raw)) for i, raw in enumerate(stored)
            ]
            if events and events[-1].kind is EventKind.TERMINAL and "data" not in events[-1].data:
                outcome = await self._client.hget(self._keys.record(execution_id), "outcome")
                events[-1] = with_stored_result(events[-1], outcome)
        return events

    async def list_executions(self, query: ListQuery) -> list[Execution]:
        key = self._keys.every if query.owner is None else self._keys.owner(query.owner)
        page_size = min(max(query.limit, 20), PAGE)
        found: list[Execution] = []
        cursor = query.before
        async with self._redis.call("list executions"):
            more = True
            while more and len(found) < query.limit:
                page, more = await self._owner_page(key, cursor, page_size)
                if not page:
                    break
                executions = await self.load([execution_id for execution_id, _ in page])
                gone = []
                for (execution_id, created_at), execution in zip(page, executions, strict=True):
                    if execution is None:
                        if abandoned(created_at):
                            gone.append(execution_id)
                    elif _matches(query, execution) and len(found) < query.limit:
                        found.append(execution)
                await self.drop(key, gone)
                cursor = (page[-1][1], page[-1][0])
        return found

    async def _owner_page(
        self, key: str, cursor: tuple[float, str] | None, count: int
    ) -> tuple[list[tuple[str, float]], bool]:
        """Up to ``count`` (id, created_at) newest first after ``cursor``, and whether
        there may be more.  Equal scores come in descending id order, so the entries to
        skip at the cursor's score lead."""
        top: float | str = "+inf" if cursor is None else cursor[0]
        offset = 0
        while True:
            found = await self._client.zrange(
                key, top, "-inf", desc=True, byscore=True, offset=offset, num=count, withscores=True
            )
            rows = decoded(found)
            after = [r for r in rows if cursor is None or r[1] < cursor[0] or r[0] < cursor[1]]
            if after or len(rows) < count:
                return after, len(rows) == count
            offset += len(rows)

    async def load(self, execution_ids: Sequence[str]) -> list[Execution | None]:
        """The records, in one round trip (inside a ``call``); those unreadable left out."""
        if not execution_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for execution_id in execution_ids:
            pipe.hgetall(self._keys.record(execution_id))
        rows = await pipe.execute()
        return [readable(i, row) for i, row in zip(execution_ids, rows, strict=True)]

    async def drop(self, index: str, members: Sequence[str]) -> None:
        if members:
            await self._client.zrem(index, *members)


def abandoned(created_at: float) -> bool:
    """An index entry whose execution is missing: gone, or from a crashed create once
    older than GRACE (before that, it may be a create in progress)."""
    return created_at < time.time() - GRACE


def _matches(query: ListQuery, execution: Execution) -> bool:
    if query.status is not None and execution.status is not query.status:
        return False
    return query.project_id is None or execution.request.project_id == query.project_id
