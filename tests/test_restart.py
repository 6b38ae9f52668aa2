"""Executions survive the process: SIGKILL and restart, or a graceful SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import FAST
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream

KEY = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"  # 32 bytes, URL-safe base64
RUNS = 50


def wait_until_all_running(database: Path, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            (running,) = db.execute(
                "SELECT count(*) FROM executions WHERE upstream_id IS NOT NULL"
                " AND finished_at IS NULL"
            ).fetchone()
        if running == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} executions did not reach the upstream in {timeout}s")


def start_runs(gateway: GatewayProcess, pid: str, token: str) -> list[str]:
    """Start RUNS executions; each client drops its stream after the first event id."""

    def one(i: int) -> str:
        body = {"project_id": pid, "sid": f"s{i}", "params": {"i": i}}
        return exec_stream(gateway.base_url, body, token=token, stop_after_lines=1).ids[0]

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(one, range(RUNS)))


def reconnect_all(
    gateway: GatewayProcess, pid: str, token: str, event_ids: list[str]
) -> list[dict]:
    def one(i: int) -> dict:
        body = {"project_id": pid, "sid": f"s{i}", "params": {"i": i}}
        return exec_stream(
            gateway.base_url, body, token=token, headers={"Last-Event-ID": event_ids[i]}, timeout=60
        ).terminal

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(one, range(RUNS)))


def kill_and_restart(
    tmp_path: Path, fake: FakeUpstream, pid: str, env: dict[str, str], token: str
) -> tuple[GatewayProcess, list[str]]:
    settings = {**FAST, **fake.env(), **env}
    first = GatewayProcess(settings, tmp_path).start()
    event_ids = start_runs(first, pid, token)
    wait_until_all_running(first.database, RUNS)
    first.stop(signal.SIGKILL)
    assert first.process is not None and first.process.returncode == -signal.SIGKILL
    return GatewayProcess(settings, tmp_path).start(), event_ids


def test_sigkill_with_sealed_tokens_resumes_on_its_own(tmp_path: Path, fake: FakeUpstream) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, gated=True)  # none may end before all have started, however slow the machine
    second, event_ids = kill_and_restart(tmp_path, fake, pid, {"RPA_TOKEN_KEY": KEY}, "tok-sealed")
    fake.open_gate(pid)
    try:
        # Nobody reconnects yet: the new process polls the runs to their end by itself.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(second.database) as db:
                (open_runs,) = db.execute(
                    "SELECT count(*) FROM executions WHERE finished_at IS NULL"
                ).fetchone()
            if open_runs == 0:
                break
            time.sleep(0.1)
        assert open_runs == 0
        terminals = reconnect_all(second, pid, "tok-sealed", event_ids)
    finally:
        second.stop()
    assert [t["code"] for t in terminals] == [0] * RUNS
    assert [t["data"]["echo"] for t in terminals] == [{"i": i} for i in range(RUNS)]
    assert [t["sid"] for t in terminals] == [f"s{i}" for i in range(RUNS)]
    assert fake.creates_for(pid) == RUNS
    with sqlite3.connect(second.database) as db:
        (sealed,) = db.execute(
            "SELECT count(*) FROM executions WHERE sealed_token IS NOT NULL"
        ).fetchone()
    assert sealed == 0, "sealed tokens are dropped once executions end"


def test_sigkill_without_key_resumes_when_owners_reconnect(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, gated=True)
    second, event_ids = kill_and_restart(tmp_path, fake, pid, {}, "tok-memory")
    fake.open_gate(pid)
    try:
        assert "50 wait for their owner's token" in second.log_text()
        terminals = reconnect_all(second, pid, "tok-memory", event_ids)
    finally:
        second.stop()
    assert [t["code"] for t in terminals] == [0] * RUNS
    assert [t["data"]["echo"] for t in terminals] == [{"i": i} for i in range(RUNS)]
    assert fake.creates_for(pid) == RUNS


def test_sigterm_tells_streams_to_reconnect_and_the_next_process_finishes(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, gated=True)
    # No drain: streams are told to reconnect at once (see test_drain.py for the drain).
    settings = {**FAST, **fake.env(), "RPA_TOKEN_KEY": KEY, "RPA_DRAIN_SECONDS": "0"}
    first = GatewayProcess(settings, tmp_path).start()
    body = {"project_id": pid, "sid": "s"}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(exec_stream, first.base_url, body)
        wait_until_all_running(first.database, 1)
        first.stop(signal.SIGTERM)
        interrupted = pending.result(timeout=20)
    # uvicorn re-raises the signal after its graceful shutdown, as a SIGTERMed process should.
    assert first.process is not None and first.process.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in first.log_text()
    assert any(line.startswith("retry:") for line in interrupted.lines)
    frame = interrupted.terminal
    assert frame["code"] == 55005, "a caller that cannot resume fails loudly, not silently"
    resume_id = interrupted.ids[-1]
    assert resume_id in frame["message"]

    second = GatewayProcess(settings, tmp_path).start()
    fake.open_gate(pid)
    try:
        resumed = exec_stream(second.base_url, body, headers={"Last-Event-ID": resume_id})
    finally:
        second.stop()
    assert resumed.terminal["code"] == 0
    assert fake.creates_for(pid) == 1


def test_cancelling_an_execution_that_waits_for_its_owner(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, duration=60)
    settings = {**FAST, **fake.env()}  # no RPA_TOKEN_KEY: tokens live in memory only
    first = GatewayProcess(settings, tmp_path).start()
    event_id = exec_stream(
        first.base_url, {"project_id": pid}, token="owner", stop_after_lines=1
    ).ids[0]
    wait_until_all_running(first.database, 1)
    first.stop(signal.SIGKILL)
    second = GatewayProcess(settings, tmp_path).start()
    try:
        execution_id = event_id.rsplit(":", 1)[0]
        cancelled = httpx.post(
            f"{second.base_url}/rpa/v1/executions/{execution_id}/cancel",
            headers={"Authorization": "owner"},
            timeout=20,
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["result"]["code"] == 55004
        resumed = exec_stream(
            second.base_url, {"project_id": pid}, token="owner", headers={"Last-Event-ID": event_id}
        )
    finally:
        second.stop()
    assert resumed.terminal["code"] == 55004
    assert fake.cancels.count(fake.runs_for(pid)[0].id) == 1
