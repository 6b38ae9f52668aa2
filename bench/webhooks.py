"""What completion webhooks cost, and whether the outbox stays bounded while a receiver fails.

1. CPU per execution with one endpoint against none: one gateway (default settings, INFO
   logs; ``RPA_WEBHOOK_ALLOW_PRIVATE`` so it may reach the receiver on this machine) runs
   ``--executions`` streams at ``--rate`` per second with no endpoint, then with one
   endpoint registered (a receiver process answering 204; the phase ends once every end
   was delivered), then with none again: each phase alone on the machine, the baseline
   before and after.  The gateway's own CPU (utime + stime) per execution; the ratio is
   the endpoint phase to the mean of the baselines.  ``--rounds`` rounds, median.
2. The outbox while the receiver answers 500 to everything: a fresh gateway at
   ``--outbox-rate`` executions per second for ``--outbox-seconds``.  Every 5 s: pending
   deliveries, those claimed (in memory, being attempted), RSS.  With the default retry
   schedule (5 s, then 300 s, ...) a failing endpoint's deliveries wait for days, so the
   pending rows grow with the events, one each (no retry multiplies them); what must stay
   bounded is what the service holds and does for them: claims and memory.

    .venv/bin/python bench/webhooks.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from load import (
    RESULTS,
    TOKEN,
    Load,
    cpu_ms,
    free_port,
    gateway_source,
    mem_kb,
    run_client,
    services,
    start,
    stop,
    wait_ready,
    warm_up,
)

RECEIVER_HOST = "127.0.0.1"
GATEWAY_ENV = {
    "RPA_WEBHOOK_ALLOW_PRIVATE": "true",
    "RPA_WEBHOOK_ALLOW_HOSTS": RECEIVER_HOST,
}


def receiver_main(port: int, status: int) -> None:
    """A receiver that answers ``status`` to every message and counts them."""
    count = {"n": 0}

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        count["n"] += 1
        return web.Response(status=status)

    async def counted(request: web.Request) -> web.Response:
        return web.json_response(count)

    app = web.Application()
    app.router.add_post("/hook", receive)
    app.router.add_get("/count", counted)
    web.run_app(app, host=RECEIVER_HOST, port=port, access_log=None, print=None)


class Receiver:
    def __init__(self, workdir: Path, status: int) -> None:
        self.port = free_port()
        self.url = f"http://{RECEIVER_HOST}:{self.port}"
        args = (str(Path(__file__)), "--receiver", str(self.port), "--status", str(status))
        self.proc = start(workdir / f"receiver-{status}.log", {}, *args)
        wait_ready(self.url + "/count", self.proc)

    def count(self) -> int:
        return int(httpx.get(self.url + "/count", timeout=5).json()["n"])

    def stop(self) -> None:
        stop(self.proc)


def register(gw_url: str, url: str) -> str:
    made = httpx.post(
        gw_url + "/rpa/v1/webhooks",
        json={"url": url},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    made.raise_for_status()
    return str(made.json()["id"])


def remove(gw_url: str, webhook_id: str) -> None:
    gone = httpx.delete(
        f"{gw_url}/rpa/v1/webhooks/{webhook_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    gone.raise_for_status()


def cost_round(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    receiver = Receiver(workdir, 204)
    try:
        with services(workdir, GATEWAY_ENV) as svc:
            svc.script("bench", {"duration": args.duration})
            warm_up(svc)
            pid = svc.gateway.pid
            per_execution: dict[str, float] = {}
            failures = 0
            for phase in ("none", "one", "none-again"):
                webhook_id = register(svc.gw_url, receiver.url + "/hook") if phase == "one" else ""
                delivered_before = receiver.count()
                before = cpu_ms(pid)
                report = run_client(Load(svc.gw_url, "bench", args.executions, args.rate, 120))
                failures += sum(1 for reason, _ in report["outcomes"] if reason)
                if phase == "one":
                    deadline = time.monotonic() + 120
                    while receiver.count() - delivered_before < args.executions:
                        if time.monotonic() > deadline:
                            raise RuntimeError("not every end was delivered")
                        time.sleep(0.1)
                    remove(svc.gw_url, webhook_id)
                per_execution[phase] = (cpu_ms(pid) - before) / args.executions
            baseline = (per_execution["none"] + per_execution["none-again"]) / 2
            return {
                "cpu_ms_per_execution": per_execution,
                "ratio": per_execution["one"] / baseline,
                "stream_failures": failures,
            }
    finally:
        receiver.stop()


def outbox_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    receiver = Receiver(workdir, 500)
    samples: list[dict[str, float]] = []
    try:
        with services(workdir, GATEWAY_ENV) as svc:
            svc.script("bench", {"duration": args.duration})
            warm_up(svc)
            register(svc.gw_url, receiver.url + "/hook")
            began = time.monotonic()
            next_sample = began

            def sample() -> None:
                nonlocal next_sample
                now = time.monotonic()
                if now < next_sample:
                    return
                next_sample += 5
                with sqlite3.connect(f"file:{svc.db_path}?mode=ro", uri=True) as db:
                    pending, claimed = db.execute(
                        "SELECT count(*), count(claim_until) FROM deliveries WHERE status='pending'"
                    ).fetchone()
                samples.append(
                    {
                        "t": round(now - began, 1),
                        "pending": pending,
                        "claimed": claimed,
                        "rss_mb": mem_kb(svc.gateway.pid, "VmRSS") / 1024,
                    }
                )

            count = int(args.outbox_rate * args.outbox_seconds)
            report = run_client(Load(svc.gw_url, "bench", count, args.outbox_rate, 600), sample)
            failures = sum(1 for reason, _ in report["outcomes"] if reason)
            attempts = receiver.count()
    finally:
        receiver.stop()
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    slope = (half[-1]["rss_mb"] - half[0]["rss_mb"]) / max(1.0, half[-1]["t"] - half[0]["t"])
    return {
        "executions": count,
        "stream_failures": failures,
        "attempts_answered_500": attempts,
        "most_claimed": max(s["claimed"] for s in samples),
        "pending_at_end": samples[-1]["pending"],
        "rss_slope_mb_per_s_second_half": round(slope, 4),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds a run lasts")
    parser.add_argument("--outbox-rate", type=float, default=100.0)
    parser.add_argument("--outbox-seconds", type=float, default=60.0)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--status", type=int, default=204, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main(args.receiver, args.status)
        return 0
    with tempfile.TemporaryDirectory(prefix="rpa-webhooks-") as tmp:
        rounds = []
        for n in range(args.rounds):
            workdir = Path(tmp) / f"round{n}"
            workdir.mkdir()
            rounds.append(cost_round(args, workdir))
            print(f"round {n + 1}: {json.dumps(rounds[-1])}", flush=True)
        outbox_dir = Path(tmp) / "outbox"
        outbox_dir.mkdir()
        outbox = outbox_run(args, outbox_dir)
    result = {
        "source": gateway_source(),
        "cpu_ratio_one_endpoint_to_none": round(statistics.median(r["ratio"] for r in rounds), 3),
        "rounds": rounds,
        "outbox_while_the_receiver_answers_500": outbox,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhooks.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"CPU per execution, one endpoint / none: {result['cpu_ratio_one_endpoint_to_none']}x")
    print(
        f"outbox at {args.outbox_rate:g}/s for {args.outbox_seconds:g} s to a receiver"
        f" answering 500: {outbox['pending_at_end']} pending for {outbox['executions']}"
        f" executions, at most {outbox['most_claimed']} claimed, RSS slope"
        f" {outbox['rss_slope_mb_per_s_second_half']} MB/s over the second half"
    )
    bad = any(r["stream_failures"] for r in rounds) or outbox["stream_failures"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
