"""The floor: the least a gateway can do for ``POST /rpa/v1/exec``, against rpa-gateway.

The floor gateway (``floor.py serve``) is an aiohttp server with one pooled aiohttp client:
it creates the run upstream, pings the stream every ``XIAOWU_RPA_PING_INTERVAL`` (3 s), polls
on rpa-gateway's default schedule (1 s, then doubling up to 10 s) and writes the one
``data:`` frame - no store, no logs, no telemetry, no resume.  The driver runs it and
rpa-gateway (default settings, INFO logs) side by side under the same load at the same
moment, each with its own fake upstream, and prints rpa-gateway's CPU per execution as a
ratio of the floor's (issue 13 asks for at most 1.0).

Two methods, two questions (``--method``; both by default, each its own median):

- **sequential**: floor, rpa-gateway, floor again, each under the load alone on the
  machine (the other idle), the floor's figure the mean of its two runs.  What each costs
  per execution: the question a user sizing a machine asks.
- **side by side**: both under load at the same moment.  What each gets of a machine it
  shares: two processes on two cores measure contention as much as cost.

``--fixed`` runs rpa-gateway on the floor's own schedule: the project's runs are not shown
to it first, and it runs with ``RPA_POLL_LEARN=false`` (without it, the schedule learned
from the first runs to end would take over the polls of those still running).

    .venv/bin/python bench/floor.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from load import (
    HOST,
    Load,
    Services,
    free_port,
    load_together,
    raise_fd_limit,
    ratio_rounds,
    services,
    side_by_side_figures,
    start,
    stop,
    wait_ready,
    warm_up,
)

PING_S = 3.0
FIRST_POLL_S, BACKOFF, LONGEST_GAP_S = 1.0, 2.0, 10.0


def floor_app(create_url: str, query_url: str) -> web.Application:
    app = web.Application()
    session: dict[str, aiohttp.ClientSession] = {}

    async def open_session(_: web.Application) -> None:
        session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def close_session(_: web.Application) -> None:
        await session["s"].close()

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    async def exec_rpa(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        headers = {"Authorization": request.headers.get("Authorization", "")}
        client = session["s"]
        sid = body.get("sid", "")
        created = {"project_id": body["project_id"], "params": body.get("params", {})}
        async with client.post(create_url, json=created, headers=headers) as reply:
            task_id = (await reply.json())["data"]["executionId"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delay = FIRST_POLL_S
        loop = asyncio.get_running_loop()
        next_poll, next_ping = loop.time() + delay, loop.time() + PING_S
        while True:
            await asyncio.sleep(max(0.0, min(next_poll, next_ping) - loop.time()))
            if loop.time() < next_poll:
                await response.write(b": ping\n\n")
                next_ping += PING_S
                continue
            async with client.get(f"{query_url}/{task_id}", headers=headers) as reply:
                execution = (await reply.json())["data"]["execution"]
            if execution["status"] in ("COMPLETED", "FAILED"):
                ok = execution["status"] == "COMPLETED"
                frame = {
                    "code": 0 if ok else 55002,
                    "message": "Success" if ok else "failed",
                    "sid": sid,
                    "data": (execution.get("result") or {}).get("data") or {},
                }
                await response.write(f"data: {json.dumps(frame)}\n\n".encode())
                return response
            delay = min(delay * BACKOFF, LONGEST_GAP_S)
            next_poll = loop.time() + delay

    app.router.add_get("/rpa/v1/ready", ready)
    app.router.add_post("/rpa/v1/exec", exec_rpa)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


def round_side_by_side(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    return _round(args, workdir, sequential=False)


def round_sequential(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    return _round(args, workdir, sequential=True)


def _round(
    args: argparse.Namespace, workdir: Path, *, sequential: bool
) -> dict[str, dict[str, Any]]:
    with ExitStack() as stack:
        (workdir / "rpa-gateway").mkdir(parents=True)
        (workdir / "floor").mkdir()
        settings = {} if args.learn else {"RPA_POLL_LEARN": "false"}
        gateway = stack.enter_context(services(workdir / "rpa-gateway", settings))
        fake = stack.enter_context(services(workdir / "floor", {}))
        stop(fake.gateway)  # only its fake upstream is wanted
        port = free_port()
        floor_process = start(
            workdir / "floor" / "floor.log",
            dict(os.environ),
            __file__,
            "serve",
            "--port",
            str(port),
            "--create",
            fake.fake_url + "/api/rpa-openapi/workflows/execute-async",
            "--query",
            fake.fake_url + "/api/rpa-openapi/executions",
        )
        stack.callback(stop, floor_process)
        floor_url = f"http://{HOST}:{port}"
        wait_ready(floor_url + "/rpa/v1/ready", floor_process)
        floor = Services(fake.fake_url, floor_url, floor_process, workdir / "floor.log", workdir)
        running = {"rpa-gateway": gateway, "floor": floor}
        for svc in running.values():
            svc.script("bench", {"duration": args.duration})
            warm_up(svc)
        if args.learn:
            # Both see the project's runs first; only rpa-gateway learns from them (it
            # makes the project's schedule at its next sync of run durations, within 5 s).
            load_together(
                running, lambda svc: Load(svc.gw_url, "bench", 20, 100, 60 + args.duration)
            )
            time.sleep(6.0)
        time.sleep(1.0)

        def load(svc: Services) -> Load:
            return Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60)

        if not sequential:
            results, spent = load_together(running, load)
            return side_by_side_figures(running, results, spent, args.streams)
        runs = []
        for name in ("floor", "rpa-gateway", "floor"):
            alone = {name: running[name]}
            results, spent = load_together(alone, load)
            runs.append(side_by_side_figures(alone, results, spent, args.streams)[name])
            time.sleep(1.0)
        before, service, after = runs
        # CPU: the mean of the floor's runs around rpa-gateway's.  RSS per open stream:
        # the floor's first run, the one that grows its memory from the same warmed
        # state as rpa-gateway's only run (a second run reuses what the first grew).
        floor = dict(before)
        floor["cpu_ms_per_execution"] = round(
            (before["cpu_ms_per_execution"] + after["cpu_ms_per_execution"]) / 2, 3
        )
        floor["delivered_pct"] = min(before["delivered_pct"], after["delivered_pct"])
        for key in ("cpu_ms_per_execution", "rss_kb_per_open_stream"):
            floor[key + "_before_after"] = [before[key], after[key]]
        return {"rpa-gateway": service, "floor": floor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--create", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", choices=["sequential", "side-by-side", "both"], default="both")
    parser.add_argument(
        "--fixed",
        "--no-learn",
        dest="learn",
        action="store_false",
        help="the floor's own schedule: the project's runs are not shown to rpa-gateway"
        " first, and it learns none (RPA_POLL_LEARN=false)",
    )
    args = parser.parse_args()
    raise_fd_limit()
    if args.mode == "serve":
        web.run_app(floor_app(args.create, args.query), host=HOST, port=args.port, print=None)
        return 0
    name = f"floor-{args.streams}x{int(args.rate)}" + ("" if args.learn else "-unlearned")
    status = 0
    if args.method in ("sequential", "both"):
        print("sequential: each alone on the machine (floor, rpa-gateway, floor)", flush=True)
        status |= ratio_rounds(
            args,
            round_sequential,
            ("rpa-gateway", "floor"),
            name + "-sequential",
            {"learned": args.learn, "method": "sequential"},
        )
    if args.method in ("side-by-side", "both"):
        print("side by side: both under load at the same moment", flush=True)
        status |= ratio_rounds(
            args,
            round_side_by_side,
            ("rpa-gateway", "floor"),
            name,
            {"learned": args.learn, "method": "side by side"},
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
