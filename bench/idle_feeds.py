"""Memory of a gateway with feeds that are never read: flat, or growing with the load?

A feed (``GET /rpa/v1/feed``) whose client never reads holds what it has not sent. This
runs the same load twice on fresh processes — ``--rate`` executions a second for
``--seconds`` (runs of ``--duration`` s, ``bench/load.py``'s client) — first with no feed,
then with ``--feeds`` feeds opened on raw sockets that send their request and never read a
byte, and samples the gateway's RSS every 100 ms.  It prints, for each, the RSS every ten
seconds and the slope of a least-squares line through the second half (MB/s: what keeps
growing once the open streams have reached their steady number), and the difference.

    .venv/bin/python bench/idle_feeds.py --feeds 10 --rate 200 --seconds 60
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from load import HOST, TOKEN, Load, mem_kb, run_client, services, warm_up


def never_read_feed(url_port: int) -> socket.socket:
    sock = socket.create_connection((HOST, url_port))
    sock.sendall(
        f"GET /rpa/v1/feed HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock  # and never read


def run(args: argparse.Namespace, feeds: int, workdir: Path) -> tuple[list[tuple[float, int]], str]:
    with services(workdir, {}) as svc:
        svc.script("bench", {"duration": args.duration})
        warm_up(svc)
        port = int(svc.gw_url.rsplit(":", 1)[1])
        sockets = [never_read_feed(port) for _ in range(feeds)]
        time.sleep(1)
        samples: list[tuple[float, int]] = []
        started = time.monotonic()

        def sample() -> None:
            samples.append((time.monotonic() - started, mem_kb(svc.gateway.pid, "VmRSS")))

        load = Load(svc.gw_url, "bench", int(args.rate * args.seconds), args.rate, 120)
        result = run_client(load, sample)
        failed = sum(1 for reason, _ in result["outcomes"] if reason)
        for sock in sockets:
            sock.close()
        log = svc.gw_log.read_text(errors="replace")
        behind, stalled = log.count("changes unread: the feed ends"), log.count("took no byte")
        return samples, f"{failed} failed streams; feeds ended: {behind} behind, {stalled} stalled"


def slope_mb_per_s(samples: list[tuple[float, int]]) -> float:
    half = [(t, kb / 1024) for t, kb in samples if t >= samples[-1][0] / 2]
    times, mbs = [t for t, _ in half], [mb for _, mb in half]
    return statistics.linear_regression(times, mbs).slope


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--duration", type=float, default=0.5, help="each run's length, s")
    args = parser.parse_args()
    slopes = {}
    for feeds in (0, args.feeds):
        with tempfile.TemporaryDirectory() as workdir:
            samples, note = run(args, feeds, Path(workdir))
        marks = [kb for t, kb in samples if abs(t - round(t / 10) * 10) < 0.05 and t >= 9]
        slopes[feeds] = slope_mb_per_s(samples)
        print(
            f"{feeds:3d} never-read feeds: RSS every 10 s (MB) "
            + " ".join(f"{kb / 1024:.0f}" for kb in marks)
            + f"; slope over the second half {slopes[feeds]:+.3f} MB/s; {note}"
        )
    print(
        f"slope with {args.feeds} never-read feeds less without: "
        f"{slopes[args.feeds] - slopes[0]:+.3f} MB/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
