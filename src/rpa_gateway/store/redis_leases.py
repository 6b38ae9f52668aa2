"""The Redis store's leases: which process supervises which execution (claimed, renewed,
released; a write of a process past its lease is fenced off by the scripts), the
processes' announcements, and the unfinished executions nobody holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from rpa_gateway.executions import Execution
from rpa_gateway.store.base import Renewal
from rpa_gateway.store.redis_codec import as_text, decoded, ms
from rpa_gateway.store.redis_connection import PAGE, Connection, sha
from rpa_gateway.store.redis_keys import Keys
from rpa_gateway.store.redis_scripts import ANNOUNCE, CLAIM, RELEASE, RENEW, REQUEST_CANCEL

# Of some (id, created_at) entries of the unfinished index, the executions still
# unfinished, and the entries to drop (RedisExecutions._unfinished_of).
Sweep = Callable[[Sequence[tuple[str, float]]], Awaitable[tuple[list[Execution], list[str]]]]


class Leases:
    def __init__(self, connection: Connection, keys: Keys, sweep: Sweep) -> None:
        self._redis = connection
        self._client = connection.client
        self._keys = keys
        self._sweep = sweep

    async def claim(self, execution_id: str, holder: str, ttl: float) -> bool:
        async with self._redis.call("claim execution"):
            taken = await self._redis.eval(
                CLAIM, [self._keys.lease(execution_id)], [holder, ms(ttl)]
            )
        return bool(taken)

    async def renew(self, holder: str, execution_ids: Sequence[str], ttl: float) -> Renewal:
        args = [holder, ms(ttl)]
        codes: list[Any] = []
        if not self._redis.one_server:  # each execution in its own slot: a script apiece
            async with self._redis.call("renew leases"):
                for found in await self._eval_each(RENEW, execution_ids, args, with_record=True):
                    codes += found
        else:
            for start in range(0, len(execution_ids), PAGE):
                keys = []
                for execution_id in execution_ids[start : start + PAGE]:
                    keys += [self._keys.lease(execution_id), self._keys.record(execution_id)]
                async with self._redis.call("renew leases"):
                    codes += await self._redis.eval(RENEW, keys, args)
        renewal = Renewal([], [])
        for execution_id, code in zip(execution_ids, codes, strict=True):
            if int(code) == 0:
                renewal.lost.append(execution_id)
            elif int(code) == 2:
                renewal.cancel_requested.append(execution_id)
        return renewal

    async def request_cancel(self, execution_id: str) -> None:
        async with self._redis.call("request a cancel"):
            await self._redis.eval(REQUEST_CANCEL, [self._keys.record(execution_id)], [])

    async def release(self, holder: str, execution_ids: Sequence[str]) -> None:
        async with self._redis.call("release leases"):
            await self._eval_each(RELEASE, execution_ids, [holder])

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
                    pipe.evalsha(sha(script), len(keys), *keys, *args)
                else:
                    pipe.eval(script, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                continue
        raise AssertionError("unreachable")

    async def announce(self, holder: str, ttl: float) -> list[str]:
        async with self._redis.call("announce this process"):
            gone = await self._redis.eval(ANNOUNCE, [self._keys.holders], [holder, ms(ttl)])
        return [as_text(h) for h in gone]

    async def retire(self, holder: str) -> None:
        async with self._redis.call("retire this process"):
            await self._client.hdel(self._keys.holders, holder)

    async def claimable(self, limit: int) -> list[Execution]:
        found: list[Execution] = []
        stale: list[str] = []
        offset = 0
        async with self._redis.call("read executions"):
            while len(found) < limit:
                rows = decoded(
                    await self._client.zrange(
                        self._keys.unfinished, offset, offset + PAGE - 1, withscores=True
                    )
                )
                pipe = self._client.pipeline(transaction=False)
                for execution_id, _ in rows:
                    pipe.exists(self._keys.lease(execution_id))
                leased = await pipe.execute() if rows else []
                free = [row for row, held in zip(rows, leased, strict=True) if not held]
                unfinished, dropped = await self._sweep(free)
                found += unfinished[: limit - len(found)]
                stale += dropped
                if len(rows) < PAGE:
                    break
                offset += len(rows)
            if stale:
                await self._client.zrem(self._keys.unfinished, *stale)
        return found
