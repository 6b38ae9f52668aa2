"""What telemetry costs, counted in instructions: repeatable where CPU seconds are not.

CPU time on this machine drifts by tens of percent between identical runs, which hides
a difference of that size (see ``telemetry_overhead.py``).  Here the gateway runs under
valgrind's callgrind, which counts the instructions every thread of the process executes
(librdkafka's and the exporters' threads included), whatever else the machine does.
The same load runs with telemetry off and fully on (OTLP traces and metrics to a real
receiver, ``/metrics``, the Kafka record to a real tansu broker), and the counts of the
load phase alone are compared (``callgrind_control --zero`` after the warm-up, ``--dump``
once the last stream has ended).

Every run is scripted by steps (PENDING, RUNNING, COMPLETED: one create and three
queries), so the work per execution does not depend on how slow valgrind makes the
gateway; pings are pushed out of the runs' way.  Callgrind runs the gateway about 50
times slower, so the load is gentle: ``--streams`` at ``--rate`` per second.

    .venv/bin/python bench/telemetry_instructions.py --streams 300 --rate 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load import RESULTS, ROOT, Load, gateway_source, raise_fd_limit, run_client, services

sys.path.insert(0, str(ROOT))
from tests.fakes.kafka_broker import KafkaBroker
from tests.fakes.otlp_receiver import OtlpReceiver

TOPIC = "rpa-trace"


def steps() -> dict[str, Any]:
    """One create and three queries per run (``completed_at`` only satisfies the judge:
    latency means nothing under valgrind)."""
    result = {"data": {"ok": True, "completed_at": time.time()}}
    return {
        "steps": [
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {"status": "COMPLETED", "result": result},
        ]
    }


QUIET = {
    "RPA_POLL_FIRST_DELAY": "0.2",
    "RPA_POLL_BACKOFF": "1",
    "XIAOWU_RPA_TASK_QUERY_INTERVAL": "0.2",
    "XIAOWU_RPA_PING_INTERVAL": "600",
}


CALLGRIND_CONTROL = shutil.which("callgrind_control") or "callgrind_control"


def callgrind(pid: int, command: str) -> None:
    subprocess.run([CALLGRIND_CONTROL, command, str(pid)], check=True, capture_output=True)


def dumped_instructions(out_dir: Path, pid: int, part: int) -> int:
    """Instructions in dump ``part`` of ``pid``: those since the zeroing before it."""
    path = out_dir / f"callgrind.{pid}.{part}"
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


def count(pid: int, out_dir: Path, part: int, work: Callable[[], object]) -> int:
    """Instructions the gateway executes while ``work()`` runs."""
    callgrind(pid, "--zero")
    work()
    callgrind(pid, "--dump")
    return dumped_instructions(out_dir, pid, part)


def measure(
    streams: int, rate: float, idle: float, env: dict[str, str], keep: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rpa-instr-") as tmp:
        workdir = Path(tmp)
        launcher = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={workdir}/callgrind.%p",
            "--dump-line=no",
        ]
        with services(workdir, {**QUIET, **env}, launcher=launcher, ready_timeout=300) as svc:
            svc.script("warmup", steps())
            warm = run_client(Load(svc.gw_url, "warmup", 20, 2, 300))
            svc.script("bench", steps())
            pid = svc.gateway.pid
            idle_instructions = count(pid, workdir, 1, lambda: time.sleep(idle))
            began = time.monotonic()
            outcome: dict[str, Any] = {}
            instructions = count(
                pid,
                workdir,
                2,
                lambda: outcome.update(run_client(Load(svc.gw_url, "bench", streams, rate, 300))),
            )
            wall = time.monotonic() - began
            if keep is not None:  # for callgrind_annotate
                keep.mkdir(parents=True, exist_ok=True)
                for dump in workdir.glob(f"callgrind.{pid}.*"):
                    shutil.copy(dump, keep / f"{'on' if env else 'off'}-{dump.name}")
            creates = svc.upstream_stats()["creates"]
    failures = [reason for reason, _ in outcome["outcomes"] + warm["outcomes"] if reason]
    idle_per_s = idle_instructions / idle
    return {
        "instructions": instructions,
        "instructions_per_execution": round(instructions / streams),
        "idle_instructions_per_s": round(idle_per_s),
        # What the load added to idling, per execution: the cost that scales with executions.
        "marginal_instructions_per_execution": round((instructions - idle_per_s * wall) / streams),
        "load_wall_s": round(wall, 1),
        "failures": len(failures),
        "failure_reasons": sorted(set(failures))[:5],
        "upstream_creates": creates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps into this folder")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured")
    parser.add_argument(
        "--at-rate",
        type=float,
        default=100.0,
        help="the rate at which to state the cost per execution (idle cost spread over it)",
    )
    args = parser.parse_args()
    if shutil.which("callgrind_control") is None:
        print("valgrind is needed: apt-get install valgrind", file=sys.stderr)
        return 2
    raise_fd_limit()
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="rpa-instr-receivers-") as tmp:
        receiver = OtlpReceiver().start()
        broker = KafkaBroker(Path(tmp) / "tansu.log").start(TOPIC)
        try:
            on = {
                "OTLP_ENABLE": "true",
                "OTLP_ENDPOINT": receiver.endpoint,
                "RPA_PROMETHEUS_ENABLE": "true",
                "KAFKA_SERVERS": broker.servers,
                "KAFKA_TOPIC": TOPIC,
            }
            for _ in range(args.repeats):
                for name, env in (("off", {}), ("on", on)):
                    report = measure(args.streams, args.rate, args.idle, env, args.keep)
                    report["at_rate_instructions_per_execution"] = round(
                        report["marginal_instructions_per_execution"]
                        + report["idle_instructions_per_s"] / args.at_rate
                    )
                    runs[name].append(report)
                    print(
                        f"telemetry {name}: {report['instructions_per_execution']:,} "
                        f"instructions/exec at {args.rate:g}/s "
                        f"(idle {report['idle_instructions_per_s']:,}/s, "
                        f"marginal {report['marginal_instructions_per_execution']:,}/exec, "
                        f"at {args.at_rate:g}/s {report['at_rate_instructions_per_execution']:,}"
                        f"/exec), {report['failures']} failures, {report['load_wall_s']} s",
                        flush=True,
                    )
            spans = len(receiver.spans)
        finally:
            broker.stop()
            receiver.stop()

    def overhead(figure: str) -> float:
        # Median of each variant's runs (one run: that run).
        off, on = (statistics.median(r[figure] for r in runs[name]) for name in ("off", "on"))
        return round(100 * (on / off - 1), 1)

    summary = {
        "gateway": gateway_source(),
        "streams": args.streams,
        "rate": args.rate,
        "repeats": args.repeats,
        "overhead_pct": {
            f"at {args.rate:g}/s (as run)": overhead("instructions_per_execution"),
            "marginal (idle cost left out)": overhead("marginal_instructions_per_execution"),
            f"at {args.at_rate:g}/s (idle cost spread over it)": overhead(
                "at_rate_instructions_per_execution"
            ),
        },
        "spans_received": spans,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"telemetry-instructions-{args.streams}x{args.rate:g}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    print(f"written to {path}")
    ok = all(r["failures"] == 0 for reports in runs.values() for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
