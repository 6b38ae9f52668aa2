"""Does a change cost CPU? This checkout's gateway side by side with another revision's.

``--base`` (default ``HEAD``) is checked out into a temporary git worktree; its gateway
imports from there (``PYTHONPATH``), this checkout's from ``src`` - uncommitted changes
included.  Both get the load of ``bench/load.py`` at the same moment, each with its own
fake upstream, on default settings (as ``bench/telemetry_overhead.py`` does: this
machine's CPU speed drifts by tens of percent within minutes, so only a ratio measured
in the same moment means anything).  ``--rounds`` repeats it with fresh processes.

    .venv/bin/python bench/ab.py --base c093bf0 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from load import RESULTS, ROOT, WARMUP_STREAMS, gateway_source, raise_fd_limit
from telemetry_overhead import round_side_by_side

GIT = [shutil.which("git") or "git", "-C", str(ROOT)]


def worktree(revision: str, where: Path) -> str:
    """Check ``revision`` out at ``where``; its abbreviated commit id."""
    git = GIT
    commit = subprocess.run(
        [*git, "rev-parse", "--short", revision], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(where), commit], check=True)
    return commit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="revision to compare against")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="rpa-ab-") as tmp:
        base_tree = Path(tmp) / "base"
        base_commit = worktree(args.base, base_tree)
        try:
            variants = {"base": {"PYTHONPATH": str(base_tree / "src")}, "this": {}}
            for number in range(args.rounds):
                # Which is started and loaded first alternates: an A/A run (this checkout
                # against its own HEAD) gave 0.973-0.997 with a fixed order.
                order = list(variants.items())[:: -1 if number % 2 else 1]
                with tempfile.TemporaryDirectory(prefix="rpa-bench-") as workdir:
                    result = round_side_by_side(args, dict(order), Path(workdir))
                rounds.append(result)
                base, this = (result[n]["server_cpu_ms_per_execution"] for n in ("base", "this"))
                success = " / ".join(f"{result[n]['success_rate_pct']}%" for n in variants)
                print(
                    f"round {number + 1}: base {base:.2f} ms/exec, this {this:.2f} ms/exec, "
                    f"ratio {this / base:.3f}, success {success}",
                    flush=True,
                )
        finally:
            subprocess.run([*GIT, "worktree", "remove", "--force", str(base_tree)], check=False)
    ratios = [
        r["this"]["server_cpu_ms_per_execution"] / r["base"]["server_cpu_ms_per_execution"]
        for r in rounds
    ]
    summary = {
        "this": gateway_source(),
        "base": base_commit,
        "method": "side by side: both gateways loaded at the same time, each with its own fake",
        "streams": args.streams,
        "rate": args.rate,
        "duration_s": args.duration,
        "cpu_ratio_this_to_base_per_round": [round(r, 3) for r in ratios],
        "cpu_ratio_this_to_base_median": round(statistics.median(ratios), 3),
        "cpu_ms_per_execution": {
            name: [r[name]["server_cpu_ms_per_execution"] for r in rounds]
            for name in ("base", "this")
        },
        "success_rate_pct": {
            name: [r[name]["success_rate_pct"] for r in rounds] for name in ("base", "this")
        },
        "upstream_creates": {
            name: [r[name]["upstream_creates"] for r in rounds] for name in ("base", "this")
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ab-{base_commit}-{args.streams}x{args.rate:g}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {path.relative_to(ROOT)}")
    expected = args.streams + WARMUP_STREAMS
    ok = all(
        r[n]["success_rate_pct"] == 100.0 and r[n]["upstream_creates"] == expected
        for r in rounds
        for n in r
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
