"""Three replicas on Redis behind nginx, against one process on SQLite, in one invocation.

1. **Load**, ``--rounds`` times, each set-up alone on the machine one after another (the
   order turning, as this machine's speed drifts): ``--streams`` compat streams at
   ``--rate`` per second (runs of ``--duration`` seconds) against one gateway on SQLite,
   through nginx against one gateway on Redis, through nginx against three replicas
   sharing one Redis, and through nginx against one gateway on Redis given a replica's
   share of the load (a third of the streams at a third of the rate: what each of the three
   receives), which separates what replication adds from what a process's lower rate costs
   (a process's fixed costs per second and per wake-up are shared by fewer executions).
   CPU per execution is summed over the replicas and ``redis-server`` (nginx, a proxy
   every set-up could have, is reported apart); the ratios of each round (replicas to one
   process on SQLite: what Redis and scale-out cost together; to one process on Redis:
   what scale-out costs; to one given a replica's share: what replication itself adds)
   and their medians are printed.
2. **Cross-replica delivery**: executions created at replica A, their native event streams
   followed at A and at B; the added delay is the terminal event's arrival time less the
   time it was written (its ``at``), cross-replica against same-replica.
3. **Takeover**: ``--takeover`` executions running, one replica SIGKILLed; for each of its
   executions, the time until another replica holds its lease (read from Redis every 20 ms).

Every set-up first runs the load's project ``WARMUP_STREAMS`` times and waits for the sync
of run durations, so the load polls on the schedule learned from them, as a user's callers
do after their first runs.  Default settings (INFO logs) but for ``RPA_LEASE_SECONDS``
where stated.  Prints the figures, writes ``bench/results/replicas-<streams>x<rate>.json``.

    .venv/bin/python bench/replicas.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync
import uvloop

from load import (
    HOST,
    ROOT,
    TOKEN,
    WARMUP_STREAMS,
    Load,
    Services,
    cpu_ms,
    free_port,
    gateway_source,
    percentile,
    run_and_record,
    run_client,
    services,
    start,
    stop,
    wait_ready,
    warm_up,
)

sys.path.insert(0, str(ROOT))
from tests.nginx_proxy import NginxProxy
from tests.redis_servers import RedisServer

from rpa_gateway.security import new_key


def load_figures(result: dict[str, Any], cpu: float, streams: int) -> dict[str, Any]:
    outcomes = result["outcomes"]
    failures = Counter(reason for reason, _ in outcomes if reason)
    latencies = sorted(latency for reason, latency in outcomes if reason is None and latency)
    return {
        "delivered_pct": round(100.0 * (len(outcomes) - sum(failures.values())) / streams, 2),
        "failures": dict(failures),
        "cpu_ms_per_execution": round(cpu / streams, 2),
        "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 99)},
    }


def single_sqlite(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workdir.mkdir()
    with services(workdir, {}) as svc:
        svc.script("bench", {"duration": args.duration})
        warm_up(svc)
        teach(svc.gw_url, args)
        creates_before = svc.upstream_stats()["creates"]
        pid = svc.gateway.pid
        before = cpu_ms(pid)
        load = Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60)
        result = run_client(load)
        figures = load_figures(result, cpu_ms(pid) - before, args.streams)
        figures["creates"] = svc.upstream_stats()["creates"] - creates_before
    return figures


def teach(url: str, args: argparse.Namespace) -> None:
    """Run the load's project WARMUP_STREAMS times as the load's caller, then wait for the
    next sync of run durations (every 5 s): the load runs on the schedule a user's callers
    have after their first runs (schedules are learned per caller and project)."""
    run_client(Load(url, "bench", WARMUP_STREAMS, 100, args.duration + 60))
    time.sleep(6.0)


class Replicated:
    """Redis, ``replicas`` gateways and nginx, next to an already running fake upstream."""

    def __init__(
        self, workdir: Path, fake_url: str, lease_seconds: float | None, replicas: int = 3
    ) -> None:
        (workdir / "redis").mkdir(parents=True)
        self.redis = RedisServer(workdir / "redis", appendonly=True).start()
        self.key = new_key()
        self.ports = [free_port() for _ in range(replicas)]
        env = {
            "SERVICE_HOST": HOST,
            "REDIS_ADDR": self.redis.addr,
            "RPA_TOKEN_KEY": self.key,
            "XIAOWU_RPA_TASK_CREATE_URL": fake_url + "/api/rpa-openapi/workflows/execute-async",
            "XIAOWU_RPA_TASK_QUERY_URL": fake_url + "/api/rpa-openapi/executions",
        }
        if lease_seconds is not None:
            env["RPA_LEASE_SECONDS"] = str(lease_seconds)
        self.gateways = []
        for index, port in enumerate(self.ports):
            replica_dir = workdir / f"replica{index}"
            replica_dir.mkdir()
            replica_env = {
                **os.environ,
                **env,
                "SERVICE_PORT": str(port),
                "RPA_DATA_DIR": str(replica_dir / "data"),
            }
            self.gateways.append(
                start(replica_dir / "gateway.log", replica_env, "-m", "rpa_gateway", "serve")
            )
        for port, gateway in zip(self.ports, self.gateways, strict=True):
            wait_ready(f"http://{HOST}:{port}/rpa/v1/ready", gateway)
        self.nginx = NginxProxy(workdir / "nginx", self.ports).start()

    def url(self, index: int) -> str:
        return f"http://{HOST}:{self.ports[index]}"

    def cpu_ms(self) -> tuple[float, float, float]:
        """(replicas, redis-server, nginx master and workers) CPU so far."""
        assert self.redis.process is not None and self.nginx.process is not None
        replicas = sum(cpu_ms(g.pid) for g in self.gateways if g.poll() is None)
        nginx_pids = [self.nginx.process.pid, *children(self.nginx.process.pid)]
        return replicas, cpu_ms(self.redis.process.pid), sum(cpu_ms(p) for p in nginx_pids)

    def commands(self) -> Counter[str]:
        """Redis's count of each command served so far (``INFO commandstats``)."""
        client = redis_sync.Redis(host=HOST, port=self.redis.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return Counter({name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()})

    def connections(self) -> int:
        """Clients connected to Redis now (the replicas' pools and pub/sub connections)."""
        client = redis_sync.Redis(host=HOST, port=self.redis.port)
        try:
            return len(client.client_list()) - 1  # not this one
        finally:
            client.close()

    def close(self) -> None:
        self.nginx.stop()
        for gateway in self.gateways:
            stop(gateway)
        self.redis.stop()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def cross_replica_delays(
    cluster: Replicated, project: str, executions: int
) -> dict[str, list[float]]:
    """Arrival less write time of each terminal event, followed at the creating replica
    ("same") and at another one ("cross")."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    delays: dict[str, list[float]] = {"same": [], "cross": []}

    async def follow(client: httpx.AsyncClient, base: str, execution_id: str, kind: str) -> None:
        url = f"{base}/rpa/v1/executions/{execution_id}/events"
        async with client.stream("GET", url, headers=headers) as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "terminal":
                    written = json.loads(line[5:])["at"]
                    delays[kind].append((time.time() - written) * 1000)
                    return

    async with httpx.AsyncClient(timeout=60) as client:
        followers = []
        for n in range(executions):
            creator = n % len(cluster.ports)
            body = {"project_id": project, "params": {"n": n}}
            created = await client.post(
                cluster.url(creator) + "/rpa/v1/executions", json=body, headers=headers
            )
            execution_id = created.json()["id"]
            other = cluster.url((creator + 1) % len(cluster.ports))
            followers.append(follow(client, cluster.url(creator), execution_id, "same"))
            followers.append(follow(client, other, execution_id, "cross"))
        await asyncio.gather(*followers)
    return delays


def takeover_delays(cluster: Replicated, fake_url: str, executions: int) -> list[float]:
    """Seconds from a replica's SIGKILL until each of its executions has another holder."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    httpx.put(f"{fake_url}/_fake/projects/takeover", json={"duration": 120}, timeout=5)
    victim = 0
    ids = []
    for _ in range(executions):
        body = {"project_id": "takeover", "params": {}}
        created = httpx.post(
            cluster.url(victim) + "/rpa/v1/executions", json=body, headers=headers, timeout=10
        )
        ids.append(created.json()["id"])
    store = redis_sync.Redis(host=HOST, port=cluster.redis.port, decode_responses=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # every execution leased by the replica that created it
            holders = [store.get(f"rpa:{{{i}}}:lease") for i in ids]
            if all(holders) and len(set(holders)) == 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"leases never settled: {Counter(holders)}")
            time.sleep(0.02)
        victim_holder = holders[0]
        cluster.gateways[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        taken: dict[str, float] = {}
        while len(taken) < len(ids) and time.monotonic() < killed_at + 120:
            for execution_id in ids:
                if execution_id in taken:
                    continue
                holder = store.get(f"rpa:{{{execution_id}}}:lease")
                if holder and holder != victim_holder:
                    taken[execution_id] = time.monotonic() - killed_at
            time.sleep(0.02)
    finally:
        store.close()
    return sorted(taken.get(i, float("inf")) for i in ids)


def replicated_load(
    args: argparse.Namespace, workdir: Path, svc: Services, replicas: int, share: int = 1
) -> dict[str, Any]:
    """The load (``1/share`` of it: as many streams at the rate a replica of ``share``
    receives) through nginx against ``replicas`` gateways on one Redis."""
    streams, rate = args.streams // share, args.rate / share
    cluster = Replicated(workdir, svc.fake_url, lease_seconds=None, replicas=replicas)
    try:
        run_client(Load(cluster.nginx.base_url, "warmup", WARMUP_STREAMS, 50, 60))
        teach(cluster.nginx.base_url, args)
        creates_before = svc.upstream_stats()["creates"]
        commands_before = cluster.commands()
        before = cluster.cpu_ms()
        load = Load(cluster.nginx.base_url, "bench", streams, rate, args.duration + 60)
        connections: list[int] = []
        result = run_client(load, sample=lambda: connections.append(cluster.connections()))
        after = cluster.cpu_ms()
        commands = cluster.commands() - commands_before
        replicated = cluster_figures(streams, result, before, after, commands, connections)
        replicated["creates"] = svc.upstream_stats()["creates"] - creates_before
    finally:
        cluster.close()
    return replicated


def cluster_figures(
    streams: int,
    result: dict[str, Any],
    before: tuple[float, float, float],
    after: tuple[float, float, float],
    commands: Counter[str],
    connections: list[int],
) -> dict[str, Any]:
    replicas_cpu, redis_cpu, nginx_cpu = (b - a for a, b in zip(before, after, strict=True))
    figures = load_figures(result, replicas_cpu + redis_cpu, streams)
    figures["cpu_ms_per_execution_replicas"] = round(replicas_cpu / streams, 2)
    figures["cpu_ms_per_execution_redis"] = round(redis_cpu / streams, 2)
    figures["cpu_ms_per_execution_nginx"] = round(nginx_cpu / streams, 2)
    figures["redis_connections_max"] = max(connections, default=0)
    figures["redis_commands_per_execution"] = {
        name: round(count / streams, 2) for name, count in commands.most_common(12)
    }
    return figures


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    source = gateway_source()  # as the run begins: its gateways start all through it
    rounds: list[dict[str, Any]] = []
    with ExitStack() as stack:
        (workdir / "fake-only").mkdir()
        svc = stack.enter_context(services(workdir / "fake-only", {}))  # the fake upstream
        stop(svc.gateway)  # only its fake upstream is wanted here
        svc.script("bench", {"duration": args.duration})
        svc.script("warmup", {"duration": 0.1})
        for index in range(args.rounds):
            # One after another, each alone, the order turning: this machine's speed drifts.
            phases = ["single", "one_redis", "replicated", "one_redis_share"]
            phases = phases[index % 4 :] + phases[: index % 4]
            figures: dict[str, dict[str, Any]] = {}
            for phase in phases:
                where = workdir / f"{phase}{index}"
                if phase == "single":
                    figures[phase] = single_sqlite(args, where)
                elif phase == "one_redis":
                    figures[phase] = replicated_load(args, where, svc, 1)
                elif phase == "one_redis_share":
                    figures[phase] = replicated_load(args, where, svc, 1, share=args.replicas)
                else:
                    figures[phase] = replicated_load(args, where, svc, args.replicas)
            single, one, replicated = (figures[p] for p in ("single", "one_redis", "replicated"))
            cost = replicated["cpu_ms_per_execution"]
            ratio = cost / max(0.01, single["cpu_ms_per_execution"])
            scale_out = cost / max(0.01, one["cpu_ms_per_execution"])
            at_share = cost / max(0.01, figures["one_redis_share"]["cpu_ms_per_execution"])
            rounds.append(
                {
                    "order": phases,
                    **figures,
                    "cpu_ratio": round(ratio, 3),
                    "cpu_ratio_to_one_on_redis": round(scale_out, 3),
                    "cpu_ratio_to_one_at_a_replicas_share": round(at_share, 3),
                }
            )
            print(
                f"round {index + 1}: CPU ratio {ratio:.3f} to one process on SQLite,"
                f" {scale_out:.3f} to one on Redis, {at_share:.3f} to one on Redis given"
                " a replica's share of the load",
                flush=True,
            )

        same: list[float] = []
        cross: list[float] = []
        if args.delivery:
            cluster = Replicated(workdir / "delivery", svc.fake_url, lease_seconds=None)
            stack.callback(cluster.close)
            svc.script("delivery", {"duration": 1.0})
            delays = uvloop.run(cross_replica_delays(cluster, "delivery", args.delivery))
            same, cross = sorted(delays["same"]), sorted(delays["cross"])
            cluster.close()

        lease = args.lease_seconds
        takeover: list[float] = []
        if args.takeover:
            takeover_cluster = Replicated(workdir / "takeover", svc.fake_url, lease_seconds=lease)
            stack.callback(takeover_cluster.close)
            takeover = takeover_delays(takeover_cluster, svc.fake_url, args.takeover)

    ratios = sorted(r["cpu_ratio"] for r in rounds)
    to_one = sorted(r["cpu_ratio_to_one_on_redis"] for r in rounds)
    to_share = sorted(r["cpu_ratio_to_one_at_a_replicas_share"] for r in rounds)
    return {
        "gateway": source,
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "replicas": args.replicas,
        "rounds": rounds,
        "cpu_ratios": [r["cpu_ratio"] for r in rounds],
        "cpu_ratio_median": ratios[len(ratios) // 2],
        "cpu_ratios_to_one_on_redis": [r["cpu_ratio_to_one_on_redis"] for r in rounds],
        "cpu_ratio_to_one_on_redis_median": to_one[len(to_one) // 2],
        "cpu_ratios_to_one_at_a_replicas_share": [
            r["cpu_ratio_to_one_at_a_replicas_share"] for r in rounds
        ],
        "cpu_ratio_to_one_at_a_replicas_share_median": to_share[len(to_share) // 2],
        "delivery_ms": {
            "same_replica": {f"p{q}": percentile(same, q) for q in (50, 99)},
            "cross_replica": {f"p{q}": percentile(cross, q) for q in (50, 99)},
            "added_p99": round((percentile(cross, 99) or 0) - (percentile(same, 99) or 0), 1),
            "executions": args.delivery,
        },
        "takeover_s": {
            "lease_seconds": lease,
            "executions": args.takeover,
            "p50": percentile(takeover, 50),
            "p99": percentile(takeover, 99),
            "max": percentile(takeover, 100),
        },
    }


def report(result: dict[str, Any], path: Path) -> None:
    delivery, takeover = result["delivery_ms"], result["takeover_s"]
    lines = [
        f"streams {result['streams']} at {result['rate']}/s, runs last {result['duration_s']} s",
    ]
    for number, round_ in enumerate(result["rounds"], start=1):
        single, replicated = round_["single"], round_["replicated"]
        one, share = round_["one_redis"], round_["one_redis_share"]
        lines += [
            f"round {number} ({' then '.join(round_['order'])}): CPU ratio {round_['cpu_ratio']}"
            f" (to one on Redis {round_['cpu_ratio_to_one_on_redis']})",
            f"  single SQLite    delivered {single['delivered_pct']}%, creates"
            f" {single['creates']}, CPU {single['cpu_ms_per_execution']} ms/execution",
            f"  1 replica+Redis  delivered {one['delivered_pct']}%, creates {one['creates']},"
            f" CPU {one['cpu_ms_per_execution']} ms/execution (replica"
            f" {one['cpu_ms_per_execution_replicas']}, redis {one['cpu_ms_per_execution_redis']})",
            f"  {result['replicas']} replicas+Redis delivered {replicated['delivered_pct']}%,"
            f" creates {replicated['creates']}, CPU {replicated['cpu_ms_per_execution']}"
            f" ms/execution (replicas {replicated['cpu_ms_per_execution_replicas']}, redis"
            f" {replicated['cpu_ms_per_execution_redis']}; nginx apart"
            f" {replicated['cpu_ms_per_execution_nginx']}), Redis clients at most"
            f" {replicated['redis_connections_max']}",
            f"  1 replica+Redis given a replica's share ({share['creates']} creates)"
            f" delivered {share['delivered_pct']}%, CPU {share['cpu_ms_per_execution']}"
            f" ms/execution (replica {share['cpu_ms_per_execution_replicas']}, redis"
            f" {share['cpu_ms_per_execution_redis']})",
        ]
    lines += [
        f"CPU ratio        median {result['cpu_ratio_median']} of {result['cpu_ratios']}"
        " (to one process on SQLite)",
        f"                 median {result['cpu_ratio_to_one_on_redis_median']} of"
        f" {result['cpu_ratios_to_one_on_redis']} (to one process on Redis)",
        f"                 median {result['cpu_ratio_to_one_at_a_replicas_share_median']} of"
        f" {result['cpu_ratios_to_one_at_a_replicas_share']} (to one process on Redis given"
        " a replica's share of the load: what replication adds beyond each process's rate)",
        f"delivery ms      same replica {delivery['same_replica']}, cross replica"
        f" {delivery['cross_replica']}: added at p99 {delivery['added_p99']} ms",
        f"takeover s       lease {takeover['lease_seconds']} s: p50 {takeover['p50']}"
        f" p99 {takeover['p99']} max {takeover['max']} ({takeover['executions']} executions)",
        f"written to       {path.relative_to(ROOT)}",
    ]
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--delivery", type=int, default=200, help="executions followed twice (0: skip)"
    )
    parser.add_argument(
        "--takeover", type=int, default=100, help="executions of the victim (0: skip)"
    )
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=3, help="replicas of the load phase")
    parser.add_argument("--rounds", type=int, default=3, help="load rounds")
    parser.add_argument("--gateway-env", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    result = run_and_record(
        parser, args, measure, f"replicas-{args.streams}x{int(args.rate)}", report
    )
    if result is None:
        return 130
    share = args.streams // args.replicas
    ok = all(
        round_[name]["delivered_pct"] == 100.0 and round_[name]["creates"] == streams
        for round_ in result["rounds"]
        for name, streams in (
            ("single", args.streams),
            ("one_redis", args.streams),
            ("replicated", args.streams),
            ("one_redis_share", share),
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
