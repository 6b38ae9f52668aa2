"""Three replicas on one Redis behind nginx: lose one, roll a deploy, lose no run.

Everything is real: ``redis-server``, nginx (deploy/nginx-rpa-gateway.conf), three
gateway processes and the scripted upstream; clients go through nginx only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import exceptions as redis_errors

from rpa_gateway.config import decode_key
from rpa_gateway.executions import Execution, ExecutionRequest, Status, new_execution_id
from rpa_gateway.security import TokenVault, new_key
from rpa_gateway.store.redis import RedisStore
from tests.astron_node import NodeFailed, node_call, run_node
from tests.conftest import FAST
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.feed_client import Feed
from tests.gateway_process import GatewayProcess, refused_start
from tests.local_projects import make_project
from tests.native_client import auth, events, get
from tests.nginx_proxy import NginxProxy
from tests.redis_servers import RedisServer, cluster_servers
from tests.resuming_client import Followed, follow_compat, follow_native

LEASE_SECONDS = 2.0
TOKEN = "replica-caller"


class Cluster:
    def __init__(self, workdir: Path, fake: FakeUpstream, redis: RedisServer) -> None:
        self.workdir = workdir
        self.env = {
            **FAST,
            **fake.env(),
            "LOG_LEVEL": "INFO",
            "REDIS_ADDR": redis.addr,
            "RPA_TOKEN_KEY": new_key(),
            "RPA_LEASE_SECONDS": str(LEASE_SECONDS),
            "XIAOWU_RPA_PING_INTERVAL": "0.5",
        }
        self.replicas = [self._replica(i) for i in range(3)]
        self.nginx = NginxProxy(workdir / "nginx", [r.port for r in self.replicas])

    def _replica(self, index: int) -> GatewayProcess:
        workdir = self.workdir / f"replica{index}"
        workdir.mkdir()
        return GatewayProcess(self.env, workdir)

    def start(self) -> Cluster:
        for replica in self.replicas:
            replica.start()
        self.nginx.start()
        return self

    def stop(self) -> None:
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop(signal.SIGKILL)

    def client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=200)
        return httpx.AsyncClient(base_url=self.nginx.base_url, timeout=30, limits=limits)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, fake: FakeUpstream, redis: RedisServer) -> Iterator[Cluster]:
    started = Cluster(tmp_path, fake, redis).start()
    yield started
    started.stop()


def params(n: int) -> dict[str, Any]:
    return {"n": n, "label": f"run {n}"}


async def create_native(client: httpx.AsyncClient, project: str, n: int) -> str:
    response = await client.post(
        "/rpa/v1/executions",
        json={"project_id": project, "params": params(n)},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def assert_each_got_its_result(results: list[Followed], first: int = 0) -> None:
    for n, followed in enumerate(results, start=first):
        assert followed.terminal is not None
        assert followed.terminal["code"] == 0, followed.terminal
        data = followed.terminal["data"]
        outputs = data if "params" in data else data.get("data", data)
        assert outputs["params"] == params(n), (n, followed.terminal)


def test_a_replica_killed_mid_run_loses_no_execution(cluster: Cluster, fake: FakeUpstream) -> None:
    project = new_project_id()
    fake.script(project, duration=4.0)  # long enough to outlive the kill and the lease

    async def scenario() -> tuple[list[Followed], list[Followed]]:
        async with cluster.client() as client:
            native_ids = [await create_native(client, project, n) for n in range(30)]
            seen = [Followed() for _ in range(60)]
            compat = [
                asyncio.create_task(
                    follow_compat(
                        client,
                        {"project_id": project, "params": params(30 + n)},
                        TOKEN,
                        followed=seen[30 + n],
                    )
                )
                for n in range(30)
            ]
            native = [
                asyncio.create_task(follow_native(client, i, TOKEN, followed=seen[n]))
                for n, i in enumerate(native_ids)
            ]
            # Mid-run: every run created upstream and its id stored (event 2, PENDING). A
            # kill between a create and the storing of its id fails that execution, by
            # design (its robot may run; it is never created twice): not this scenario.
            async with asyncio.timeout(20):
                while not all(len(f.ids) >= 2 for f in seen):  # noqa: ASYNC110 - filled by readers
                    await asyncio.sleep(0.01)
            cluster.replicas[1].process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            return await asyncio.gather(*native), await asyncio.gather(*compat)

    native, compat = asyncio.run(scenario())
    assert_each_got_its_result(native)
    assert_each_got_its_result(compat, first=30)
    assert fake.creates_for(project) == 60, "a run was created twice"
    assert any(f.connections > 1 for f in native + compat), "no stream went through the kill"


def wait_until_not_ready(replica: GatewayProcess, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(replica.base_url + "/rpa/v1/ready", timeout=1).status_code != 200:
                return
        except httpx.TransportError:
            return  # stopped listening: draining behind the balancer
        time.sleep(0.02)
    raise AssertionError("the replica never stopped being ready")


def restart_on_same_port(cluster: Cluster, index: int) -> None:
    old = cluster.replicas[index]
    workdir = old.workdir.parent / f"{old.workdir.name}-next"
    workdir.mkdir()
    fresh = GatewayProcess(cluster.env, workdir)
    fresh.port = old.port
    fresh.env["SERVICE_PORT"] = str(old.port)
    cluster.replicas[index] = fresh.start()


def test_a_rolling_restart_fails_no_caller_that_cannot_resume(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    """astron-agent's node never resumes: every one of its streams must end with code 0."""
    project = new_project_id()
    fake.script(project, duration=3.0)

    async def node(n: int) -> dict[str, Any]:
        body = {"project_id": project, "params": params(n)}
        return await run_node(cluster.nginx.base_url, TOKEN, body)

    async def scenario() -> list[dict[str, Any] | BaseException]:
        first = [asyncio.create_task(node(n)) for n in range(40)]
        await asyncio.to_thread(fake.wait_for_creates, project, 40, 20)
        stopping = asyncio.create_task(asyncio.to_thread(cluster.replicas[0].stop))
        await asyncio.to_thread(wait_until_not_ready, cluster.replicas[0])
        # Calls made during the roll reach the replicas still serving.
        later = [asyncio.create_task(node(n)) for n in range(40, 60)]
        for index in range(3):
            if index:
                stopping = asyncio.create_task(asyncio.to_thread(cluster.replicas[index].stop))
            await stopping  # SIGTERM, then a clean exit once its streams have ended
            await asyncio.to_thread(restart_on_same_port, cluster, index)
        return await asyncio.gather(*first, *later, return_exceptions=True)

    outputs = asyncio.run(scenario())
    failures = [(n, o) for n, o in enumerate(outputs) if isinstance(o, BaseException)]
    assert failures == []
    assert [o["params"] for o in outputs] == [params(n) for n in range(60)]  # type: ignore[index]
    assert fake.creates_for(project) == 60


def test_cancel_resume_listing_isolation_and_idempotency_across_replicas(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    project = new_project_id()
    fake.script(project, gated=True, steps=[{"status": "COMPLETED", "result": {"data": {}}}])
    r0, r1, r2 = (r.base_url for r in cluster.replicas)
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "order-7"}
    body = {"project_id": project, "params": params(7)}
    feed = Feed(r2, TOKEN)  # a monitor at a third replica

    created = httpx.post(f"{r0}/rpa/v1/executions", json=body, headers=headers, timeout=10)
    assert created.status_code == 202
    execution_id = created.json()["id"]
    # The same key at another replica is the same execution, not a second run.
    again = httpx.post(f"{r1}/rpa/v1/executions", json=body, headers=headers, timeout=10)
    assert again.status_code == 202 and again.json()["id"] == execution_id
    fake.wait_for_creates(project, 1)

    # Another caller sees nothing of it anywhere; its owner sees it everywhere.
    for base in (r0, r1, r2):
        other = httpx.get(f"{base}/rpa/v1/executions/{execution_id}", headers=auth("other"))
        assert other.status_code == 404
        listed = httpx.get(f"{base}/rpa/v1/executions", headers=auth(TOKEN), timeout=10)
        assert [e["id"] for e in listed.json()["items"]] == [execution_id]
        assert httpx.get(f"{base}/rpa/v1/executions", headers=auth("other")).json()["items"] == []

    # A cancel at a replica that does not drive it reaches the one that does.
    driver = next(i for i, r in enumerate(cluster.replicas) if execution_id in r.log_text())
    elsewhere = cluster.replicas[(driver + 1) % 3].base_url
    cancelled = httpx.post(
        f"{elsewhere}/rpa/v1/executions/{execution_id}/cancel", headers=auth(TOKEN), timeout=20
    )
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert (view["status"], view["result"]["code"]) == ("CANCELLED", 55004)
    # Counted by this test's own run: the session's fake holds every earlier test's cancels.
    (run,) = fake.runs_for(project)
    assert fake.cancels.count(run.id) == 1 and fake.creates_for(project) == 1

    # The monitor's feed heard it all, wherever it was created and driven.
    try:
        statuses = [c["status"] for _, c in feed.until_end_of(execution_id)]
    finally:
        feed.close()
    assert statuses[0] == "ACCEPTED" and statuses[-1] == "CANCELLED"

    # Resuming at a third replica replays the same end.
    third = cluster.replicas[(driver + 2) % 3].base_url
    _, frames, _ = events(third, execution_id, TOKEN, params={"after": "1"})
    assert frames[-1]["event"] == "terminal" and frames[-1]["code"] == 55004


def test_redis_restarted_mid_run_loses_nothing(
    cluster: Cluster, fake: FakeUpstream, redis: RedisServer
) -> None:
    project = new_project_id()
    fake.script(project, duration=2.5)

    async def scenario() -> tuple[list[Followed], list[dict[str, Any]]]:
        async with cluster.client() as client:
            ids = [await create_native(client, project, n) for n in range(10)]
            native = [asyncio.create_task(follow_native(client, i, TOKEN)) for i in ids]
            nodes = [
                asyncio.create_task(
                    run_node(
                        cluster.nginx.base_url,
                        TOKEN,
                        {"project_id": project, "params": params(10 + n)},
                    )
                )
                for n in range(10)
            ]
            await asyncio.to_thread(fake.wait_for_creates, project, 20, 20)
            await asyncio.to_thread(redis.restart)  # AOF on: a clean restart keeps every write
            return await asyncio.gather(*native), await asyncio.gather(*nodes)

    native, nodes = asyncio.run(scenario())
    assert_each_got_its_result(native)
    assert [o["params"] for o in nodes] == [params(10 + n) for n in range(10)]
    assert fake.creates_for(project) == 20


def test_redis_down_for_ten_seconds_refuses_new_work_then_recovers(
    cluster: Cluster, fake: FakeUpstream, redis: RedisServer
) -> None:
    """While Redis is unreachable: not ready, creates refused with a clear 503, open streams
    ping on and runs are polled (an end reached meanwhile goes to the streams that can get
    it, and is stored once Redis is back); then every run ends with its result."""
    short, long = new_project_id(), new_project_id()
    fake.script(short, duration=3.0)  # ends while Redis is down
    fake.script(long, duration=13.0)  # ends after it is back

    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        async with cluster.client() as client:
            short_ids = [await create_native(client, short, n) for n in range(10)]
        nodes = [
            asyncio.create_task(
                run_node(cluster.nginx.base_url, TOKEN, {"project_id": long, "params": params(n)})
            )
            for n in range(10)
        ]
        await asyncio.to_thread(fake.wait_for_creates, long, 10, 20)
        await asyncio.to_thread(redis.stop)
        down_at = time.monotonic()
        async with httpx.AsyncClient(timeout=15) as client:
            for replica in cluster.replicas:
                ready = await client.get(replica.base_url + "/rpa/v1/ready")
                assert ready.status_code == 503, ready.text
                refused = await client.post(
                    replica.base_url + "/rpa/v1/executions",
                    json={"project_id": short, "params": params(99)},
                    headers=auth(TOKEN),
                )
                assert refused.status_code == 503, refused.text
                assert "store" in refused.json()["message"]
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        assert not any(n.done() for n in nodes), "a stream ended while Redis was down"
        await asyncio.to_thread(redis.start)
        async with asyncio.timeout(30):
            return short_ids, await asyncio.gather(*nodes)

    short_ids, outputs = asyncio.run(scenario())
    assert [o["params"] for o in outputs] == [params(n) for n in range(10)]
    deadline = time.monotonic() + 15
    for n, execution_id in enumerate(short_ids):  # ended during the outage, stored after it
        while (view := get(cluster.nginx.base_url, execution_id, TOKEN).json())["status"] in (
            "PENDING",
            "RUNNING",
        ):
            assert time.monotonic() < deadline, f"{execution_id} never recorded its end"
            time.sleep(0.1)
        assert view["status"] == "SUCCEEDED" and view["params"] == params(n)
    assert fake.creates_for(short) == 10 and fake.creates_for(long) == 10
    for replica in cluster.replicas:
        assert httpx.get(replica.base_url + "/rpa/v1/ready", timeout=5).status_code == 200


def test_a_local_run_dies_with_its_replica_and_another_reports_it_lost(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    projects = tmp_path / "projects"
    make_project(projects, "sleeps", "import time\ntime.sleep(120)\n", timeout=300)
    env = {
        **FAST,
        "LOG_LEVEL": "INFO",
        "RPA_BACKEND": "local",
        "RPA_PROJECTS_DIR": str(projects),
        "REDIS_ADDR": redis.addr,
        "RPA_TOKEN_KEY": new_key(),
        "RPA_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    replicas = []
    for index in range(2):
        (tmp_path / f"r{index}").mkdir()
        replicas.append(GatewayProcess(env, tmp_path / f"r{index}").start())
    try:
        created = httpx.post(
            f"{replicas[0].base_url}/rpa/v1/executions",
            json={"project_id": "sleeps"},
            headers=auth(TOKEN),
            timeout=10,
        )
        execution_id = created.json()["id"]
        deadline = time.monotonic() + 10
        while get(replicas[1].base_url, execution_id, TOKEN).json()["status"] != "RUNNING":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        replicas[0].process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        _, frames, _ = events(replicas[1].base_url, execution_id, TOKEN)
        assert frames[-1]["event"] == "terminal" and frames[-1]["code"] == 55002
        assert "lost" in frames[-1]["message"]
        assert time.monotonic() - killed_at < LEASE_SECONDS + 3, "not reported promptly"
    finally:
        for replica in replicas:
            replica.stop(signal.SIGKILL)


def test_replicas_on_a_redis_cluster_with_a_password(tmp_path: Path, fake: FakeUpstream) -> None:
    """REDIS_CLUSTER_ADDR + REDIS_PASSWORD as astron-agent sets them: created at one replica,
    followed at the other, cancelled from the first."""
    project, gated = new_project_id(), new_project_id()
    fake.script(project, duration=0.5)
    fake.script(gated, gated=True)
    with cluster_servers(tmp_path / "redis", password="s3cret-pw") as nodes:
        env = {
            **FAST,
            **fake.env(),
            "REDIS_CLUSTER_ADDR": ",".join(nodes.seeds),
            "REDIS_PASSWORD": "s3cret-pw",
            "RPA_TOKEN_KEY": new_key(),
            "RPA_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        replicas = []
        for index in range(2):
            (tmp_path / f"r{index}").mkdir()
            replicas.append(GatewayProcess(env, tmp_path / f"r{index}").start())
        try:
            body = {"project_id": project, "params": params(1)}
            created = httpx.post(
                f"{replicas[0].base_url}/rpa/v1/executions", json=body, headers=auth(TOKEN)
            )
            assert created.status_code == 202, created.text
            _, frames, _ = events(replicas[1].base_url, created.json()["id"], TOKEN)
            assert frames[-1]["event"] == "terminal" and frames[-1]["code"] == 0
            assert frames[-1]["data"]["params"] == params(1)

            waiting = httpx.post(
                f"{replicas[0].base_url}/rpa/v1/executions",
                json={"project_id": gated},
                headers=auth(TOKEN),
            ).json()["id"]
            fake.wait_for_creates(gated, 1)
            cancelled = httpx.post(
                f"{replicas[1].base_url}/rpa/v1/executions/{waiting}/cancel",
                headers=auth(TOKEN),
                timeout=20,
            )
            assert cancelled.json()["result"]["code"] == 55004
            for replica in replicas:
                assert "s3cret-pw" not in replica.log_text()
        finally:
            for replica in replicas:
                replica.stop()


def test_a_replica_with_another_token_key_refuses_to_start(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    """It could not open the tokens the others sealed (404s, takeovers that cannot poll):
    it says so in one line and does not start.  The store holds a fingerprint only."""
    key, other_key = new_key(), new_key()
    env = {**FAST, **fake.env(), "REDIS_ADDR": redis.addr, "RPA_TOKEN_KEY": key}
    first = GatewayProcess(env, tmp_path / "first")
    first.workdir.mkdir()
    first.start()
    stranger = GatewayProcess({**env, "RPA_TOKEN_KEY": other_key}, tmp_path / "stranger")
    stranger.workdir.mkdir()
    line = refused_start(stranger)
    assert "RPA_TOKEN_KEY is not the key the other replicas use" in line, line
    twin = GatewayProcess(env, tmp_path / "twin")
    twin.workdir.mkdir()
    twin.start()  # the same key: welcome
    recorded = redis.client().get("rpa:token-key")
    assert recorded is not None and len(recorded) == 16
    for secret in (key, other_key):
        assert secret.encode() not in redis.client().dump("rpa:token-key")
        assert secret not in stranger.log_text() + first.log_text() + twin.log_text()
    for gateway in (first, twin):
        gateway.stop()


def test_redis_at_maxmemory_turns_the_service_unready_and_refuses_creates(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    """With ``noeviction`` a full Redis refuses writes: as with a full disk, readiness and
    refusals follow the failed writes (never an accepted execution that cannot be kept),
    and both recover once Redis has room again."""
    gateway = GatewayProcess(
        {**FAST, **fake.env(), "REDIS_ADDR": redis.addr, "RPA_TOKEN_KEY": new_key()}, tmp_path
    ).start()
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {}}}])

    def create() -> httpx.Response:
        return httpx.post(
            gateway.base_url + "/rpa/v1/executions",
            json={"project_id": pid},
            headers=auth(TOKEN),
            timeout=10,
        )

    def ready() -> int:
        return httpx.get(gateway.base_url + "/rpa/v1/ready", timeout=10).status_code

    assert create().status_code == 202 and ready() == 200
    filler = redis.client()
    for n in range(50):  # 5 MB of data, so that the bound below is well under what is used
        filler.set(f"filler:{n}", b"x" * 100_000)
    used = int(filler.info("memory")["used_memory"])
    filler.config_set("maxmemory-policy", "noeviction")
    # Below what is used: every write is refused, however the rest of Redis's memory moves
    # (filled to the bound instead, a freed buffer lets small writes through again).
    filler.config_set("maxmemory", used - 2 * 1024 * 1024)
    with pytest.raises(redis_errors.OutOfMemoryError):
        filler.set("one-more", b"x")
    creates = fake.creates_for(pid)
    refusals = [create() for _ in range(3)]
    assert [r.status_code for r in refusals] == [503] * 3, [r.text for r in refusals]
    assert all("store" in r.json()["message"] for r in refusals)
    assert ready() == 503
    with pytest.raises(NodeFailed, match=r"55006|store"):
        node_call(gateway.base_url, TOKEN, {"project_id": pid, "sid": "full"})
    assert fake.creates_for(pid) == creates, "nothing started that could not be kept"

    filler.config_set("maxmemory", 0)
    deadline = time.monotonic() + 10
    while ready() != 200:
        assert time.monotonic() < deadline, "still unready with room in Redis"
        time.sleep(0.1)
    assert create().status_code == 202
    gateway.stop()


def _replicas(
    count: int, tmp_path: Path, fake: FakeUpstream, redis: RedisServer, **env: str
) -> list[GatewayProcess]:
    """Replicas on one Redis, without a balancer (each addressed on its own)."""
    shared = {**FAST, **fake.env(), "REDIS_ADDR": redis.addr, "RPA_TOKEN_KEY": PAIR_KEY, **env}
    replicas = []
    for name in "abc"[:count]:
        replica = GatewayProcess(shared, tmp_path / name)
        replica.workdir.mkdir()
        replicas.append(replica.start())
    return replicas


PAIR_KEY = new_key()


def test_a_cancel_at_another_replica_reaches_the_driver_by_notice_at_once(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    """The replica that took the cancel tells the driver at once (pub/sub): well before
    the driver's next lease renewal, a third of RPA_LEASE_SECONDS (30 s here) away."""
    driver, other = _replicas(2, tmp_path, fake, redis, RPA_LEASE_SECONDS="30")
    project = new_project_id()
    fake.script(project, gated=True, steps=[{"status": "COMPLETED", "result": {}}])
    for n in range(3):  # three: a renewal could happen to fall soon after one cancel
        created = httpx.post(
            f"{driver.base_url}/rpa/v1/executions",
            json={"project_id": project, "params": params(n)},
            headers=auth(TOKEN),
            timeout=10,
        )
        execution_id = created.json()["id"]
        fake.wait_for_creates(project, n + 1)
        asked = time.monotonic()
        cancelled = httpx.post(
            f"{other.base_url}/rpa/v1/executions/{execution_id}/cancel",
            headers=auth(TOKEN),
            timeout=40,
        )
        took = time.monotonic() - asked
        assert cancelled.json()["status"] == "CANCELLED", cancelled.text
        assert took < 3.0, f"cancel {n} took {took:.1f} s: it waited for a renewal"
    for replica in (driver, other):
        replica.stop()


def test_a_recorded_cancel_reaches_the_driver_at_its_next_renewal_without_a_notice(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    """A notice can be lost (the driver's pub/sub connection was reconnecting): the cancel
    recorded with the execution reaches the driver when it renews its leases, every third
    of RPA_LEASE_SECONDS (3 s here).  Recorded here the way a replica does, without the
    notice."""
    (driver,) = _replicas(1, tmp_path, fake, redis, RPA_LEASE_SECONDS="3")
    project = new_project_id()
    fake.script(project, gated=True, steps=[{"status": "COMPLETED", "result": {}}])
    created = httpx.post(
        f"{driver.base_url}/rpa/v1/executions",
        json={"project_id": project, "params": params(1)},
        headers=auth(TOKEN),
        timeout=10,
    )
    execution_id = created.json()["id"]
    fake.wait_for_creates(project, 1)

    async def record_only() -> None:
        store = await RedisStore.connect(redis.addr)
        try:
            await store.request_cancel(execution_id)
        finally:
            await store.close()

    asked = time.monotonic()
    asyncio.run(record_only())
    while (status := get(driver.base_url, execution_id, TOKEN).json()["status"]) != "CANCELLED":
        assert time.monotonic() - asked < 1.0 + 3.0, f"still {status}: the cancel was not seen"
        time.sleep(0.05)
    (run,) = fake.runs_for(project)
    assert fake.cancels.count(run.id) == 1, "the run was cancelled upstream"


async def _follow(
    base_url: str, execution_id: str, opened: asyncio.Event
) -> tuple[str, dict[str, Any]]:
    """A native events stream to its last frame: (its event name, its data)."""
    last: tuple[str, dict[str, Any]] = ("", {})
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=60.0)) as client,
        client.stream(
            "GET", f"{base_url}/rpa/v1/executions/{execution_id}/events", headers=auth(TOKEN)
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                last = (kind, json.loads(line[6:]))
                opened.set()
    return last


def test_redis_losing_its_data_mid_run_ends_every_stream_truthfully(
    tmp_path: Path, fake: FakeUpstream, redis: RedisServer
) -> None:
    """Redis flushed (or restarted empty) while runs go on: each replica notices (the
    store's epoch changed), logs it as an error and writes back what it drives, which
    then ends with its real outcome; a stream of an execution no replica drives ends
    with a clear 'lost' frame within seconds, never with a success that did not happen."""
    driver, follower = _replicas(2, tmp_path, fake, redis, RPA_LEASE_SECONDS="3")
    ends_early, ends_late = new_project_id(), new_project_id()
    for project in (ends_early, ends_late):
        result = {"data": {"project": project}}
        fake.script(project, gated=True, steps=[{"status": "COMPLETED", "result": result}])
    vault = TokenVault.from_settings(decode_key(PAIR_KEY), tmp_path)
    ghost = Execution(  # recorded by a replica that is gone, held under a lease nobody renews
        id=new_execution_id(),
        request=ExecutionRequest(project_id="ghost", sid="ghost"),
        status=Status.RUNNING,
        created_at=time.time(),
        updated_at=time.time(),
        deadline_at=time.time() + 600,
        owner=vault.fingerprint(TOKEN),
    )

    async def record_ghost() -> None:
        store = await RedisStore.connect(redis.addr)
        try:
            await store.create(ghost, None, holder="gone-replica", lease_seconds=3600)
        finally:
            await store.close()

    asyncio.run(record_ghost())

    async def scenario() -> dict[str, Any]:
        early = asyncio.create_task(run_node(driver.base_url, TOKEN, {"project_id": ends_early}))
        late = asyncio.create_task(run_node(driver.base_url, TOKEN, {"project_id": ends_late}))
        await asyncio.to_thread(fake.wait_for_creates, ends_early, 1)
        await asyncio.to_thread(fake.wait_for_creates, ends_late, 1)
        async with httpx.AsyncClient(base_url=driver.base_url, headers=auth(TOKEN)) as client:
            listed = (await client.get("/rpa/v1/executions")).json()
        late_id = next(i["id"] for i in listed["items"] if i["project_id"] == ends_late)
        opened = {"late": asyncio.Event(), "ghost": asyncio.Event()}
        followers = {
            "late": asyncio.create_task(_follow(follower.base_url, late_id, opened["late"])),
            "ghost": asyncio.create_task(_follow(driver.base_url, ghost.id, opened["ghost"])),
        }
        for event in opened.values():  # both streams are open
            await asyncio.wait_for(event.wait(), 10)
        redis.client().flushall()
        flushed = time.monotonic()
        fake.open_gate(ends_early)  # ends before the loss is noticed: its end is kept
        while "the execution store lost its data" not in driver.log_text():
            assert time.monotonic() - flushed < 5, "the loss was never noticed"
            await asyncio.sleep(0.05)
        fake.open_gate(ends_late)  # ends after its record was written back
        ghost_end = await asyncio.wait_for(followers["ghost"], 15)
        ghost_took = time.monotonic() - flushed
        return {
            "early": await asyncio.wait_for(early, 15),
            "late": await asyncio.wait_for(late, 15),
            "late_followed": await asyncio.wait_for(followers["late"], 15),
            "ghost": ghost_end,
            "ghost_took": ghost_took,
            "late_id": late_id,
        }

    ended = asyncio.run(scenario())
    assert ended["early"]["project"] == ends_early  # the real outputs, through the node
    assert ended["late"]["project"] == ends_late
    kind, data = ended["late_followed"]  # at the other replica, too
    assert (kind, data["code"]) == ("terminal", 0), ended["late_followed"]
    kind, data = ended["ghost"]
    assert kind == "lost" and "no replica still drove it" in data["message"], ended["ghost"]
    assert ended["ghost_took"] < 1.0 + 1.5 + 3.0, "a lost stream ends within seconds"
    for replica in (driver, follower):
        assert "the execution store lost its data" in replica.log_text()
    # Written back and finished: readable again, with its real outcome.
    view = get(follower.base_url, ended["late_id"], TOKEN).json()
    assert (view["status"], view["result"]["code"]) == ("SUCCEEDED", 0), view
    for replica in (driver, follower):
        replica.stop()
