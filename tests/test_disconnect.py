"""A client that goes away neither stops nor loses its execution."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream
from tests.store_reader import event_kinds, wait_for_finished


def test_disconnect_after_first_event_still_finishes_and_is_recorded(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(
        pid,
        steps=[{"status": "PENDING"}] * 5
        + [{"status": "COMPLETED", "result": {"data": {"mail": "sent"}}}],
    )
    partial = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, stop_after_lines=1)
    assert partial.frames == []
    execution_id = partial.ids[0].rsplit(":", 1)[0]

    row = wait_for_finished(gateway.database, execution_id)
    assert (row["status"], row["code"], row["message"], row["data"]) == (
        "SUCCEEDED",
        0,
        "Success",
        '{"mail":"sent"}',
    )
    (run,) = fake.runs_for(pid)
    assert run.queries == 6, "the robot was watched to its end with nobody listening"
    assert fake.creates_for(pid) == 1
    kinds = event_kinds(gateway.database, execution_id)
    assert kinds.count("terminal") == 1 and kinds[-1] == "terminal"


def test_a_stream_whose_client_left_ends_at_once_while_its_execution_goes_on(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_PROMETHEUS_ENABLE="true")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, duration=0.1, gated=True)
    ids = []
    for _ in range(5):
        partial = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, stop_after_lines=1)
        ids.append(partial.ids[0].rsplit(":", 1)[0])
    deadline = time.monotonic() + 5
    while open_streams(gateway) != 0:
        assert time.monotonic() < deadline, "streams of departed clients are still open"
        time.sleep(0.05)
    assert active_executions(gateway) == 5, "their executions go on"
    fake.open_gate(pid)
    for execution_id in ids:
        assert wait_for_finished(gateway.database, execution_id)["code"] == 0


def open_streams(gateway: GatewayProcess) -> float:
    return _gauge(gateway, "rpa_open_streams")


def active_executions(gateway: GatewayProcess) -> float:
    return _gauge(gateway, "rpa_active_executions")


def _gauge(gateway: GatewayProcess, name: str) -> float:
    text = httpx.get(gateway.base_url + "/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_a_client_gone_in_the_middle_of_its_body_is_one_info_line(
    start_gateway: GatewayFactory,
) -> None:
    """Not an ERROR with a traceback: a client going away is ordinary."""
    gateway = start_gateway()
    pid = f"p-{uuid.uuid4().hex[:8]}"
    for path in ("/rpa/v1/executions", "/rpa/v1/exec"):
        sock = socket.create_connection(("127.0.0.1", gateway.port))
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t-secret\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            f'{{"project_id": "{pid}", '.encode()
        )
        time.sleep(0.2)  # the service is waiting for the rest of the body
        sock.close()
    wanted = "the client disconnected before its request body arrived whole"
    deadline = time.monotonic() + 10
    while gateway.log_text().count(wanted) < 2:
        assert time.monotonic() < deadline, gateway.log_text()[-3000:]
        time.sleep(0.05)
    lines = gateway.log_text().splitlines()
    assert [line.split()[2] for line in lines if wanted in line] == ["INFO", "INFO"]
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line], lines
