"""The HTTP contract of /rpa/v1/exec: input handling, headers, pings, sid, forwarding."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ON_BOTH_STORES
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream

pytestmark = ON_BOTH_STORES


def test_stream_headers_are_proxy_safe(gateway: GatewayProcess) -> None:
    result = exec_stream(gateway.base_url, {"project_id": new_project_id(), "sid": "s"})
    headers = result.headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert len(headers.get_list("date")) == 1
    assert len(headers.get_list("transfer-encoding")) <= 1


def test_pings_are_comments_while_the_robot_works(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    # The poll ceiling is 0.2 s in tests, so ~12 PENDING replies last over 2 s,
    # several ping intervals (0.2 s): every quiet interval must carry a ping.
    fake.script(
        pid, steps=[{"status": "PENDING"}] * 12 + [{"status": "COMPLETED", "result": {"data": {}}}]
    )
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    assert result.terminal["code"] == 0
    assert result.pings >= 3
    assert all(line == ": ping" for line in result.lines if line.startswith(":"))


@pytest.mark.parametrize("authorization", ["Bearer tok-123", "tok-123", "bearer   tok-123"])
def test_authorization_with_or_without_bearer_is_forwarded_as_bearer(
    gateway: GatewayProcess, fake: FakeUpstream, authorization: str
) -> None:
    pid = new_project_id()
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, token=authorization)
    assert result.terminal["code"] == 0
    (run,) = fake.runs_for(pid)
    assert run.token == "tok-123"


def test_body_fields_are_forwarded_and_unknown_ones_ignored(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    body = {
        "project_id": pid,
        "sid": "s",
        "params": {"city": "Hefei"},
        "exec_position": "EXECUTOR",
        "version": 3,
        "phone_number": "123",
        "brand_new_field": {"x": 1},
    }
    result = exec_stream(gateway.base_url, body)
    assert result.terminal["code"] == 0
    (create,) = [c["body"] for c in fake.creates if c["body"]["project_id"] == pid]
    assert create == {
        "project_id": pid,
        "params": {"city": "Hefei"},
        "exec_position": "EXECUTOR",
        "version": 3,
        "phone_number": "123",
    }


def test_optional_fields_are_sent_only_when_given(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()  # as the reference plugin: version and phone_number only when set
    assert exec_stream(gateway.base_url, {"project_id": pid}).terminal["code"] == 0
    (create,) = [c["body"] for c in fake.creates if c["body"]["project_id"] == pid]
    assert create == {"project_id": pid, "params": {}, "exec_position": "EXECUTOR"}


def test_sid_is_generated_when_absent(gateway: GatewayProcess) -> None:
    first = exec_stream(gateway.base_url, {"project_id": new_project_id()})
    second = exec_stream(gateway.base_url, {"project_id": new_project_id()})
    assert first.terminal["sid"] and second.terminal["sid"]
    assert first.terminal["sid"] != second.terminal["sid"]


def test_same_sid_twice_runs_twice(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = new_project_id()
    for value in (1, 2):
        result = exec_stream(
            gateway.base_url, {"project_id": pid, "sid": "loop", "params": {"i": value}}
        )
        assert result.terminal["data"] == {"echo": {"i": value}}
    assert fake.creates_for(pid) == 2


@pytest.mark.parametrize("token", [None, "", "Bearer"])
def test_missing_authorization_is_401(
    gateway: GatewayProcess, fake: FakeUpstream, token: str | None
) -> None:
    before = len(fake.creates)
    result = exec_stream(gateway.base_url, {"project_id": new_project_id()}, token=token)
    assert result.status_code == 401
    assert result.terminal["code"] == 55001
    assert "Authorization" in result.terminal["message"]
    assert len(fake.creates) == before


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b'{"sid": "s"}', 422, "project_id"),
        (b'{"project_id": ""}', 422, "project_id"),
        (b'{"project_id": "   "}', 422, "project_id"),
        (b'{"project_id": 7}', 422, "project_id"),
        (b'{"project_id": "p", "params": [1, 2]}', 422, "params"),
        (b'{"project_id": "p", "params": "x=1"}', 422, "params"),
        (b'{"project_id": "p", "version": "latest"}', 422, "version"),
        (b'["project_id"]', 422, None),
        (b'{"project_id": ', 400, None),
        (b"", 400, None),
        (b"project_id=p", 400, None),
    ],
)
def test_bad_body_is_a_clear_4xx(
    gateway: GatewayProcess, fake: FakeUpstream, content: bytes, status: int, field: str | None
) -> None:
    before = len(fake.creates)
    result = exec_stream(gateway.base_url, None, content=content)
    assert result.status_code == status
    frame = result.terminal
    assert frame["code"] == 55001 and frame["error"] and frame["message"]
    if field is not None:
        assert field in frame["fields"]
        assert field in frame["message"]
    assert "Traceback" not in frame["message"]
    assert len(fake.creates) == before


def test_oversized_body_is_413(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    before = len(fake.creates)
    big = {"project_id": "p", "params": {"blob": "x" * (2 * 1024 * 1024)}}
    result = exec_stream(gateway.base_url, big)
    assert result.status_code == 413
    assert "larger than" in result.terminal["message"]
    assert len(fake.creates) == before


def test_oversized_chunked_body_is_413(gateway: GatewayProcess) -> None:
    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"project_id": "p", "params": {"blob": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    response = httpx.post(
        gateway.base_url + "/rpa/v1/exec",
        content=chunks(),
        headers={"Authorization": "t"},
        timeout=10,
    )
    assert response.status_code == 413


def test_ping_and_readiness(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.base_url + "/rpa/v1/ping").json() == "pong"
    ready = httpx.get(gateway.base_url + "/rpa/v1/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
