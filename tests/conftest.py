from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rpa_gateway.security import new_key
from tests import gateway_process
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.redis_servers import (
    RedisClusterNodes,
    RedisServer,
    cluster_servers,
    standalone_server,
)
from tests.stores import PASSWORD, Stores

# Short intervals so every scenario finishes in well under a second of polling.
FAST = {
    "XIAOWU_RPA_PING_INTERVAL": "0.2",
    "XIAOWU_RPA_TASK_QUERY_INTERVAL": "0.2",
    "XIAOWU_RPA_TIMEOUT": "30",
    "RPA_POLL_FIRST_DELAY": "0.02",
    "RPA_RETRY_BASE_DELAY": "0.02",
    "RPA_QUERY_MAX_FAILURES": "3",
    "RPA_UPSTREAM_READ_TIMEOUT": "0.5",
    "LOG_LEVEL": "DEBUG",
}


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path, fake: FakeUpstream) -> Iterator[GatewayFactory]:
    started: list[GatewayProcess] = []

    def start(upstream: bool = True, **env: str) -> GatewayProcess:
        settings = {**FAST, **(fake.env() if upstream else {}), **env}
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(settings, workdir).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


# The API suites that run on both stores say so:  pytestmark = ON_BOTH_STORES
ON_BOTH_STORES = pytest.mark.parametrize(
    "store_kind", ["sqlite", "redis"], indirect=True, scope="module"
)


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store behind the module's shared gateway: SQLite unless the module runs its tests
    on both (ON_BOTH_STORES)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream, store_kind: str
) -> Iterator[GatewayProcess]:
    """One gateway with fast settings, shared by a module's tests, on SQLite or on a
    ``redis-server`` of its own."""
    workdir = tmp_path_factory.mktemp(f"gateway-{store_kind}")
    env = {**FAST, **fake.env()}
    redis: RedisServer | None = None
    if store_kind == "redis":
        (workdir / "redis").mkdir()
        redis = RedisServer(workdir / "redis").start()
        env |= {"REDIS_ADDR": redis.addr, "RPA_TOKEN_KEY": new_key()}
    process = GatewayProcess(env, workdir).start()
    yield process
    process.stop()
    if redis is not None:
        redis.stop()


@pytest.fixture(autouse=True)
def no_gateway_left_running() -> Iterator[None]:
    """Servers a test started by hand are stopped after it, even when it failed."""
    before = set(gateway_process.running)
    yield
    for gateway in gateway_process.running - before:
        gateway.stop()


# --- stores of every kind (tests/stores.py), for the store suites ---------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with standalone_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    with cluster_servers(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def _stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    if request.param == "redis":
        return Stores(tmp_path, server=request.getfixturevalue("redis_server"))
    if request.param == "cluster":
        return Stores(tmp_path, cluster=request.getfixturevalue("redis_cluster"))
    return Stores(tmp_path)


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return _stores(request, tmp_path)


@pytest.fixture(params=["redis", "cluster"])
def shared_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """Stores that several processes share (Redis)."""
    return _stores(request, tmp_path)
