"""The deadline ends an execution with 55003 and cancels the upstream run when it can."""

from __future__ import annotations

import queue
import threading
import uuid

from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream
from tests.sse_client import StreamResult, exec_stream


def test_deadline_gives_timeout_and_cancels_upstream(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(XIAOWU_RPA_TIMEOUT="1")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "RUNNING"}])
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal == {"code": 55003, "message": "Timeout error", "sid": "s", "data": None}
    (run,) = fake.runs_for(pid)
    assert fake.cancels.count(run.id) == 1
    assert run.cancelled


def test_deadline_without_cancel_url_still_times_out(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(XIAOWU_RPA_TIMEOUT="1", XIAOWU_RPA_TASK_CANCEL_URL="")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "PENDING"}])
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55003
    (run,) = fake.runs_for(pid)
    assert run.id not in fake.cancels


def test_deadline_during_a_hanging_create_is_a_timeout(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(XIAOWU_RPA_TIMEOUT="1", RPA_UPSTREAM_READ_TIMEOUT="10")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, create={"fault": "slow", "seconds": 3})
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 55003
    assert fake.creates_for(pid) == 1


def test_deadline_during_a_hanging_status_query_is_a_timeout(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(XIAOWU_RPA_TIMEOUT="2", RPA_UPSTREAM_READ_TIMEOUT="30")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"fault": "slow", "seconds": 12}])
    results: queue.Queue[StreamResult] = queue.Queue()
    threading.Thread(  # pings would keep a stream that never ends open for ever
        target=lambda: results.put(exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})),
        daemon=True,
    ).start()
    try:
        result = results.get(timeout=8)
    except queue.Empty:
        raise AssertionError("the deadline (2 s) did not end a query hanging for 12 s") from None
    assert result.terminal["code"] == 55003
    (run,) = fake.runs_for(pid)
    assert run.queries >= 1
