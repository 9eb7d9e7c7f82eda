"""Run events in a process whose OpenTelemetry SDK keeps its metrics and spans in memory, then print
them as JSON: what tests/test_telemetry.py reads. (A process sets its providers once, so each run is
a process of its own.)

    python tests/telemetry_run.py ROOT
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)

sys.path.insert(0, os.path.dirname(__file__))
import slack_fake  # noqa: E402

import flyteplugins.hitl as hitl  # noqa: E402
from flyteplugins.hitl import _slack  # noqa: E402
from flyteplugins.hitl._store import Store  # noqa: E402


@dataclasses.dataclass
class Rated:
    stars: int

    def __post_init__(self) -> None:
        if self.stars == 1:
            raise ValueError("one star needs a second look")


def answer_later(event: hitl.Event[Any], value: Any, delay: float = 0.3) -> None:
    threading.Timer(delay, hitl.submit, (event.form_url, value)).start()


def main() -> None:
    # Answered through the JSON endpoint, inside a span of the caller's: the wait's span is its child.
    with trace.get_tracer("test").start_as_current_span("task"):
        answered = hitl.new_event("answered", data_type=int, timeout_seconds=60)
    answer_later(answered, 5)
    assert answered.wait() == 5

    expired = hitl.new_event("expired", data_type=int, timeout_seconds=0.5, poll_interval_seconds=0.1)
    with contextlib.suppress(hitl.EventTimeoutError):
        expired.wait()
    defaulted = hitl.new_event("defaulted", data_type=int, default=3, timeout_seconds=0.5, poll_interval_seconds=0.1)
    assert defaulted.wait() == 3

    # A writer that knows only the stored schema (the command line, to the root) stores one star; the
    # task's own check refuses it, and the next answer is taken.
    refused = hitl.new_event("refused", data_type=Rated, timeout_seconds=60, poll_interval_seconds=0.1)
    cli = [sys.executable, "-m", "flyteplugins.hitl", "submit", refused.request_id, '{"stars": 1}', "--json-value"]
    threading.Timer(0.3, subprocess.run, (cli,), {"check": True, "capture_output": True}).start()
    threading.Timer(3.0, hitl.submit, (refused.form_url, {"stars": 4})).start()
    assert refused.wait() == Rated(4)

    slack = slack_fake.serve()
    fake = next(slack)
    try:
        os.environ.update(
            {_slack.TOKEN_ENV: slack_fake.TOKEN, _slack.SECRET_ENV: slack_fake.SECRET, _slack.API_ENV: fake.api_url}
        )
        in_slack = hitl.new_event("in slack", data_type=bool, timeout_seconds=60, notify=hitl.Slack("#deploys"))
        result: list[Any] = []
        waiting = threading.Thread(target=lambda: result.append(in_slack.wait()))
        waiting.start()
        deadline = time.monotonic() + 30
        while not fake.of("chat.postMessage") and time.monotonic() < deadline:
            time.sleep(0.05)
        message = fake.of("chat.postMessage")[0]
        body, headers = slack_fake.signed(slack_fake.click(message, "approve", user="U1"))
        import urllib.request

        urllib.request.urlopen(
            urllib.request.Request(f"{in_slack.endpoint}/slack/interactions", body, headers), timeout=30
        ).read()
        waiting.join(60)
        assert result == [True], result
        while not fake.of("chat.update") and time.monotonic() < deadline:  # the message's rewrite, before Slack goes
            time.sleep(0.05)
    finally:
        slack.close()

    # A record that cannot be read (a file where its event's directory should be): one failed read.
    store = Store(sys.argv[1])
    (Path(sys.argv[1]) / "broken-1").write_text("not a directory")
    with contextlib.suppress(hitl.StorageError):
        store.read_request("broken-1")

    tracer_provider.force_flush()
    data = reader.get_metrics_data()
    points: list[dict[str, Any]] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    entry = {"name": metric.name, "unit": metric.unit, "attributes": dict(point.attributes)}
                    if hasattr(point, "value"):
                        entry["value"] = point.value
                    else:
                        entry.update(count=point.count, sum=point.sum)
                    points.append(entry)
    finished = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent": f"{s.parent.span_id:016x}" if s.parent else None,
            "attributes": dict(s.attributes or {}),
            "events": [e.name for e in s.events],
            "links": [f"{link.context.span_id:016x}" for link in s.links],
            "start": s.start_time,
            "end": s.end_time,
        }
        for s in spans.get_finished_spans()
    ]
    print(json.dumps({"metrics": points, "spans": finished}))


if __name__ == "__main__":
    os.environ["FLYTE_HITL_ROOT"] = sys.argv[1]
    main()
