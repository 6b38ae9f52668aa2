"""Completion webhooks (issue 24) on the embedded store: a real gateway process, the fake
upstream, and a real receiver that verifies every message with the ``standardwebhooks``
package and keeps a dedup table by webhook-id.  Each test has its own caller key and its
own inbox, so nothing another test sent is counted."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from rpa_gateway.security import new_key
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.webhooks.addresses import GuardedResolver, RefusedAddress, forbidden
from rpa_gateway.webhooks.model import Delivery, DeliveryStatus
from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create, get
from tests.redis_servers import RedisServer
from tests.waiting import wait_for

# Receivers run on 127.0.0.1: these gateways may reach it (as a compose network would).
ON_LOOPBACK = {
    "RPA_WEBHOOK_ALLOW_PRIVATE": "true",
    "RPA_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "RPA_WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.5,1,1,2,2,2,2,2",
    "RPA_WEBHOOK_TIMEOUT": "5",
}


def key() -> str:
    return f"hooks-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def hooks_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("hooks")
    process = GatewayProcess({**FAST, **fake.env(), **ON_LOOPBACK}, workdir).start()
    yield process
    process.stop()


def register(gateway: GatewayProcess, caller: str, url: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/rpa/v1/webhooks",
        json={"url": url, **fields},
        headers=auth(caller),
        timeout=10,
    )


def hook(gateway: GatewayProcess, caller: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{gateway.base_url}/rpa/v1/webhooks{path}", headers=auth(caller), timeout=10, **kw
    )


def deliveries_of(gateway: GatewayProcess, caller: str, webhook_id: str) -> list[dict[str, Any]]:
    """Every delivery of the webhook, as the gateway lists them (page by page)."""
    found: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = f"?limit=200&cursor={cursor}" if cursor else "?limit=200"
        page = hook(gateway, caller, "GET", f"/{webhook_id}/deliveries{query}").json()
        found += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def start_many(gateway: GatewayProcess, caller: str, pid: str, count: int) -> list[str]:
    async def all_of_them() -> list[str]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=30) as c:
            replies = await asyncio.gather(
                *(
                    c.post(
                        "/rpa/v1/executions",
                        json={"project_id": pid, "params": {"i": i}},
                        headers=auth(caller),
                    )
                    for i in range(count)
                )
            )
        assert all(r.status_code == 202 for r in replies)
        return [r.json()["id"] for r in replies]

    return asyncio.run(all_of_them())


def test_an_endpoint_is_registered_listed_changed_and_removed(
    hooks_gateway: GatewayProcess, receiver: WebhookReceiver
) -> None:
    caller, other = key(), key()
    made = register(hooks_gateway, caller, receiver.url("crud"), description="orders")
    assert made.status_code == 201, made.text
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == [
        "execution.succeeded",
        "execution.failed",
        "execution.cancelled",
        "execution.timed_out",
    ]
    listed = hook(hooks_gateway, caller, "GET", "").json()["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    one = hook(hooks_gateway, caller, "GET", f"/{endpoint['id']}").json()
    assert "secret" not in one and one["description"] == "orders"
    assert hook(hooks_gateway, other, "GET", f"/{endpoint['id']}").status_code == 404
    assert hook(hooks_gateway, other, "GET", "").json()["items"] == []
    changed = hook(
        hooks_gateway,
        caller,
        "PATCH",
        f"/{endpoint['id']}",
        json={"events": ["execution.started"], "project_id": "p1", "enabled": False},
    ).json()
    assert (changed["events"], changed["project_id"], changed["enabled"]) == (
        ["execution.started"],
        "p1",
        False,
    )
    assert hook(hooks_gateway, caller, "DELETE", f"/{endpoint['id']}").status_code == 204
    assert hook(hooks_gateway, caller, "GET", f"/{endpoint['id']}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://example.com/x"}, "url"),  # http only to RPA_WEBHOOK_ALLOW_HOSTS
        ({"url": "https://user:pw@example.com/x"}, "url"),
        ({"url": "https://example.com/x", "events": ["execution.exploded"]}, "events"),
        ({"url": "https://example.com/x", "events": []}, "events"),
    ],
)
def test_a_bad_endpoint_is_a_422_naming_the_field(
    hooks_gateway: GatewayProcess, fields: dict[str, Any], field: str
) -> None:
    refused = httpx.post(
        f"{hooks_gateway.base_url}/rpa/v1/webhooks", json=fields, headers=auth(key()), timeout=10
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["fields"] == [field]


def test_a_caller_has_at_most_its_share_of_endpoints(
    start_gateway: GatewayFactory, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(**ON_LOOPBACK, RPA_WEBHOOKS_PER_TOKEN="2")
    caller = key()
    assert [register(gateway, caller, receiver.url("n")).status_code for _ in range(3)] == [
        201,
        201,
        409,
    ]
    assert register(gateway, key(), receiver.url("n")).status_code == 201, "per caller"


def test_every_end_reaches_the_receiver_once_through_failures_and_an_outage(
    hooks_gateway: GatewayProcess, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, pid, name = key(), new_project_id(), f"bulk-{uuid.uuid4().hex[:6]}"
    made = register(hooks_gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"], fail_first=1)  # each first attempt: 500
    fake.script(pid, steps=[{"status": "RUNNING"}, {"status": "COMPLETED", "result": {"data": {}}}])
    ids = start_many(hooks_gateway, caller, pid, 500)
    wait_for(lambda: len(inbox.accepted) >= 100, "the first deliveries")
    assert len(inbox.accepted) < len(ids), "some still to come when the receiver goes down"
    port = receiver.port
    receiver.stop()  # down for a while: attempts meet a closed port
    time.sleep(2)
    receiver.start(port)
    more = start_many(hooks_gateway, caller, pid, 500)
    wait_for(lambda: len(inbox.accepted) >= 1000, "every delivery", timeout=120)
    # The dedup table holds one message per end: no end announced twice under two ids.
    assert sorted(m["data"]["id"] for m in inbox.accepted.values()) == sorted(ids + more)
    assert all(m["type"] == "execution.succeeded" for m in inbox.accepted.values())
    assert inbox.unverified == 0
    assert all(h["user-agent"].startswith("rpa-gateway/") for h in inbox.headers)
    # As the gateway counts them: every first attempt refused, and some met the closed
    # port (an attempt the receiver never saw, before its refused first and its second).
    attempts = [d["attempts"] for d in deliveries_of(hooks_gateway, caller, made["id"])]
    assert len(attempts) == 1000 and min(attempts) >= 2
    assert max(attempts) >= 3, "attempts during the outage"


def test_a_410_disables_the_endpoint(
    hooks_gateway: GatewayProcess, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, pid, name = key(), new_project_id(), f"gone-{uuid.uuid4().hex[:6]}"
    made = register(hooks_gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"], gone=True)
    create(hooks_gateway.base_url, {"project_id": pid, "params": {}}, caller)
    wait_for(lambda: inbox.attempts, "the attempt")
    view = wait_for(
        lambda: (
            (v := hook(hooks_gateway, caller, "GET", f"/{made['id']}").json())["enabled"] is False
            and v
        ),
        "the endpoint disabled",
    )
    assert "410" in view["disabled_reason"]
    refused = hook(hooks_gateway, caller, "POST", f"/{made['id']}/test")
    assert refused.status_code == 409 and "enable it" in refused.json()["message"]
    [delivery] = hook(hooks_gateway, caller, "GET", f"/{made['id']}/deliveries").json()["items"]
    assert (delivery["status"], delivery["last_status"], delivery["attempts"]) == ("failed", 410, 1)


def test_during_a_rotation_both_secrets_sign(
    hooks_gateway: GatewayProcess, receiver: WebhookReceiver
) -> None:
    caller, name = key(), f"rotate-{uuid.uuid4().hex[:6]}"
    made = register(hooks_gateway, caller, receiver.url(name)).json()
    rotated = hook(hooks_gateway, caller, "POST", f"/{made['id']}/rotate-secret").json()
    assert rotated["secret"] != made["secret"] and rotated["previous_secret_until"]
    inbox = receiver.inbox(name, rotated["secret"])
    inbox.secrets.append(made["secret"])
    test = hook(hooks_gateway, caller, "POST", f"/{made['id']}/test")
    assert test.status_code == 202
    wait_for(lambda: inbox.accepted, "the test event")
    [(message_id, message)] = inbox.accepted.items()
    assert message["type"] == "webhook.test" and message_id == test.json()["id"]
    assert inbox.verified_by[message_id] == [0, 1], "the new and the old secret both verify"


def test_deliveries_are_listed_and_sent_again_on_request(
    hooks_gateway: GatewayProcess, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, pid, name = key(), new_project_id(), f"again-{uuid.uuid4().hex[:6]}"
    made = register(hooks_gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"])
    execution_id = create(hooks_gateway.base_url, {"project_id": pid, "params": {}}, caller).json()[
        "id"
    ]
    wait_for(lambda: inbox.accepted, "the delivery")
    page = hook(hooks_gateway, caller, "GET", f"/{made['id']}/deliveries").json()
    [delivery] = page["items"]
    assert (delivery["execution_id"], delivery["status"], delivery["last_status"]) == (
        execution_id,
        "delivered",
        204,
    )
    other = register(hooks_gateway, caller, receiver.url(f"{name}-b")).json()["id"]
    elsewhere = hook(hooks_gateway, caller, "POST", f"/{other}/deliveries/{delivery['id']}/retry")
    assert elsewhere.status_code == 404, "a delivery is retried only through its own webhook"
    again = hook(hooks_gateway, caller, "POST", f"/{made['id']}/deliveries/{delivery['id']}/retry")
    assert again.status_code == 202
    wait_for(lambda: inbox.attempts[delivery["id"]] == 2, "the second send")
    assert inbox.duplicates == 1, "the same webhook-id: the receiver's dedup drops it"


def test_a_sigkill_in_mid_delivery_loses_no_delivery(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    # runs resume alone; claims lease for 2 x 10 + 5 s, longer than the wait below
    gateway = start_gateway(**{**ON_LOOPBACK, "RPA_WEBHOOK_TIMEOUT": "10"}, RPA_TOKEN_KEY=new_key())
    caller, pid, name = key(), new_project_id(), f"kill-{uuid.uuid4().hex[:6]}"
    made = register(gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"], delay=1.0)  # attempts in flight at the kill
    ids = start_many(gateway, caller, pid, 100)
    wait_for(lambda: inbox.in_flight >= 8, "as many attempts as one endpoint gets at once")
    most_before_the_kill = inbox.most_in_flight
    gateway.stop(signal.SIGKILL)
    inbox.delay = 0.0
    restarted = GatewayProcess(gateway.env, gateway.workdir).start()
    try:
        # Well within the claims' lease (25 s): what the killed process held is due at once.
        wait_for(lambda: len(inbox.accepted) >= 100, "every delivery", timeout=20)
    finally:
        restarted.stop()
    assert sorted(m["data"]["id"] for m in inbox.accepted.values()) == sorted(ids)
    assert max(inbox.attempts.values()) >= 2, "some were in flight at the kill: sent again"
    assert most_before_the_kill == 8, "never more than 8 attempts at once to one endpoint"


def test_private_and_metadata_addresses_are_refused(
    start_gateway: GatewayFactory, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(RPA_WEBHOOK_ALLOW_HOSTS="127.0.0.1,169.254.169.254,localhost")
    caller = key()
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data"):
        refused = register(gateway, caller, url)
        assert refused.status_code == 422 and "private" in refused.json()["message"], url
    # A name is checked where it leads at each connection: localhost leads to 127.0.0.1.
    name = f"named-{uuid.uuid4().hex[:6]}"
    made = register(gateway, caller, f"http://localhost:{receiver.port}/hook/{name}").json()
    inbox = receiver.inbox(name, made["secret"])
    hook(gateway, caller, "POST", f"/{made['id']}/test")
    delivery = wait_for(
        lambda: [
            d
            for d in hook(gateway, caller, "GET", f"/{made['id']}/deliveries").json()["items"]
            if d["attempts"]
        ],
        "the attempt",
    )[0]
    assert "private, loopback, link-local or metadata" in delivery["last_error"]
    assert delivery["last_status"] is None and not inbox.attempts, "never called"


class Scripted(AbstractResolver):
    """DNS cannot be changed here: names resolve as the test says (in process)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        address = self.answers[host]
        return [ResolveResult(hostname=host, host=address, port=port, family=2, proto=0, flags=0)]

    async def close(self) -> None:
        pass


def test_a_name_re_pointed_at_the_metadata_address_is_not_reached() -> None:
    inner = Scripted({"hooks.example.com": "93.184.216.34"})
    guard = GuardedResolver(inner, allow_private=False)

    async def resolve() -> list[ResolveResult]:
        return await guard.resolve("hooks.example.com", 443)

    assert asyncio.run(resolve())[0]["host"] == "93.184.216.34"
    inner.answers["hooks.example.com"] = "169.254.169.254"  # re-pointed after registration
    with pytest.raises(RefusedAddress):
        asyncio.run(resolve())


def delivered_by(gateway: GatewayProcess) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("rpa_webhook_deliveries_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'outcome="delivered"' in line)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def on_redis(redis: RedisServer, **env: str) -> dict[str, str]:
    """Settings for replicas sharing ``redis``."""
    return {**ON_LOOPBACK, "REDIS_ADDR": redis.addr, "RPA_TOKEN_KEY": new_key(), **env}


def test_two_replicas_on_redis_deliver_every_end_once(
    redis: RedisServer, start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, pid, name = key(), new_project_id(), f"pair-{uuid.uuid4().hex[:6]}"
    shared = on_redis(redis, RPA_PROMETHEUS_ENABLE="true")
    one, two = start_gateway(**shared), start_gateway(**shared)
    made = register(one, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"], fail_first=1)  # every first attempt: 500
    fake.script(pid, steps=[{"status": "RUNNING"}, {"status": "COMPLETED", "result": {}}])
    ids = start_many(one, caller, pid, 500) + start_many(two, caller, pid, 500)
    wait_for(lambda: len(inbox.accepted) >= 1000, "every delivery", timeout=180)
    by_each = (delivered_by(one), delivered_by(two))
    assert sorted(m["data"]["id"] for m in inbox.accepted.values()) == sorted(ids)
    assert inbox.unverified == 0
    attempts = [d["attempts"] for d in deliveries_of(two, caller, made["id"])]
    assert len(attempts) == 1000 and min(attempts) >= 2, "first attempts were refused"
    assert sum(by_each) >= 1000 and min(by_each) > 0, f"both replicas delivered: {by_each}"


def test_on_redis_a_killed_replicas_deliveries_are_taken_over(
    redis: RedisServer, start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, pid, name = key(), new_project_id(), f"takeover-{uuid.uuid4().hex[:6]}"
    shared = on_redis(redis, RPA_WEBHOOK_TIMEOUT="2", RPA_LEASE_SECONDS="2")
    doomed = start_gateway(**shared)
    secret = register(doomed, caller, receiver.url(name)).json()["secret"]
    inbox = receiver.inbox(name, secret, delay=1.0)  # attempts in flight at the kill
    ids = start_many(doomed, caller, pid, 40)
    wait_for(lambda: inbox.in_flight >= 8, "the replica's attempts in flight")
    doomed.stop(signal.SIGKILL)
    inbox.delay = 0.0
    start_gateway(**shared)  # the survivor: it takes over the claims once they lapse
    wait_for(lambda: len(inbox.accepted) >= 40, "every delivery", timeout=60)
    assert sorted(m["data"]["id"] for m in inbox.accepted.values()) == sorted(ids)
    assert max(inbox.attempts.values()) >= 2, "some were in flight at the kill: sent again"


def test_attempts_are_counted_by_outcome_and_timed(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(**ON_LOOPBACK, RPA_PROMETHEUS_ENABLE="true")
    caller, pid, name = key(), new_project_id(), f"metrics-{uuid.uuid4().hex[:6]}"
    made = register(gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"], fail_first=1)
    start_many(gateway, caller, pid, 3)
    wait_for(lambda: len(inbox.accepted) == 3, "the deliveries")

    def metrics() -> dict[str, float] | None:
        text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
        assert made["secret"] not in text and receiver.url(name) not in text
        seen = {
            line.split("{")[0] + _outcome(line): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("rpa_webhook_") and "_bucket" not in line
        }
        return seen if seen.get("rpa_webhook_deliveries_total/delivered") == 3 else None

    seen = wait_for(metrics, "the delivered count")
    assert seen["rpa_webhook_deliveries_total/retried"] == 3, "first attempts refused"
    assert seen["rpa_webhook_delivery_duration_seconds_count"] == 6
    assert "rpa_webhook_outbox_depth" in seen


def _outcome(line: str) -> str:
    marker = 'outcome="'
    return "/" + line.split(marker)[1].split('"')[0] if marker in line else ""


def webhooks_cli(
    gateway: GatewayProcess, caller: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "rpa_gateway", "webhooks", *args),
            *("--url", gateway.base_url, "--token", caller),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line_registers_tests_lists_and_removes(
    hooks_gateway: GatewayProcess, receiver: WebhookReceiver
) -> None:
    caller, name = key(), f"cli-{uuid.uuid4().hex[:6]}"
    added = webhooks_cli(
        hooks_gateway, caller, "add", receiver.url(name), "--event", "execution.failed", "--json"
    )
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    inbox = receiver.inbox(name, made["secret"])
    listed = webhooks_cli(hooks_gateway, caller, "ls").stdout.splitlines()
    assert listed[0].split("\t")[:3] == ["ID", "STATE", "HEALTH"]
    assert listed[1].split("\t")[:5] == [
        made["id"],
        "enabled",
        "ok",
        made["url"],
        "execution.failed",
    ]
    sent = webhooks_cli(hooks_gateway, caller, "test", made["id"])
    assert sent.returncode == 0 and "webhook.test" in sent.stdout
    wait_for(lambda: inbox.accepted, "the test event")
    rows = webhooks_cli(hooks_gateway, caller, "deliveries", made["id"]).stdout.splitlines()
    delivery_id, event, _, status, attempts, http = rows[1].split("\t")[:6]
    assert (event, status, attempts, http) == ("webhook.test", "delivered", "1", "204")
    again = webhooks_cli(hooks_gateway, caller, "retry", made["id"], delivery_id)
    assert again.returncode == 0, again.stderr
    wait_for(lambda: inbox.attempts[delivery_id] == 2, "the second send")
    assert webhooks_cli(hooks_gateway, caller, "rm", made["id"]).returncode == 0
    gone = webhooks_cli(hooks_gateway, caller, "test", made["id"])
    assert gone.returncode == 2 and "404" in gone.stderr


def test_started_events_and_a_project_filter(
    hooks_gateway: GatewayProcess, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    caller, wanted, other = key(), new_project_id(), new_project_id()
    name = f"started-{uuid.uuid4().hex[:6]}"
    made = register(
        hooks_gateway,
        caller,
        receiver.url(name),
        events=["execution.started", "execution.succeeded"],
        project_id=wanted,
    ).json()
    inbox = receiver.inbox(name, made["secret"])
    mine = create(hooks_gateway.base_url, {"project_id": wanted, "params": {}}, caller).json()
    theirs = create(hooks_gateway.base_url, {"project_id": other, "params": {}}, caller).json()
    wait_for(lambda: len(inbox.accepted) >= 2, "both events")
    wait_for(
        lambda: get(hooks_gateway.base_url, theirs["id"], caller).json()["finished_at"],
        "the other project's run to end",
    )
    listed = hook(hooks_gateway, caller, "GET", f"/{made['id']}/deliveries").json()["items"]
    assert len(listed) == 2, "nothing for the other project, and one of each event"
    seen = sorted((m["type"], m["data"]["id"]) for m in inbox.accepted.values())
    assert seen == [("execution.started", mine["id"]), ("execution.succeeded", mine["id"])]
    started = next(m for m in inbox.accepted.values() if m["type"] == "execution.started")
    assert started["data"]["upstream_id"] and started["timestamp"].endswith("Z")


def test_a_result_over_the_bound_is_left_out_with_its_url(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(**ON_LOOPBACK, RPA_WEBHOOK_MAX_RESULT_BYTES="100")
    caller, pid, name = key(), new_project_id(), f"large-{uuid.uuid4().hex[:6]}"
    made = register(gateway, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"])
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {"rows": "x" * 1000}}}])
    small = new_project_id()
    fake.script(small, steps=[{"status": "COMPLETED", "result": {"data": {"rows": "x"}}}])
    big = create(gateway.base_url, {"project_id": pid, "params": {}}, caller).json()["id"]
    fits = create(gateway.base_url, {"project_id": small, "params": {}}, caller).json()["id"]
    wait_for(lambda: len(inbox.accepted) == 2, "both ends")
    by_id = {m["data"]["id"]: m["data"] for m in inbox.accepted.values()}
    assert by_id[big]["result"]["data"] is None and by_id[big]["result_truncated"] is True
    assert by_id[big]["result_url"] == f"/rpa/v1/executions/{big}"
    assert by_id[fits]["result"]["data"] == {"rows": "x"} and "result_truncated" not in by_id[fits]


def test_an_endpoint_failing_past_the_bound_is_disabled_and_recovered(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(
        **{**ON_LOOPBACK, "RPA_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2"},
        RPA_WEBHOOK_DISABLE_AFTER="0.3",
    )
    caller, pid, name = key(), new_project_id(), f"failing-{uuid.uuid4().hex[:6]}"
    url = receiver.url(name) + "?token=query-secret"
    made = register(gateway, caller, url).json()
    inbox = receiver.inbox(name, made["secret"], fail_first=3)  # every attempt of a delivery
    execution_id = create(gateway.base_url, {"project_id": pid, "params": {}}, caller).json()["id"]
    view = wait_for(
        lambda: (
            (v := hook(gateway, caller, "GET", f"/{made['id']}").json())["enabled"] is False and v
        ),
        "the endpoint disabled",
    )
    assert "failed for" in view["disabled_reason"]
    log = gateway.log_text()
    assert "disabled" in log and "query-secret" not in log and made["secret"] not in log
    [failed] = wait_for(
        lambda: hook(gateway, caller, "GET", f"/{made['id']}/deliveries?status=failed").json()[
            "items"
        ],
        "the delivery failed",
    )
    assert failed["execution_id"] == execution_id and failed["last_status"] == 500
    inbox.fail_first = 0  # the receiver is mended
    enabled = hook(gateway, caller, "PATCH", f"/{made['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] and enabled["disabled_reason"] is None
    recovered = hook(
        gateway, caller, "POST", f"/{made['id']}/recover", json={"since": "2020-01-01T00:00:00Z"}
    )
    assert recovered.json() == {"requeued": 1}
    wait_for(lambda: inbox.accepted, "the recovered delivery")
    assert [m["data"]["id"] for m in inbox.accepted.values()] == [execution_id]


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("::ffff:169.254.169.254", True),  # IPv4-mapped
        ("::127.0.0.1", True),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of the metadata address
        ("2002:a9fe:a9fe::", True),  # 6to4 of it
    ],
)
def test_addresses_that_are_not_the_public_internet_are_refused(
    address: str, refused: bool
) -> None:
    assert forbidden(address) is refused


def test_an_address_allowed_when_registered_is_refused_once_the_setting_says_so(
    start_gateway: GatewayFactory, receiver: WebhookReceiver
) -> None:
    allowed = start_gateway(**ON_LOOPBACK)
    caller, name = key(), f"literal-{uuid.uuid4().hex[:6]}"
    made = register(allowed, caller, receiver.url(name)).json()
    inbox = receiver.inbox(name, made["secret"])
    allowed.stop()
    strict = GatewayProcess(
        {**allowed.env, "RPA_WEBHOOK_ALLOW_PRIVATE": "false"}, allowed.workdir
    ).start()
    try:
        hook(strict, caller, "POST", f"/{made['id']}/test")
        attempted = wait_for(
            lambda: [
                d
                for d in hook(strict, caller, "GET", f"/{made['id']}/deliveries").json()["items"]
                if d["attempts"]
            ],
            "the attempt",
        )[0]
    finally:
        strict.stop()
    assert "127.0.0.1 is a private" in attempted["last_error"] and not inbox.attempts


def test_done_deliveries_go_with_retention_and_pending_ones_stay(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, list[str]]:
        store = SqliteStore(tmp_path / "rpa-gateway.db")
        hooks = store.webhooks
        assert hooks is not None
        old = time.time() - 100
        for status in DeliveryStatus:
            delivery = Delivery(
                id=f"msg_{status.value}",
                webhook_id="wh_1",
                execution_id=None,
                event_type="webhook.test",
                event_at=old,
                status=status,
                created_at=old,
                next_attempt_at=old + 1000,
            )
            await hooks.add_delivery(delivery)
        purged = await hooks.purge(old + 10, 500)
        left = [d.id for d in await hooks.deliveries("wh_1", None, None, 10)]
        await store.close()
        return purged, left

    assert asyncio.run(scenario()) == (2, ["msg_pending"])


def test_with_a_token_key_secrets_are_sealed_at_rest_and_still_sign(
    start_gateway: GatewayFactory, receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(**ON_LOOPBACK, RPA_TOKEN_KEY=new_key())
    caller, name = key(), f"sealed-{uuid.uuid4().hex[:6]}"
    made = register(gateway, caller, receiver.url(name)).json()
    rotated = hook(gateway, caller, "POST", f"/{made['id']}/rotate-secret").json()
    inbox = receiver.inbox(name, rotated["secret"])
    inbox.secrets.append(made["secret"])
    hook(gateway, caller, "POST", f"/{made['id']}/test")
    wait_for(lambda: inbox.accepted, "the test event")
    assert list(inbox.verified_by.values()) == [[0, 1]], "both secrets, opened, sign"
    stored = b"".join(path.read_bytes() for path in gateway.database.parent.glob("rpa-gateway.db*"))
    for secret in (made["secret"], rotated["secret"]):
        assert secret.encode() not in stored
        assert secret.removeprefix("whsec_").encode() not in stored
