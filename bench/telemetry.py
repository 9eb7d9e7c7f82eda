"""What OpenTelemetry costs a wait when no SDK is configured (the API alone, as flyte installs it).

    python bench/telemetry.py [--runs N] [--quick]

Each run is a fresh child with no SDK: it times the telemetry calls one wait makes (its span from
creation, the waiting counter up and down, a wake-up event, the outcome's events, counter and two
histograms, the span's end) for 10,000 waits, and, in another child, 10,000 concurrent ``.aio``
waits answered end to end (`_new_tools.py scale`). The first over the second is the share of a
wait's cost that telemetry takes without an SDK.

Prints a Markdown table and writes the raw figures to ``bench/results/telemetry.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _common import BENCH, NEW_PY, RESULTS, child_env, log, median, run_json

N = 10_000

_CALLS = f"""
import json, time
from flyteplugins.hitl import _telemetry as t
request = {{"request_id": "b-1", "event_name": "bench", "created_at": "2026-12-07T10:00:00.000Z"}}
response = {{"status": "completed", "value": 1, "via": "json", "transport": "json",
            "answered_at": "2026-12-07T10:00:05.000Z"}}
start = time.perf_counter()
for i in range({N}):
    span = t.start_wait_span("bench", "b-1", "int", 1, request["created_at"])
    t.carrier(span)
    t.waiting.add(1, {{"hitl.event.name": "bench"}})
    span.add_event("woken")
    t.outcome(span, request, response, time.time())
    t.waiting.add(-1, {{"hitl.event.name": "bench"}})
    span.end()
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "sdk": "opentelemetry.sdk" in __import__("sys").modules}}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run of 2,000 waits")
    args = parser.parse_args()
    runs, n = (1, 2_000) if args.quick else (args.runs, N)
    results: list[dict[str, Any]] = []
    for r in range(runs):
        log(f"telemetry: the calls of {N:,} waits without an SDK, run {r + 1}/{runs}")
        calls = run_json([str(NEW_PY), "-c", _CALLS], env=child_env(), timeout=600)
        assert not calls["sdk"], "an SDK was configured: this measures the API alone"
        log(f"telemetry: {n:,} concurrent .aio waits end to end, run {r + 1}/{runs}")
        argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "scale", "-n", str(n), "--mode", "aio"]
        waits = run_json(argv, env=child_env(), timeout=900)
        wait_seconds = waits["start_seconds"] + waits["first_answer_to_last_return_s"]
        results.append(
            {
                "calls_ms": calls["seconds"] * 1000 * n / N,
                "per_wait_us": calls["seconds"] * 1e6 / N,
                "waits_s": wait_seconds,
                "share": calls["seconds"] * n / N / wait_seconds,
            }
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "telemetry.json").write_text(json.dumps(results, indent=2))
    rows = ["| Measure | median | each run |", "|---|---:|---|"]
    for key, name, fmt in (
        ("per_wait_us", "telemetry calls per wait, no SDK (µs)", "{:,.1f}"),
        ("calls_ms", f"telemetry calls of {n:,} waits (ms)", "{:,.0f}"),
        ("waits_s", f"{n:,} .aio waits started and answered (s)", "{:,.2f}"),
        ("share", "telemetry's share of the waits' time", "{:.2%}"),
    ):
        values = [run[key] for run in results]
        rows.append(f"| {name} | {fmt.format(median(values))} | {', '.join(fmt.format(v) for v in values)} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
