"""Open streams at scale: four replicas on Redis, as many streams as this machine holds.

For each level of ``--levels`` (default 1 000, 10 000 and 100 000) and each store of
``--stores`` (one ``redis-server``, and a Redis Cluster of three masters), a fresh set-up:
the store, ``--replicas`` gateways (default settings, INFO logs, plus the Redis address
and ``RPA_TOKEN_KEY``) and the fake upstream.  The project's runs last as long as it takes
to open every stream plus ``--hold`` seconds, so every stream is open at once for a while;
the gateways see 20 such runs first, so they poll each run once, when it ends (a learned
schedule: as a service in use would).  The streams are opened at ``--rate`` per second,
spread evenly over the replicas, straight to each (a balancer in front would hold a second
descriptor and its own memory per stream), from ``--clients`` client processes whose
sockets are raw asyncio protocols (an HTTP library would cost the client more CPU than the
gateways spend), each from its own loopback address (a source address has ~28 000 ports
per destination).  One caller for all the streams, ``RPA_MAX_UNFINISHED_PER_TOKEN`` raised
to let it (schedules are learned per caller: a hundred callers would each need 20 runs
first, each as long as the level's).

Per level it prints and writes (``bench/results/scale-<stores>.json``): streams delivered, the
most open at once (the replicas' open descriptors above their idle count), memory per open
stream (the replicas' RSS growth, at its most over the run and when the most were open,
over that), and CPU per execution (replicas and Redis together, from the first stream
opened to the last result), with pings per stream (every 3 s while open: the longer a
level's streams stay open, the more each costs).  A level the machine cannot take at
``--rate`` shows as failures, each named by what the client got: a connection closed
unanswered had sent nothing the replica could read within ``RPA_HEADER_TIMEOUT`` (the
load generator late to send), a 408 had sent part of its head.

Descriptors: each replica needs one per stream; this raises the limit of the processes it
starts as far as it may (with CAP_SYS_RESOURCE: to what ``fs.nr_open`` allows; otherwise to
the hard limit), says what it got, and cuts a level to what the replicas can then hold
(a replica serves at most its limit less what it keeps for other files, see server.py).

    .venv/bin/python bench/scale.py [--levels 1000,10000,100000 --rate 250 --stores redis,cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvloop

from load import (
    HOST,
    RESULTS,
    ROOT,
    cpu_ms,
    free_port,
    gateway_source,
    mem_kb,
    start,
    stop,
    wait_ready,
)

sys.path.insert(0, str(ROOT))
from tests.redis_servers import RedisClusterNodes, RedisServer

from rpa_gateway.config import Settings
from rpa_gateway.security import new_key
from rpa_gateway.server import http_limits

WARMUP_RUNS = 20
DEFAULTS = Settings()  # the settings the replicas run with, less the bench's own
PING_S = 3.0


# --- the client process ----------------------------------------------------------------------
@dataclass
class Share:
    """One client process's streams: ``ports[i % len(ports)]`` for its i-th, opened at
    ``rate`` per second from ``source`` (a loopback address)."""

    ports: list[int]
    project: str
    streams: int
    first: int  # its streams' numbers start here (callers and sids)
    rate: float
    timeout_s: float
    source: str


def _refusal(reply: bytes) -> str:
    """A refusal's status and content type: a compat caller reads only ``data:`` lines, so
    a refusal in any form but an event stream would read as a success to it."""
    status = reply.split(b"\r\n", 1)[0].decode(errors="replace")
    kind = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", reply)
    return f"{status} ({kind.group(1).decode() if kind else 'no content type seen'})"


@dataclass
class _Stream(asyncio.Protocol):
    done: asyncio.Future[str | None]
    buffer: bytearray = field(default_factory=bytearray)
    transport: asyncio.BaseTransport | None = None
    head_ok: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's: not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.head_ok:
            if len(buffer) < 12:
                return
            if not buffer.startswith(b"HTTP/1.1 200"):
                self._end(_refusal(bytes(buffer)))
                return
            self.head_ok = True
        at = buffer.find(b"data:")
        if at < 0:
            del buffer[:-8]  # pings only; a frame's start may be in the last bytes
            return
        end = buffer.find(b"\n", at)
        if end < 0:
            return
        try:
            frame = json.loads(buffer[at + 5 : end])
        except ValueError:
            self._end("malformed data frame")
            return
        code = frame.get("code")
        self._end(None if code == 0 else f"code {code}: {str(frame.get('message'))[:60]}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("closed without a data frame" if self.buffer else "closed unanswered")

    def _end(self, failure: str | None) -> None:
        if not self.done.done():
            self.done.set_result(failure)
        if self.transport is not None:
            self.transport.close()


async def _one(share: Share, i: int, t0: float, state: Counter[str]) -> str | None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t0 + i / share.rate - loop.time()))
    number = share.first + i
    body = json.dumps(
        {"project_id": share.project, "sid": f"s{number}", "params": {"i": number}}
    ).encode()
    port = share.ports[i % len(share.ports)]
    head = (
        f"POST /rpa/v1/exec HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Authorization: Bearer scale\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    done: asyncio.Future[str | None] = loop.create_future()
    try:
        transport, _ = await loop.create_connection(
            lambda: _Stream(done), HOST, port, local_addr=(share.source, 0)
        )
    except OSError as exc:
        return f"connect: {exc.strerror or exc}"
    state["open"] += 1
    state["max_open"] = max(state["max_open"], state["open"])
    transport.write(head + body)
    try:
        async with asyncio.timeout(share.timeout_s):
            return await done
    except TimeoutError:
        transport.close()
        return "timeout"
    finally:
        state["open"] -= 1


async def _run_share(share: Share) -> dict[str, Any]:
    state: Counter[str] = Counter()
    t0 = asyncio.get_running_loop().time() + 0.1
    outcomes = await asyncio.gather(*(_one(share, i, t0, state) for i in range(share.streams)))
    failures = Counter(outcome for outcome in outcomes if outcome is not None)
    return {"delivered": outcomes.count(None), "failures": dict(failures)}


def _client_main(conn: Connection, share: Share) -> None:
    conn.send(uvloop.run(_run_share(share)))
    conn.close()


def run_clients(shares: list[Share], sample: Any) -> dict[str, Any]:
    """Each share in its own process; ``sample()`` every 0.5 s until all are done."""
    ctx = mp.get_context("spawn")
    running = []
    for share in shares:
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_client_main, args=(sender, share), daemon=True)
        process.start()
        sender.close()
        running.append((process, receiver))
    delivered, failures = 0, Counter[str]()
    try:
        for process, receiver in running:
            while not receiver.poll(0.5):
                sample()
                if not process.is_alive() and not receiver.poll(0):
                    raise RuntimeError(f"a client process died ({process.exitcode})")
            result = receiver.recv()
            delivered += result["delivered"]
            failures.update(result["failures"])
            process.join(10)
    finally:
        for process, _ in running:
            if process.is_alive():
                process.kill()
    return {"delivered": delivered, "failures": dict(failures)}


# --- the set-up --------------------------------------------------------------------------------
class Fleet:
    """The store, the replicas and the fake upstream of one level."""

    def __init__(
        self, workdir: Path, store: str, replicas: int, streams: int, run_s: float
    ) -> None:
        self._stack = ExitStack()
        try:
            self._start(workdir, store, replicas, streams, run_s)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, workdir: Path, store: str, replicas: int, streams: int, run_s: float) -> None:
        workdir.mkdir(parents=True)
        fake_port = free_port()
        self.fake_url = f"http://{HOST}:{fake_port}"
        fake = start(
            workdir / "upstream.log",
            dict(os.environ),
            "-m",
            "tests.fakes.rpa_upstream",
            "--port",
            str(fake_port),
        )
        self._stack.callback(stop, fake)
        wait_ready(self.fake_url + "/_fake/stats", fake)
        self.redis_pids: list[int] = []
        env = {
            "RPA_TOKEN_KEY": new_key(),
            "RPA_MAX_UNFINISHED_PER_TOKEN": str(streams + WARMUP_RUNS),
        }
        # Runs longer than an execution may last by default: the bound raised for them.
        if run_s + 30 > DEFAULTS.xiaowu_rpa_timeout:
            env["XIAOWU_RPA_TIMEOUT"] = str(int(run_s + 60))
        if store == "cluster":
            cluster = RedisClusterNodes(workdir / "cluster").start()
            self._stack.callback(cluster.stop)
            env["REDIS_CLUSTER_ADDR"] = ",".join(cluster.seeds)
            nodes = cluster.nodes
        else:
            (workdir / "redis").mkdir()
            server = RedisServer(workdir / "redis", appendonly=True).start()
            self._stack.callback(server.stop)
            env["REDIS_ADDR"] = server.addr
            nodes = [server]
        self.redis_pids = [node.process.pid for node in nodes if node.process is not None]
        self.ports = [free_port() for _ in range(replicas)]
        self.gateways = []
        for index, port in enumerate(self.ports):
            where = workdir / f"replica{index}"
            where.mkdir()
            gateway_env = {
                **os.environ,
                **env,
                "SERVICE_HOST": HOST,
                "SERVICE_PORT": str(port),
                "RPA_DATA_DIR": str(where / "data"),
                "XIAOWU_RPA_TASK_CREATE_URL": self.fake_url
                + "/api/rpa-openapi/workflows/execute-async",
                "XIAOWU_RPA_TASK_QUERY_URL": self.fake_url + "/api/rpa-openapi/executions",
            }
            gateway = start(where / "gateway.log", gateway_env, "-m", "rpa_gateway", "serve")
            self._stack.callback(stop, gateway)
            self.gateways.append(gateway)
        for port, gateway in zip(self.ports, self.gateways, strict=True):
            wait_ready(f"http://{HOST}:{port}/rpa/v1/ready", gateway)

    def script(self, project: str, duration: float) -> None:
        url = f"{self.fake_url}/_fake/projects/{project}"
        httpx.put(url, json={"duration": duration}, timeout=10).raise_for_status()

    def cpu_ms(self) -> float:
        pids = [gateway.pid for gateway in self.gateways] + self.redis_pids
        return sum(cpu_ms(pid) for pid in pids)

    def rss_kb(self) -> int:
        return sum(mem_kb(gateway.pid, "VmRSS") for gateway in self.gateways)

    def descriptors(self) -> int:
        return sum(len(os.listdir(f"/proc/{gateway.pid}/fd")) for gateway in self.gateways)

    def close(self) -> None:
        self._stack.close()


def raise_descriptor_limit(wanted: int) -> int:
    """As many descriptors as ``wanted`` for the processes started from here, if allowed;
    the limit they get."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        target = min(max(wanted, hard), ceiling)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
    except (OSError, ValueError):  # not root: as far as the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def shares_of(
    level: int, rate: float, clients: int, ports: list[int], project: str, timeout_s: float
) -> list[Share]:
    shares = []
    first = 0
    for k in range(clients):
        count = level // clients + (1 if k < level % clients else 0)
        # Each client's streams go round the replicas from another one, so the replicas
        # get even shares whatever the client count.
        rotated = ports[k % len(ports) :] + ports[: k % len(ports)]
        shares.append(
            Share(rotated, project, count, first, rate / clients, timeout_s, f"127.0.0.{10 + k}")
        )
        first += count
    return shares


def one_level(args: argparse.Namespace, workdir: Path, store: str, level: int) -> dict[str, Any]:
    opening_s = level / args.rate
    duration = opening_s + args.hold
    fleet = Fleet(workdir, store, args.replicas, level, duration)
    try:
        fleet.script("scale", duration)
        # The runs seen first: polled once each, when it ends, from then on.
        warm = shares_of(WARMUP_RUNS, 50.0, 1, fleet.ports, "scale", duration + 60)
        warm_result = run_clients(warm, lambda: None)
        if warm_result["delivered"] != WARMUP_RUNS:
            raise RuntimeError(f"warm-up failed: {warm_result}")
        time.sleep(6.0)  # the next sync of run durations makes the learned schedule
        idle_fds = fleet.descriptors()
        rss_before = fleet.rss_kb()
        # The most descriptors open, the RSS then, and the most RSS over the whole run.
        peaks = {"fds": idle_fds, "rss_then": rss_before, "rss": rss_before}

        def sample() -> None:
            fds, rss = fleet.descriptors(), fleet.rss_kb()
            if fds > peaks["fds"]:
                peaks["fds"], peaks["rss_then"] = fds, rss
            peaks["rss"] = max(peaks["rss"], rss)

        cpu_before = fleet.cpu_ms()
        began = time.monotonic()
        # Each client under its descriptor limit, with room for its other files.
        clients = max(args.clients, -(-level // (args.descriptor_limit - 1000)))
        shares = shares_of(level, args.rate, clients, fleet.ports, "scale", duration + 120)
        result = run_clients(shares, sample)
        wall_s = time.monotonic() - began
        cpu = fleet.cpu_ms() - cpu_before
    finally:
        fleet.close()
    most_open = peaks["fds"] - idle_fds
    return {
        "store": store,
        "streams": level,
        "replicas": args.replicas,
        "rate": args.rate,
        "run_s": round(duration, 1),
        "delivered": result["delivered"],
        "failures": result["failures"],
        "most_open": most_open,
        "rss_kb_per_open_stream": round((peaks["rss"] - rss_before) / max(1, most_open), 2),
        # RSS when the most were open, against them: what a stream holds while open, without
        # what the replicas grew later (as the runs ended).
        "rss_kb_per_open_stream_at_most_open": round(
            (peaks["rss_then"] - rss_before) / max(1, most_open), 2
        ),
        "cpu_ms_per_execution": round(cpu / level, 3),
        # A stream opened at t is open from t to the runs' end: on average half the
        # opening plus the hold.
        "pings_per_stream": round((opening_s / 2 + args.hold) / PING_S, 1),
        "wall_s": round(wall_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1000,10000,100000")
    parser.add_argument("--stores", default="redis,cluster")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rate", type=float, default=250.0, help="streams opened a second")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds all are open")
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    stores = args.stores.split(",")
    most = max(levels)
    limit = raise_descriptor_limit(max(most // args.replicas, most // args.clients) + 4096)
    args.descriptor_limit = limit
    print(f"descriptors per process: {limit}", flush=True)
    # Most they can hold, with a little room (checks, the warm-up), in whole thousands.
    each = http_limits(DEFAULTS, limit).max_connections  # what a replica serves at most
    held = int(args.replicas * each * 0.97) // 1000 * 1000
    if most > held:
        print(
            f"more streams than {args.replicas} replicas hold at this limit (each serves at"
            f" most {each} connections, see server.py): levels above"
            f" {held} are cut to it",
            flush=True,
        )
        levels = [min(level, held) for level in levels]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rpa-scale-") as tmp:
        for store in stores:
            for level in levels:
                row = one_level(args, Path(tmp) / f"{store}-{level}", store, level)
                rows.append(row)
                print(
                    f"{store:8} {level:>7} streams: delivered {row['delivered']}, most open"
                    f" {row['most_open']}, RSS {row['rss_kb_per_open_stream']} KB/stream"
                    f" ({row['rss_kb_per_open_stream_at_most_open']} when most were open), CPU"
                    f" {row['cpu_ms_per_execution']} ms/execution ({row['pings_per_stream']}"
                    f" pings each){'' if not row['failures'] else ' ' + str(row['failures'])}",
                    flush=True,
                )
    path = RESULTS / f"scale-{'-'.join(stores)}.json"
    report = {"gateway": gateway_source(), "descriptor_limit": limit, "rows": rows}
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {path.relative_to(ROOT)}")
    return 0 if all(row["delivered"] == row["streams"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
