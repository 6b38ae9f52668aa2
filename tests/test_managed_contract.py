"""The platform's managed contract end to end (issue 23): a real gateway process against the
fake upstream speaking both dialects over real sockets.  Every test has keys and projects
of its own: the session's fake counts only what each test sent."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, managed_contract, new_project_id
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create, events, get
from tests.redis_servers import RedisServer
from tests.sse_client import exec_stream
from tests.waiting import wait_for

TOKEN_KEY = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"
MANAGED_FIELDS = ("idempotency_key", "execution_timeout")
# A slow reply on a busy machine is not a lost one: counts of sends stay exact.
PATIENT = {"RPA_UPSTREAM_READ_TIMEOUT": "10"}


def key() -> str:
    return f"managed-{uuid.uuid4().hex[:8]}"


def managed_key(fake: FakeUpstream, **client: Any) -> str:
    caller = key()
    fake.managed(caller, **client)
    return caller


@pytest.fixture(scope="module")
def managed_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream
) -> Iterator[GatewayProcess]:
    """A short confirm window, so an unconfirmed cancel ends within the test."""
    workdir = tmp_path_factory.mktemp("managed")
    env = {**FAST, **fake.env(), **PATIENT, "RPA_CANCEL_CONFIRM_SECONDS": "1.5"}
    process = GatewayProcess(env, workdir).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def short_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream
) -> Iterator[GatewayProcess]:
    """Executions that time out after 4 s (so the platform is told 3)."""
    workdir = tmp_path_factory.mktemp("short")
    env = {**FAST, **fake.env(), **PATIENT, "XIAOWU_RPA_TIMEOUT": "4"}
    process = GatewayProcess(env, workdir).start()
    yield process
    process.stop()


def creates(fake: FakeUpstream, pid: str) -> list[dict[str, Any]]:
    return [c for c in fake.creates if c["body"].get("project_id") == pid]


def queries(fake: FakeUpstream, run_ids: set[str]) -> list[str]:
    return [p for p in list(fake.query_paths) if p.split("?")[0].rsplit("/", 1)[-1] in run_ids]


def execution_of(stream_ids: list[str]) -> str:
    return stream_ids[0].split(":")[0]


def ended(base_url: str, execution_id: str, token: str, timeout: float = 30.0) -> dict[str, Any]:
    def view() -> dict[str, Any] | None:
        body: dict[str, Any] = get(base_url, execution_id, token).json()
        return body if body.get("finished_at") else None

    result: dict[str, Any] = wait_for(view, f"the end of {execution_id}", timeout)
    return result


def test_a_managed_create_sends_its_key_and_deadline_and_polls_snapshots(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {"status": "RUNNING"},
            {"status": "COMPLETED", "result": {"data": {"rows": 3}}},
        ],
    )
    result = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": "s1"}, token=caller)
    assert result.terminal == {"code": 0, "message": "Success", "sid": "s1", "data": {"rows": 3}}
    execution_id = execution_of(result.ids)
    [sent] = creates(fake, pid)
    assert sent["query"] == "contract=1"
    assert sent["body"]["idempotency_key"] == f"rpa-gateway:{execution_id}"
    # XIAOWU_RPA_TIMEOUT is 30: the whole seconds that end before the deadline.
    assert sent["body"]["execution_timeout"] == 29
    run_ids = {r.id for r in fake.runs_for(pid)}
    polled = queries(fake, run_ids)
    assert polled and all(p.endswith("?contract=1") for p in polled)
    _, frames, _ = events(managed_gateway.base_url, execution_id, caller)
    running = [f for f in frames if f["event"] == "state" and f.get("upstream_status") == "running"]
    assert running and running[0]["status"] == "RUNNING" and running[0]["started_at"]


def test_a_create_whose_reply_was_lost_completes_with_one_platform_execution(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"fault": "lost_reply", "times": 2})
    result = exec_stream(
        managed_gateway.base_url, {"project_id": pid, "sid": "s", "params": {"n": 1}}, token=caller
    )
    assert result.terminal["code"] == 0, result.terminal
    assert result.terminal["data"] == {"echo": {"n": 1}}
    sent = creates(fake, pid)
    assert len(sent) == 3, "two sends whose reply was lost, then one answered"
    assert len({c["raw"] for c in sent}) == 1, "every send is the same bytes"
    assert len(fake.runs_for(pid)) == 1


def test_an_offline_client_fails_at_once_and_nothing_is_retried(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake, client_state="offline"), new_project_id()
    began = time.monotonic()
    result = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    took = time.monotonic() - began
    frame = result.terminal
    assert frame["code"] == 55001
    assert "the RPA client of this account is offline; start it and retry" in frame["message"]
    assert took < 1.0, f"took {took:.2f} s"
    assert len(creates(fake, pid)) == 1 and fake.runs_for(pid) == []


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        ({"fault": "workflow_not_found"}, 55001, "project not found or not published for API"),
        ({"fault": "refused", "code": "VERSION_NOT_ALLOWED"}, 55001, "VERSION_NOT_ALLOWED"),
        ({"fault": "idempotency_conflict"}, 55999, "IDEMPOTENCY_CONFLICT"),
    ],
)
def test_named_refusals_end_with_what_they_mean(
    managed_gateway: GatewayProcess,
    fake: FakeUpstream,
    fault: dict[str, Any],
    code: int,
    words: str,
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create=fault)
    frame = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    assert frame.terminal["code"] == code and words in frame.terminal["message"]
    assert len(creates(fake, pid)) == 1, "a named refusal is not sent again"


def test_an_idempotency_conflict_is_logged_as_a_fault_of_this_service(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"fault": "idempotency_conflict"})
    frame = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    execution_id = execution_of(frame.ids)
    lines = wait_for(
        lambda: [
            raw
            for raw in managed_gateway.log_text().splitlines()
            if execution_id in raw and "IDEMPOTENCY_CONFLICT" in raw
        ],
        "the log line",
    )
    assert " ERROR " in lines[0], lines


def test_a_client_without_the_managed_protocol_gets_one_legacy_create(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"fault": "protocol_unsupported"})
    frame = exec_stream(
        managed_gateway.base_url, {"project_id": pid, "sid": "s", "params": {"k": 2}}, token=caller
    ).terminal
    assert frame["code"] == 0 and frame["data"] == {"echo": {"k": 2}}
    first, second = creates(fake, pid)
    assert "idempotency_key" in first["body"]
    assert not any(name in second["body"] for name in MANAGED_FIELDS)
    assert len(fake.runs_for(pid)) == 1
    assert "CLIENT_PROTOCOL_UNSUPPORTED" in managed_gateway.log_text()


def test_the_platform_s_deadline_ends_the_run_with_55003(
    short_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, steps=[{"status": "RUNNING"}])
    frame = exec_stream(short_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    assert frame.terminal["code"] == 55003
    assert (
        "the RPA platform stopped the run at its deadline (EXECUTION_TIMEOUT)"
        in (frame.terminal["message"])
    )
    [sent] = creates(fake, pid)
    assert sent["body"]["execution_timeout"] == 3


def test_a_state_the_platform_cannot_vouch_for_is_watched_until_the_deadline(
    short_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(
        pid, steps=[{"status": "RUNNING"}, {"status": "UNKNOWN", "code": "STOP_UNCONFIRMED"}]
    )
    frame = exec_stream(short_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    assert frame.terminal["code"] == 55003
    assert "STOP_UNCONFIRMED" in frame.terminal["message"]
    [run] = fake.runs_for(pid)
    assert run.queries >= 3, "it kept watching"


def start_running(gateway: GatewayProcess, fake: FakeUpstream, caller: str, pid: str) -> str:
    created = create(gateway.base_url, {"project_id": pid, "params": {}}, caller)
    assert created.status_code == 202, created.text
    execution_id: str = created.json()["id"]
    wait_for(
        lambda: get(gateway.base_url, execution_id, caller).json()["status"] == "RUNNING",
        "RUNNING",
    )
    return execution_id


def cancel(gateway: GatewayProcess, execution_id: str, caller: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel",
        headers=auth(caller),
        timeout=30,
    )


def test_a_cancel_the_platform_confirms_ends_55004(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, steps=[{"status": "RUNNING"}])
    execution_id = start_running(managed_gateway, fake, caller, pid)
    assert cancel(managed_gateway, execution_id, caller).status_code == 200
    view = ended(managed_gateway.base_url, execution_id, caller)
    assert (view["status"], view["result"]["code"]) == ("CANCELLED", 55004)
    assert "confirmed the robot stopped" in view["result"]["message"]
    [run] = fake.runs_for(pid)
    assert run.id in fake.cancels and caller not in fake.stop_current_calls


def test_a_cancel_the_platform_never_confirms_ends_55004_saying_so(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, steps=[{"status": "RUNNING"}], cancel="unconfirmed")
    execution_id = start_running(managed_gateway, fake, caller, pid)
    asked = time.monotonic()
    assert cancel(managed_gateway, execution_id, caller).status_code == 200
    view = ended(managed_gateway.base_url, execution_id, caller)
    assert time.monotonic() - asked >= 1.5, "not before the confirm window"
    assert (view["status"], view["result"]["code"]) == ("CANCELLED", 55004)
    assert "the stop is unconfirmed" in view["result"]["message"]
    assert "STOP_UNCONFIRMED" in view["result"]["message"]
    assert caller not in fake.stop_current_calls


def test_a_run_the_platform_cannot_cancel_answers_409_and_runs_to_its_deadline(
    short_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake, supports_cancel=False), new_project_id()
    fake.script(pid, steps=[{"status": "RUNNING"}])
    execution_id = start_running(short_gateway, fake, caller, pid)
    refused = cancel(short_gateway, execution_id, caller)
    assert refused.status_code == 409, refused.text
    assert "CANCEL_UNSUPPORTED" in refused.json()["message"]
    assert get(short_gateway.base_url, execution_id, caller).json()["cancel_requested"] is False
    view = ended(short_gateway.base_url, execution_id, caller)
    assert view["result"]["code"] == 55003
    assert caller not in fake.stop_current_calls


def test_params_beyond_the_platform_s_json_limits_are_refused_before_sending(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    limits = {**managed_contract()["jsonLimits"], "maxArrayItems": 3}
    fake.offer_contract(caller, managed_contract(jsonLimits=limits))
    refused = create(
        managed_gateway.base_url, {"project_id": pid, "params": {"rows": [1, 2, 3, 4]}}, caller
    )
    assert refused.status_code == 422, refused.text
    assert "params.rows" in refused.text
    assert creates(fake, pid) == []
    fits = create(managed_gateway.base_url, {"project_id": pid, "params": {"rows": [1]}}, caller)
    assert fits.status_code == 202
    # The compat door: a client that reads only data lines sees the refusal, not a success.
    body = {"project_id": pid, "sid": "s", "params": {"rows": [1, 2, 3, 4]}}
    frame = exec_stream(managed_gateway.base_url, body, token=caller).terminal
    assert frame["code"] == 55001 and "params.rows" in frame["message"]
    assert len(creates(fake, pid)) == 1, "only the one that fits was sent"


@pytest.mark.parametrize("refuses_unknown_fields", [False, True])
def test_an_older_build_gets_no_managed_field_and_works_as_before(
    managed_gateway: GatewayProcess, fake: FakeUpstream, refuses_unknown_fields: bool
) -> None:
    caller, pid = key(), new_project_id()
    fake.older_build(caller, refuses_unknown_fields=refuses_unknown_fields)
    fake.script(pid, steps=[{"status": "RUNNING"}, {"status": "COMPLETED", "result": {"data": {}}}])
    for sid in ("a", "b"):
        frame = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": sid}, token=caller)
        assert frame.terminal["code"] == 0, frame.terminal
    sent = creates(fake, pid)
    assert len(sent) == 2
    assert all(c["query"] == "" and not any(n in c["body"] for n in MANAGED_FIELDS) for c in sent)
    run_ids = {r.id for r in fake.runs_for(pid)}
    assert not any("contract" in p for p in queries(fake, run_ids))
    assert fake.discoveries[caller] == 1, "a 404 is kept for ten minutes"


def test_a_rejected_key_says_so(managed_gateway: GatewayProcess, fake: FakeUpstream) -> None:
    caller, pid = key(), new_project_id()
    fake.rejected.add(caller)
    frame = exec_stream(managed_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    assert frame.terminal["code"] == 55001
    assert "the platform rejected the key" in frame.terminal["message"]
    assert caller not in frame.terminal["message"]


def test_sigkill_with_50_creates_in_flight_loses_none_and_creates_none_twice(
    tmp_path: Path, fake: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    # The platform takes every create and holds its reply: all 50 are in flight at the kill.
    fake.script(pid, create={"delay": 60})
    # Replies waited for as long as they take: only the kill ends the first sends.
    first = start_gateway(RPA_TOKEN_KEY=TOKEN_KEY, RPA_UPSTREAM_READ_TIMEOUT="120")
    ids = [
        create(first.base_url, {"project_id": pid, "params": {"i": i}}, caller).json()["id"]
        for i in range(50)
    ]
    fake.wait_for_creates(pid, 50, timeout=30)
    first.stop(signal.SIGKILL)
    second = GatewayProcess(first.env, first.workdir).start()
    try:
        views = [ended(second.base_url, i, caller, timeout=60) for i in ids]
    finally:
        second.stop()
    assert [v["result"]["code"] for v in views] == [0] * 50
    assert [v["result"]["data"] for v in views] == [{"echo": {"i": i}} for i in range(50)]
    assert len(fake.runs_for(pid)) == 50, "the platform holds one execution per create"
    assert len(creates(fake, pid)) == 100, "each sent once by each process"


def test_a_replica_killed_with_creates_in_flight_leaves_them_to_another_that_repeats_them(
    tmp_path: Path, fake: FakeUpstream, start_gateway: GatewayFactory
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"delay": 60})
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    try:
        shared = {
            "REDIS_ADDR": redis.addr,
            "RPA_TOKEN_KEY": TOKEN_KEY,
            "RPA_LEASE_SECONDS": "2",
            "RPA_UPSTREAM_READ_TIMEOUT": "120",
        }
        doomed, survivor = start_gateway(**shared), start_gateway(**shared)
        ids = [
            create(doomed.base_url, {"project_id": pid, "params": {"i": i}}, caller).json()["id"]
            for i in range(20)
        ]
        fake.wait_for_creates(pid, 20, timeout=30)
        doomed.stop(signal.SIGKILL)
        views = [ended(survivor.base_url, i, caller, timeout=60) for i in ids]
    finally:
        redis.stop()
    assert [v["result"]["data"] for v in views] == [{"echo": {"i": i}} for i in range(20)]
    assert len(fake.runs_for(pid)) == 20
    assert len(creates(fake, pid)) == 40, "each sent once by each replica"


def test_a_create_never_answered_is_repeated_until_the_deadline_then_55003(
    short_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"fault": "http500"})
    frame = exec_stream(short_gateway.base_url, {"project_id": pid, "sid": "s"}, token=caller)
    assert frame.terminal["code"] == 55003, frame.terminal
    assert "the RPA platform never answered the create" in frame.terminal["message"]
    sent = creates(fake, pid)
    assert len(sent) > 3 and len({c["raw"] for c in sent}) == 1
    assert fake.runs_for(pid) == []


def test_a_cancel_while_the_create_goes_unanswered_ends_55004(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()
    fake.script(pid, create={"fault": "http500"})
    created = create(managed_gateway.base_url, {"project_id": pid, "params": {}}, caller)
    execution_id = created.json()["id"]
    fake.wait_for_creates(pid, 2)
    assert cancel(managed_gateway, execution_id, caller).status_code == 200
    view = ended(managed_gateway.base_url, execution_id, caller)
    assert (view["status"], view["result"]["code"]) == ("CANCELLED", 55004)
    assert "before the RPA platform answered the create" in view["result"]["message"]


def test_a_burst_of_creates_asks_the_discovery_route_once(
    managed_gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    caller, pid = managed_key(fake), new_project_id()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=managed_gateway.base_url, timeout=30) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/rpa/v1/executions",
                        json={"project_id": pid, "params": {"i": i}},
                        headers=auth(caller),
                    )
                    for i in range(20)
                )
            )
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [202] * 20
    assert fake.discoveries[caller] == 1
