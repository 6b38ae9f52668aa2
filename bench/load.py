"""Load benchmark for ``POST /rpa/v1/exec``: many long-lived SSE streams at a steady rate.

Starts the fake upstream (``tests.fakes.rpa_upstream``) and the gateway as their own
processes, warms the gateway up, then opens ``--streams`` streams at ``--rate`` per second
from a separate client process (aiohttp + uvloop) while this driver samples the gateway's
CPU and RSS.  Every run of project ``bench`` completes ``--duration`` seconds after the
gateway creates it.  Prints a report and writes ``bench/results/load-<streams>x<rate>.json``.
See ``bench/README.md`` for what each figure means.

    .venv/bin/python bench/load.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
TOKEN = "bench-token"  # noqa: S105 - the fake upstream accepts any token
WARMUP_STREAMS = 20
DATABASE_FILE = "rpa-gateway.db"  # in RPA_DATA_DIR
CLK_TCK = os.sysconf("SC_CLK_TCK")
Outcome = tuple[str | None, float | None]  # (failure reason or None, delivery latency in ms)


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit; processes started afterwards inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the client process ----------------------------------------------------------------------
def response_failure(response: aiohttp.ClientResponse) -> str | None:
    """Why the response is not an SSE stream, or ``None`` when it is one."""
    if response.status != 200:
        return f"http {response.status}"
    if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
        return "not an event stream"
    return None


def judge_frames(frames: list[tuple[float, bytes]]) -> Outcome:
    """Succeed on exactly one ``data:`` frame (arrival time, payload) with code 0."""
    if not frames:
        return "stream ended without a data frame", None
    if len(frames) > 1:
        return "more than one data frame", None
    received, raw = frames[0]
    try:
        frame = json.loads(raw)
    except ValueError:
        return "malformed data frame", None
    if frame.get("code") != 0:
        return f"code {frame.get('code')}: {str(frame.get('message'))[:80]}", None
    completed_at = (frame.get("data") or {}).get("completed_at")
    if completed_at is None:
        return "no completed_at in data", None
    return None, (received - float(completed_at)) * 1000.0


async def read_stream(response: aiohttp.ClientResponse) -> Outcome:
    """Read SSE lines to the end; succeed on exactly one ``data:`` frame with code 0."""
    failure = response_failure(response)
    if failure is not None:
        return failure, None
    frames: list[tuple[float, bytes]] = []
    async for line in response.content:
        if line.startswith(b"data:"):
            frames.append((time.time(), line[5:]))
    return judge_frames(frames)


@dataclass(frozen=True)
class Load:
    url: str  # the gateway's base URL
    project: str
    streams: int
    rate: float  # streams opened per second
    timeout_s: float  # per stream
    callers: int = 1  # streams spread over this many tokens (one caller may have 1000 open)


async def _one_stream(
    session: aiohttp.ClientSession, load: Load, i: int, t0: float, state: dict[str, int]
) -> Outcome:
    body = {"project_id": load.project, "sid": f"{load.project}-{i}", "params": {"i": i}}
    await asyncio.sleep(max(0.0, t0 + i / load.rate - asyncio.get_running_loop().time()))
    state["open"] += 1
    state["max_open"] = max(state["max_open"], state["open"])
    try:
        headers = (
            {"Authorization": f"Bearer {TOKEN}-{i % load.callers}"} if load.callers > 1 else None
        )
        async with session.post(load.url + "/rpa/v1/exec", json=body, headers=headers) as response:
            return await read_stream(response)
    except TimeoutError:
        return "timeout", None
    except aiohttp.ClientError as exc:
        return type(exc).__name__, None
    finally:
        state["open"] -= 1


async def _run_client(load: Load) -> dict[str, Any]:
    state = {"open": 0, "max_open": 0}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),  # no cap on concurrent connections
        timeout=aiohttp.ClientTimeout(total=load.timeout_s),
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as session:
        t0 = asyncio.get_running_loop().time() + 0.1
        started = time.monotonic()
        tasks = (_one_stream(session, load, i, t0, state) for i in range(load.streams))
        outcomes = await asyncio.gather(*tasks)
    wall_s = time.monotonic() - started
    return {"outcomes": outcomes, "max_open": state["max_open"], "wall_s": wall_s}


def client_main(conn: Connection, load: Load) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    raise_fd_limit()
    conn.send(uvloop.run(_run_client(load)))
    conn.close()


def run_client(load: Load, sample: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run the client in its own process; call ``sample()`` every 100 ms while it runs."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=client_main, args=(sender, load), daemon=True)
    proc.start()
    sender.close()
    try:
        while not receiver.poll(0.1):
            if sample is not None:
                sample()
        try:
            result: dict[str, Any] = receiver.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(f"client process died (exit code {proc.exitcode})") from None
        proc.join(10)
        return result
    finally:
        if proc.is_alive():
            proc.kill()


# --- the driver ------------------------------------------------------------------------------
def load_together(
    running: dict[str, Services], load: Callable[[Services], Load], settle: float = 0.0
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Every gateway under its load at the same moment (this machine's speed drifts: only
    figures taken in the same moment compare); each one's client results (with its
    gateway's RSS before the load, ``rss_before_kb``, and at most, ``rss_peak_kb``, sampled
    every 100 ms) and the CPU its gateway spent (ms), measured ``settle`` seconds after the
    last client finished."""
    before = {name: cpu_ms(svc.gateway.pid) for name, svc in running.items()}
    rss_before = {name: mem_kb(svc.gateway.pid, "VmRSS") for name, svc in running.items()}
    peaks = dict(rss_before)
    polls_before = {name: svc.upstream_stats().get("queries", 0) for name, svc in running.items()}

    def sample() -> None:
        for name, svc in running.items():
            peaks[name] = max(peaks[name], mem_kb(svc.gateway.pid, "VmRSS"))

    with ThreadPoolExecutor(len(running)) as pool:
        first = next(iter(running))
        loads = {
            name: pool.submit(run_client, load(svc), sample if name == first else None)
            for name, svc in running.items()
        }
        results = {name: future.result() for name, future in loads.items()}
    time.sleep(settle)
    spent = {name: cpu_ms(svc.gateway.pid) - before[name] for name, svc in running.items()}
    for name, result in results.items():
        result["rss_before_kb"], result["rss_peak_kb"] = rss_before[name], peaks[name]
        result["polls_before"] = polls_before[name]
    return results, spent


def side_by_side_figures(
    running: dict[str, Services],
    results: dict[str, dict[str, Any]],
    spent: dict[str, float],
    streams: int,
) -> dict[str, dict[str, Any]]:
    """Per gateway of a side-by-side round: CPU per execution, RSS growth per open stream,
    delivery, upstream creates and polls."""
    figures: dict[str, dict[str, Any]] = {}
    for name, svc in running.items():
        result = results[name]
        delivered = sum(1 for reason, _ in result["outcomes"] if reason is None)
        stats = svc.upstream_stats()
        growth = result["rss_peak_kb"] - result["rss_before_kb"]
        figures[name] = {
            "cpu_ms_per_execution": round(spent[name] / streams, 3),
            "rss_kb_per_open_stream": round(growth / max(1, result["max_open"]), 2),
            "delivered_pct": round(100 * delivered / streams, 2),
            "upstream_creates": stats["creates"],
            "polls_per_execution": round(
                (stats.get("queries", 0) - result["polls_before"]) / streams, 2
            ),
        }
    return figures


def ratio_rounds(
    args: argparse.Namespace,
    one_round: Callable[[argparse.Namespace, Path], dict[str, dict[str, Any]]],
    ratio_of: tuple[str, str],
    name: str,
    extra: dict[str, Any],
) -> int:
    """``args.rounds`` side-by-side rounds; the CPU ratio ``ratio_of[0] / ratio_of[1]`` of
    each and their median, written to ``bench/results/<name>.json``.  Exit status 1 unless
    every gateway delivered everything with a create each."""
    top, bottom = ratio_of
    rounds = []
    with tempfile.TemporaryDirectory(prefix=f"rpa-{name}-") as tmp:
        for index in range(args.rounds):
            figures = one_round(args, Path(tmp) / f"round{index}")
            ratio = figures[top]["cpu_ms_per_execution"] / figures[bottom]["cpu_ms_per_execution"]
            rss = figures[top]["rss_kb_per_open_stream"] / max(
                0.01, figures[bottom]["rss_kb_per_open_stream"]
            )
            rounds.append({**figures, "cpu_ratio": round(ratio, 3), "rss_ratio": round(rss, 3)})
            print(
                f"round {index + 1}: {top} / {bottom} CPU {ratio:.3f} RSS per stream {rss:.3f}"
                f" {figures}",
                flush=True,
            )
    ratios = [r["cpu_ratio"] for r in rounds]
    median = statistics.median(ratios)
    rss_ratios = [r["rss_ratio"] for r in rounds]
    report = {
        "gateway": gateway_source(),
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        **extra,
        "rounds": rounds,
        "cpu_ratios": ratios,
        "cpu_ratio_median": median,
        "rss_ratios": rss_ratios,
        "rss_ratio_median": statistics.median(rss_ratios),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"CPU per execution, {top} / {bottom}: median {median} of {ratios}")
    print(
        f"RSS per open stream, {top} / {bottom}:"
        f" median {report['rss_ratio_median']} of {rss_ratios}"
    )
    print(f"written to {path}")
    ok = all(
        r[side]["delivered_pct"] == 100.0 and r[side]["upstream_creates"] >= args.streams
        for r in rounds
        for side in ratio_of
    )
    return 0 if ok else 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(
    log: Path, env: dict[str, str], *args: str, launcher: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Run ``[*launcher] python *args`` from the project root, output to ``log``, in its own
    session (``launcher``: e.g. valgrind and its options)."""
    with log.open("ab") as out:
        argv = [*launcher, sys.executable, *args]
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}: not ready after {timeout} s")


def gateway_source() -> str:
    """Where the gateway's code is imported from (PYTHONPATH may name a snapshot), and,
    for this checkout, its commit and whether ``src`` has uncommitted changes."""
    spec = importlib.util.find_spec("rpa_gateway")
    if spec is None or spec.origin is None:
        return "rpa_gateway not found"
    package = Path(spec.origin).parent
    git = shutil.which("git")
    if git is None or not package.is_relative_to(ROOT):
        return str(package)
    run = functools.partial(subprocess.run, cwd=ROOT, capture_output=True, text=True)
    commit = run([git, "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run([git, "status", "--porcelain", "--", "src"]).stdout.strip()
    return f"{package.relative_to(ROOT)} at {commit}{' + uncommitted changes' if dirty else ''}"


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK  # utime + stime


def mem_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def percentile(ordered: list[float], q: int) -> float | None:
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


@dataclass(frozen=True)
class Services:
    """The fake upstream and the gateway as ``services()`` started them."""

    fake_url: str
    gw_url: str
    gateway: subprocess.Popen[bytes]
    gw_log: Path
    data_dir: Path  # the gateway's RPA_DATA_DIR

    def script(self, project: str, script: dict[str, Any]) -> None:
        """Script the fake upstream's runs of ``project`` (``{"duration": s}``, steps, ...)."""
        reply = httpx.put(f"{self.fake_url}/_fake/projects/{project}", json=script, timeout=5)
        reply.raise_for_status()

    def upstream_stats(self) -> dict[str, int]:
        """The fake upstream's counters: ``creates``, ``runs``, ``cancels``, ``queries``."""
        stats: dict[str, int] = httpx.get(self.fake_url + "/_fake/stats", timeout=5).json()
        return stats

    @property
    def db_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` from the gateway's store, opened read-only (WAL: never blocks it)."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()


def warnings_and_worse(lines: list[str]) -> list[str]:
    """The log without its INFO and DEBUG lines (tracebacks, which have no level, stay)."""
    return [line for line in lines if line.split(" ", 3)[2:3] not in (["INFO"], ["DEBUG"])]


@contextmanager
def services(
    workdir: Path,
    gateway_env: dict[str, str],
    *,
    launcher: Sequence[str] = (),
    ready_timeout: float = 30,
) -> Iterator[Services]:
    """Start the fake upstream and the gateway (``gateway_env`` on top of the defaults;
    ``launcher`` runs the gateway's interpreter, see ``start``).

    Both are stopped on the way out; on an error the tails of their logs are printed.
    """
    fake_port, gw_port = free_port(), free_port()
    fake_url, gw_url = f"http://{HOST}:{fake_port}", f"http://{HOST}:{gw_port}"
    gw_env = {
        **os.environ,
        "SERVICE_HOST": HOST,
        "SERVICE_PORT": str(gw_port),
        "RPA_DATA_DIR": str(workdir / "data"),
        "XIAOWU_RPA_TASK_CREATE_URL": fake_url + "/api/rpa-openapi/workflows/execute-async",
        "XIAOWU_RPA_TASK_QUERY_URL": fake_url + "/api/rpa-openapi/executions",
        **gateway_env,  # on the defaults a user runs, INFO logs included
    }
    fake = gateway = None
    try:
        fake_log, gw_log = workdir / "upstream.log", workdir / "gateway.log"
        fake_args = ("-m", "tests.fakes.rpa_upstream", "--port", str(fake_port))
        fake = start(fake_log, dict(os.environ), *fake_args)
        wait_ready(fake_url + "/_fake/stats", fake)
        gateway = start(gw_log, gw_env, "-m", "rpa_gateway", "serve", launcher=launcher)
        wait_ready(gw_url + "/rpa/v1/ready", gateway, ready_timeout)
        yield Services(fake_url, gw_url, gateway, gw_log, Path(gw_env["RPA_DATA_DIR"]))
    except Exception:
        for log in (workdir / "gateway.log", workdir / "upstream.log"):
            if log.exists():
                print(f"--- tail of {log.name}:\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stop(gateway)
        stop(fake)


def warm_up(svc: Services) -> Counter[str]:
    """Run WARMUP_STREAMS short executions of project ``warmup``; returns their failures."""
    svc.script("warmup", {"duration": 0.1})
    warm = run_client(Load(svc.gw_url, "warmup", WARMUP_STREAMS, 50, 60))
    failures = Counter(reason for reason, _ in warm["outcomes"] if reason)
    if failures:
        print(f"warning: warm-up failures: {dict(failures)}", file=sys.stderr)
    return failures


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    began = time.monotonic()
    gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
    with services(workdir, gateway_env) as svc:
        svc.script("bench", {"duration": args.duration})
        warm_failures = warm_up(svc)

        pid = svc.gateway.pid
        cpu_before, baseline_kb = cpu_ms(pid), mem_kb(pid, "VmRSS")
        samples = [baseline_kb]
        load_began = time.monotonic()
        load = Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60)
        result = run_client(load, sample=lambda: samples.append(mem_kb(pid, "VmRSS")))
        load_wall = time.monotonic() - load_began
        cpu_total = cpu_ms(pid) - cpu_before
        peak_kb = max(max(samples), mem_kb(pid, "VmHWM"))
        creates = svc.upstream_stats()["creates"]
        gw_log_lines = warnings_and_worse(svc.gw_log.read_text(errors="replace").splitlines())

    outcomes = result["outcomes"]
    failures = Counter(reason for reason, _ in outcomes if reason)
    latencies = sorted(latency for reason, latency in outcomes if reason is None and latency)
    successes = len(outcomes) - sum(failures.values())
    max_open = result["max_open"]
    return {
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "gateway_env": args.gateway_env,
        "successes": successes,
        "success_rate_pct": round(100.0 * successes / max(1, len(outcomes)), 2),
        "failures": dict(failures.most_common()),
        "warmup_failures": dict(warm_failures),
        "server_cpu_ms_total": round(cpu_total, 1),
        "server_cpu_ms_per_execution": round(cpu_total / max(1, args.streams), 2),
        "baseline_rss_mb": round(baseline_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "max_open_streams": max_open,
        "rss_growth_kb_per_open_stream": round((peak_kb - baseline_kb) / max(1, max_open), 1),
        "latency_ms": {
            **{f"p{q}": percentile(latencies, q) for q in (50, 90, 99)},
            "max": percentile(latencies, 100),
        },
        "gateway_log_lines": len(gw_log_lines),
        "gateway_log_tail": gw_log_lines[-10:],
        "upstream_creates": creates,
        "upstream_creates_expected": args.streams + WARMUP_STREAMS,
        "client_wall_s": round(result["wall_s"], 2),
        "load_wall_s": round(load_wall, 2),
        "total_wall_s": round(time.monotonic() - began, 2),
    }


def creates_ok(report: dict[str, Any]) -> bool:
    """Exactly one upstream create per execution: none lost, none doubled."""
    return bool(report["upstream_creates"] == report["upstream_creates_expected"])


def creates_and_log_lines(report: dict[str, Any], note: str = "") -> list[str]:
    """The report lines every benchmark ends with: upstream creates, the gateway's log."""
    mismatch = "" if creates_ok(report) else " - MISMATCH"
    return [
        f"upstream creates {report['upstream_creates']} "
        f"(expected {report['upstream_creates_expected']}{mismatch}{note})",
        f"gateway log      {report['gateway_log_lines']} lines at WARNING and above",
        *(f"  | {line[:160]}" for line in report["gateway_log_tail"]),
    ]


def print_report(report: dict[str, Any], path: Path) -> None:
    lat = report["latency_ms"]
    lines = [
        f"streams {report['streams']} at {report['rate']}/s, runs last {report['duration_s']} s",
        f"success          {report['success_rate_pct']}% ({report['successes']})",
        f"failures         {report['failures'] or 'none'}",
        f"server CPU       {report['server_cpu_ms_total']} ms total, "
        f"{report['server_cpu_ms_per_execution']} ms per execution",
        f"RSS              baseline {report['baseline_rss_mb']} MB, "
        f"peak {report['peak_rss_mb']} MB",
        f"open streams     max {report['max_open_streams']}, "
        f"{report['rss_growth_kb_per_open_stream']} KB RSS growth per open stream",
        f"latency ms       p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}",
        *creates_and_log_lines(report),
        f"wall time        load {report['load_wall_s']} s, total {report['total_wall_s']} s",
        f"written to       {path.relative_to(ROOT)}",
    ]
    print("\n".join(lines))


def add_gateway_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )


def run_and_record(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace, Path], dict[str, Any]],
    result_name: str,
    report: Callable[[dict[str, Any], Path], None],
) -> dict[str, Any] | None:
    """The common driver: check --gateway-env, run ``measure`` in a temporary directory with
    the fd limit raised and signals handled, write ``bench/results/<result_name>.json`` and
    print it.  ``None`` when interrupted (both services are stopped either way)."""
    if any("=" not in item for item in args.gateway_env):
        parser.error("--gateway-env takes KEY=VALUE")
    raise_fd_limit()  # the gateway and the client inherit it
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with tempfile.TemporaryDirectory(prefix="rpa-bench-") as tmp:
            result = measure(args, Path(tmp))
    except KeyboardInterrupt:
        print("interrupted; the gateway and the fake upstream were stopped", file=sys.stderr)
        return None
    path = RESULTS / f"{result_name}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    report(result, path)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="streams to open")
    parser.add_argument("--rate", type=float, default=100.0, help="streams opened per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each run lasts")
    add_gateway_env_option(parser)
    args = parser.parse_args()
    report = run_and_record(parser, args, bench, f"load-{args.streams}x{args.rate:g}", print_report)
    if report is None:
        return 130
    return 0 if report["success_rate_pct"] == 100.0 and creates_ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
