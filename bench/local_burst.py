"""Does a burst of local runs stall the event loop?  ``/rpa/v1/ping`` latency during one.

A pinger process asks ``GET /rpa/v1/ping`` every 10 ms, first for ``--quiet``
seconds with nothing else going on (the baseline of this invocation), then while
``--runs`` executions of a quick local project (with a params schema) are created
in one burst through the native API (202 at once; ``RPA_LOCAL_MAX_RUNS`` at its
default, so most wait in the queue) until every one has finished.  Default
settings, INFO logs.  Prints ping latency percentiles for both phases.

    .venv/bin/python bench/local_burst.py --runs 500
    .venv/bin/python bench/local_burst.py --gateway-env PYTHONPATH=/tmp/old/src   # another version
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import textwrap
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from load import (
    RESULTS,
    TOKEN,
    add_gateway_env_option,
    cpu_ms,
    gateway_source,
    percentile,
    raise_fd_limit,
    services,
)

QUICK = """
    import json, sys
    params = json.load(sys.stdin)
    print(json.dumps({"event": "result", "data": {"n": params["n"]}}), flush=True)
"""
SCHEMA = """
[params_schema]
type = "object"
required = ["n"]
properties.n = { type = "integer", minimum = 0 }
properties.label = { type = "string", maxLength = 64, pattern = "^[a-z]*$" }
"""
PING_EVERY_S = 0.01


def make_project(root: Path) -> None:
    folder = root / "quick"
    folder.mkdir(parents=True)
    (folder / "project.toml").write_text(
        'command = ["{python}", "main.py"]\ntimeout = 60\n' + textwrap.dedent(SCHEMA)
    )
    (folder / "main.py").write_text(textwrap.dedent(QUICK))


def pinger(url: str, stop: Any, out: Connection) -> None:
    """Runs in its own process: (start time, latency ms) of every ping until ``stop`` is set."""

    async def loop() -> list[tuple[float, float]]:
        samples: list[tuple[float, float]] = []
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                began = time.monotonic()
                async with session.get(f"{url}/rpa/v1/ping") as response:
                    await response.read()
                samples.append((began, (time.monotonic() - began) * 1000))
                await asyncio.sleep(max(0.0, PING_EVERY_S - (time.monotonic() - began)))
        return samples

    out.send(uvloop.run(loop()))


async def burst(url: str, runs: int) -> tuple[float, list[str]]:
    """All creates sent at once; (seconds until every 202 came, failures)."""
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    began = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def create(n: int) -> str | None:
            body = {"project_id": "quick", "params": {"n": n, "label": "burst"}}
            async with session.post(f"{url}/rpa/v1/executions", json=body, headers=headers) as r:
                await r.read()
                return None if r.status == 202 else f"HTTP {r.status}"

        results = await asyncio.gather(*(create(n) for n in range(runs)))
    return time.monotonic() - began, [r for r in results if r is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds of baseline pings")
    add_gateway_env_option(parser)
    args = parser.parse_args()
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="rpa-burst-") as temp:
        workdir = Path(temp)
        make_project(workdir / "projects")
        env = {"RPA_BACKEND": "local", "RPA_PROJECTS_DIR": str(workdir / "projects")}
        env |= dict(item.split("=", 1) for item in args.gateway_env)
        with services(workdir, env) as svc:
            stop = mp.Event()
            receive, send = mp.Pipe(duplex=False)
            ping = mp.Process(target=pinger, args=(svc.gw_url, stop, send))
            ping.start()
            time.sleep(args.quiet)
            cpu_before = cpu_ms(svc.gateway.pid)
            burst_began = time.monotonic()
            created_s, failures = uvloop.run(burst(svc.gw_url, args.runs))
            while True:
                (finished,) = svc.query(
                    "SELECT count(*) FROM executions WHERE finished_at IS NOT NULL"
                )[0]
                if finished >= args.runs - len(failures):
                    break
                time.sleep(0.05)
            all_done_s = time.monotonic() - burst_began
            cpu = cpu_ms(svc.gateway.pid) - cpu_before
            (succeeded,) = svc.query("SELECT count(*) FROM executions WHERE code = 0")[0]
            failed_runs = svc.query(
                "SELECT code, message, count(*) FROM executions WHERE code != 0"
                " GROUP BY code, message ORDER BY 3 DESC LIMIT 10"
            )
            stop.set()
            samples: list[tuple[float, float]] = receive.recv()
            ping.join()
    quiet = sorted(ms for at, ms in samples if at < burst_began)
    during = sorted(ms for at, ms in samples if burst_began <= at <= burst_began + all_done_s)

    def figures(latencies: list[float]) -> dict[str, Any]:
        return {
            "pings": len(latencies),
            **{f"p{q}": percentile(latencies, q) for q in (50, 99)},
            "max": round(latencies[-1], 1) if latencies else None,
        }

    report = {
        "gateway": gateway_source(),
        "gateway_env": args.gateway_env,
        "runs": args.runs,
        "ping_ms_quiet": figures(quiet),
        "ping_ms_during_burst": figures(during),
        "creates_answered_s": round(created_s, 2),
        "all_finished_s": round(all_done_s, 2),
        "succeeded": succeeded,
        "create_failures": failures[:10],
        "failed_runs": [{"code": c, "message": m, "count": n} for c, m, n in failed_runs],
        "gateway_cpu_ms_per_execution": round(cpu / args.runs, 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"local-burst-{args.runs}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(Path(__file__).resolve().parent.parent)}")
    return 0 if succeeded == args.runs and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
