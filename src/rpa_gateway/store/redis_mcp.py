"""The Redis store's MCP sessions, and the messages between processes (an MCP session's
cancels reach the process running its call).

A session's expiry is its key's: extended or changed only while the key exists, so a
session ended meanwhile (by any process) never comes back.  Messages go over pub/sub
(redis_live), listened to while a subscription here follows their channel.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rpa_gateway.store.base import McpSession
from rpa_gateway.store.hub import Hub, MessageSubscription
from rpa_gateway.store.redis_codec import dumps, epoch_ms
from rpa_gateway.store.redis_connection import Connection
from rpa_gateway.store.redis_keys import Keys
from rpa_gateway.store.redis_live import LiveEvents


class RedisMcp:
    def __init__(
        self, connection: Connection, keys: Keys, hub: Hub, origin: str, live: LiveEvents
    ) -> None:
        self._redis = connection
        self._client = connection.client
        self._keys = keys
        self._hub = hub
        self._origin = origin
        self._live = live

    async def put_session(self, session: McpSession) -> None:
        value = dumps(
            {"owner": session.owner, "v": session.protocol_version, "t": session.transport}
        )
        async with self._redis.call("store an MCP session"):
            await self._client.set(
                self._keys.mcp_session(session.id), value, pxat=epoch_ms(session.expires_at)
            )

    async def update_session(
        self, session_id: str, protocol_version: str | None, expires_at: float | None
    ) -> bool:
        key = self._keys.mcp_session(session_id)
        async with self._redis.call("update an MCP session"):
            if protocol_version is not None:
                stored = await self._client.get(key)
                if stored is None:
                    return False
                record = {**json.loads(stored), "v": protocol_version}
                if not await self._client.set(key, dumps(record), xx=True, keepttl=True):
                    return False
            if expires_at is not None:
                return bool(await self._client.pexpireat(key, epoch_ms(expires_at)))
        return True

    async def session(self, session_id: str) -> McpSession | None:
        key = self._keys.mcp_session(session_id)
        async with self._redis.call("read an MCP session"):
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

    async def end_session(self, session_id: str) -> bool:
        async with self._redis.call("end an MCP session"):
            return bool(await self._client.delete(self._keys.mcp_session(session_id)))

    async def send_message(self, channel: str, message: str) -> None:
        """Subscribers here get it at once, others' over pub/sub (StoreError when Redis
        cannot take it)."""
        self._hub.deliver_message(channel, message)
        wrapped = dumps({"o": self._origin, "m": message})
        async with self._redis.call("send a message"):
            await self._client.publish(self._keys.messages(channel), wrapped)

    @asynccontextmanager
    async def subscribe_messages(self, channel: str) -> AsyncIterator[MessageSubscription]:
        try:
            async with self._hub.subscribe_messages(channel) as subscription:
                await self._live.watch(self._keys.messages(channel))
                yield subscription
        finally:
            if not self._hub.follows_messages(channel):
                self._live.unwatch(self._keys.messages(channel))
