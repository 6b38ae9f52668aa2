"""What the MCP door costs, against the compat stream doing the same work.

1. CPU per execution: one gateway on the local backend (default settings, INFO logs) runs
   the shipped ``hello`` project ``--executions`` times at ``--rate`` per second through
   ``POST /rpa/v1/exec``, then the same through ``/mcp`` with the official Python SDK
   client (``tools/call hello``; its sessions opened before the phase, as an agent keeps
   one), then through ``/rpa/v1/exec`` again: each door alone on the machine, the
   baseline before and after.  The gateway's own CPU (utime + stime) per execution; the
   ratio is MCP to the mean of the two baselines.  ``--rounds`` rounds, median.  Both
   modes of the SDK client: the initialize handshake ("legacy") and 2026-07-28.
2. Memory per waiting call: a fresh gateway on the fake upstream, whose runs last long,
   holds ``--waiting`` open ``/rpa/v1/exec`` streams; another fresh one holds as many
   ``tools/call rpa_run`` calls waiting for their runs.  RSS growth per stream and per
   call, in the same round; the ratio per round, median.

    .venv/bin/python bench/mcp_door.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from load import (
    HOST,
    RESULTS,
    ROOT,
    cpu_ms,
    free_port,
    gateway_source,
    mem_kb,
    raise_fd_limit,
    services,
    start,
    stop,
    wait_ready,
)

TOKEN = "bench-mcp-caller"  # noqa: S105
SESSIONS = 8  # SDK clients sharing the MCP load
WARMUP = 20


async def _exec_one(http: httpx.AsyncClient, url: str) -> bool:
    body = {"project_id": "hello", "params": {"name": "Ada"}}
    async with http.stream("POST", url + "/rpa/v1/exec", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return bool(json.loads(line[5:])["code"] == 0)
    return False


async def _paced(count: int, rate: float, one: Callable[[int], Awaitable[bool]]) -> int:
    """``count`` calls of ``one``, started ``rate`` a second; how many succeeded."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def at(i: int) -> bool:
        await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
        return await one(i)

    return sum(await asyncio.gather(*(at(i) for i in range(count))))


async def exec_phase(url: str, count: int, rate: float) -> int:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as http:
        return await _paced(count, rate, lambda _: _exec_one(http, url))


class McpClients:
    """``SESSIONS`` SDK clients, connected (sessions open) before any call is measured."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode
        self.clients: list[Client] = []
        self._stack: list[Any] = []

    async def __aenter__(self) -> McpClients:
        for _ in range(SESSIONS):
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
            await http.__aenter__()
            client = Client(
                streamable_http_client(self.url + "/mcp", http_client=http), mode=self.mode
            )
            await client.__aenter__()
            self._stack.append((client, http))
            self.clients.append(client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client, http in reversed(self._stack):
            await client.__aexit__(None, None, None)
            await http.__aexit__(None, None, None)

    async def call(self, i: int) -> bool:
        result = await self.clients[i % SESSIONS].call_tool("hello", {"name": "Ada"})
        content = result.structured_content or {}
        return not result.is_error and content.get("status") == "succeeded"


def measure(pid: int, phase: Callable[[], int]) -> tuple[float, int]:
    """(the gateway's CPU ms during ``phase``, executions that succeeded)."""
    before = cpu_ms(pid)
    ok = phase()
    time.sleep(0.5)  # what the last ones leave (their finish) is theirs too
    return cpu_ms(pid) - before, ok


def cpu_rounds(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {
        **os.environ,
        "SERVICE_HOST": HOST,
        "SERVICE_PORT": str(port),
        "RPA_DATA_DIR": str(workdir / "data"),
        "RPA_PROJECTS_DIR": str(ROOT / "projects"),
        "RPA_BACKEND": "local",
    }
    gateway = start(workdir / "gateway.log", env, "-m", "rpa_gateway", "serve")
    rounds: list[dict[str, Any]] = []
    try:
        wait_ready(url + "/rpa/v1/ready", gateway)

        def exec_run(count: int) -> int:
            return asyncio.run(exec_phase(url, count, args.rate))

        def mcp_run(mode: str, count: int) -> Callable[[], int]:
            async def run() -> int:
                async with McpClients(url, mode) as clients:
                    warm = await _paced(SESSIONS, 50, clients.call)  # sessions in use once
                    assert warm == SESSIONS
                    began = cpu_ms(gateway.pid)
                    ok = await _paced(count, args.rate, clients.call)
                    await asyncio.sleep(0.5)
                    state["cpu"] = cpu_ms(gateway.pid) - began
                    return ok

            state: dict[str, float] = {}

            def phase() -> int:
                ok = asyncio.run(run())
                measured[mode] = state["cpu"]
                return ok

            return phase

        measured: dict[str, float] = {}
        exec_run(WARMUP)
        mcp_run("legacy", WARMUP)()
        n = args.executions
        for number in range(args.rounds):
            figures: dict[str, Any] = {}
            cpu, ok = measure(gateway.pid, lambda: exec_run(n))
            figures["exec_before"] = {"cpu_ms_per_execution": round(cpu / n, 3), "ok": ok}
            for mode in ("legacy", "2026-07-28"):
                ok = mcp_run(mode, n)()
                figures[f"mcp_{mode}"] = {
                    "cpu_ms_per_execution": round(measured[mode] / n, 3),
                    "ok": ok,
                }
            cpu, ok = measure(gateway.pid, lambda: exec_run(n))
            figures["exec_after"] = {"cpu_ms_per_execution": round(cpu / n, 3), "ok": ok}
            base = (
                figures["exec_before"]["cpu_ms_per_execution"]
                + figures["exec_after"]["cpu_ms_per_execution"]
            ) / 2
            for mode in ("legacy", "2026-07-28"):
                figures[f"ratio_{mode}"] = round(
                    figures[f"mcp_{mode}"]["cpu_ms_per_execution"] / base, 3
                )
            rounds.append(figures)
            print(f"cpu round {number + 1}: {json.dumps(figures)}", flush=True)
    finally:
        stop(gateway)
    return {
        "rounds": rounds,
        "ratio_median": {
            mode: statistics.median(r[f"ratio_{mode}"] for r in rounds)
            for mode in ("legacy", "2026-07-28")
        },
    }


Opener = Callable[[httpx.AsyncClient, int], AbstractAsyncContextManager[None]]


async def _hold(
    count: int, held: asyncio.Event, done: asyncio.Event, headers: dict[str, str], opener: Opener
) -> int:
    """Open ``count`` waiters with ``opener``; ``held`` once all are open, until ``done``."""
    opened = 0
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=headers) as http:

        async def one(i: int) -> None:
            nonlocal opened
            async with opener(http, i):
                opened += 1
                if opened == count:
                    held.set()
                await done.wait()

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await held.wait()
        await done.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return opened


async def _hold_exec_streams(url: str, count: int, held: asyncio.Event, done: asyncio.Event) -> int:
    @asynccontextmanager
    async def stream(http: httpx.AsyncClient, i: int) -> AsyncIterator[None]:
        body = {"project_id": "long", "params": {"i": i}}
        async with http.stream("POST", url + "/rpa/v1/exec", json=body) as response:
            first = await anext(response.aiter_lines())
            assert first.startswith("id:"), first  # the execution exists: now it waits
            yield

    return await _hold(count, held, done, {"Authorization": f"Bearer {TOKEN}"}, stream)


async def _hold_mcp_calls(url: str, count: int, held: asyncio.Event, done: asyncio.Event) -> int:
    @asynccontextmanager
    async def call(http: httpx.AsyncClient, i: int) -> AsyncIterator[None]:
        arguments = {"project_id": "long", "params": {"i": i}, "wait_seconds": 290}
        body = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "tools/call",
            "params": {"name": "rpa_run", "arguments": arguments},
        }
        async with http.stream("POST", url + "/mcp", json=body) as response:
            # Answered as a stream: it waits for its run, pinged.
            assert response.headers["content-type"].startswith("text/event-stream")
            yield

    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    return await _hold(count, held, done, headers, call)


def rss_per_waiter(
    workdir: Path, count: int, hold: Callable[[str, int, asyncio.Event, asyncio.Event], Any]
) -> float:
    """KB of RSS one more waiter costs a fresh gateway (after a warm-up of 20 of them)."""
    workdir.mkdir(parents=True)
    with services(workdir, {"RPA_MCP_MAX_WAIT_SECONDS": "300"}) as svc:
        svc.script("long", {"duration": 600})
        pid = svc.gateway.pid

        async def held_by(size: int) -> tuple[asyncio.Event, asyncio.Task[int]]:
            held, done = asyncio.Event(), asyncio.Event()
            holding = asyncio.create_task(hold(svc.gw_url, size, held, done))
            await asyncio.wait_for(held.wait(), 120)
            await asyncio.sleep(1.0)  # settled: each one waiting, pinged
            return done, holding

        async def measured() -> float:
            done, holding = await held_by(20)  # warm-up: the code paths are loaded
            done.set()
            await holding
            baseline = mem_kb(pid, "VmRSS")
            done, holding = await held_by(count)
            grown = mem_kb(pid, "VmRSS") - baseline
            done.set()
            await holding
            return grown / count

        return asyncio.run(measured())


def memory_rounds(args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    for number in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="rpa-mcp-mem-") as tmp:
            stream_kb = rss_per_waiter(Path(tmp) / "exec", args.waiting, _hold_exec_streams)
        with tempfile.TemporaryDirectory(prefix="rpa-mcp-mem-") as tmp:
            call_kb = rss_per_waiter(Path(tmp) / "mcp", args.waiting, _hold_mcp_calls)
        figures = {
            "kb_per_open_stream": round(stream_kb, 1),
            "kb_per_waiting_call": round(call_kb, 1),
            "ratio": round(call_kb / stream_kb, 3),
        }
        rounds.append(figures)
        print(f"memory round {number + 1}: {json.dumps(figures)}", flush=True)
    return {"rounds": rounds, "ratio_median": statistics.median(r["ratio"] for r in rounds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--waiting", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    report: dict[str, Any] = {
        "gateway": gateway_source(),
        "executions": args.executions,
        "rate": args.rate,
        "waiting": args.waiting,
        "sdk_sessions": SESSIONS,
    }
    if not args.skip_cpu:
        with tempfile.TemporaryDirectory(prefix="rpa-mcp-cpu-") as tmp:
            report["cpu_per_execution_mcp_to_exec"] = cpu_rounds(args, Path(tmp))
    if not args.skip_memory:
        report["memory_per_waiting_call_to_open_stream"] = memory_rounds(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"mcp-{args.executions}x{args.rate:g}-{args.waiting}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
