"""What open monitor feeds cost: gateway CPU per execution with 20 feeds open vs none.

Two gateways run side by side, each with its own fake upstream, and get the load of
``bench/load.py`` at the same moment (this machine's speed drifts: only a ratio measured
in the same moment means anything); one of them also serves ``--feeds`` clients of
``GET /rpa/v1/feed`` under the load's token - monitor pages left open - which read every
change.  ``--rounds`` repeats that with fresh processes; the report gives each round's
ratio and their median, and how many changes each feed received.

    .venv/bin/python bench/feeds.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp

from load import (
    RESULTS,
    TOKEN,
    Load,
    Services,
    gateway_source,
    load_together,
    raise_fd_limit,
    services,
    warm_up,
)

SETTLE_S = 2.0
FEED_SETTLE_S = 1.0  # five times the feed's batching window (service.CHANGES_BATCH)


async def read_feeds(url: str, count: int) -> None:
    """``count`` feeds read until SIGTERM; then prints the changes each received."""
    received = [0] * count
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def one(index: int, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, response.status
            async for line in response.content:
                if line.startswith(b"event: change"):
                    received[index] += 1

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(count)]
        print("open", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(received), flush=True)


def round_side_by_side(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    with ExitStack() as stack:
        running: dict[str, Services] = {}
        for name in ("none", "feeds"):
            (workdir / name).mkdir(parents=True)
            running[name] = stack.enter_context(services(workdir / name, {}))
        for svc in running.values():
            svc.script("bench", {"duration": args.duration})
            warm_up(svc)
        reader = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--read",
                f"{running['feeds'].gw_url}/rpa/v1/feed",
                "--feeds",
                str(args.feeds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "open"
        time.sleep(SETTLE_S)
        # Measured once the feeds' last batches reached the reader, on both sides.
        results, spent = load_together(
            running,
            lambda svc: Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60),
            settle=FEED_SETTLE_S,
        )
        reader.send_signal(signal.SIGTERM)
        out, _ = reader.communicate(timeout=30)
        per_feed = json.loads(out.strip().splitlines()[-1])
        creates = {name: svc.upstream_stats()["creates"] for name, svc in running.items()}
    figures: dict[str, dict[str, Any]] = {}
    for name in running:
        outcomes = results[name]["outcomes"]
        delivered = sum(1 for reason, _ in outcomes if reason is None)
        figures[name] = {
            "cpu_ms_per_execution": round(spent[name] / args.streams, 3),
            "delivered_pct": round(100 * delivered / args.streams, 2),
            "upstream_creates": creates[name],
        }
    figures["feeds"]["changes_per_feed"] = {"min": min(per_feed), "max": max(per_feed)}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--read", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.read:
        asyncio.run(read_feeds(args.read, args.feeds))
        return 0
    rounds = []
    with tempfile.TemporaryDirectory(prefix="rpa-feeds-") as tmp:
        for index in range(args.rounds):
            figures = round_side_by_side(args, Path(tmp) / f"round{index}")
            ratio = (
                figures["feeds"]["cpu_ms_per_execution"] / figures["none"]["cpu_ms_per_execution"]
            )
            rounds.append({**figures, "cpu_ratio": round(ratio, 3)})
            print(f"round {index + 1}: CPU ratio {ratio:.3f} {figures}", flush=True)
    ratios = [r["cpu_ratio"] for r in rounds]
    report = {
        "gateway": gateway_source(),
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "feeds": args.feeds,
        "rounds": rounds,
        "cpu_ratios": ratios,
        "cpu_ratio_median": statistics.median(ratios),
    }
    path = RESULTS / f"feeds-{args.feeds}-{args.streams}x{int(args.rate)}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    median = report["cpu_ratio_median"]
    print(f"CPU per execution, {args.feeds} feeds open / none: median {median} of {ratios}")
    print(f"written to {path}")
    ok = all(
        r[name]["delivered_pct"] == 100.0 and r[name]["upstream_creates"] >= args.streams
        for r in rounds
        for name in ("none", "feeds")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
