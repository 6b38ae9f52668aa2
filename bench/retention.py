"""Retention benchmark: the SQLite store stays bounded under continuous load.

Starts the fake upstream and the gateway as their own processes (see ``bench/load.py``) with
a short retention (``RPA_RETENTION_SECONDS``, swept every ``RPA_RETENTION_SWEEP_SECONDS``)
and runs that complete at the first upstream query (``RPA_POLL_FIRST_DELAY=0.01``).  A
separate client process (aiohttp + uvloop) drives ``--executions`` ``POST /rpa/v1/exec``
streams through it, ``--concurrency`` at a time, each read to its final ``data:`` frame.
Every ``--sample-every`` executions this driver samples the store's files, its row counts
and the gateway's RSS and CPU.  Prints a report and writes
``bench/results/retention-<executions>.json``.  See ``bench/README.md``.

    .venv/bin/python bench/retention.py --executions 100000 --retention 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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
    mem_kb,
    percentile,
    raise_fd_limit,
    read_stream,
    run_and_record,
    services,
    warm_up,
    warnings_and_worse,
)

PROJECT = "retention"


@dataclass(frozen=True)
class Drive:
    url: str  # the gateway's base URL
    executions: int
    concurrency: int  # streams open at a time
    rate: float  # cap on streams opened per second; 0: as fast as the gateway answers
    sample_every: int  # executions between progress reports
    timeout_s: float  # per stream


@dataclass
class Tally:
    done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


# --- the client process ----------------------------------------------------------------------
async def _worker(
    session: aiohttp.ClientSession,
    drive: Drive,
    numbers: Iterator[int],
    t0: float,
    tally: Tally,
    conn: Connection,
) -> None:
    for i in numbers:  # shared by all workers: each number is taken once
        if drive.rate > 0:
            await asyncio.sleep(max(0.0, t0 + i / drive.rate - time.monotonic()))
        body = {"project_id": PROJECT, "sid": f"{PROJECT}-{i}", "params": {"i": i}}
        try:
            async with session.post(drive.url + "/rpa/v1/exec", json=body) as response:
                reason, latency = await read_stream(response)
        except TimeoutError:
            reason, latency = "timeout", None
        except aiohttp.ClientError as exc:
            reason, latency = type(exc).__name__, None
        tally.done += 1
        if reason is not None:
            tally.failures[reason] += 1
        elif latency is not None:
            tally.latencies.append(latency)
        if tally.done % drive.sample_every == 0 and tally.done < drive.executions:
            conn.send(("progress", tally.done))


async def _run_client(conn: Connection, drive: Drive) -> None:
    tally = Tally()
    numbers = iter(range(drive.executions))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),  # the workers bound the concurrency
        timeout=aiohttp.ClientTimeout(total=drive.timeout_s),
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as session:
        t0 = time.monotonic()
        await asyncio.gather(
            *(
                _worker(session, drive, numbers, t0, tally, conn)
                for _ in range(min(drive.concurrency, drive.executions))
            )
        )
        wall_s = time.monotonic() - t0
    conn.send(
        (
            "done",
            {
                "done": tally.done,
                "failures": dict(tally.failures),
                "latencies": tally.latencies,
                "wall_s": wall_s,
            },
        )
    )


def client_main(conn: Connection, drive: Drive) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    raise_fd_limit()
    uvloop.run(_run_client(conn, drive))
    conn.close()


# --- the driver ------------------------------------------------------------------------------
def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class Sampler:
    """Samples the gateway's store and process; each sample is one row of the report."""

    def __init__(self, svc: Services, began: float) -> None:
        self._svc = svc
        self._pid = svc.gateway.pid
        self._began = began
        self._cpu0 = cpu_ms(self._pid)
        self.rows: list[dict[str, Any]] = []

    def sample(self, done: int, label: str = "") -> dict[str, Any]:
        db = self._svc.db_path
        (executions, unfinished), (events,) = (
            self._svc.query("SELECT count(*), count(*) - count(finished_at) FROM executions")[0],
            self._svc.query("SELECT count(*) FROM events")[0],
        )
        page_size, pages, free = (
            self._svc.query("PRAGMA page_size")[0][0],
            self._svc.query("PRAGMA page_count")[0][0],
            self._svc.query("PRAGMA freelist_count")[0][0],
        )
        now = time.monotonic() - self._began
        cpu = cpu_ms(self._pid) - self._cpu0
        last = self.rows[-1] if self.rows else {"done": 0, "t_s": 0.0, "cpu_ms": 0.0}
        row = {
            "label": label,
            "done": done,
            "t_s": round(now, 2),
            "rate_per_s": round((done - last["done"]) / max(1e-9, now - last["t_s"]), 1),
            "db_kb": round(file_size(db) / 1024),
            "wal_kb": round(file_size(db.with_name(db.name + "-wal")) / 1024),
            "shm_kb": round(file_size(db.with_name(db.name + "-shm")) / 1024),
            "pages": pages,
            "free_pages": free,
            "page_size": page_size,
            "executions_rows": executions,
            "unfinished_rows": unfinished,
            "events_rows": events,
            "rss_mb": round(mem_kb(self._pid, "VmRSS") / 1024, 1),
            "cpu_ms": round(cpu),
            "cpu_ms_per_execution": (
                round((cpu - last["cpu_ms"]) / (done - last["done"]), 2)
                if done > last["done"]
                else None
            ),
        }
        self.rows.append(row)
        return row


def run_drive(drive: Drive, sampler: Sampler) -> dict[str, Any]:
    """Run the client in its own process; sample the store at each of its progress reports."""
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=client_main, args=(child_conn, drive), daemon=True)
    proc.start()
    child_conn.close()
    try:
        while True:
            if not conn.poll(1.0):
                if not proc.is_alive() and not conn.poll(0):
                    raise RuntimeError(f"client process died (exit code {proc.exitcode})")
                continue
            kind, payload = conn.recv()
            if kind == "done":
                result: dict[str, Any] = payload
                proc.join(10)
                return result
            print_row(sampler.sample(payload))
    finally:
        if proc.is_alive():
            proc.kill()


TABLE = (
    ("done", "done", 8),
    ("t_s", "t s", 7),
    ("rate_per_s", "rate/s", 7),
    ("db_kb", "db KB", 8),
    ("wal_kb", "wal KB", 8),
    ("free_pages", "free pg", 8),
    ("executions_rows", "exec rows", 10),
    ("unfinished_rows", "unfin", 6),
    ("events_rows", "event rows", 11),
    ("rss_mb", "RSS MB", 7),
    ("cpu_ms_per_execution", "cpu ms/ex", 10),
)


def table_header() -> str:
    return "".join(f"{title:>{width}}" for _, title, width in TABLE) + "  "


def print_row(row: dict[str, Any]) -> None:
    cells = "".join(
        f"{'-' if row[key] is None else row[key]!s:>{width}}" for key, _, width in TABLE
    )
    print(f"{cells}  {row['label']}", flush=True)


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    began = time.monotonic()
    gateway_env = {
        "RPA_RETENTION_SECONDS": f"{args.retention:g}",
        "RPA_RETENTION_SWEEP_SECONDS": f"{args.sweep:g}",
        "RPA_POLL_FIRST_DELAY": "0.01",
        **dict(item.split("=", 1) for item in args.gateway_env),
    }
    sample_every = args.sample_every or max(1, args.executions // 20)
    with services(workdir, gateway_env) as svc:
        svc.script(PROJECT, {"duration": 0})  # COMPLETED at the first query
        warm_failures = warm_up(svc)
        time.sleep(args.retention + args.sweep + 0.5)  # the warm-up's executions are purged
        sampler = Sampler(svc, time.monotonic())
        print(table_header(), flush=True)
        print_row(sampler.sample(0, "start"))
        drive = Drive(svc.gw_url, args.executions, args.concurrency, args.rate, sample_every, 60.0)
        result = run_drive(drive, sampler)
        print_row(sampler.sample(result["done"], "end"))
        drain_s = args.retention + 2 * args.sweep + 1
        time.sleep(drain_s)
        print_row(sampler.sample(result["done"], f"{drain_s:g} s later"))
        creates = svc.upstream_stats()["creates"]
        gw_log_lines = warnings_and_worse(svc.gw_log.read_text(errors="replace").splitlines())

    rows = sampler.rows
    load_rows = [r for r in rows if r["label"] != "start" and not r["label"].endswith("later")]
    n = args.executions
    failures = Counter(result["failures"])
    successes = result["done"] - sum(failures.values())
    rate = result["done"] / max(1e-9, result["wall_s"])
    # Steady state: once the first executions are older than retention + one sweep.
    steady = [r for r in load_rows if r["t_s"] >= args.retention + args.sweep + 1] or load_rows
    half = len(steady) // 2
    store_kb = [r["db_kb"] + r["wal_kb"] for r in rows]
    latencies = sorted(result["latencies"])
    return {
        "executions": n,
        "retention_s": args.retention,
        "sweep_s": args.sweep,
        "concurrency": args.concurrency,
        "rate_cap_per_s": args.rate,
        "gateway_source": gateway_source(),
        "gateway_env": gateway_env,
        "successes": successes,
        "success_rate_pct": round(100.0 * successes / max(1, n), 3),
        "failures": dict(failures.most_common()),
        "warmup_failures": dict(warm_failures),
        "rate_per_s": round(rate, 1),
        "samples": rows,
        "final": rows[-2],
        "after_drain": rows[-1],
        "max": {
            key: max(r[key] for r in rows)
            for key in ("db_kb", "wal_kb", "executions_rows", "events_rows", "rss_mb")
        },
        "max_store_kb": max(store_kb),
        "steady_state": {
            "from_t_s": steady[0]["t_s"],
            "executions_rows_mean": round(statistics.fmean(r["executions_rows"] for r in steady)),
            "executions_rows_max": max(r["executions_rows"] for r in steady),
            "events_rows_mean": round(statistics.fmean(r["events_rows"] for r in steady)),
            "executions_rows_expected": round(rate * args.retention),
            # rows are purged once per sweep, so on average half a sweep late; plus in flight
            "executions_rows_expected_with_sweep": round(
                rate * (args.retention + args.sweep / 2) + args.concurrency
            ),
            "executions_rows_bound": round(
                max(r["rate_per_s"] for r in steady) * (args.retention + args.sweep)
                + args.concurrency
            ),
            "store_kb_max_first_half": max(
                r["db_kb"] + r["wal_kb"] for r in steady[:half] or steady
            ),
            "store_kb_max_second_half": max(r["db_kb"] + r["wal_kb"] for r in steady[half:]),
            "rss_mb_max_first_half": max(r["rss_mb"] for r in steady[:half] or steady),
            "rss_mb_max_second_half": max(r["rss_mb"] for r in steady[half:]),
        },
        "server_cpu_ms_per_execution": round(load_rows[-1]["cpu_ms"] / max(1, result["done"]), 2),
        "latency_ms": {
            **{f"p{q}": percentile(latencies, q) for q in (50, 90, 99)},
            "max": percentile(latencies, 100),
        },
        "upstream_creates": creates,
        "upstream_creates_expected": n + WARMUP_STREAMS,
        "gateway_log_lines": len(gw_log_lines),
        "gateway_log_tail": gw_log_lines[-10:],
        "client_wall_s": round(result["wall_s"], 2),
        "total_wall_s": round(time.monotonic() - began, 2),
    }


def print_report(report: dict[str, Any], path: Path) -> None:
    steady, final, drained, peak = (
        report["steady_state"],
        report["final"],
        report["after_drain"],
        report["max"],
    )
    lat = report["latency_ms"]
    lines = [
        "",
        f"executions       {report['executions']} at {report['rate_per_s']}/s, "
        f"{report['concurrency']} in flight, retention {report['retention_s']} s "
        f"(swept every {report['sweep_s']} s)",
        f"success          {report['success_rate_pct']}% ({report['successes']})",
        f"failures         {report['failures'] or 'none'}",
        f"store at the end db {final['db_kb']} KB + wal {final['wal_kb']} KB, "
        f"{final['executions_rows']} executions, {final['events_rows']} events",
        f"after draining   db {drained['db_kb']} KB + wal {drained['wal_kb']} KB, "
        f"{drained['executions_rows']} executions, {drained['events_rows']} events "
        f"({drained['free_pages']} free pages)",
        f"max              db {peak['db_kb']} KB, wal {peak['wal_kb']} KB, "
        f"db+wal {report['max_store_kb']} KB, {peak['executions_rows']} executions, "
        f"{peak['events_rows']} events, RSS {peak['rss_mb']} MB",
        f"steady state     from {steady['from_t_s']} s: executions rows mean "
        f"{steady['executions_rows_mean']} (max {steady['executions_rows_max']}; rate x retention "
        f"{steady['executions_rows_expected']}, with sweep and in flight "
        f"{steady['executions_rows_expected_with_sweep']}, bound "
        f"{steady['executions_rows_bound']}), events rows mean "
        f"{steady['events_rows_mean']}",
        f"bounded?         db+wal max {steady['store_kb_max_first_half']} KB in the first half, "
        f"{steady['store_kb_max_second_half']} KB in the second; RSS max "
        f"{steady['rss_mb_max_first_half']} / {steady['rss_mb_max_second_half']} MB",
        f"server CPU       {report['server_cpu_ms_per_execution']} ms per execution",
        f"latency ms       p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}",
        *creates_and_log_lines(report),
        f"wall time        client {report['client_wall_s']} s, total {report['total_wall_s']} s",
        f"gateway code     {report['gateway_source']}",
        f"written to       {path.relative_to(ROOT)}",
    ]
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000, help="executions to run")
    parser.add_argument(
        "--retention", type=float, default=5.0, help="RPA_RETENTION_SECONDS for the gateway"
    )
    parser.add_argument(
        "--sweep", type=float, default=1.0, help="RPA_RETENTION_SWEEP_SECONDS for the gateway"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="streams open at a time")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="cap on streams opened per second (0: none)"
    )
    parser.add_argument(
        "--sample-every", type=int, default=0, help="executions between samples (executions/20)"
    )
    add_gateway_env_option(parser)
    args = parser.parse_args()
    if args.executions < 1 or args.concurrency < 1:
        parser.error("--executions and --concurrency must be at least 1")
    report = run_and_record(parser, args, bench, f"retention-{args.executions}", print_report)
    if report is None:
        return 130
    return 0 if report["success_rate_pct"] == 100.0 and creates_ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
