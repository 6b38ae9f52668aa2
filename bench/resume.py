"""Reconnect-storm benchmark: many clients re-attach to running executions at once.

Starts the fake upstream and the gateway as their own processes (see ``bench/load.py``),
creates ``--reconnects`` executions of project ``resume`` with ``POST /rpa/v1/executions``
(no stream), each upstream run lasting ``--duration`` seconds, and waits until every one has
its upstream run.  Then a separate client process (aiohttp + uvloop) opens all
``POST /rpa/v1/exec`` streams at once with ``Last-Event-ID: <execution id>:1`` while this
driver measures the gateway's CPU and RSS until every stream has its first line, and follows
every stream to its final ``data:`` frame.  Prints a report and writes
``bench/results/resume-<reconnects>.json``.  See ``bench/README.md``.

    .venv/bin/python bench/resume.py --reconnects 1000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from load import (
    ROOT,
    TOKEN,
    WARMUP_STREAMS,
    Services,
    add_gateway_env_option,
    cpu_ms,
    creates_and_log_lines,
    creates_ok,
    gateway_source,
    judge_frames,
    mem_kb,
    percentile,
    raise_fd_limit,
    response_failure,
    run_and_record,
    services,
    warm_up,
    warnings_and_worse,
)

PROJECT = "resume"
CREATE_CONCURRENCY = 100
# (failure or None, ms to response headers, ms to first line, first line kind, delivery ms)
Reattach = tuple[str | None, float | None, float | None, str, float | None]


@dataclass(frozen=True)
class Storm:
    url: str  # the gateway's base URL
    reconnects: int
    timeout_s: float  # per request


def _body(i: int) -> dict[str, Any]:
    return {"project_id": PROJECT, "sid": f"{PROJECT}-{i}", "params": {"i": i}}


# --- the client process ----------------------------------------------------------------------
async def _create_one(
    session: aiohttp.ClientSession, storm: Storm, i: int, limit: asyncio.Semaphore
) -> str | None:
    async with limit, session.post(storm.url + "/rpa/v1/executions", json=_body(i)) as reply:
        if reply.status != 202:
            return None
        view = await reply.json()
        return str(view["id"])


def _first_line_kind(line: bytes, execution_id: str) -> str:
    """Classify the first line of a resumed stream; ``replay`` is the expected one."""
    if not line:
        return "end of stream"
    if line.startswith(b"id: "):
        owner, _, seq = line[4:].strip().decode(errors="replace").rpartition(":")
        if owner != execution_id:
            return "id of another execution"
        return "replay" if seq.isdigit() and int(seq) > 1 else "id not after the cursor"
    for prefix in (b"data:", b":", b"retry:", b"event:"):
        if line.startswith(prefix):
            return prefix.decode()
    return "other"


class Attached:
    """Counts streams that got their first line (or failed); reports when all have."""

    def __init__(self, total: int, report: Callable[[], None]) -> None:
        self._left = total
        self._report = report

    def settle(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._report()


async def _reattach(
    session: aiohttp.ClientSession,
    storm: Storm,
    i: int,
    execution_id: str,
    t0: float,
    attached: Attached,
) -> Reattach:
    headers_ms = first_ms = None
    kind = "none"
    settled = False
    try:
        async with session.post(
            storm.url + "/rpa/v1/exec",
            json=_body(i),
            headers={"Last-Event-ID": f"{execution_id}:1"},
        ) as response:
            headers_ms = (time.monotonic() - t0) * 1000.0
            failure = response_failure(response)
            if failure is not None:
                return failure, headers_ms, None, kind, None
            line = await response.content.readline()
            first_ms = (time.monotonic() - t0) * 1000.0
            kind = _first_line_kind(line, execution_id)
            settled = True
            attached.settle()
            frames: list[tuple[float, bytes]] = []
            while line:
                if line.startswith(b"data:"):
                    frames.append((time.time(), line[5:]))
                line = await response.content.readline()
            reason, delivery_ms = judge_frames(frames)
            return reason, headers_ms, first_ms, kind, delivery_ms
    except TimeoutError:
        return "timeout", headers_ms, first_ms, kind, None
    except aiohttp.ClientError as exc:
        return type(exc).__name__, headers_ms, first_ms, kind, None
    finally:
        if not settled:
            attached.settle()


async def _run_client(conn: Connection, storm: Storm) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=storm.timeout_s)

    # 1. Create the executions (pooled connections, bounded concurrency).
    created_from = time.time()
    limit = asyncio.Semaphore(CREATE_CONCURRENCY)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        made = await asyncio.gather(
            *(_create_one(session, storm, i, limit) for i in range(storm.reconnects)),
            return_exceptions=True,
        )
    ids = [(i, m) for i, m in enumerate(made) if isinstance(m, str)]
    conn.send(("created", {"ids": len(ids), "from": created_from, "to": time.time()}))
    await asyncio.to_thread(conn.recv)  # "go"

    # 2. The storm: every stream opened at once, each on a new connection.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers=headers, timeout=timeout
    ) as session:
        t0 = time.monotonic()
        began = time.time()

        def report() -> None:
            conn.send(("attached", {"client_ms": (time.monotonic() - t0) * 1000.0}))

        attached = Attached(len(ids), report)
        results = await asyncio.gather(
            *(_reattach(session, storm, i, eid, t0, attached) for i, eid in ids)
        )
    conn.send(
        (
            "done",
            {
                "results": results,
                "create_failures": storm.reconnects - len(ids),
                "storm_began": began,
                "wall_s": time.monotonic() - t0,
            },
        )
    )


def client_main(conn: Connection, storm: Storm) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    raise_fd_limit()
    uvloop.run(_run_client(conn, storm))
    conn.close()


# --- the driver ------------------------------------------------------------------------------
def receive(
    conn: Connection,
    proc: BaseProcess,
    kind: str,
    timeout: float,
    sample: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Wait for the client's ``kind`` message, calling ``sample()`` about every 10 ms."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.01):
        if sample is not None:
            sample()
        if not proc.is_alive() and not conn.poll(0):
            raise RuntimeError(f"client process died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {kind!r} from the client after {timeout} s")
    got, payload = conn.recv()
    if got != kind:
        raise RuntimeError(f"expected {kind!r} from the client, got {got!r}")
    result: dict[str, Any] = payload
    return result


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` every 20 ms; returns the seconds it took."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{what}: not after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - began


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5); False when the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def storm(args: argparse.Namespace, svc: Services) -> dict[str, Any]:
    pid = svc.gateway.pid
    expected_creates = args.reconnects + WARMUP_STREAMS
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    load = Storm(svc.gw_url, args.reconnects, args.duration + 60)
    proc = ctx.Process(target=client_main, args=(child_conn, load), daemon=True)
    proc.start()
    child_conn.close()
    client_pid = proc.pid
    assert client_pid is not None
    try:
        created = receive(conn, proc, "created", 120)
        # Every execution has its upstream run (event 2) before the storm: a reconnect
        # then replays one event at once, and no create overlaps the storm.
        sql = "SELECT count(*) FROM executions WHERE project_id=? AND last_seq>=2"
        settle_s = wait_for(
            "upstream runs of all executions",
            lambda: int(svc.query(sql, PROJECT)[0][0]) >= created["ids"],
            60,
        )
        creates_before = svc.upstream_stats()["creates"]

        cpu_idle = cpu_ms(pid)
        time.sleep(args.idle_window)
        idle_cpu_ms_per_s = (cpu_ms(pid) - cpu_idle) / args.idle_window

        baseline_kb = mem_kb(pid, "VmRSS")
        hwm_reset = reset_peak_rss(pid)
        storm_kb = [baseline_kb]
        cpu_before, client_cpu_before = cpu_ms(pid), cpu_ms(client_pid)
        go_wall, go = time.time(), time.monotonic()
        conn.send("go")
        attached = receive(
            conn, proc, "attached", 120, lambda: storm_kb.append(mem_kb(pid, "VmRSS"))
        )
        cpu_storm = cpu_ms(pid) - cpu_before
        client_cpu_storm = cpu_ms(client_pid) - client_cpu_before
        attached_ms, attached_wall = (time.monotonic() - go) * 1000.0, time.time()
        storm_peak_kb = max(max(storm_kb), mem_kb(pid, "VmHWM") if hwm_reset else 0)
        cpu_after_attach = cpu_ms(pid)

        follow_kb = [storm_peak_kb]
        done = receive(
            conn,
            proc,
            "done",
            args.duration + 120,
            lambda: follow_kb.append(mem_kb(pid, "VmRSS")),
        )
        cpu_follow = cpu_ms(pid) - cpu_after_attach
        peak_kb = max(max(follow_kb), mem_kb(pid, "VmHWM") if hwm_reset else 0)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    return {
        "created": created,
        "settle_s": settle_s,
        "creates_before": creates_before,
        "expected_creates": expected_creates,
        "idle_cpu_ms_per_s": idle_cpu_ms_per_s,
        "baseline_kb": baseline_kb,
        "hwm_reset": hwm_reset,
        "cpu_storm": cpu_storm,
        "client_cpu_storm": client_cpu_storm,
        "attached_ms": attached_ms,
        "attached_client_ms": attached["client_ms"],
        "go_wall": go_wall,
        "attached_wall": attached_wall,
        "storm_peak_kb": storm_peak_kb,
        "cpu_follow": cpu_follow,
        "peak_kb": peak_kb,
        "done": done,
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 1) if ordered else None,
        **{f"p{q}": percentile(ordered, q) for q in (50, 90, 99)},
        "max": percentile(ordered, 100),
    }


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    began = time.monotonic()
    gateway_env = {
        "RPA_POLL_FIRST_DELAY": f"{args.first_poll:g}",
        **dict(item.split("=", 1) for item in args.gateway_env),
    }
    with services(workdir, gateway_env) as svc:
        svc.script(PROJECT, {"duration": args.duration})
        warm_failures = warm_up(svc)
        m = storm(args, svc)
        creates = svc.upstream_stats()["creates"]
        gw_log_lines = warnings_and_worse(svc.gw_log.read_text(errors="replace").splitlines())

    n = args.reconnects
    results: list[Reattach] = m["done"]["results"]
    failures = Counter(reason for reason, *_ in results if reason)
    successes = len(results) - sum(failures.values())
    first_ms = [r[2] for r in results if r[2] is not None]
    headers_ms = [r[1] for r in results if r[1] is not None]
    delivery = [r[4] for r in results if r[4] is not None]
    created = m["created"]
    ceiling = float(gateway_env.get("XIAOWU_RPA_TASK_QUERY_INTERVAL", "10"))
    first_poll_at = created["from"] + min(args.first_poll, ceiling)
    growth_kb = m["storm_peak_kb"] - m["baseline_kb"]
    return {
        "reconnects": n,
        "duration_s": args.duration,
        "first_poll_s": args.first_poll,
        "gateway_source": gateway_source(),
        "gateway_env": gateway_env,
        "created_via": f"POST /rpa/v1/executions (202, no stream), {CREATE_CONCURRENCY} at a time",
        "executions_created": created["ids"],
        "create_wall_s": round(created["to"] - created["from"], 2),
        "upstream_runs_settled_s": round(m["settle_s"], 2),
        "streams_attached": len(first_ms),
        "first_line_kinds": dict(Counter(r[3] for r in results).most_common()),
        "attach_latency_ms": _stats(first_ms),
        "headers_latency_ms": _stats(headers_ms),
        "all_attached_ms": {
            "client": round(m["attached_client_ms"], 1),
            "driver": round(m["attached_ms"], 1),
        },
        "server_cpu_ms_storm": round(m["cpu_storm"], 1),
        "server_cpu_ms_per_reconnect": round(m["cpu_storm"] / max(1, n), 2),
        "server_idle_cpu_ms_per_s": round(m["idle_cpu_ms_per_s"], 1),
        "client_cpu_ms_storm": round(m["client_cpu_storm"], 1),
        "server_cpu_ms_follow": round(m["cpu_follow"], 1),
        "baseline_rss_mb": round(m["baseline_kb"] / 1024, 1),
        "storm_peak_rss_mb": round(m["storm_peak_kb"] / 1024, 1),
        "peak_rss_mb": round(m["peak_kb"] / 1024, 1),
        "storm_rss_growth_mb": round(growth_kb / 1024, 1),
        "rss_growth_kb_per_reconnect": round(growth_kb / max(1, n), 1),
        "peak_from_vmhwm": m["hwm_reset"],
        "storm_clear_of_polls": m["attached_wall"] < first_poll_at,
        "runs_pending_until_attached": m["attached_wall"] < created["from"] + args.duration,
        "successes": successes,
        "success_rate_pct": round(100.0 * successes / max(1, n), 2),
        "failures": dict(failures.most_common()),
        "create_failures": m["done"]["create_failures"],
        "warmup_failures": dict(warm_failures),
        "delivery_latency_ms": _stats(delivery),
        "upstream_creates_before_storm": m["creates_before"],
        "upstream_creates": creates,
        "upstream_creates_expected": m["expected_creates"],
        "gateway_log_lines": len(gw_log_lines),
        "gateway_log_tail": gw_log_lines[-10:],
        "storm_wall_s": round(m["done"]["wall_s"], 2),
        "total_wall_s": round(time.monotonic() - began, 2),
    }


def _dist(stats: dict[str, float | None]) -> str:
    return "  ".join(f"{name} {value}" for name, value in stats.items())


def print_report(report: dict[str, Any], path: Path) -> None:
    lat, hdr, attached = (
        report["attach_latency_ms"],
        report["headers_latency_ms"],
        report["all_attached_ms"],
    )
    dl = report["delivery_latency_ms"]
    lines = [
        f"reconnect storm: {report['reconnects']} streams re-attach at once "
        f"(runs last {report['duration_s']} s, first poll at {report['first_poll_s']} s)",
        f"created          {report['executions_created']} in {report['create_wall_s']} s via "
        f"{report['created_via']}",
        f"attached         {report['streams_attached']}; first lines {report['first_line_kinds']}",
        f"all attached     {attached['client']} ms after the storm began "
        f"(driver saw it at {attached['driver']} ms)",
        f"first line ms    {_dist(lat)}",
        f"headers ms       {_dist(hdr)}",
        f"server CPU       {report['server_cpu_ms_storm']} ms until all attached, "
        f"{report['server_cpu_ms_per_reconnect']} ms per reconnect "
        f"(idle {report['server_idle_cpu_ms_per_s']} ms/s; client {report['client_cpu_ms_storm']}"
        " ms)",
        f"RSS              baseline {report['baseline_rss_mb']} MB, peak until attached "
        f"{report['storm_peak_rss_mb']} MB (+{report['storm_rss_growth_mb']} MB, "
        f"{report['rss_growth_kb_per_reconnect']} KB per reconnect), peak to the end "
        f"{report['peak_rss_mb']} MB",
        f"window           clear of polls: {report['storm_clear_of_polls']}, runs still pending: "
        f"{report['runs_pending_until_attached']}",
        f"success          {report['success_rate_pct']}% ({report['successes']})",
        f"failures         {report['failures'] or 'none'}",
        f"follow CPU       {report['server_cpu_ms_follow']} ms from attached to the last frame",
        f"delivery ms      {_dist(dl)}",
        *creates_and_log_lines(
            report, f"; {report['upstream_creates_before_storm']} before the storm"
        ),
        f"wall time        storm {report['storm_wall_s']} s, total {report['total_wall_s']} s",
        f"gateway code     {report['gateway_source']}",
        f"written to       {path.relative_to(ROOT)}",
    ]
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reconnects", type=int, default=1000, help="streams that re-attach")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds each run lasts")
    parser.add_argument(
        "--first-poll",
        type=float,
        default=10.0,
        help="RPA_POLL_FIRST_DELAY for the gateway: keeps polls out of the storm window",
    )
    parser.add_argument(
        "--idle-window", type=float, default=1.0, help="seconds of idle CPU measured before"
    )
    add_gateway_env_option(parser)
    args = parser.parse_args()
    report = run_and_record(parser, args, bench, f"resume-{args.reconnects}", print_report)
    if report is None:
        return 130
    ok = report["success_rate_pct"] == 100.0 and report["first_line_kinds"] == {
        "replay": args.reconnects
    }
    return 0 if ok and creates_ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
