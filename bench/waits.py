"""The wait sizing: 1,000 concurrent blocking waits and 10,000 concurrent ``.aio`` waits in one process.

    python bench/waits.py [--runs N] [--quick]

Each run is a fresh child (``_new_tools.py scale``): it creates the events, starts the waits (a
thread each for blocking waits, tasks on one loop for ``.aio``), lets them settle, then another
process answers every event through the embedded server over 8 connections. The targets: each
mode within 300 MB of RSS, and the last wait returning within 1 s of the last answer. Only this
package runs: the old plugin has no blocking wait, and ``bench/run.py --only scale`` compares the
``.aio`` side with it.

Prints a Markdown table (median of the runs, and each run) and writes the raw figures to
``bench/results/waits.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _common import BENCH, NEW_PY, RESULTS, child_env, log, median, run_json

SIZES = {"sync": 1_000, "aio": 10_000}
QUICK_SIZES = {"sync": 1_000, "aio": 2_000}
RSS_TARGET_MB = 300
RETURN_TARGET_MS = 1_000


def measure(mode: str, n: int, runs: int) -> list[dict[str, Any]]:
    out = []
    for r in range(runs):
        log(f"waits: {n:,} concurrent {mode} waits, run {r + 1}/{runs}")
        argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "scale", "-n", str(n), "--mode", mode]
        out.append(run_json(argv, env=child_env(), timeout=900))
    return out


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = ["| Measure | this package | each run | target |", "|---|---:|---|---|"]
    for mode, runs in results.items():
        n = runs[0]["n"]
        label = f"{n:,} waits ({mode})"
        for key, name, unit, target in (
            ("rss_parked_mb", "RSS while parked", "MB", f"≤ {RSS_TARGET_MB} MB"),
            ("peak_rss_mb", "peak RSS", "MB", f"≤ {RSS_TARGET_MB} MB"),
            ("last_answer_to_last_return_ms", "last answer → last return", "ms", f"≤ {RETURN_TARGET_MS:,} ms"),
            ("first_answer_to_last_return_s", "first answer → last return", "s", ""),
            ("start_seconds", "all waits started", "s", ""),
        ):
            values = [run[key] for run in runs]
            each = ", ".join(f"{v:,.1f}" for v in values)
            rows.append(f"| {label}: {name} ({unit}) | {median(values):,.1f} | {each} | {target} |")
        wrong = sum(run["wrong"] + (run["n"] - run["answers_ok"]) for run in runs)
        rows.append(f"| {label}: wrong or missing results | {wrong} |  | 0 |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run each, 2,000 aio waits: a smoke run")
    args = parser.parse_args()
    sizes, runs = (QUICK_SIZES, 1) if args.quick else (SIZES, args.runs)
    results = {mode: measure(mode, n, runs) for mode, n in sizes.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "waits.json").write_text(json.dumps({"quick": args.quick, "results": results}, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
