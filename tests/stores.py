"""Stores of every kind for the store suites: SQLite (a file in a tmp dir), Redis on a
standalone server, and Redis on a three-master cluster, opened inside a test's event loop.
The servers live for the session (see conftest.py); every test has its own key prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rpa_gateway.store.base import Store
from rpa_gateway.store.redis import RedisStore
from rpa_gateway.store.sqlite import SqliteStore
from tests.redis_servers import RedisClusterNodes, RedisServer

PASSWORD = "s3cret-pw"  # the standalone server asks for it: every test authenticates
SCENARIO_TIMEOUT = 20.0  # a store that hangs fails its test instead of the suite

Scenario = Callable[..., Awaitable[None]]


class Stores:
    """Opens stores of one kind, inside the test's event loop, all on the same data."""

    def __init__(
        self,
        tmp_path: Path,
        server: RedisServer | None = None,
        cluster: RedisClusterNodes | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.cluster = cluster
        self.prefix = f"t{uuid.uuid4().hex[:12]}"

    async def open(self, *, retention_seconds: float = 3600.0, holder: str = "") -> Store:
        if self.server is not None:
            return await RedisStore.connect(
                self.server.addr,
                password=PASSWORD,
                prefix=self.prefix,
                retention_seconds=retention_seconds,
                holder=holder,
            )
        if self.cluster is not None:
            return await RedisStore.connect(
                cluster_seeds=self.cluster.seeds,
                prefix=self.prefix,
                retention_seconds=retention_seconds,
                holder=holder,
            )
        return SqliteStore(self.tmp_path / "store.db")

    def run(self, scenario: Scenario, *, instances: int = 1, **options: Any) -> None:
        """``scenario(store, ...)`` with ``instances`` stores, as many processes would."""

        async def main() -> None:
            stores: list[Store] = []
            try:
                for _ in range(instances):
                    stores.append(await self.open(**options))
                async with asyncio.timeout(SCENARIO_TIMEOUT):
                    await scenario(*stores)
            finally:
                for store in stores:
                    await store.close()

        asyncio.run(main())

    def kill_pubsub(self) -> None:
        """Drop every pub/sub connection, as a network blip or a failover does.

        A synchronous client on purpose: the stores' event loop does not run until every
        connection is gone, so no store can reconnect in between."""
        nodes = self.cluster.nodes if self.cluster is not None else [self.server]
        for node in nodes:
            assert node is not None
            client = node.client()
            try:
                client.client_kill_filter(_type="pubsub")
            finally:
                client.close()
