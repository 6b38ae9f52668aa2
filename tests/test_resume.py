"""A client that loses its stream re-attaches with Last-Event-ID; no second robot run."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import ON_BOTH_STORES
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.native_client import events
from tests.sse_client import exec_stream

pytestmark = ON_BOTH_STORES


def long_project(fake: FakeUpstream, polls: int = 8) -> str:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(
        pid,
        steps=[{"status": "PENDING"}] * polls
        + [{"status": "COMPLETED", "result": {"data": {"done": pid}}}],
    )
    return pid


def test_reconnect_after_first_event_gets_the_result(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = long_project(fake)
    body = {"project_id": pid, "sid": "wf", "params": {"x": 1}}
    first = exec_stream(gateway.base_url, body, stop_after_lines=1)
    (event_id,) = first.ids
    resumed = exec_stream(gateway.base_url, body, headers={"Last-Event-ID": event_id})
    assert resumed.status_code == 200
    assert resumed.terminal == {"code": 0, "message": "Success", "sid": "wf", "data": {"done": pid}}
    assert fake.creates_for(pid) == 1


def test_resume_replays_only_what_was_missed(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = long_project(fake, polls=2)
    full = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    ids = full.ids
    assert len(ids) >= 3
    replay = exec_stream(gateway.base_url, {"project_id": pid}, headers={"Last-Event-ID": ids[0]})
    assert replay.ids == ids[1:], "events after the cursor, none before"
    assert replay.terminal == full.terminal
    assert fake.creates_for(pid) == 1


def test_resume_with_query_parameter(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = long_project(fake)
    first = exec_stream(gateway.base_url, {"project_id": pid}, stop_after_lines=1)
    resumed = exec_stream(
        gateway.base_url, {"project_id": pid}, params={"last_event_id": first.ids[0]}
    )
    assert resumed.terminal["code"] == 0
    assert fake.creates_for(pid) == 1


def test_another_token_cannot_resume(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = long_project(fake)
    first = exec_stream(gateway.base_url, {"project_id": pid}, token="alice", stop_after_lines=1)
    stolen = exec_stream(
        gateway.base_url,
        {"project_id": pid},
        token="mallory",
        headers={"Last-Event-ID": first.ids[0]},
    )
    assert stolen.status_code == 404
    assert (
        exec_stream(
            gateway.base_url,
            {"project_id": pid},
            token="alice",
            headers={"Last-Event-ID": first.ids[0]},
        ).terminal["code"]
        == 0
    )


def test_malformed_or_unknown_last_event_id(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    before = len(fake.creates)
    bad = exec_stream(gateway.base_url, {"project_id": "p"}, headers={"Last-Event-ID": "nope"})
    assert bad.status_code == 400
    unknown = exec_stream(
        gateway.base_url, {"project_id": "p"}, headers={"Last-Event-ID": f"{uuid.uuid4().hex}:1"}
    )
    assert unknown.status_code == 404
    assert len(fake.creates) == before, "a failed resume never starts a run"


def test_native_events_resume_with_header_query_and_after(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = long_project(fake, polls=2)
    first = exec_stream(gateway.base_url, {"project_id": pid})
    execution_id, _ = first.ids[0].rsplit(":", 1)

    status, frames, _ = events(gateway.base_url, execution_id)
    assert status == 200
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["event"] == "terminal" and frames[-1]["code"] == 0
    assert frames[0]["event"] == "state" and frames[0]["status"] == "ACCEPTED"

    _, by_header, _ = events(
        gateway.base_url, execution_id, headers={"Last-Event-ID": f"{execution_id}:2"}
    )
    _, by_query, _ = events(
        gateway.base_url, execution_id, params={"last_event_id": f"{execution_id}:2"}
    )
    _, by_after, _ = events(gateway.base_url, execution_id, params={"after": "2"})
    assert by_header == by_query == by_after == frames[2:]


def test_native_events_of_another_execution_id_is_rejected(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = long_project(fake, polls=0)
    first = exec_stream(gateway.base_url, {"project_id": pid})
    execution_id = first.ids[0].rsplit(":", 1)[0]
    response = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/events",
        headers={"Authorization": "t-secret", "Last-Event-ID": f"{uuid.uuid4().hex}:1"},
    )
    assert response.status_code == 400


def test_resuming_at_the_end_sends_the_end_again(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    """An EventSource reconnects after the server closes the stream, with the last id."""
    pid = long_project(fake, polls=1)
    full = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"})
    last = full.ids[-1]
    again = exec_stream(
        gateway.base_url, {"project_id": pid}, headers={"Last-Event-ID": last}, timeout=10
    )
    assert again.terminal == full.terminal
    execution_id, seq = last.rsplit(":", 1)
    status, frames, _ = events(gateway.base_url, execution_id, params={"after": seq})
    assert status == 200 and [f["event"] for f in frames] == ["terminal"]
