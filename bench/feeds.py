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
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp

from load import (
    TOKEN,
    Load,
    Services,
    load_together,
    raise_fd_limit,
    ratio_rounds,
    services,
    side_by_side_figures,
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
        figures = side_by_side_figures(running, results, spent, args.streams)
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
    return ratio_rounds(
        args,
        round_side_by_side,
        ("feeds", "none"),
        f"feeds-{args.feeds}-{args.streams}x{int(args.rate)}",
        {"feeds": args.feeds},
    )


if __name__ == "__main__":
    sys.exit(main())
