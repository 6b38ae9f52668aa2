"""A restart no caller notices: on SIGTERM open streams finish before the process exits.

The callers here read the stream as astron-agent's node does (tests/astron_node.py):
it cannot resume, so a stream cut by a restart would fail its workflow step.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.astron_node import NodeFailed, node_call, run_node
from tests.conftest import FAST
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.test_restart import wait_until_all_running

STREAMS = 30
REPO = Path(__file__).resolve().parent.parent

# What each node call ended with: its outputs or its failure message, and when.
Ended = tuple[str | dict[str, object], float]


def _gateway(tmp_path: Path, fake: FakeUpstream, **env: str) -> GatewayProcess:
    return GatewayProcess({**FAST, **fake.env(), **env}, tmp_path).start()


def _node_streams(gateway: GatewayProcess, pid: str, count: int) -> Future[list[Ended]]:
    """``count`` node calls at once; each ends as (outputs or failure message, when)."""

    async def one(i: int) -> Ended:
        body = {"project_id": pid, "sid": f"wf-{i}", "params": {"i": i}}
        try:
            outputs: str | dict[str, object] = await run_node(gateway.base_url, "tok", body)
        except NodeFailed as failure:
            outputs = str(failure)
        return outputs, time.monotonic()

    async def all_of_them() -> list[Ended]:
        return await asyncio.gather(*(one(i) for i in range(count)))

    pool = ThreadPoolExecutor(1)
    future = pool.submit(asyncio.run, all_of_them())
    pool.shutdown(wait=False)
    return future


def _running(
    gateway: GatewayProcess, fake: FakeUpstream, duration: float
) -> tuple[str, Future[list[Ended]]]:
    pid = new_project_id()
    fake.script(pid, duration=duration)
    streams = _node_streams(gateway, pid, STREAMS)
    wait_until_all_running(gateway.database, STREAMS)
    return pid, streams


def _exit_time(gateway: GatewayProcess, timeout: float = 60) -> Future[float]:
    """When the process exits, watched from now on."""

    def wait() -> float:
        assert gateway.process is not None
        gateway.process.wait(timeout)
        return time.monotonic()

    pool = ThreadPoolExecutor(1)
    future = pool.submit(wait)
    pool.shutdown(wait=False)
    return future


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_sigterm_lets_open_streams_finish_then_exits(tmp_path: Path, fake: FakeUpstream) -> None:
    # RPA_DRAIN_SECONDS unset: the default, long enough for any run under XIAOWU_RPA_TIMEOUT.
    gateway = _gateway(tmp_path, fake, RPA_DRAIN_SECONDS="")
    pid, streams = _running(gateway, fake, duration=5)
    assert gateway.process is not None
    signalled = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    exit_watch = _exit_time(gateway)

    # Draining: not ready, and new work is refused in a way the node sees.
    _wait_for(lambda: httpx.get(gateway.base_url + "/rpa/v1/ready").status_code == 503)
    with pytest.raises(NodeFailed, match="Service unavailable: the service is restarting"):
        node_call(gateway.base_url, "tok", {"project_id": pid, "sid": "late"})
    native = httpx.post(
        gateway.base_url + "/rpa/v1/executions",
        json={"project_id": pid},
        headers={"Authorization": "tok"},
    )
    assert native.status_code == 503 and native.headers["retry-after"] == "1"

    results = streams.result(timeout=60)
    exited = exit_watch.result(timeout=60)
    assert [outputs["params"] for outputs, _ in results] == [  # type: ignore[index]
        {"i": i} for i in range(STREAMS)
    ], "every workflow step gets its own run's outputs"
    assert exited >= max(at for _, at in results), "the process outlives its streams"
    assert exited - signalled < 30, "and exits once they are done, not at the drain deadline"
    assert gateway.process.returncode == -signal.SIGTERM
    assert fake.creates_for(pid) == STREAMS


def test_streams_open_at_the_drain_deadline_are_told_to_reconnect(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    gateway = _gateway(tmp_path, fake, RPA_DRAIN_SECONDS="1")
    pid, streams = _running(gateway, fake, duration=30)
    assert gateway.process is not None
    signalled = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    exit_watch = _exit_time(gateway)
    results = streams.result(timeout=30)
    exited = exit_watch.result(timeout=30)
    for outputs, at in results:
        assert isinstance(outputs, str) and "reconnect with Last-Event-ID" in outputs
        assert 0.9 <= at - signalled < 5, "released at the 1 s deadline, not before, not much after"
    assert exited - signalled < 10
    assert fake.creates_for(pid) == STREAMS


def test_a_second_sigterm_cuts_the_drain_short(tmp_path: Path, fake: FakeUpstream) -> None:
    gateway = _gateway(tmp_path, fake, RPA_DRAIN_SECONDS="60")
    _, streams = _running(gateway, fake, duration=30)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    first = time.monotonic()
    _wait_for(lambda: httpx.get(gateway.base_url + "/rpa/v1/ready").status_code == 503)
    # A repeat within 2 s is the same request to stop (see the make run test below); a
    # deliberate one later is not.
    time.sleep(max(0.0, first + 2.5 - time.monotonic()))
    cut = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    results = streams.result(timeout=30)
    assert all("reconnect with Last-Event-ID" in str(outputs) for outputs, _ in results)
    assert max(at for _, at in results) - cut < 5
    assert _exit_time(gateway).result(timeout=30) - cut < 10


def test_a_group_signal_to_make_run_lets_open_streams_finish(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """As an init system stops a service started with ``make run``: SIGTERM to the whole
    process group.  make forwards its own SIGTERM to the service, which so receives it two
    or three times within milliseconds: still one request to stop, and the streams finish.

    On an idle machine the kernel often merges signals that arrive before the first is
    handled; on a busy one it does not.  So they are made to arrive apart here: first to
    the service alone, then, once it drains, to the group (the service gets it again,
    and make forwards it once more)."""
    gateway = GatewayProcess({**FAST, **fake.env(), "RPA_DRAIN_SECONDS": "60"}, tmp_path)
    gateway.command = ["make", "--no-print-directory", "-C", str(REPO), "run"]
    gateway.new_session = True
    gateway.start(timeout=120)
    assert gateway.process is not None
    make = gateway.process.pid
    (service,) = Path(f"/proc/{make}/task/{make}/children").read_text().split()
    pid, streams = _running(gateway, fake, duration=3)
    os.kill(int(service), signal.SIGTERM)
    _wait_for(lambda: httpx.get(gateway.base_url + "/rpa/v1/ready").status_code == 503)
    os.killpg(make, signal.SIGTERM)
    results = streams.result(timeout=60)
    assert [o if isinstance(o, str) else o["params"] for o, _ in results] == [
        {"i": i} for i in range(STREAMS)
    ]
    gateway.process.wait(30)
    log = gateway.log_text()
    assert "again within 2 s of the first: the same request to stop" in log, log[-3000:]
    assert fake.creates_for(pid) == STREAMS


def test_a_local_run_s_reconnect_frame_says_the_run_stops_with_the_service(
    tmp_path: Path,
) -> None:
    projects = Path(__file__).resolve().parent.parent / "projects"
    env = {
        **FAST,
        "RPA_BACKEND": "local",
        "RPA_PROJECTS_DIR": str(projects),
        "RPA_DRAIN_SECONDS": "1",
        "RPA_LOCAL_KILL_GRACE": "0.5",
    }
    gateway = GatewayProcess(env, tmp_path).start()
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(
            node_call,
            gateway.base_url,
            "drain-key",
            {"project_id": "countdown", "params": {"seconds": 30}},
        )
        wait_until_all_running(gateway.database, 1)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        with pytest.raises(NodeFailed) as ended:
            stream.result(timeout=30)
    message = str(ended.value)
    assert "55005" in message or "Service restarting" in message, message
    assert "this run stops with it" in message and "goes on" not in message
    _exit_time(gateway).result(timeout=30)
