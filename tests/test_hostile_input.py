"""Odd and hostile input: a clear 4xx naming the problem before anything is recorded.

Each case was a 500, a broken stream or a silent misreading before (issue 10).
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create, events
from tests.sse_client import exec_stream


def executions_recorded(gateway: GatewayProcess) -> int:
    with sqlite3.connect(gateway.database) as db:
        (count,) = db.execute("SELECT count(*) FROM executions").fetchone()
    return int(count)


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"project_id":"p","params":' + nested(64) + "}", "nested deeper than 64 levels"),
        ('{"project_id":"p","params":' + nested(300) + "}", "nested deeper than 64 levels"),
        ('{"project_id":"p","params":' + nested(5000) + "}", "nested deeper than 64 levels"),
        ('{"project_id":"p","params":{"x":"\\ud800"}}', "lone surrogate (\\ud800)"),
        ('{"project_id":"p","params":{"\\udfff":1}}', "lone surrogate (\\udfff)"),
        ('{"project_id":"p","sid":"\\ud800"}', "lone surrogate"),
        ('{"project_id":"p","params":{"x":NaN}}', "NaN is not a JSON number"),
        ('{"project_id":"p","params":{"x":-Infinity}}', "-Infinity is not a JSON number"),
        ('{"project_id":"p","params":{"x":1e400}}', "too large for a double"),
        ('{"project_id":"p","project_id":"q"}', 'the key "project_id" comes more than once'),
        ('{"project_id":"p","params":{"x":1,"x":2}}', 'the key "x" comes more than once'),
        ('{"project_id":"p","params":{"x":' + "9" * 4400 + "}}", "not valid JSON"),
        ('{"project_id":"p","version":' + "9" * 30 + "}", "version"),
        (b'{"project_id":"\xff"}', "not UTF-8"),
    ],
    ids=[
        "depth-65",
        "depth-301",
        "depth-5001",
        "surrogate-value",
        "surrogate-key",
        "surrogate-sid",
        "nan",
        "infinity",
        "overflowing-float",
        "duplicate-key",
        "duplicate-param",
        "4400-digit-int",
        "huge-version",
        "not-utf8",
    ],
)
def test_bodies_json_readers_cannot_take_back_are_refused_before_anything_runs(
    gateway: GatewayProcess, fake: FakeUpstream, body: str | bytes, problem: str
) -> None:
    before, creates = executions_recorded(gateway), len(fake.creates)
    content = body if isinstance(body, bytes) else body.encode()
    streamed = exec_stream(gateway.base_url, None, content=content)
    assert streamed.status_code in (400, 422)
    assert problem in streamed.terminal["message"]
    native = httpx.post(
        gateway.base_url + "/rpa/v1/executions",
        content=content,
        headers={**auth("t"), "Content-Type": "application/json"},
    )
    assert native.status_code in (400, 422) and problem in native.json()["message"]
    assert executions_recorded(gateway) == before and len(fake.creates) == creates


def test_nesting_up_to_the_limit_is_served(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = new_project_id()
    params = json.loads(nested(63))  # 64 levels with the body itself
    result = exec_stream(gateway.base_url, {"project_id": pid, "params": params})
    assert result.terminal["code"] == 0
    assert result.terminal["data"] == {"echo": params}
    listed = httpx.get(gateway.base_url + "/rpa/v1/executions", headers=auth("t-secret"))
    assert listed.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(
    gateway: GatewayProcess, fake: FakeUpstream, content_type: str
) -> None:
    creates = len(fake.creates)
    refused = exec_stream(
        gateway.base_url,
        {"project_id": new_project_id()},
        headers={"Content-Type": content_type},
    )
    assert refused.status_code == 415
    assert "Content-Type must be application/json" in refused.terminal["message"]
    assert len(fake.creates) == creates
    for accepted in ("application/json; charset=utf-8", "application/merge-patch+json"):
        served = exec_stream(
            gateway.base_url, {"project_id": new_project_id()}, headers={"Content-Type": accepted}
        )
        assert served.terminal["code"] == 0


@pytest.mark.parametrize(
    "seq",
    ["9223372036854775808", "9" * 4400, "\u00b2", "\u0663", "\uff11", "-1", "+1", " 1", "0x1"],
    ids=[
        "2^63",
        "4400-digits",
        "superscript-2",
        "arabic-3",
        "fullwidth-1",
        "-1",
        "+1",
        "space",
        "hex",
    ],
)
def test_event_cursors_are_ascii_digits_within_63_bits(
    gateway: GatewayProcess, fake: FakeUpstream, seq: str
) -> None:
    first = exec_stream(gateway.base_url, {"project_id": new_project_id()})
    execution_id = first.ids[0].rsplit(":", 1)[0]
    cursor = f"{execution_id}:{seq}"
    by_header = exec_stream(gateway.base_url, {}, headers={"Last-Event-ID": cursor.encode()})  # type: ignore[dict-item]
    by_query = exec_stream(gateway.base_url, {}, params={"last_event_id": cursor})
    for resumed in (by_header, by_query):
        assert resumed.status_code == 400
        assert resumed.terminal["code"] == 55001
        assert "Last-Event-ID" in resumed.terminal["message"]
    response = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/events",
        params={"after": seq},
        headers=auth("t-secret"),
    )
    assert response.status_code == 422 and response.json()["fields"] == ["after"]


def test_resuming_past_the_last_event_is_a_400_not_endless_pings(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "PENDING"}] * 400 + [{"status": "COMPLETED"}])
    created = create(gateway.base_url, {"project_id": pid}).json()
    execution_id = created["id"]
    status, _, _ = events(gateway.base_url, execution_id, params={"after": "50"})
    assert status == 400
    response = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/events",
        params={"after": "50"},
        headers=auth("t-secret"),
    )
    assert response.json()["error"] == "invalid_cursor"
    assert f"resume from {execution_id}:" in response.json()["message"]
    compat = exec_stream(gateway.base_url, {}, headers={"Last-Event-ID": f"{execution_id}:50"})
    assert compat.status_code == 400 and compat.terminal["code"] == 55001
    httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel", headers=auth("t-secret")
    )


def test_query_parameter_errors_come_after_authentication_in_the_documented_shape(
    gateway: GatewayProcess,
) -> None:
    anonymous = httpx.get(gateway.base_url + "/rpa/v1/executions", params={"limit": "many"})
    assert anonymous.status_code == 401
    bad = httpx.get(
        gateway.base_url + "/rpa/v1/executions", params={"limit": "many"}, headers=auth("t")
    )
    assert bad.status_code == 422
    body = bad.json()
    assert body["error"] == "invalid_request" and body["fields"] == ["limit"]
    assert "limit" in body["message"]
