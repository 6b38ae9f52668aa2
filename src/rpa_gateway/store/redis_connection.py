"""The Redis store's connection: the client (one server, or a cluster), every call's
commands bounded and their errors turned into StoreError, scripts run by their digest,
and the probes that say when Redis is back (reachable, writable)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
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

from rpa_gateway.store.base import StoreError

REDIS_ERRORS = (RedisError, RedisClusterException)
PAGE = 200  # items one round trip asks about, at most (ids, keys, index entries)
_PROBE_INTERVAL = 1.0
_WRITE_PROBE = 64 * 1024  # bytes a write probe asks Redis to hold (briefly)
# Off: with them on (redis-py's default for RESP3), the pool hands out connections that
# Redis closed (a restart) without checking them, and the next command fails.
_NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)


@functools.cache
def sha(script: str) -> str:
    """A script's digest for EVALSHA (the scripts are module constants)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


class Connection:
    """The client, shared by every part of the store, and what it knows of Redis's state."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        addresses: Sequence[tuple[str, int]],
        *,
        password: str | None,
        timeout: float,
        max_connections: int,
        write_probe: str,
    ) -> None:
        self.client = client
        # One server: a script may touch any key (indexes with the record, in one step).
        self.one_server = not isinstance(client, RedisCluster)
        self.addresses = list(addresses)
        self.password = password
        self.timeout = timeout
        self._permits = asyncio.Semaphore(max_connections)
        self._write_probe = write_probe  # the key a write probe writes
        # Why the last command failed, while Redis is known to be unreachable.
        self._unreachable: str | None = None
        # Why a write failed for want of memory; None once a write probe works.
        self._write_failure: str | None = None
        self._probed_at = 0.0

    async def connect(self) -> None:
        async with self.call("connect to Redis"):
            if isinstance(self.client, RedisCluster):
                await self.client.initialize()
            await self._ping()

    async def check(self) -> None:
        async with self.call("reach Redis"):
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
        async with self.call("reach Redis"):
            await self._ping()
        if self._write_failure is not None:
            async with self.call("write to Redis"):
                await self.client.set(self._write_probe, bytes(_WRITE_PROBE), px=1000)
                await self.client.delete(self._write_probe)
            self._write_failure = None

    async def _ping(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()

    async def script(
        self, what: str, script: str, keys: Sequence[str], args: Sequence[str | bytes]
    ) -> Any:
        """One script as a call of its own (redis_webhooks.ScriptCall)."""
        async with self.call(what):
            return await self.eval(script, keys, args)

    async def eval(self, script: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self.client.evalsha(sha(script), len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis has forgotten it; EVAL caches it again
            return await self.client.eval(script, len(keys), *keys, *args)

    @contextlib.asynccontextmanager
    async def call(self, what: str) -> AsyncIterator[None]:
        """One call's Redis commands: at most ``max_connections`` calls at a time (a
        cluster client fails rather than wait for a connection), Redis errors as
        StoreError."""
        try:
            async with asyncio.timeout(self.timeout):
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
        except REDIS_ERRORS as exc:
            message = f"cannot {what}: {self.describe(exc)}"
            if _unreachable(exc):
                self._unreachable = message
            elif _out_of_memory(exc):
                self._write_failure = message
            raise StoreError(message) from None
        self._unreachable = None

    def describe(self, exc: BaseException) -> str:
        """An error as logged and raised: never with the password."""
        text = f"{type(exc).__name__}: {exc}"
        if self.password:
            text = text.replace(self.password, "***")
        return text


def _out_of_memory(exc: BaseException) -> bool:
    """Redis at ``maxmemory`` with ``noeviction``: it refuses writes (scripts too)."""
    return isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM ")


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, MaxConnectionsError):  # busy, not gone
        return False
    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ClusterDownError | RedisClusterException
    )


def open_client(
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


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"not a host:port address: {text!r}")
    return host.strip("[]"), int(port)
