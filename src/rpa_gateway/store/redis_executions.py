"""The Redis store's executions: their writes (create, append, finish, ...), each one
script on the execution's keys, and the indexes around them.

The indexes live in other slots than the execution, so in a cluster they are written by
separate commands (a cluster cannot span slots in one step); each write says what a crash
between them leaves, and how it heals.  On one server the scripts write them too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    JsonObject,
    Outcome,
    Status,
    change_of,
    ended_size,
    stored_size,
    stored_terminal_data,
    terminal_data,
)
from rpa_gateway.store.base import DuplicateIdempotencyKey, LeaseLost, StoreError
from rpa_gateway.store.redis_codec import (
    as_text,
    decoded,
    dumps,
    event_json,
    ms,
    pairs,
    record_fields,
    reservation,
)
from rpa_gateway.store.redis_connection import PAGE, REDIS_ERRORS, Connection
from rpa_gateway.store.redis_keys import Keys
from rpa_gateway.store.redis_live import Fanout
from rpa_gateway.store.redis_reads import GRACE, ExecutionReads, abandoned
from rpa_gateway.store.redis_scripts import APPEND, CREATE, FINISH, RELEASE, REPLACE, RESTORE, SAVE
from rpa_gateway.store.redis_webhooks import fan_out_call, webhook_keys
from rpa_gateway.webhooks import model as webhook_events

log = logging.getLogger(__name__)


class RedisExecutions:
    """The executions' writes, and the sweep of the unfinished index; RedisStore adds the
    rest (reads, leases, live events, MCP sessions) to them."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        hub: Fanout,
        *,
        origin: str,
        holder: str,
        retention_seconds: float,
    ) -> None:
        self._redis = connection
        self._client = connection.client
        # One server: a script may touch any key (indexes with the record, in one step).
        self._one_server = connection.one_server
        self._keys = keys
        self._webhook_keys = webhook_keys(keys.prefix)
        self._reads = ExecutionReads(connection, keys)
        self._hub = hub
        self._origin = origin  # tells this store's messages from other processes'
        # This process's lease holder id: its writes of an execution are refused while
        # another process holds the execution's lease (fencing); "": unfenced (tools).
        self._holder = holder
        self._retention_ms = max(0, round(retention_seconds * 1000))

    async def restore(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str,
        lease_seconds: float,
    ) -> bool:
        stand_in = event_json(
            EventKind.STATE, {"status": execution.status.value, "restored": True}, time.time()
        )
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys += [self._keys.token(execution.id), self._keys.lease(execution.id)]
        args: list[str | bytes] = [str(execution.last_seq), stand_in, sealed_token or b""]
        args += [holder, ms(lease_seconds), "1" if self._one_server else "0"]
        args += [repr(execution.created_at), execution.id]
        args += pairs(
            {
                **record_fields(execution),
                "last_seq": execution.last_seq,
                "upstream_id": execution.upstream_id,
                "create_started": execution.create_started,
                "cancel_requested": execution.cancel_requested,
                "polls": execution.polls,
                "retries": execution.retries,
            }
        )
        if self._one_server:
            keys += [self._keys.unfinished, self._keys.owner(execution.owner), self._keys.every]
        async with self._redis.call("write back a lost execution"):
            if not self._one_server:
                pipe = self._client.pipeline(transaction=False)
                pipe.zadd(self._keys.unfinished, {execution.id: execution.created_at})
                pipe.zadd(self._keys.owner(execution.owner), {execution.id: execution.created_at})
                pipe.zadd(self._keys.every, {execution.id: execution.created_at})
                await pipe.execute()
            restored = bool(await self._redis.eval(RESTORE, keys, args))
            key = execution.idempotency_key
            if restored and key is not None:
                name = self._keys.idempotency(execution.owner, key)
                await self._client.set(name, f"{execution.id} {time.time()!r}", nx=True)
        return restored

    async def create(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str | None = None,
        lease_seconds: float = 0.0,
    ) -> Event:
        data = {"status": execution.status.value}
        stored = event_json(EventKind.STATE, data, execution.created_at)
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys += [self._keys.token(execution.id), self._keys.lease(execution.id)]
        args: list[str | bytes] = [stored, self._message_head(execution.id)]
        args += [self._keys.live(execution.id), sealed_token or b"", "1" if sealed_token else "0"]
        args += [holder or "", ms(lease_seconds) if holder else "0"]
        if self._one_server:
            keys += [self._keys.unfinished, self._keys.owner(execution.owner)]
            keys += [self._keys.every, self._keys.stored_bytes(execution.owner)]
        args += ["1" if self._one_server else "0", repr(execution.created_at), execution.id]
        args += self._change(execution, EventKind.STATE, data, execution.created_at)
        args.append(str(stored_size(execution)))
        args += pairs(record_fields(execution))
        async with self._redis.call("record execution"):
            idempotency = await self._reserve_idempotency(execution)
            try:
                if not self._one_server:
                    # The indexes first: a crash before the record leaves entries pointing
                    # at nothing, which readers skip and drop once older than GRACE.
                    pipe = self._client.pipeline(transaction=False)
                    pipe.zadd(self._keys.unfinished, {execution.id: execution.created_at})
                    owner_index = self._keys.owner(execution.owner)
                    pipe.zadd(owner_index, {execution.id: execution.created_at})
                    pipe.zadd(self._keys.every, {execution.id: execution.created_at})
                    await pipe.execute()
                created = await self._redis.eval(CREATE, keys, args)
            except REDIS_ERRORS:
                if idempotency is not None:
                    await self._forget_reservation(execution.id, *idempotency)
                raise
        if created and not self._one_server:
            await self._count_bytes(execution.owner, stored_size(execution))
        if not created:
            raise StoreError(f"execution {execution.id} is recorded already")
        execution.last_seq = 1
        event = Event(execution.id, 1, EventKind.STATE, data, execution.created_at)
        self._hub.publish(event, execution)
        return event

    async def _reserve_idempotency(self, execution: Execution) -> tuple[str, str] | None:
        """Take the owner's key for this execution: (the key's name, its value), or None
        without a key.  A key whose execution has gone is taken over: one that expires
        (its execution finished, see _tidy_finished) at once, others (left by a crash)
        once older than GRACE: younger, its create may still be writing."""
        key = execution.idempotency_key
        if key is None:
            return None
        name = self._keys.idempotency(execution.owner, key)
        value = f"{execution.id} {time.time()!r}"
        found = await self._client.set(name, value, nx=True, get=True)
        if found is None:
            return name, value
        previous = as_text(found)
        other_id, reserved_at = reservation(previous)
        if await self._client.exists(self._keys.record(other_id)):
            raise DuplicateIdempotencyKey(key)
        expiring = await self._client.pttl(name) > 0
        if not expiring and time.time() - reserved_at < GRACE:
            raise DuplicateIdempotencyKey(key)
        if not await self._redis.eval(REPLACE, [name], [previous, value]):
            raise DuplicateIdempotencyKey(key)
        return name, value

    async def _forget_reservation(self, execution_id: str, name: str, value: str) -> None:
        """A create that failed leaves its key free, unless its record got written after
        all (its reply lost).  Best effort: a reservation left behind (Redis gone) is
        taken over by a create once older than GRACE."""
        try:
            if not await self._client.exists(self._keys.record(execution_id)):
                await self._redis.eval(RELEASE, [name], [value])
        except REDIS_ERRORS:
            pass

    async def save(self, execution: Execution) -> None:
        fields = {
            "upstream_id": execution.upstream_id,
            "create_started": execution.create_started,
            "polls": execution.polls,
            "retries": execution.retries,
        }
        if execution.cancel_requested:  # never cleared: another process may have set it
            fields["cancel_requested"] = True
        keys = [self._keys.record(execution.id), self._keys.lease(execution.id)]
        async with self._redis.call("save execution"):
            saved = await self._redis.eval(SAVE, keys, [self._holder, *pairs(fields)])
        if int(saved) < 0:
            raise self._fenced(execution.id)

    async def append(
        self,
        execution: Execution,
        kind: EventKind,
        data: JsonObject,
        status: Status | None = None,
    ) -> Event:
        if kind is EventKind.TERMINAL:
            raise ValueError("terminal events are appended by finish()")
        now = time.time()
        if status is not None:
            execution.status = status
        execution.updated_at = now
        stored = event_json(kind, data, now)
        fields = {
            "status": execution.status.value,
            "updated_at": now,
            "upstream_id": execution.upstream_id,
            "polls": execution.polls,
            "retries": execution.retries,
        }
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys.append(self._keys.lease(execution.id))
        args = [stored, self._message_head(execution.id), self._keys.live(execution.id)]
        args += self._change(execution, kind, data, now)
        args.append(self._holder)
        started = kind is EventKind.STATE and "upstream_id" in data  # the platform took it
        args += self._fan_out_args(execution, webhook_events.STARTED, started, now)
        args.append(execution.id)
        args.append(repr(now))
        async with self._redis.call("append event"):
            seq = int(await self._redis.eval(APPEND, keys, [*args, *pairs(fields)]))
            if seq > 0 and started and not self._one_server:
                await self._fan_out_apart(execution, webhook_events.STARTED, now)
        if seq < 0:
            raise self._fenced(execution.id)
        if not seq:
            raise StoreError(f"execution {execution.id} is missing or finished")
        execution.last_seq = seq
        event = Event(execution.id, seq, kind, data, now)
        self._hub.publish(event, execution)
        return event

    async def finish(
        self, execution: Execution, outcome: Outcome, *, announce: bool = True
    ) -> Event | None:
        """As the protocol says, except that other processes are told of the end even with
        ``announce=False``: when it was published only, they may have missed it (Redis
        was failing), and they skip what they already have."""
        now = time.time()
        data = terminal_data(outcome)
        stored = event_json(EventKind.TERMINAL, stored_terminal_data(data), now)
        fields = {
            "status": outcome.status.value,
            "updated_at": now,
            "finished_at": now,
            "upstream_id": execution.upstream_id,
            "outcome": data,  # terminal_data(outcome)
            "polls": execution.polls,
            "retries": execution.retries,
            "logs": execution.logs,
        }
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys.append(self._keys.token(execution.id))
        args = [stored, self._message_head(execution.id), self._keys.live(execution.id)]
        args.append(str(self._retention_ms))
        tidy = "0"
        if self._one_server:
            keys += [self._keys.unfinished, self._keys.finished]
            tidy = "1"
            if execution.idempotency_key is not None:
                keys.append(self._keys.idempotency(execution.owner, execution.idempotency_key))
                tidy = "2"
        grown = ended_size(execution, outcome)  # its result and logs
        size = stored_size(execution) + grown  # counted against the owner until purged
        member = dumps([execution.id, execution.owner, size])
        args += [tidy, execution.id, member, repr(now)]
        args += self._change(execution, EventKind.TERMINAL, data, now)
        args += [self._holder, event_json(EventKind.TERMINAL, data, now)]
        event_type = webhook_events.terminal_event(outcome.status)
        args += self._fan_out_args(execution, event_type, True, now)
        args.append(str(grown))
        if self._one_server:
            keys.append(self._keys.stored_bytes(execution.owner))
        keys.append(self._keys.lease(execution.id))  # the last key (see FINISH)
        async with self._redis.call("finish execution"):
            seq = int(await self._redis.eval(FINISH, keys, [*args, *pairs(fields)]))
            # A cluster: the deliveries, then the indexes.  Until both are written the
            # execution stays in the unfinished index, whose sweep fans out what a crash
            # (or a failure) left (see _fan_out_late).
            tidy_apart = seq > 0 and not self._one_server
            if tidy_apart and await self._fan_out_apart(execution, event_type, now):
                await self._tidy_finished(execution, member)
        if seq > 0 and not self._one_server:
            await self._count_bytes(execution.owner, grown)
        if seq < 0:
            raise self._fenced(execution.id)
        if not seq:
            return None
        execution.status = outcome.status
        execution.outcome = outcome
        execution.finished_at = now
        execution.updated_at = now
        execution.last_seq = seq
        event = Event(execution.id, seq, EventKind.TERMINAL, data, now)
        if announce:
            self._hub.publish(event, execution)
        return event

    def _fan_out_args(
        self, execution: Execution, event_type: str, wanted: bool, now: float
    ) -> list[str]:
        """A script's webhook arguments: on one server, the deliveries are its own."""
        fan_out = wanted and self._one_server
        return [
            "1" if fan_out else "0",
            self._webhook_keys,
            execution.owner,
            execution.request.project_id,
            event_type,
        ]

    async def _fan_out_apart(self, execution: Execution, event_type: str, event_at: float) -> bool:
        """A cluster's deliveries of an event stored already (inside a ``_redis`` block);
        False when they could not be written now."""
        call = fan_out_call(
            self._webhook_keys,
            execution.owner,
            execution.request.project_id,
            execution.id,
            event_type,
            event_at,
            time.time(),
        )
        try:
            await self._redis.eval(*call)
        except REDIS_ERRORS as exc:
            log.warning(
                "execution %s: its webhook deliveries are recorded later: %s",
                execution.id,
                self._redis.describe(exc),
            )
            return False
        return True

    async def _tidy_finished(self, execution: Execution, member: str) -> None:
        """The indexes, after the end is stored.  A crash (or failure) before this leaves
        the execution in the unfinished index, which readers drop when they see it
        finished, and its idempotency key without expiry, taken over once its execution
        has gone (see _reserve_idempotency)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(self._keys.unfinished, execution.id)
        if self._retention_ms:
            pipe.zadd(self._keys.finished, {member: time.time()})
            if execution.idempotency_key is not None:
                name = self._keys.idempotency(execution.owner, execution.idempotency_key)
                pipe.pexpire(name, self._retention_ms)
        try:
            await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning(
                "execution %s finished; its index entries are tidied later: %s",
                execution.id,
                self._redis.describe(exc),
            )

    async def purge_finished(self, finished_before: float, batch: int) -> int:
        """Finished executions expire by themselves ``retention_seconds`` after their end;
        this deletes them (and their index entries) once finished before the time, like
        the SQLite store.  It never fails: what it leaves, expiry and readers tidy."""
        try:
            async with self._redis.call("purge executions"):
                members = await self._client.zrange(
                    self._keys.finished, "-inf", finished_before, byscore=True, offset=0, num=batch
                )
                if not members:
                    return 0
                pipe = self._client.pipeline(transaction=False)
                for member in members:
                    # [id, owner, size]; [id, owner] as older versions wrote it.
                    execution_id, owner, *size = json.loads(as_text(member))
                    if size:
                        pipe.decrby(self._keys.stored_bytes(owner), int(size[0]))
                    pipe.delete(
                        self._keys.record(execution_id),
                        self._keys.events(execution_id),
                        self._keys.token(execution_id),
                        self._keys.lease(execution_id),
                    )
                    pipe.zrem(self._keys.owner(owner), execution_id)
                    pipe.zrem(self._keys.every, execution_id)
                pipe.zrem(self._keys.finished, *members)
                await pipe.execute()
        except StoreError as exc:
            log.warning("purge of finished executions skipped: %s", exc)
            return 0
        return len(members)

    async def unfinished(self, created_before: float | None = None) -> list[Execution]:
        newest = "+inf" if created_before is None else repr(created_before)
        async with self._redis.call("read executions"):
            rows = await self._client.zrangebyscore(
                self._keys.unfinished, "-inf", newest, withscores=True
            )
            found, stale = await self._unfinished_of(decoded(rows))
            await self._reads.drop(self._keys.unfinished, stale)
        return found

    async def _unfinished_of(
        self, rows: Sequence[tuple[str, float]]
    ) -> tuple[list[Execution], list[str]]:
        """The executions of unfinished-index entries that are still unfinished, and the
        entries to drop: finished, or missing for longer than GRACE."""
        found: list[Execution] = []
        stale: list[str] = []
        for start in range(0, len(rows), PAGE):
            page = rows[start : start + PAGE]
            executions = await self._reads.load([execution_id for execution_id, _ in page])
            for (execution_id, created_at), execution in zip(page, executions, strict=True):
                if execution is None:
                    if abandoned(created_at):
                        stale.append(execution_id)
                elif execution.finished_at is None:
                    found.append(execution)
                elif self._one_server or await self._fan_out_late(execution):
                    stale.append(execution_id)
        return found, stale

    async def _fan_out_late(self, execution: Execution) -> bool:
        """A cluster's sweep: an end whose deliveries a crash between its two writes may
        have cut off (written once, whatever came before: a delivery's id is its event's)."""
        assert execution.finished_at is not None
        event_type = webhook_events.terminal_event(execution.status)
        return await self._fan_out_apart(execution, event_type, execution.finished_at)

    def _change(
        self, execution: Execution, kind: EventKind, data: JsonObject, at: float
    ) -> list[str]:
        """The changes channel and the message a write publishes on it."""
        change = change_of(execution, kind, data, at)
        message = dumps({"o": self._origin, "owner": execution.owner, "change": change})
        return [self._keys.changes_channel, message]

    async def _count_bytes(self, owner: str, delta: int) -> None:
        """The owner's stored bytes (see stored_bytes), after a write that succeeded: best
        effort, as the write stands whether or not its count does."""
        try:
            async with self._redis.call("count a caller's stored bytes"):
                await self._client.incrby(self._keys.stored_bytes(owner), delta)
        except StoreError as exc:
            log.warning("a caller's stored bytes are not counted: %s", exc)

    def _fenced(self, execution_id: str) -> LeaseLost:
        return LeaseLost(f"execution {execution_id}: another process holds its lease now")

    def _message_head(self, execution_id: str) -> str:
        return f'{{"o":{dumps(self._origin)},"id":{dumps(execution_id)},"seq":'
