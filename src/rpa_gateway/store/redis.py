"""The Redis store: executions and live events shared by every process of the service.

RedisStore is the executions' writes (redis_executions) with the rest composed in, each
part in its module and sharing one connection (redis_connection):

    redis_keys        the key and channel names, and the key layout
    redis_scripts     the Lua scripts (one step on one execution's keys)
    redis_codec       executions and events to and from what Redis holds
    redis_reads       records, events, tokens, the indexes' listings
    redis_leases      leases (claim, renew, release), announcements, claimable
    redis_live        pub/sub: live events, notices, changes for feeds
    redis_mcp         MCP sessions, messages between processes
    redis_webhooks    webhook endpoints and deliveries (``webhooks``)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from rpa_gateway.executions import Event, Execution
from rpa_gateway.store.base import (
    ListQuery,
    McpSession,
    NoticeListener,
    Renewal,
    Subscription,
)
from rpa_gateway.store.hub import ChangeSubscription, Listener, MessageSubscription
from rpa_gateway.store.redis_codec import as_text
from rpa_gateway.store.redis_connection import Connection, address, open_client
from rpa_gateway.store.redis_executions import RedisExecutions
from rpa_gateway.store.redis_keys import Keys
from rpa_gateway.store.redis_leases import Leases
from rpa_gateway.store.redis_live import Fanout, LiveEvents
from rpa_gateway.store.redis_mcp import RedisMcp
from rpa_gateway.store.redis_webhooks import RedisWebhooks
from rpa_gateway.webhooks.store import WebhookStore


class RedisStore(RedisExecutions):
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
        keys = Keys(prefix)
        connection = Connection(
            client,
            addresses,
            password=password,
            timeout=timeout,
            max_connections=max_connections,
            write_probe=keys.write_probe,
        )
        origin = uuid.uuid4().hex  # tells this store's messages from other processes'
        hub = Fanout()
        super().__init__(
            connection,
            keys,
            hub,
            origin=origin,
            holder=holder,
            retention_seconds=retention_seconds,
        )
        self.webhooks: WebhookStore = RedisWebhooks(connection.script, prefix)
        self._live = LiveEvents(connection, keys, hub, origin)
        self._leases = Leases(connection, keys, self._unfinished_of)
        self._mcp = RedisMcp(connection, keys, hub, origin, self._live)

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
        process's lease holder id, which fences its writes (see ``RedisExecutions``).
        """
        if (addr is None) == (not cluster_seeds):
            raise ValueError("give exactly one of addr and cluster_seeds")
        addresses = (
            [address(addr)] if addr is not None else [address(s) for s in cluster_seeds or ()]
        )
        client = open_client(addresses, addr is None, password, socket_timeout, max_connections)
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
        await self._redis.connect()
        await self._live.start()

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
        async with self._redis.call(what):
            found = await self._client.set(key, value, nx=True, get=True)
        return value if found is None else as_text(found)

    def followed(self) -> list[str]:
        return self._hub.followed()

    def end_lost(self, execution_id: str) -> None:
        self._hub.end_lost(execution_id)

    # --- reads (redis_reads) ----------------------------------------------------
    async def get(self, execution_id: str) -> Execution | None:
        return await self._reads.get(execution_id)

    async def find_idempotent(self, owner: str, key: str) -> Execution | None:
        return await self._reads.find_idempotent(owner, key)

    async def sealed_token(self, execution_id: str) -> bytes | None:
        return await self._reads.sealed_token(execution_id)

    async def stored_bytes(self, owner: str) -> int:
        return await self._reads.stored_bytes(owner)

    async def events_after(self, execution_id: str, seq: int) -> list[Event]:
        return await self._reads.events_after(execution_id, seq)

    async def list_executions(self, query: ListQuery) -> list[Execution]:
        return await self._reads.list_executions(query)

    # --- notification (redis_live) ----------------------------------------------
    def subscribe(
        self, execution_id: str, *, written_here: bool = False
    ) -> AbstractAsyncContextManager[Subscription]:
        return self._live.subscribe(execution_id, written_here)

    def subscribe_changes(
        self, owner: str | None
    ) -> AbstractAsyncContextManager[ChangeSubscription]:
        return self._live.subscribe_changes(owner)

    def written_elsewhere(self, execution_id: str) -> None:
        self._live.written_elsewhere(execution_id)

    async def publish_only(self, event: Event, execution: Execution) -> None:
        await self._live.publish_only(event, execution)

    def drain(self) -> None:
        self._hub.drain()

    def add_listener(self, listener: Listener) -> None:
        """Called for the events this process writes (not those of other processes)."""
        self._hub.add_listener(listener)

    async def notify(self, topic: str, execution_id: str) -> None:
        await self._live.notify(topic, execution_id)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self._live.add_notice_listener(listener)

    # --- supervision (redis_leases) ---------------------------------------------
    async def claim(self, execution_id: str, holder: str, ttl: float) -> bool:
        return await self._leases.claim(execution_id, holder, ttl)

    async def renew(self, holder: str, execution_ids: Sequence[str], ttl: float) -> Renewal:
        return await self._leases.renew(holder, execution_ids, ttl)

    async def request_cancel(self, execution_id: str) -> None:
        await self._leases.request_cancel(execution_id)

    async def release(self, holder: str, execution_ids: Sequence[str]) -> None:
        await self._leases.release(holder, execution_ids)

    async def announce(self, holder: str, ttl: float) -> list[str]:
        return await self._leases.announce(holder, ttl)

    async def retire(self, holder: str) -> None:
        await self._leases.retire(holder)

    async def claimable(self, limit: int) -> list[Execution]:
        return await self._leases.claimable(limit)

    # --- run durations ------------------------------------------------------------
    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None:
        async with self._redis.call("store run durations"):
            pipe = self._client.pipeline(transaction=False)
            for model, durations in added.items():
                key = self._keys.durations(model)
                pipe.rpush(key, *(repr(float(seconds)) for seconds in durations))
                pipe.ltrim(key, -keep, -1)
            await pipe.execute()

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]:
        if not keys:
            return {}
        async with self._redis.call("read run durations"):
            pipe = self._client.pipeline(transaction=False)
            for model in keys:
                pipe.lrange(self._keys.durations(model), -keep, -1)
            lists = await pipe.execute()
        return {m: [float(v) for v in found] for m, found in zip(keys, lists, strict=True) if found}

    # --- MCP sessions, and messages between processes (redis_mcp) -------------------------
    async def put_mcp_session(self, session: McpSession) -> None:
        await self._mcp.put_session(session)

    async def update_mcp_session(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        expires_at: float | None = None,
    ) -> bool:
        return await self._mcp.update_session(session_id, protocol_version, expires_at)

    async def mcp_session(self, session_id: str) -> McpSession | None:
        return await self._mcp.session(session_id)

    async def end_mcp_session(self, session_id: str) -> bool:
        return await self._mcp.end_session(session_id)

    async def purge_mcp_sessions(self, now: float) -> int:
        return 0  # each expires with its key

    async def send_message(self, channel: str, message: str) -> None:
        await self._mcp.send_message(channel, message)

    def subscribe_messages(self, channel: str) -> AbstractAsyncContextManager[MessageSubscription]:
        return self._mcp.subscribe_messages(channel)

    # --- lifecycle (redis_connection) ---------------------------------------------
    async def check(self) -> None:
        await self._redis.check()

    async def writable(self) -> None:
        await self._redis.writable()

    async def close(self) -> None:
        await self._live.close()
        await self._redis.close()
