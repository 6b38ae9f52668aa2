"""The Redis store: executions and live events shared by every process of the service.

Key layout (``rpa`` is the prefix).  ``{<id>}`` is a hash tag: one execution's keys
share a cluster slot, so a Lua script updates them atomically, in cluster mode too.

    rpa:{<id>}:x         hash: the execution, every field a JSON value
    rpa:{<id>}:ev        list: its events, event ``seq`` at index ``seq - 1``
    rpa:{<id>}:token     string: the sealed token (bytes), deleted at finish
    rpa:{<id>}:lease     string: the holder supervising it, expiring with the lease
    rpa:unfinished       sorted set: ids of unfinished executions, by created_at
    rpa:owner:<owner>    sorted set: the owner's execution ids, by created_at
    rpa:executions       sorted set: every execution id, by created_at (operators' lists)
    rpa:finished         sorted set: ``[id, owner]`` by finished_at, for purge_finished
    rpa:replicas         hash: announced process -> alive until (ms), see announce()
    rpa:idem:<n>:<owner>:<key>   string: ``"<id> <reserved at>"`` (n: length of owner)
    rpa:mcp:<session id> string: an MCP session (JSON), expiring with it

    rpa:live:<id>        channel: the execution's events as they are written, as JSON,
                         for the processes that follow it without writing it
    rpa:notices          channel: notify()
    rpa:changes          channel: every execution change (executions.change_of) with its
                         owner, for feeds; listened to only while a feed is open here
    rpa:msg:<channel>    channel: send_message(), listened to while subscribed here

The indexes live in other slots than the execution, so they are written by separate
commands (a cluster cannot span slots in one step); each write says what a crash
between them leaves, and how it heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    OutOfMemoryError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    JsonObject,
    Outcome,
    Status,
    change_of,
    ended_size,
    stored_size,
    stored_terminal_data,
    terminal_data,
    with_result,
)
from rpa_gateway.store.base import (
    DuplicateIdempotencyKey,
    LeaseLost,
    ListQuery,
    McpSession,
    NoticeListener,
    Renewal,
    StoreError,
    Subscription,
)
from rpa_gateway.store.hub import ChangeSubscription, Hub, Listener, MessageSubscription
from rpa_gateway.store.redis_subscriber import Subscriber, SubscriberError
from rpa_gateway.store.redis_webhooks import (
    FANOUT_LUA,
    RedisWebhooks,
    fan_out_call,
    webhook_keys,
)
from rpa_gateway.webhooks import model as webhook_events
from rpa_gateway.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, RedisClusterException)
# Longest a create takes between its writes: an index entry or idempotency reservation
# pointing at an execution that is still missing after this is a crash's leftover.
_GRACE = 30.0
_PROBE_INTERVAL = 1.0
_WRITE_PROBE = 64 * 1024  # bytes a write probe asks Redis to hold (briefly)
_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 1.0
_PUBSUB_IDLE = 5.0  # seconds without a message before the pub/sub connection is pinged
_PAGE = 200
# Off: with them on (redis-py's default for RESP3), the pool hands out connections that
# Redis closed (a restart) without checking them, and the next command fails.
_NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)

# Every script that writes an event also publishes it, so no event is stored unannounced.
# The message is ARGV[2] (its head, from the caller) .. seq .. ',"ev":' .. event .. '}'.
# ARGV[6], ARGV[7]: the lease's holder and milliseconds ('' : no lease taken).  On one
# server (ARGV[8] '1') the indexes KEYS[5..7] are written here too, by score ARGV[9]
# and member ARGV[10] (the id); a cluster cannot, and create() writes them apart.  Each
# script also publishes the execution's change for feeds: channel and message, here ARGV[11],
# ARGV[12] (_APPEND: ARGV[4], ARGV[5]; _FINISH: ARGV[9], ARGV[10]); then the record's pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[8] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[10])
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[10])
  redis.call('ZADD', KEYS[7], ARGV[9], ARGV[10])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('RPUSH', KEYS[2], ARGV[1])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[4]) end
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7]) end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. '1,"ev":' .. ARGV[1] .. '}')
redis.call('PUBLISH', ARGV[11], ARGV[12])
return 1
"""

# Webhooks (_APPEND's ARGV[7..13], _FINISH's ARGV[13..17]): on one server ('1') the event's
# deliveries are written in the same script (redis_webhooks.FANOUT_LUA), so no crash keeps
# the event without them; a cluster writes them right after (see finish()).
# Fencing (in _APPEND, _FINISH, _SAVE): with a holder given (ARGV[6], ARGV[11], ARGV[1]),
# a write is refused (-1) while another holds the lease (the last key): a process past its
# lease, whose execution another took over, cannot write it any more.
_APPEND = (
    FANOUT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
if ARGV[6] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[6] then return -1 end
end
local seq = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seq', seq, unpack(ARGV, 14))
if ARGV[7] == '1' then
  fanout(ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[13])
end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. seq .. ',"ev":' .. ARGV[1] .. '}')
redis.call('PUBLISH', ARGV[4], ARGV[5])
return seq
"""
)

# ARGV[1]: the terminal event as stored (without the result, which the record holds),
# ARGV[12] as published (with it).  ARGV[4]: retention in milliseconds, '0' to keep the
# execution forever.  ARGV[5]: on one
# server the indexes are tidied here too ('1'; '2' also the idempotency key KEYS[6]): the
# id ARGV[6] leaves KEYS[4] (unfinished), ARGV[7] enters KEYS[5] (finished) at ARGV[8].
_FINISH = (
    FANOUT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
if ARGV[11] ~= '' then
  local holder = redis.call('GET', KEYS[#KEYS])
  if holder and holder ~= ARGV[11] then return -1 end
end
local seq = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seq', seq, unpack(ARGV, 18))
redis.call('DEL', KEYS[3])
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if ARGV[5] ~= '0' then
  redis.call('ZREM', KEYS[4], ARGV[6])
  if ARGV[4] ~= '0' then
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
    if ARGV[5] == '2' then redis.call('PEXPIRE', KEYS[6], ARGV[4]) end
  end
end
if ARGV[13] == '1' then
  fanout(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[6], ARGV[8], ARGV[8])
end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. seq .. ',"ev":' .. ARGV[12] .. '}')
redis.call('PUBLISH', ARGV[9], ARGV[10])
return seq
"""
)

_SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[1] then return -1 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# A lost execution written back (see RedisStore.restore).  ARGV[1]: how many events it had,
# ARGV[2] the state event standing in for each; ARGV[3] its sealed token ('' for none);
# ARGV[4], ARGV[5] the lease's holder and length (ms); ARGV[6] '1' on one server (the
# indexes KEYS[5..7] here too), ARGV[7] its creation time, ARGV[8] its id; the record's
# fields from ARGV[9].
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[7], ARGV[7], ARGV[8])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('DEL', KEYS[2])
for _ = 1, tonumber(ARGV[1]) do redis.call('RPUSH', KEYS[2], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
return 1
"""

_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Renewals: KEYS are (lease, record) pairs, one per execution; one code per pair: 0 held
# by another, 1 renewed, 2 renewed and a cancel was requested (request_cancel).  A lease
# that lapsed and nobody claimed is still the holder's to keep.
_RENEW = """
local codes = {}
for i = 1, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    codes[#codes + 1] = 0
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    local cancel = redis.call('HGET', KEYS[i + 1], 'cancel_requested')
    codes[#codes + 1] = cancel == 'true' and 2 or 1
  end
end
return codes
"""

_REQUEST_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'cancel_requested', 'true')
return 1
"""

# KEYS[1]: hash of holder -> until when (ms, Redis's clock) it is alive.  Refreshes
# ARGV[1] for ARGV[2] ms; removes and returns the holders that lapsed.
_ANNOUNCE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
local gone = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now then gone[#gone + 1] = all[i] end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return gone
"""

# Compare-and-delete; also used to take back an idempotency reservation.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

_REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The latest event, its number, and the record's outcome (a terminal event's result).
_LATEST = """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return false end
return {n, redis.call('LINDEX', KEYS[1], -1), redis.call('HGET', KEYS[2], 'outcome')}
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@functools.cache
def _sha(script: str) -> str:
    """A script's digest for EVALSHA (the scripts are this module's constants)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.unfinished = f"{prefix}:unfinished"
        self.finished = f"{prefix}:finished"
        self.every = f"{prefix}:executions"
        self.holders = f"{prefix}:replicas"
        self.notices_channel = f"{prefix}:notices"
        self.changes_channel = f"{prefix}:changes"
        self.write_probe = f"{prefix}:write-probe"
        self.token_key = f"{prefix}:token-key"  # RPA_TOKEN_KEY's fingerprint, never the key
        self.epoch = f"{prefix}:epoch"  # names the contents; gone when Redis loses them

    def live(self, execution_id: str) -> str:
        return f"{self.prefix}:live:{execution_id}"

    def followed(self, channels: Sequence[str]) -> list[str]:
        """The executions whose live channels these are."""
        head = f"{self.prefix}:live:"
        return [c.removeprefix(head) for c in channels if c.startswith(head)]

    def record(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:x"

    def events(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:ev"

    def token(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:token"

    def lease(self, execution_id: str) -> str:
        return f"{self.prefix}:{{{execution_id}}}:lease"

    def owner(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

    def stored_bytes(self, owner: str) -> str:
        return f"{self.prefix}:bytes:{owner}"

    def durations(self, model: str) -> str:
        return f"{self.prefix}:durations:{model}"

    def mcp_session(self, session_id: str) -> str:
        return f"{self.prefix}:mcp:{session_id}"

    def messages(self, channel: str) -> str:
        return f"{self.prefix}:msg:{channel}"

    def idempotency(self, owner: str, key: str) -> str:
        # The owner's length keeps ("a:b", "c") and ("a", "b:c") apart.
        return f"{self.prefix}:idem:{len(owner)}:{owner}:{key}"


class _Fanout(Hub):
    """The hub, also handing on events other processes wrote: to subscribers only, since
    listeners hear of this process's writes alone."""

    def deliver(self, event: Event) -> None:
        for subscription in self._subscribers.get(event.execution_id, ()):
            subscription.deliver(event)


class RedisStore:
    """Use :meth:`connect` to make one."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        addresses: Sequence[tuple[str, int]],
        *,
        password: str | None,
        retention_seconds: float,
        prefix: str,
        timeout: float,
        max_connections: int,
        holder: str = "",
    ) -> None:
        self._client = client
        self._webhook_keys = webhook_keys(prefix)
        self.webhooks: WebhookStore = RedisWebhooks(self._script, prefix)
        # This process's lease holder id: its writes of an execution are refused while
        # another process holds the execution's lease (fencing); "": unfenced (tools).
        self._holder = holder
        # One server: a script may touch any key (indexes with the record, in one step).
        self._one_server = not isinstance(client, RedisCluster)
        self._addresses = list(addresses)
        self._password = password
        self._retention_ms = max(0, round(retention_seconds * 1000))
        self._keys = _Keys(prefix)
        self._timeout = timeout
        self._permits = asyncio.Semaphore(max_connections)
        self._origin = uuid.uuid4().hex  # tells this store's messages from other processes'
        self._own_messages = f'{{"o":"{self._origin}"'.encode()
        self._notices_channel = self._keys.notices_channel.encode()
        self._changes_channel = self._keys.changes_channel.encode()
        self._messages_head = self._keys.messages("").encode()
        self._hub = _Fanout()
        self._following: Counter[str] = Counter()  # subscriptions per execution
        # Executions whose channel is subscribed (or will be, at the next connection): the
        # SUBSCRIBE's confirmation.
        self._watched: dict[str, asyncio.Future[Any]] = {}
        self._subscriber: Subscriber | None = None
        self._catching_up: set[asyncio.Task[None]] = set()
        self._notice_listeners: list[NoticeListener] = []
        # Why the last command failed, while Redis is known to be unreachable.
        self._unreachable: str | None = None
        # Why a write failed for want of memory; None once a write probe works.
        self._write_failure: str | None = None
        self._probed_at = 0.0
        self._listening = asyncio.Event()  # the pub/sub connection is subscribed
        self._lost = False  # the pub/sub connection failed and is not back yet
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        addr: str | None = None,
        *,
        cluster_seeds: Sequence[str] | None = None,
        password: str | None = None,
        retention_seconds: float = 7 * 24 * 3600.0,
        prefix: str = "rpa",
        socket_timeout: float = 3.0,
        max_connections: int = 16,
        holder: str = "",
    ) -> RedisStore:
        """A store on the server at ``addr`` ("host:port"), or on the cluster found from
        ``cluster_seeds``: exactly one of the two.

        ``retention_seconds`` is how long a finished execution is kept (0: forever); give
        housekeeping the same.  ``socket_timeout`` bounds every connect and reply, so a
        dead Redis fails calls instead of hanging them.  ``max_connections`` bounds the
        calls in flight, and so the connections (per node in a cluster).  ``holder``: this
        process's lease holder id, which fences its writes (see ``__init__``).
        """
        if (addr is None) == (not cluster_seeds):
            raise ValueError("give exactly one of addr and cluster_seeds")
        addresses = (
            [_address(addr)] if addr is not None else [_address(s) for s in cluster_seeds or ()]
        )
        client = _client(addresses, addr is None, password, socket_timeout, max_connections)
        store = cls(
            client,
            addresses,
            password=password,
            retention_seconds=retention_seconds,
            prefix=prefix,
            timeout=socket_timeout,
            max_connections=max_connections,
            holder=holder,
        )
        try:
            await store._start()
        except BaseException:
            await store.close()
            raise
        return store

    async def _start(self) -> None:
        async with self._redis("connect to Redis"):
            if isinstance(self._client, RedisCluster):
                await self._client.initialize()
            await self._ping()
        self._reader = asyncio.create_task(self._listen_forever(), name="redis-store-events")
        try:
            async with asyncio.timeout(self._timeout):
                await self._listening.wait()
        except TimeoutError:
            raise StoreError("cannot subscribe to Redis events (no answer in time)") from None

    async def adopt_key_fingerprint(self, fingerprint: str) -> str:
        """The token key fingerprint the replicas agreed on: ``fingerprint`` when none was
        recorded yet (it is now), else the one recorded first."""
        return await self._set_once(
            self._keys.token_key, fingerprint, "record the key's fingerprint"
        )

    # --- the store's contents ------------------------------------------------------
    async def epoch(self) -> str:
        return await self._set_once(self._keys.epoch, uuid.uuid4().hex, "read the store's epoch")

    async def _set_once(self, key: str, value: str, what: str) -> str:
        """The key's value: ``value`` when it had none (it has now), else the one it had;
        one round trip."""
        async with self._redis(what):
            found = await self._client.set(key, value, nx=True, get=True)
        return value if found is None else _text(found)

    async def restore(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str,
        lease_seconds: float,
    ) -> bool:
        stand_in = _event_json(
            EventKind.STATE, {"status": execution.status.value, "restored": True}, time.time()
        )
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys += [self._keys.token(execution.id), self._keys.lease(execution.id)]
        args: list[str | bytes] = [str(execution.last_seq), stand_in, sealed_token or b""]
        args += [holder, _ms(lease_seconds), "1" if self._one_server else "0"]
        args += [repr(execution.created_at), execution.id]
        args += _pairs(
            {
                **_record_fields(execution),
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
        async with self._redis("write back a lost execution"):
            if not self._one_server:
                pipe = self._client.pipeline(transaction=False)
                pipe.zadd(self._keys.unfinished, {execution.id: execution.created_at})
                pipe.zadd(self._keys.owner(execution.owner), {execution.id: execution.created_at})
                pipe.zadd(self._keys.every, {execution.id: execution.created_at})
                await pipe.execute()
            restored = bool(await self._eval(_RESTORE, keys, args))
            key = execution.idempotency_key
            if restored and key is not None:
                name = self._keys.idempotency(execution.owner, key)
                await self._client.set(name, f"{execution.id} {time.time()!r}", nx=True)
        return restored

    def followed(self) -> list[str]:
        return self._hub.followed()

    def end_lost(self, execution_id: str) -> None:
        self._hub.end_lost(execution_id)

    # --- writes ---------------------------------------------------------------
    async def create(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str | None = None,
        lease_seconds: float = 0.0,
    ) -> Event:
        data = {"status": execution.status.value}
        stored = _event_json(EventKind.STATE, data, execution.created_at)
        keys = [self._keys.record(execution.id), self._keys.events(execution.id)]
        keys += [self._keys.token(execution.id), self._keys.lease(execution.id)]
        args: list[str | bytes] = [stored, self._message_head(execution.id)]
        args += [self._keys.live(execution.id), sealed_token or b"", "1" if sealed_token else "0"]
        args += [holder or "", _ms(lease_seconds) if holder else "0"]
        if self._one_server:
            keys += [self._keys.unfinished, self._keys.owner(execution.owner)]
            keys.append(self._keys.every)
        args += ["1" if self._one_server else "0", repr(execution.created_at), execution.id]
        args += self._change(execution, EventKind.STATE, data, execution.created_at)
        args += _pairs(_record_fields(execution))
        async with self._redis("record execution"):
            idempotency = await self._reserve_idempotency(execution)
            try:
                if not self._one_server:
                    # The indexes first: a crash before the record leaves entries pointing
                    # at nothing, which readers skip and drop once older than _GRACE.
                    pipe = self._client.pipeline(transaction=False)
                    pipe.zadd(self._keys.unfinished, {execution.id: execution.created_at})
                    owner_index = self._keys.owner(execution.owner)
                    pipe.zadd(owner_index, {execution.id: execution.created_at})
                    pipe.zadd(self._keys.every, {execution.id: execution.created_at})
                    await pipe.execute()
                created = await self._eval(_CREATE, keys, args)
            except _REDIS_ERRORS:
                if idempotency is not None:
                    await self._forget_reservation(execution.id, *idempotency)
                raise
        if created:
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
        once older than _GRACE: younger, its create may still be writing."""
        key = execution.idempotency_key
        if key is None:
            return None
        name = self._keys.idempotency(execution.owner, key)
        value = f"{execution.id} {time.time()!r}"
        found = await self._client.set(name, value, nx=True, get=True)
        if found is None:
            return name, value
        previous = _text(found)
        other_id, reserved_at = _reservation(previous)
        if await self._client.exists(self._keys.record(other_id)):
            raise DuplicateIdempotencyKey(key)
        expiring = await self._client.pttl(name) > 0
        if not expiring and time.time() - reserved_at < _GRACE:
            raise DuplicateIdempotencyKey(key)
        if not await self._eval(_REPLACE, [name], [previous, value]):
            raise DuplicateIdempotencyKey(key)
        return name, value

    async def _forget_reservation(self, execution_id: str, name: str, value: str) -> None:
        """A create that failed leaves its key free, unless its record got written after
        all (its reply lost).  Best effort: a reservation left behind (Redis gone) is
        taken over by a create once older than _GRACE."""
        try:
            if not await self._client.exists(self._keys.record(execution_id)):
                await self._eval(_RELEASE, [name], [value])
        except _REDIS_ERRORS:
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
        async with self._redis("save execution"):
            saved = await self._eval(_SAVE, keys, [self._holder, *_pairs(fields)])
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
        stored = _event_json(kind, data, now)
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
        async with self._redis("append event"):
            seq = int(await self._eval(_APPEND, keys, [*args, *_pairs(fields)]))
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
        stored = _event_json(EventKind.TERMINAL, stored_terminal_data(data), now)
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
        member = _dumps([execution.id, execution.owner, size])
        args += [tidy, execution.id, member, repr(now)]
        args += self._change(execution, EventKind.TERMINAL, data, now)
        args += [self._holder, _event_json(EventKind.TERMINAL, data, now)]
        event_type = webhook_events.terminal_event(outcome.status)
        args += self._fan_out_args(execution, event_type, True, now)
        keys.append(self._keys.lease(execution.id))  # the last key (see _FINISH)
        async with self._redis("finish execution"):
            seq = int(await self._eval(_FINISH, keys, [*args, *_pairs(fields)]))
            # A cluster: the deliveries, then the indexes.  Until both are written the
            # execution stays in the unfinished index, whose sweep fans out what a crash
            # (or a failure) left (see _fan_out_late).
            tidy_apart = seq > 0 and not self._one_server
            if tidy_apart and await self._fan_out_apart(execution, event_type, now):
                await self._tidy_finished(execution, member)
        if seq > 0:
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
            await self._eval(*call)
        except _REDIS_ERRORS as exc:
            log.warning(
                "execution %s: its webhook deliveries are recorded later: %s",
                execution.id,
                self._describe(exc),
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
        except _REDIS_ERRORS as exc:
            log.warning(
                "execution %s finished; its index entries are tidied later: %s",
                execution.id,
                self._describe(exc),
            )

    async def purge_finished(self, finished_before: float, batch: int) -> int:
        """Finished executions expire by themselves ``retention_seconds`` after their end;
        this deletes them (and their index entries) once finished before the time, like
        the SQLite store.  It never fails: what it leaves, expiry and readers tidy."""
        try:
            async with self._redis("purge executions"):
                members = await self._client.zrange(
                    self._keys.finished, "-inf", finished_before, byscore=True, offset=0, num=batch
                )
                if not members:
                    return 0
                pipe = self._client.pipeline(transaction=False)
                for member in members:
                    # [id, owner, size]; [id, owner] as older versions wrote it.
                    execution_id, owner, *size = json.loads(_text(member))
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

    # --- reads ----------------------------------------------------------------
    async def get(self, execution_id: str) -> Execution | None:
        async with self._redis("read execution"):
            fields = await self._client.hgetall(self._keys.record(execution_id))
        return _execution_from(execution_id, fields)

    async def find_idempotent(self, owner: str, key: str) -> Execution | None:
        async with self._redis("read execution"):
            value = await self._client.get(self._keys.idempotency(owner, key))
        if value is None:
            return None
        execution = await self.get(_reservation(_text(value))[0])
        if execution is None or execution.owner != owner or execution.idempotency_key != key:
            return None
        return execution

    async def sealed_token(self, execution_id: str) -> bytes | None:
        async with self._redis("read execution"):
            token = await self._client.get(self._keys.token(execution_id))
        return None if token is None else _bytes(token)

    async def stored_bytes(self, owner: str) -> int:
        async with self._redis("read what a caller stores"):
            found = await self._client.get(self._keys.stored_bytes(owner))
        return max(0, int(found)) if found is not None else 0

    async def events_after(self, execution_id: str, seq: int) -> list[Event]:
        async with self._redis("read events"):
            stored = await self._client.lrange(self._keys.events(execution_id), max(seq, 0), -1)
            first = max(seq, 0) + 1
            events = [
                _event_from(execution_id, first + i, _bytes(raw)) for i, raw in enumerate(stored)
            ]
            if events and events[-1].kind is EventKind.TERMINAL and "data" not in events[-1].data:
                outcome = await self._client.hget(self._keys.record(execution_id), "outcome")
                events[-1] = _with_stored_result(events[-1], outcome)
        return events

    async def unfinished(self) -> list[Execution]:
        async with self._redis("read executions"):
            rows = await self._client.zrange(self._keys.unfinished, 0, -1, withscores=True)
            found, stale = await self._unfinished_of(_decoded(rows))
            await self._drop(self._keys.unfinished, stale)
        return found

    async def _unfinished_of(
        self, rows: Sequence[tuple[str, float]]
    ) -> tuple[list[Execution], list[str]]:
        """The executions of unfinished-index entries that are still unfinished, and the
        entries to drop: finished, or missing for longer than _GRACE."""
        found: list[Execution] = []
        stale: list[str] = []
        for start in range(0, len(rows), _PAGE):
            page = rows[start : start + _PAGE]
            executions = await self._load([execution_id for execution_id, _ in page])
            for (execution_id, created_at), execution in zip(page, executions, strict=True):
                if execution is None:
                    if _abandoned(created_at):
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

    async def list_executions(self, query: ListQuery) -> list[Execution]:
        key = self._keys.every if query.owner is None else self._keys.owner(query.owner)
        page_size = min(max(query.limit, 20), _PAGE)
        found: list[Execution] = []
        cursor = query.before
        async with self._redis("list executions"):
            more = True
            while more and len(found) < query.limit:
                page, more = await self._owner_page(key, cursor, page_size)
                if not page:
                    break
                executions = await self._load([execution_id for execution_id, _ in page])
                gone = []
                for (execution_id, created_at), execution in zip(page, executions, strict=True):
                    if execution is None:
                        if _abandoned(created_at):
                            gone.append(execution_id)
                    elif _matches(query, execution) and len(found) < query.limit:
                        found.append(execution)
                await self._drop(key, gone)
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
            rows = _decoded(found)
            after = [r for r in rows if cursor is None or r[1] < cursor[0] or r[0] < cursor[1]]
            if after or len(rows) < count:
                return after, len(rows) == count
            offset += len(rows)

    async def _load(self, execution_ids: Sequence[str]) -> list[Execution | None]:
        if not execution_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for execution_id in execution_ids:
            pipe.hgetall(self._keys.record(execution_id))
        rows = await pipe.execute()
        return [_readable(i, row) for i, row in zip(execution_ids, rows, strict=True)]

    async def _drop(self, index: str, members: Sequence[str]) -> None:
        if members:
            await self._client.zrem(index, *members)

    # --- notification -----------------------------------------------------------
    # Every script that writes an event publishes it on the execution's channel, which
    # costs nothing while nobody listens.  This process listens only to executions it
    # follows and does not write (another process drives them): it subscribes to the
    # channel before subscribe() returns, so every event written after that reaches the
    # subscription - this process's at write time, other processes' over pub/sub.  While
    # the pub/sub connection is down, whatever was missed is made up when it is back
    # (see _resync); so is what was missed when this process stops writing one.
    def subscribe(
        self, execution_id: str, *, written_here: bool = False
    ) -> AbstractAsyncContextManager[Subscription]:
        return self._subscribe(execution_id, written_here)

    @asynccontextmanager
    async def _subscribe(
        self, execution_id: str, written_here: bool
    ) -> AsyncIterator[Subscription]:
        async with self._hub.subscribe(execution_id) as subscription:
            self._following[execution_id] += 1
            try:
                if not written_here:
                    await self._watch(self._keys.live(execution_id))
                yield subscription
            finally:
                self._following[execution_id] -= 1
                if self._following[execution_id] <= 0:
                    del self._following[execution_id]
                    self._unwatch(self._keys.live(execution_id))

    def subscribe_changes(
        self, owner: str | None
    ) -> AbstractAsyncContextManager[ChangeSubscription]:
        return self._subscribe_changes(owner)

    @asynccontextmanager
    async def _subscribe_changes(self, owner: str | None) -> AsyncIterator[ChangeSubscription]:
        try:
            async with self._hub.subscribe_changes(owner) as subscription:
                await self._watch(self._keys.changes_channel)
                yield subscription
        finally:
            if not self._hub.follows_changes:  # the last feed here has closed
                self._unwatch(self._keys.changes_channel)

    def written_elsewhere(self, execution_id: str) -> None:
        channel = self._keys.live(execution_id)
        if not self._following[execution_id] or channel in self._watched:
            return
        confirmed = self._send_watch(channel)
        task = asyncio.get_running_loop().create_task(self._catch_up(execution_id, confirmed))
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def _catch_up(self, execution_id: str, confirmed: asyncio.Future[Any]) -> None:
        """Once subscribed, the subscriptions get the latest stored event: those that
        missed some (written before the channel was subscribed) see a gap."""
        with contextlib.suppress(SubscriberError):
            await confirmed
        try:
            await self._resync([execution_id])
        except StoreError as exc:  # Redis is failing: the reconnection resyncs
            log.warning("execution %s: its latest event is not read: %s", execution_id, exc)

    async def _watch(self, channel: str) -> None:
        confirmed = self._watched.get(channel) or self._send_watch(channel)
        with contextlib.suppress(SubscriberError):
            await asyncio.shield(confirmed)  # failed: the reconnection subscribes it

    def _send_watch(self, channel: str) -> asyncio.Future[Any]:
        subscriber = self._subscriber
        confirmed: asyncio.Future[Any] | None = None
        if subscriber is not None and subscriber.connected:
            with contextlib.suppress(SubscriberError):  # closing: as if it were down
                confirmed = subscriber.subscribe(channel)
                confirmed.add_done_callback(_retrieve)
        if confirmed is None:  # subscribed (and resynced) when the connection is back
            confirmed = asyncio.get_running_loop().create_future()
            confirmed.set_result(None)
        self._watched[channel] = confirmed
        return confirmed

    def _unwatch(self, channel: str) -> None:
        if self._watched.pop(channel, None) is not None and self._subscriber is not None:
            self._subscriber.unsubscribe(channel)

    async def publish_only(self, event: Event, execution: Execution) -> None:
        """This process's subscribers get it even when Redis cannot take the message for
        other processes (StoreError then)."""
        self._hub.publish(event, execution)
        message = _dumps(
            {
                "o": self._origin,
                "id": event.execution_id,
                "seq": event.seq,
                "ev": {"kind": event.kind.value, "data": event.data, "at": event.at},
            }
        )
        async with self._redis("publish event"):
            await self._client.publish(self._keys.live(event.execution_id), message)

    def drain(self) -> None:
        self._hub.drain()

    def add_listener(self, listener: Listener) -> None:
        """Called for the events this process writes (not those of other processes)."""
        self._hub.add_listener(listener)

    def _change(
        self, execution: Execution, kind: EventKind, data: JsonObject, at: float
    ) -> list[str]:
        """The changes channel and the message a write publishes on it."""
        change = change_of(execution, kind, data, at)
        message = _dumps({"o": self._origin, "owner": execution.owner, "change": change})
        return [self._keys.changes_channel, message]

    async def _count_bytes(self, owner: str, delta: int) -> None:
        """The owner's stored bytes (see stored_bytes), after a write that succeeded: best
        effort, as the write stands whether or not its count does."""
        try:
            async with self._redis("count a caller's stored bytes"):
                await self._client.incrby(self._keys.stored_bytes(owner), delta)
        except StoreError as exc:
            log.warning("a caller's stored bytes are not counted: %s", exc)

    def _fenced(self, execution_id: str) -> LeaseLost:
        return LeaseLost(f"execution {execution_id}: another process holds its lease now")

    def _message_head(self, execution_id: str) -> str:
        return f'{{"o":{_dumps(self._origin)},"id":{_dumps(execution_id)},"seq":'

    async def _listen_forever(self) -> None:
        """The one pub/sub connection, rebuilt with backoff whenever it fails."""
        delay = _RECONNECT_FIRST
        attempt = 0
        while True:
            host, port = self._addresses[attempt % len(self._addresses)]
            attempt += 1
            try:
                await self._listen(host, port)
            except Exception as exc:  # whatever broke, the reader carries on
                if self._listening.is_set():
                    self._listening.clear()
                    self._lost = True
                    delay = _RECONNECT_FIRST
                    log.warning("Redis events connection lost: %s", self._describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _listen(self, host: str, port: int) -> None:
        subscriber: Subscriber | None = None
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    subscriber = await Subscriber.open(
                        host, port, password=self._password, on_message=self._dispatch
                    )
                    # From here on, _watch subscribes on this connection itself.
                    self._subscriber = subscriber
                    channels = list(self._watched)
                    await subscriber.subscribe(self._keys.notices_channel, *channels)
            except TimeoutError:
                raise SubscriberError(f"no answer in {self._timeout} s") from None
            await self._resync(self._keys.followed(channels))
            if self._lost:
                self._lost = False
                # Changes published meanwhile are gone: feeds reconnect and replay them.
                self._hub.end_change_subscriptions()
                log.info("Redis events connection back")
            self._listening.set()
            await subscriber.keep_alive(_PUBSUB_IDLE)
        finally:
            if subscriber is not None:
                subscriber.close()
                if self._subscriber is subscriber:
                    self._subscriber = None

    async def _resync(self, followed: Sequence[str]) -> None:
        """The subscriptions get these executions' latest stored event: one that missed
        events (while the connection was down) sees a gap and reads them from the store."""
        for start in range(0, len(followed), _PAGE):
            ids = followed[start : start + _PAGE]
            pipe = self._client.pipeline(transaction=False)
            for execution_id in ids:
                keys = [self._keys.events(execution_id), self._keys.record(execution_id)]
                pipe.eval(_LATEST, 2, *keys)
            async with self._redis("read the latest events"):
                found = await pipe.execute()
            for execution_id, latest in zip(ids, found, strict=True):
                if latest:
                    event = _event_from(execution_id, int(latest[0]), latest[1])
                    self._hub.deliver(_with_stored_result(event, latest[2]))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._own_messages):
            return  # this process delivered it when writing it
        try:
            if channel == self._notices_channel:
                message = json.loads(data)
                for listener in self._notice_listeners:
                    listener(message["topic"], message["id"])
            elif channel == self._changes_channel:
                message = json.loads(data)
                self._hub.deliver_change(message["owner"], message["change"])
            elif channel.startswith(self._messages_head):
                message = json.loads(data)
                name = channel[len(self._messages_head) :].decode()
                self._hub.deliver_message(name, message["m"])
            else:
                self._deliver(data)
        except Exception:
            log.exception("Redis message on %s not handled", channel.decode(errors="replace"))

    def _deliver(self, data: bytes) -> None:
        """An event another process wrote."""
        message = json.loads(data)
        stored = message["ev"]
        event = Event(
            message["id"],
            int(message["seq"]),
            EventKind(stored["kind"]),
            stored["data"],
            float(stored["at"]),
        )
        self._hub.deliver(event)

    # --- supervision --------------------------------------------------------------
    async def claim(self, execution_id: str, holder: str, ttl: float) -> bool:
        async with self._redis("claim execution"):
            taken = await self._eval(_CLAIM, [self._keys.lease(execution_id)], [holder, _ms(ttl)])
        return bool(taken)

    async def renew(self, holder: str, execution_ids: Sequence[str], ttl: float) -> Renewal:
        args = [holder, _ms(ttl)]
        codes: list[Any] = []
        if not self._one_server:  # each execution in its own slot: a script apiece
            async with self._redis("renew leases"):
                for found in await self._eval_each(_RENEW, execution_ids, args, with_record=True):
                    codes += found
        else:
            for start in range(0, len(execution_ids), _PAGE):
                keys = []
                for execution_id in execution_ids[start : start + _PAGE]:
                    keys += [self._keys.lease(execution_id), self._keys.record(execution_id)]
                async with self._redis("renew leases"):
                    codes += await self._eval(_RENEW, keys, args)
        renewal = Renewal([], [])
        for execution_id, code in zip(execution_ids, codes, strict=True):
            if int(code) == 0:
                renewal.lost.append(execution_id)
            elif int(code) == 2:
                renewal.cancel_requested.append(execution_id)
        return renewal

    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None:
        async with self._redis("store run durations"):
            pipe = self._client.pipeline(transaction=False)
            for model, durations in added.items():
                key = self._keys.durations(model)
                pipe.rpush(key, *(repr(float(seconds)) for seconds in durations))
                pipe.ltrim(key, -keep, -1)
            await pipe.execute()

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]:
        if not keys:
            return {}
        async with self._redis("read run durations"):
            pipe = self._client.pipeline(transaction=False)
            for model in keys:
                pipe.lrange(self._keys.durations(model), -keep, -1)
            lists = await pipe.execute()
        return {m: [float(v) for v in found] for m, found in zip(keys, lists, strict=True) if found}

    async def request_cancel(self, execution_id: str) -> None:
        async with self._redis("request a cancel"):
            await self._eval(_REQUEST_CANCEL, [self._keys.record(execution_id)], [])

    async def release(self, holder: str, execution_ids: Sequence[str]) -> None:
        async with self._redis("release leases"):
            await self._eval_each(_RELEASE, execution_ids, [holder])

    async def _eval_each(
        self,
        script: str,
        execution_ids: Sequence[str],
        args: Sequence[str],
        *,
        with_record: bool = False,
    ) -> list[Any]:
        """The lease script run on each execution's lease (and record), pipelined (by its
        digest on one server; the whole script when Redis has forgotten it, after a
        restart).  Every lease script may run twice."""
        if not execution_ids:
            return []
        # redis-py's cluster pipeline refuses EVALSHA: there the whole script goes each time.
        cluster = isinstance(self._client, RedisCluster)
        for by_digest in (False,) if cluster else (True, False):
            pipe = self._client.pipeline(transaction=False)
            for execution_id in execution_ids:
                keys = [self._keys.lease(execution_id)]
                if with_record:
                    keys.append(self._keys.record(execution_id))
                if by_digest:
                    pipe.evalsha(_sha(script), len(keys), *keys, *args)
                else:
                    pipe.eval(script, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                continue
        raise AssertionError("unreachable")

    async def announce(self, holder: str, ttl: float) -> list[str]:
        async with self._redis("announce this process"):
            gone = await self._eval(_ANNOUNCE, [self._keys.holders], [holder, _ms(ttl)])
        return [_text(h) for h in gone]

    async def retire(self, holder: str) -> None:
        async with self._redis("retire this process"):
            await self._client.hdel(self._keys.holders, holder)

    async def claimable(self, limit: int) -> list[Execution]:
        found: list[Execution] = []
        stale: list[str] = []
        offset = 0
        async with self._redis("read executions"):
            while len(found) < limit:
                rows = _decoded(
                    await self._client.zrange(
                        self._keys.unfinished, offset, offset + _PAGE - 1, withscores=True
                    )
                )
                pipe = self._client.pipeline(transaction=False)
                for execution_id, _ in rows:
                    pipe.exists(self._keys.lease(execution_id))
                leased = await pipe.execute() if rows else []
                free = [row for row, held in zip(rows, leased, strict=True) if not held]
                unfinished, dropped = await self._unfinished_of(free)
                found += unfinished[: limit - len(found)]
                stale += dropped
                if len(rows) < _PAGE:
                    break
                offset += len(rows)
            await self._drop(self._keys.unfinished, stale)
        return found

    async def notify(self, topic: str, execution_id: str) -> None:
        """This process's listeners hear it at once, others' over pub/sub (StoreError when
        Redis cannot take it)."""
        for listener in self._notice_listeners:
            listener(topic, execution_id)
        message = _dumps({"o": self._origin, "topic": topic, "id": execution_id})
        async with self._redis("send notice"):
            await self._client.publish(self._keys.notices_channel, message)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    # --- MCP sessions, and messages between processes ----------------------------------
    # A session's expiry is its key's: extended or changed only while the key exists, so a
    # session ended meanwhile (by any process) never comes back.
    async def put_mcp_session(self, session: McpSession) -> None:
        value = _dumps(
            {"owner": session.owner, "v": session.protocol_version, "t": session.transport}
        )
        async with self._redis("store an MCP session"):
            await self._client.set(
                self._keys.mcp_session(session.id), value, pxat=_epoch_ms(session.expires_at)
            )

    async def update_mcp_session(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        expires_at: float | None = None,
    ) -> bool:
        key = self._keys.mcp_session(session_id)
        async with self._redis("update an MCP session"):
            if protocol_version is not None:
                stored = await self._client.get(key)
                if stored is None:
                    return False
                record = {**json.loads(stored), "v": protocol_version}
                if not await self._client.set(key, _dumps(record), xx=True, keepttl=True):
                    return False
            if expires_at is not None:
                return bool(await self._client.pexpireat(key, _epoch_ms(expires_at)))
        return True

    async def mcp_session(self, session_id: str) -> McpSession | None:
        key = self._keys.mcp_session(session_id)
        async with self._redis("read an MCP session"):
            pipe = self._client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            stored, left_ms = await pipe.execute()
        if stored is None or left_ms is None or left_ms < 0:
            return None
        record = json.loads(stored)
        expires_at = time.time() + left_ms / 1000
        return McpSession(
            session_id, record["owner"], record["v"], expires_at, record.get("t", "http")
        )

    async def end_mcp_session(self, session_id: str) -> bool:
        async with self._redis("end an MCP session"):
            return bool(await self._client.delete(self._keys.mcp_session(session_id)))

    async def purge_mcp_sessions(self, now: float) -> int:
        return 0  # each expires with its key

    async def send_message(self, channel: str, message: str) -> None:
        """Subscribers here get it at once, others' over pub/sub (StoreError when Redis
        cannot take it)."""
        self._hub.deliver_message(channel, message)
        wrapped = _dumps({"o": self._origin, "m": message})
        async with self._redis("send a message"):
            await self._client.publish(self._keys.messages(channel), wrapped)

    def subscribe_messages(self, channel: str) -> AbstractAsyncContextManager[MessageSubscription]:
        return self._subscribe_messages(channel)

    @asynccontextmanager
    async def _subscribe_messages(self, channel: str) -> AsyncIterator[MessageSubscription]:
        try:
            async with self._hub.subscribe_messages(channel) as subscription:
                await self._watch(self._keys.messages(channel))
                yield subscription
        finally:
            if not self._hub.follows_messages(channel):
                self._unwatch(self._keys.messages(channel))

    # --- lifecycle ----------------------------------------------------------------
    async def check(self) -> None:
        async with self._redis("reach Redis"):
            await self._ping()
        await self.writable()

    async def writable(self) -> None:
        """After a command failed for want of Redis, or a write for want of memory (at
        ``maxmemory`` with ``noeviction``), a probe (at most once a second) says when
        Redis takes writes again: a PING, or a write of a few pages."""
        if self._unreachable is None and self._write_failure is None:
            return
        now = time.monotonic()
        if now - self._probed_at >= _PROBE_INTERVAL:
            self._probed_at = now
            with contextlib.suppress(StoreError):
                await self._probe()
        failure = self._unreachable or self._write_failure
        if failure is not None:
            raise StoreError(failure)

    async def _probe(self) -> None:
        async with self._redis("reach Redis"):
            await self._ping()
        if self._write_failure is not None:
            async with self._redis("write to Redis"):
                await self._client.set(self._keys.write_probe, bytes(_WRITE_PROBE), px=1000)
                await self._client.delete(self._keys.write_probe)
            self._write_failure = None

    async def _ping(self) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self._client.ping()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._client.aclose()

    # --- Redis calls -----------------------------------------------------------
    async def _script(
        self, what: str, script: str, keys: Sequence[str], args: Sequence[str | bytes]
    ) -> Any:
        async with self._redis(what):
            return await self._eval(script, keys, args)

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self._client.evalsha(_sha(script), len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis has forgotten it; EVAL caches it again
            return await self._client.eval(script, len(keys), *keys, *args)

    @contextlib.asynccontextmanager
    async def _redis(self, what: str) -> AsyncIterator[None]:
        """One call's Redis commands: at most ``max_connections`` calls at a time (a
        cluster client fails rather than wait for a connection), Redis errors as
        StoreError."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._permits.acquire()
        except TimeoutError:
            raise StoreError(f"cannot {what}: every Redis connection is busy") from None
        try:
            with self._errors(what):
                yield
        finally:
            self._permits.release()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Redis errors as StoreError; a command that works says Redis is reachable."""
        try:
            yield
        except _REDIS_ERRORS as exc:
            message = f"cannot {what}: {self._describe(exc)}"
            if _unreachable(exc):
                self._unreachable = message
            elif _out_of_memory(exc):
                self._write_failure = message
            raise StoreError(message) from None
        self._unreachable = None

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a failure seen: the reconnection makes up for a SUBSCRIBE that failed."""
    if not future.cancelled():
        future.exception()


def _out_of_memory(exc: BaseException) -> bool:
    """Redis at ``maxmemory`` with ``noeviction``: it refuses writes (scripts too)."""
    return isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM ")


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, MaxConnectionsError):  # busy, not gone
        return False
    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ClusterDownError | RedisClusterException
    )


def _client(
    addresses: Sequence[tuple[str, int]],
    cluster: bool,
    password: str | None,
    timeout: float,
    max_connections: int,
) -> Redis | RedisCluster:
    # No retries: a script whose reply was lost must not run twice (an event stored twice).
    if cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in addresses],
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=_NO_MAINT_NOTIFICATIONS,
        )
    host, port = addresses[0]
    pool = BlockingConnectionPool(
        host=host,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        maint_notifications_config=_NO_MAINT_NOTIFICATIONS,
    )
    return Redis.from_pool(pool)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"not a host:port address: {text!r}")
    return host.strip("[]"), int(port)


def _epoch_ms(epoch: float) -> int:
    return math.ceil(epoch * 1000)


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def _abandoned(created_at: float) -> bool:
    """An index entry whose execution is missing: gone, or from a crashed create once
    older than _GRACE (before that, it may be a create in progress)."""
    return created_at < time.time() - _GRACE


def _text(value: object) -> str:
    """A reply as text (replies are bytes: the client does not decode them)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise StoreError(f"unexpected reply from Redis: {type(value).__name__}")


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise StoreError(f"unexpected reply from Redis: {type(value).__name__}")


def _decoded(rows: Sequence[Any]) -> list[tuple[str, float]]:
    """ZRANGE ... WITHSCORES replies as (member, score)."""
    return [(_text(member), float(score)) for member, score in rows]


def _reservation(value: str) -> tuple[str, float]:
    execution_id, _, reserved_at = value.partition(" ")
    try:
        return execution_id, float(reserved_at)
    except ValueError:
        return execution_id, 0.0


_JSON_CONSTANTS: dict[Any, str] = {None: "null", True: "true", False: "false"}


def _pairs(fields: Mapping[str, Any]) -> list[str | bytes]:
    """HSET arguments: every value stored as JSON (numbers and constants, most of them,
    without the encoder's setup: it is a large part of a write's client-side cost)."""
    pairs: list[str | bytes] = []
    for name, value in fields.items():
        kind = type(value)
        if kind is int or (kind is float and math.isfinite(value)):
            encoded = repr(value)
        elif kind is bool or value is None:
            encoded = _JSON_CONSTANTS[value]
        else:
            encoded = _dumps(value)
        pairs += [name, encoded]
    return pairs


def _event_json(kind: EventKind, data: JsonObject, at: float) -> str:
    return _dumps({"kind": kind.value, "data": data, "at": at})


def _with_stored_result(event: Event, outcome: bytes | str | None) -> Event:
    """A terminal event with its result put back from the record's ``outcome`` field."""
    if event.kind is not EventKind.TERMINAL or "data" in event.data:
        return event
    result = json.loads(outcome).get("data") if outcome is not None else None
    return with_result(event, result)


def _event_from(execution_id: str, seq: int, stored: bytes) -> Event:
    try:
        event = json.loads(stored)
        return Event(execution_id, seq, EventKind(event["kind"]), event["data"], float(event["at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"event {execution_id}:{seq} cannot be read: {exc!r}") from None


def _record_fields(execution: Execution) -> dict[str, Any]:
    """A new execution as created.  What never changes travels as one ``spec`` value (a
    script's arguments cost the client per item), and the counters and flags but
    ``create_started`` are left to their defaults when read: what SqliteStore.create
    stores."""
    request = execution.request
    fields: dict[str, Any] = {
        "spec": {
            "owner": execution.owner,
            "request": {"project_id": request.project_id, "sid": request.sid, **request.stored()},
            "created_at": execution.created_at,
            "deadline_at": execution.deadline_at,
            "idempotency_key": execution.idempotency_key,
            "request_hash": execution.request_hash,
        },
        "status": execution.status.value,
        "updated_at": execution.updated_at,
        "last_seq": 1,
    }
    if execution.create_started:
        fields["create_started"] = True
    return fields


def _readable(execution_id: str, stored: Mapping[Any, Any]) -> Execution | None:
    """In a batch (listings, takeover scans), a record that cannot be read is left out
    and logged: one bad record must not stop every scan of every replica."""
    try:
        return _execution_from(execution_id, stored)
    except StoreError as exc:
        log.error("%s; left out", exc)
        return None


def _execution_from(execution_id: str, stored: Mapping[Any, Any]) -> Execution | None:
    if not stored:
        return None
    try:
        return _decode_execution(execution_id, stored)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"execution {execution_id} cannot be read: {exc!r}") from None


def _decode_execution(execution_id: str, stored: Mapping[Any, Any]) -> Execution:
    fields = {bytes(name).decode(): json.loads(value) for name, value in stored.items()}
    fields.update(fields.pop("spec", None) or {})
    request = fields["request"]
    outcome = fields.get("outcome")
    return Execution(
        id=execution_id,
        request=ExecutionRequest.from_stored(request["project_id"], request["sid"], request),
        status=Status(fields["status"]),
        created_at=fields["created_at"],
        updated_at=fields["updated_at"],
        deadline_at=fields["deadline_at"],
        owner=fields["owner"],
        idempotency_key=fields.get("idempotency_key"),
        request_hash=fields.get("request_hash"),
        upstream_id=fields.get("upstream_id"),
        create_started=bool(fields.get("create_started")),
        cancel_requested=bool(fields.get("cancel_requested")),
        finished_at=fields.get("finished_at"),
        outcome=(
            None
            if outcome is None
            else Outcome(
                Status(outcome["status"]), int(outcome["code"]), outcome["message"], outcome["data"]
            )
        ),
        polls=int(fields.get("polls", 0)),
        retries=int(fields.get("retries", 0)),
        last_seq=int(fields["last_seq"]),
        logs=fields.get("logs") or [],
    )


def _matches(query: ListQuery, execution: Execution) -> bool:
    if query.status is not None and execution.status is not query.status:
        return False
    return query.project_id is None or execution.request.project_id == query.project_id
