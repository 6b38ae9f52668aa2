from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import gateway_process
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess

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


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream
) -> Iterator[GatewayProcess]:
    """One gateway with fast settings, shared by a module's tests."""
    process = GatewayProcess({**FAST, **fake.env()}, tmp_path_factory.mktemp("gateway")).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_gateway_left_running() -> Iterator[None]:
    """Servers a test started by hand are stopped after it, even when it failed."""
    before = set(gateway_process.running)
    yield
    for gateway in gateway_process.running - before:
        gateway.stop()
