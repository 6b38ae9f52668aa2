"""Delivery latency of the local backend: process exit → terminal frame at the client.

Each round starts ``--runs`` executions at once (``RPA_LOCAL_MAX_RUNS`` = runs, so
all run concurrently) of a project that sleeps 1-1.5 s, prints its result with
the time it is about to exit, and exits.  The client (this process, aiohttp on
uvloop) reads each stream to its ``data:`` frame and records now - exit time.
The backend pushes the exit to the supervisor; nothing is polled.

    .venv/bin/python bench/local_latency.py --runs 100 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from load import RESULTS, TOKEN, cpu_ms, gateway_source, percentile, raise_fd_limit, services

EXIT_TIMER = """
    import json, sys, time
    params = json.load(sys.stdin)
    time.sleep(params["delay"])
    print(json.dumps({"event": "result", "data": {"exit_at": time.time()}}), flush=True)
"""


def make_projects(root: Path) -> None:
    folder = root / "exit-timer"
    folder.mkdir(parents=True)
    (folder / "project.toml").write_text('command = ["{python}", "main.py"]\ntimeout = 60\n')
    (folder / "main.py").write_text(textwrap.dedent(EXIT_TIMER))


async def one_run(session: aiohttp.ClientSession, url: str, delay: float) -> float | str:
    body = {"project_id": "exit-timer", "params": {"delay": delay}}
    async with session.post(
        f"{url}/rpa/v1/exec", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        async for raw in response.content:
            if raw.startswith(b"data:"):
                received = time.time()
                frame = json.loads(raw[5:])
                if frame["code"] != 0:
                    return f"code {frame['code']}: {frame['message']}"
                return (received - float(frame["data"]["exit_at"])) * 1000
    return "no data frame"


async def rounds(url: str, runs: int, count: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(count):
            results = await asyncio.gather(
                *(one_run(session, url, random.uniform(1.0, 1.5)) for _ in range(runs))
            )
            latencies += [r for r in results if isinstance(r, float)]
            failures += [r for r in results if isinstance(r, str)]
    return latencies, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="rpa-local-bench-") as temp:
        workdir = Path(temp)
        make_projects(workdir / "projects")
        env = {
            "RPA_BACKEND": "local",
            "RPA_PROJECTS_DIR": str(workdir / "projects"),
            "RPA_LOCAL_MAX_RUNS": str(args.runs),
        }
        with services(workdir, env) as svc:
            cpu_before = cpu_ms(svc.gateway.pid)
            began = time.monotonic()
            latencies, failures = uvloop.run(rounds(svc.gw_url, args.runs, args.rounds))
            wall = time.monotonic() - began
            cpu = cpu_ms(svc.gateway.pid) - cpu_before
    ordered = sorted(latencies)
    total = args.runs * args.rounds
    report: dict[str, Any] = {
        "gateway": gateway_source(),
        "runs_per_round": args.runs,
        "rounds": args.rounds,
        "executions": total,
        "succeeded": len(latencies),
        "failures": failures[:20],
        "latency_ms": {f"p{q}": percentile(ordered, q) for q in (50, 90, 99)}
        | {"max": round(ordered[-1], 1) if ordered else None},
        "gateway_cpu_ms_per_execution": round(cpu / total, 2),
        "wall_s": round(wall, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"local-latency-{args.runs}x{args.rounds}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path}")
    return 0 if len(latencies) == total else 1


if __name__ == "__main__":
    sys.exit(main())
