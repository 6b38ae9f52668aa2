"""The floor: the least a gateway can do for ``POST /rpa/v1/exec``, against rpa-gateway.

The floor gateway (``floor.py serve``) is an aiohttp server with one pooled aiohttp client:
it creates the run upstream, pings the stream every ``XIAOWU_RPA_PING_INTERVAL`` (3 s), polls
on rpa-gateway's default schedule (1 s, then doubling up to 10 s) and writes the one
``data:`` frame - no store, no logs, no telemetry, no resume.  The driver runs it and
rpa-gateway (default settings, INFO logs) side by side under the same load at the same
moment, each with its own fake upstream, and prints rpa-gateway's CPU per execution as a
ratio of the floor's (issue 13 asks for at most 1.0).

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
    with ExitStack() as stack:
        (workdir / "rpa-gateway").mkdir(parents=True)
        (workdir / "floor").mkdir()
        gateway = stack.enter_context(services(workdir / "rpa-gateway", {}))
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
        results, spent = load_together(
            running,
            lambda svc: Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60),
        )
        figures = side_by_side_figures(running, results, spent, args.streams)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--create", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--no-learn",
        dest="learn",
        action="store_false",
        help="skip the 20 runs of the project before the load (no learned schedule)",
    )
    args = parser.parse_args()
    raise_fd_limit()
    if args.mode == "serve":
        web.run_app(floor_app(args.create, args.query), host=HOST, port=args.port, print=None)
        return 0
    return ratio_rounds(
        args,
        round_side_by_side,
        ("rpa-gateway", "floor"),
        f"floor-{args.streams}x{int(args.rate)}" + ("" if args.learn else "-unlearned"),
        {"learned": args.learn},
    )


if __name__ == "__main__":
    sys.exit(main())
