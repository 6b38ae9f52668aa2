"""Ten thousand open streams in one process: delivered, and what they cost while idle.

Opens ``--streams`` streams at ``--rate`` per second (default 10 000 at 200/s) on a
project whose runs last ``--duration`` seconds (60), against one gateway with default
settings (INFO logs).  Every stream is open from the moment the last one opened until
the first run ends: in that window nothing happens but pings (every 3 s each), so the
gateway's CPU there is what idle streams cost.  The streams come from one caller per
thousand (a caller may have ``RPA_MAX_UNFINISHED_PER_TOKEN``, 1000, under way).  Before
the load the gateway sees 20 runs of the project from each caller (schedules are learned
per caller), as a service in use would have: it
polls each run when it ends, not during the window (``--no-learn``: today's schedule,
polls in the window too).

Prints and writes ``bench/results/many-streams-<streams>x<rate>.json``: delivered,
creates, polls per execution, the idle window's CPU as a share of one core, file
descriptors open in it, and RSS per open stream at the window's start and at its end (until
ba2955a RSS stepped up once in the window, ~1.5 KB per stream: housekeeping re-read every open
execution once a minute; one gateway holding 5 000 streams now reads 16.5 KB each, flat from
the opening to 110 s).  Exit status 0 only if every stream got its result with one create each.

    .venv/bin/python bench/many_streams.py [--streams 10000 --rate 200 --duration 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load import (
    RESULTS,
    WARMUP_STREAMS,
    Load,
    cpu_ms,
    gateway_source,
    mem_kb,
    raise_fd_limit,
    run_client,
    services,
    warm_up,
)

WINDOW_MARGIN_S = 1.5  # left out at each end of the idle window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--no-learn", dest="learn", action="store_false")
    args = parser.parse_args()
    raise_fd_limit()
    opening_s = args.streams / args.rate
    window = (opening_s + WINDOW_MARGIN_S, args.duration - WINDOW_MARGIN_S)
    if window[1] - window[0] < 3:
        parser.error("runs must outlast the opening of every stream by 6 s or more")
    with tempfile.TemporaryDirectory(prefix="rpa-many-") as tmp, services(Path(tmp), {}) as svc:
        svc.script("long", {"duration": args.duration})
        warm_up(svc)
        # As many callers as it takes: one may have RPA_MAX_UNFINISHED_PER_TOKEN (1000) open.
        callers = -(-args.streams // 1000)
        if args.learn:
            # Each caller's runs of the project so far (schedules are learned per caller),
            # learned at the next sync (every 5 s).
            warm = Load(
                svc.gw_url, "long", WARMUP_STREAMS * callers, 100, args.duration + 60, callers
            )
            run_client(warm)
            time.sleep(6.0)
        pid = svc.gateway.pid
        before = svc.upstream_stats()
        rss_before = mem_kb(pid, "VmRSS")
        marks: dict[str, float] = {}
        began = time.monotonic() + 0.1  # when the client opens its first stream (about)

        def sample() -> None:
            t = time.monotonic() - began
            if "cpu_from" not in marks and t >= window[0]:
                marks["cpu_from"], marks["t_from"] = cpu_ms(pid), t
                marks["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
                marks["rss_kb"] = mem_kb(pid, "VmRSS")
            if "cpu_to" not in marks and t >= window[1]:
                marks["cpu_to"], marks["t_to"] = cpu_ms(pid), t
                marks["rss_kb_end"] = mem_kb(pid, "VmRSS")

        load = Load(svc.gw_url, "long", args.streams, args.rate, args.duration + 120, callers)
        result = run_client(load, sample)
        after = svc.upstream_stats()
    delivered = sum(1 for reason, _ in result["outcomes"] if reason is None)
    failures: dict[str, int] = {}
    for reason, _ in result["outcomes"]:
        if reason is not None:
            failures[reason] = failures.get(reason, 0) + 1
    idle_s = marks["t_to"] - marks["t_from"]
    idle_core = (marks["cpu_to"] - marks["cpu_from"]) / 1000 / idle_s
    report: dict[str, Any] = {
        "gateway": gateway_source(),
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "learned": args.learn,
        "delivered_pct": round(100 * delivered / args.streams, 2),
        "failures": failures,
        "upstream_creates": after["creates"] - before["creates"],
        "polls_per_execution": round((after["queries"] - before["queries"]) / args.streams, 2),
        "max_open": result["max_open"],
        "idle_window_s": round(idle_s, 1),
        "idle_cpu_share_of_one_core": round(idle_core, 4),
        "open_descriptors_in_window": marks["fds"],
        "rss_kb_per_open_stream": round((marks["rss_kb"] - rss_before) / args.streams, 2),
        # The same streams at the window's end: RSS settles some seconds after the opening.
        "rss_kb_per_open_stream_at_window_end": round(
            (marks["rss_kb_end"] - rss_before) / args.streams, 2
        ),
    }
    path = RESULTS / f"many-streams-{args.streams}x{int(args.rate)}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:32} {value}")
    print(f"written to {path}")
    ok = report["delivered_pct"] == 100.0 and report["upstream_creates"] == args.streams
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
