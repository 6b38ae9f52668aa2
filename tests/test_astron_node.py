"""astron-agent's RPA node never reads a failure as success.

Every call goes through :mod:`tests.astron_node`, which reads the stream exactly
as the node does: ``data:`` lines only, HTTP status ignored, aiohttp's default
line limit, and no data line at all means success with ``{}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.astron_node import NODE_MAX_LINE, NodeFailed, node_call
from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream

PROJECTS = Path(__file__).resolve().parent.parent / "projects"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The embedded backend on the shipped example projects, as `make run` serves it."""
    env = {**FAST, "RPA_BACKEND": "local", "RPA_PROJECTS_DIR": str(PROJECTS)}
    process = GatewayProcess(env, tmp_path_factory.mktemp("local")).start()
    yield process
    process.stop()


@pytest.mark.parametrize(
    ("api_key", "body", "content", "cause"),
    [
        ("t", {"project_id": "no-such-project", "sid": "s"}, None, "no project 'no-such-project'"),
        ("t", {"project_id": "countdown", "params": {"seconds": "ten"}}, None, "params.seconds"),
        (
            "t",
            {"project_id": "countdown", "params": {}},
            None,
            "params.seconds: 'seconds' is a required",
        ),
        ("", {"project_id": "hello"}, None, "Authorization"),
        (None, {"project_id": "hello"}, None, "Authorization"),
        ("t", None, b'{"project_id": "hello", ', "not valid JSON"),
        ("t", None, b"", "body is empty"),
        ("t", {"project_id": "hello", "params": {"blob": "x" * 2_000_000}}, None, "larger than"),
        ("t", {"sid": "s"}, None, "project_id"),
    ],
    ids=[
        "unknown-project",
        "bad-param-type",
        "missing-param",
        "empty-authorization",
        "no-authorization",
        "not-json",
        "empty-body",
        "too-large",
        "no-project-id",
    ],
)
def test_every_refusal_fails_the_node_naming_the_cause(
    local: GatewayProcess,
    api_key: str | None,
    body: dict[str, object] | None,
    content: bytes | None,
    cause: str,
) -> None:
    with pytest.raises(NodeFailed, match=re.escape(cause)) as failure:
        node_call(local.base_url, api_key, body, content=content)
    assert str(failure.value).startswith("Create task error, detail: ")


def test_a_base_url_ending_in_a_slash_runs(local: GatewayProcess) -> None:
    outputs = node_call(local.base_url + "/", "t", {"project_id": "hello", "params": {"name": "A"}})
    assert outputs["greeting"] == "Hello, A!"


def test_a_trailing_slash_runs_without_a_redirect(local: GatewayProcess) -> None:
    response = httpx.post(
        local.base_url + "/rpa/v1/exec/",
        json={"project_id": "hello", "params": {"name": "B"}},
        headers={"Authorization": "t"},
    )
    assert response.status_code == 200, "a redirect has no data line: a success to some clients"
    (line,) = [line for line in response.text.splitlines() if line.startswith("data:")]
    assert json.loads(line[5:])["data"]["greeting"] == "Hello, B!"


@pytest.mark.parametrize("prefix", ["/api", "/api/"])
def test_a_base_url_with_a_wrong_prefix_fails_visibly(local: GatewayProcess, prefix: str) -> None:
    with pytest.raises(NodeFailed, match="no endpoint POST /api/rpa/v1/exec"):
        node_call(local.base_url + prefix, "t", {"project_id": "hello"})


@pytest.mark.parametrize("sid", ["\ud800", "x" * 10_000])
def test_odd_sids_still_fail_visibly(local: GatewayProcess, sid: str) -> None:
    with pytest.raises(NodeFailed, match="sid"):
        node_call(local.base_url, "t", {"project_id": "hello", "sid": sid})


def test_a_huge_invalid_value_is_named_in_a_line_the_node_can_read(local: GatewayProcess) -> None:
    body = {"project_id": "countdown", "params": {"seconds": "9" * 300_000}}
    with pytest.raises(NodeFailed, match=r"params\.seconds") as failure:
        node_call(local.base_url, "t", body)
    assert len(str(failure.value)) < 1000


def test_refusals_keep_their_status_and_error_fields(local: GatewayProcess) -> None:
    body = {"project_id": "countdown", "sid": "wf-7", "params": {"seconds": -1}}
    streamed = exec_stream(local.base_url, body, token="t")
    assert streamed.status_code == 422
    assert streamed.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert streamed.ids == [], "no execution exists, so there is no event id to resume from"
    frame = streamed.terminal
    assert frame["code"] == 55001 and frame["data"] is None
    assert frame["sid"] == "wf-7"
    assert frame["error"] == "invalid_request" and frame["fields"] == ["params.seconds"]

    unauthorized = exec_stream(local.base_url, body, token="")
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert unauthorized.terminal["sid"] == "wf-7", "the sid is read even when the token is not"

    as_json = exec_stream(local.base_url, body, token="t", headers={"Accept": "application/json"})
    assert as_json.status_code == 422
    assert json.loads(as_json.body) == {
        "error": "invalid_request",
        "message": frame["message"].removeprefix("Create task error, detail: "),
        "fields": ["params.seconds"],
    }
    # Asking for both keeps the stream.
    both = exec_stream(
        local.base_url, body, token="t", headers={"Accept": "application/json, text/event-stream"}
    )
    assert both.terminal["code"] == 55001


def test_other_endpoints_keep_answering_json(local: GatewayProcess) -> None:
    response = httpx.get(local.base_url + "/rpa/v1/executions/nope")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    missing = httpx.get(local.base_url + "/rpa/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "message": "no endpoint GET /rpa/v1/nothing-here",
    }


def _completing_with(fake: FakeUpstream, size: int) -> tuple[str, dict[str, str]]:
    pid = new_project_id()
    outputs = {"blob": "é" * (size // 2)}  # two bytes a character in UTF-8
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": outputs}}])
    return pid, outputs


def test_a_100_kb_result_arrives_whole(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid, outputs = _completing_with(fake, 100_000)
    assert node_call(gateway.base_url, "t", {"project_id": pid, "sid": "s"}) == outputs


def test_a_200_kb_result_is_a_clear_failure_and_served_whole_by_the_native_api(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid, outputs = _completing_with(fake, 200_000)
    with pytest.raises(NodeFailed) as failure:
        node_call(gateway.base_url, "tok-big", {"project_id": pid, "sid": "s"})
    message = str(failure.value)
    assert "Result too large" in message and "succeeded" in message
    size = int(re.search(r"its frame is (\d+) bytes", message).group(1))  # type: ignore[union-attr]
    assert size > 200_000
    path = re.search(r"GET (/rpa/v1/executions/\w+)", message).group(1)  # type: ignore[union-attr]
    execution = httpx.get(gateway.base_url + path, headers={"Authorization": "tok-big"}).json()
    assert execution["result"]["code"] == 0
    assert execution["result"]["data"] == outputs

    frame = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, token="t").terminal
    assert frame["code"] == 55007


def test_the_frame_limit_matches_the_line_the_node_can_read_to_the_byte(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_MAX_FRAME_BYTES=str(NODE_MAX_LINE))

    def result_whose_line_is(size: int) -> tuple[str, dict[str, str]]:
        # The terminal line as the wire contract writes it: compact JSON, code first.
        frame = {"code": 0, "message": "Success", "sid": "s", "data": {"blob": ""}}
        overhead = len(f"data: {json.dumps(frame, separators=(',', ':'))}\n")
        pid, outputs = new_project_id(), {"blob": "x" * (size - overhead)}
        fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": outputs}}])
        return pid, outputs

    pid, outputs = result_whose_line_is(NODE_MAX_LINE)
    assert node_call(gateway.base_url, "t", {"project_id": pid, "sid": "s"}) == outputs
    pid, _ = result_whose_line_is(NODE_MAX_LINE + 1)
    with pytest.raises(NodeFailed, match=f"its frame is {NODE_MAX_LINE + 1} bytes"):
        node_call(gateway.base_url, "t", {"project_id": pid, "sid": "s"})


def test_the_frame_limit_is_a_setting_and_the_native_stream_has_none(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_MAX_FRAME_BYTES="5000")
    pid, outputs = _completing_with(fake, 8000)
    with pytest.raises(NodeFailed, match="over the 5000-byte line limit"):
        node_call(gateway.base_url, "t", {"project_id": pid, "sid": "s"})
    created = httpx.post(
        gateway.base_url + "/rpa/v1/executions",
        json={"project_id": pid},
        headers={"Authorization": "t"},
    ).json()
    with httpx.stream(
        "GET",
        f"{gateway.base_url}/rpa/v1/executions/{created['id']}/events",
        headers={"Authorization": "t"},
        timeout=10,
    ) as events:
        data_lines = [line for line in events.iter_lines() if line.startswith("data:")]
    assert json.loads(data_lines[-1][5:])["data"] == outputs
