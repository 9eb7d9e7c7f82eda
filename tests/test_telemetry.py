"""Metrics and traces through OpenTelemetry: read through the SDK's in-memory reader and exporter in a
process of their own (tests/telemetry_run.py), and `/metrics` scraped from `hitl serve` with a real GET.
Without an SDK, nothing is imported with the package and the calls are no-ops."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Proc, python, request, run_python


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("root")
    proc = run_python(str(REPO / "tests" / "telemetry_run.py"), str(root))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def points(seen: dict[str, Any], name: str, **attributes: Any) -> list[dict[str, Any]]:
    return [
        p
        for p in seen["metrics"]
        if p["name"] == name and all(p["attributes"].get(k.replace("_", ".")) == v for k, v in attributes.items())
    ]


def span(seen: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [s for s in seen["spans"] if s["name"] == name]
    return found


@pytest.mark.parametrize(
    ("event", "via", "outcome"),
    [
        ("answered", "json", "answered"),
        ("expired", "storage", "expired"),
        ("defaulted", "storage", "default used"),
        ("refused", "cli", "refused"),
        ("refused", "json", "answered"),
        ("in slack", "slack", "answered"),
    ],
)
def test_each_outcome_is_counted_by_how_it_came_and_what_came_of_it(
    seen: dict[str, Any], event: str, via: str, outcome: str
) -> None:
    [point] = [p for p in points(seen, "hitl.answers", hitl_event_name=event) if p["attributes"]["outcome"] == outcome]
    assert point["attributes"]["via"] == via and point["value"] == 1


def test_no_metric_carries_a_request_id(seen: dict[str, Any]) -> None:
    assert seen["metrics"]
    for point in seen["metrics"]:
        assert not any(re.search(r"-[0-9a-f]{24}$", str(v)) for v in point["attributes"].values()), point


@pytest.mark.parametrize("event", ["answered", "expired", "defaulted", "refused", "in slack"])
def test_every_wait_is_counted_while_it_runs_and_no_longer(seen: dict[str, Any], event: str) -> None:
    [point] = points(seen, "hitl.events.waiting", hitl_event_name=event)
    assert point["value"] == 0 and point["unit"] == "{event}"


@pytest.mark.parametrize(("event", "at_least"), [("answered", 0.25), ("refused", 2.5), ("in slack", 0.0)])
def test_the_peoples_time_and_the_wake_up_time_are_histograms_in_seconds(
    seen: dict[str, Any], event: str, at_least: float
) -> None:
    [decision] = points(seen, "hitl.decision.duration", hitl_event_name=event)
    [wake] = points(seen, "hitl.wake.duration", hitl_event_name=event)
    assert decision["unit"] == wake["unit"] == "s" and decision["count"] == wake["count"] == 1
    assert at_least <= decision["sum"] < 60 and 0 <= wake["sum"] < 10
    assert not points(seen, "hitl.decision.duration", hitl_event_name="expired"), "no one decided an expiry"


def test_server_requests_are_counted_by_route_and_status_class(seen: dict[str, Any]) -> None:
    counted = {
        (p["attributes"]["http.route"], p["attributes"]["http.status_class"]): p["value"]
        for p in points(seen, "hitl.http.server.requests")
    }
    assert counted[("/submit/json", "2xx")] == 2 and counted[("/slack/interactions", "2xx")] == 1


def test_storage_errors_are_counted_by_operation(seen: dict[str, Any]) -> None:
    [point] = points(seen, "hitl.storage.errors")
    assert point["attributes"] == {"operation": "read"} and point["value"] == 1


def test_one_wait_span_from_creation_with_what_happened_as_events(seen: dict[str, Any]) -> None:
    wait = span(seen, "hitl.wait answered")
    assert wait["kind"] == "INTERNAL" and wait["events"] == ["created", "woken", "answered"]
    assert wait["attributes"] == {
        "hitl.request_id": wait["attributes"]["hitl.request_id"],
        "hitl.event.name": "answered",
        "hitl.type": "int",
        "hitl.quorum": 1,
        "hitl.via": "json",
    }
    task = span(seen, "task")
    assert wait["parent"] == task["span_id"] and wait["trace_id"] == task["trace_id"], "a child of the caller's span"
    assert span(seen, "hitl.wait expired")["events"] == ["created", "expired"]
    assert span(seen, "hitl.wait defaulted")["events"] == ["created", "default used"]
    # Each answer wakes the wait: the command line's by a datagram, the server's in this process.
    assert span(seen, "hitl.wait refused")["events"] == ["created", "woken", "refused", "woken", "answered"]
    assert span(seen, "hitl.wait in slack")["events"] == ["created", "notified", "woken", "answered"]


def test_a_servers_answer_span_links_to_the_wait_it_answers(seen: dict[str, Any]) -> None:
    for name in ("answered", "in slack"):
        wait, answer = span(seen, f"hitl.wait {name}"), span(seen, f"hitl.answer {name}")
        assert answer["kind"] == "SERVER" and answer["links"] == [wait["span_id"]]
        assert answer["attributes"]["hitl.request_id"] == wait["attributes"]["hitl.request_id"]


def test_hitl_serve_exports_metrics_on_a_port_of_their_own(root: Path, procs: list[Proc]) -> None:
    argv = ["-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0", "--metrics-port", "0"]
    proc = Proc(python(*argv))
    procs.append(proc)
    metrics_url = proc.expect(r"metrics at (http://\S+)")
    form_url = proc.expect(r"serving .* at (http://\S+)")
    assert request(form_url.group(1), "GET", "/health").status == 200
    assert request(form_url.group(1), "GET", "/metrics").status == 404, "never on the form's port"
    base = metrics_url.group(1).removesuffix("/metrics")
    scraped = request(base, "GET", "/metrics").text
    assert re.search(r'hitl_http_server_requests_total\{[^}]*http_route="/health"[^}]*\} 1\.0', scraped), scraped


def test_a_metrics_port_without_the_sdk_is_refused_in_one_line(root: Path, tmp_path: Path) -> None:
    # The SDK hidden from this interpreter: what a plain `pip install flyteplugins-hitl` has.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\nclass _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter.prometheus')):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    argv = ["-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0", "--metrics-port", "0"]
    proc = python(*argv, env={"PYTHONPATH": f"{tmp_path}:{REPO / 'src'}"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "pip install 'flyteplugins-hitl[otel]'" in out and "Traceback" not in out


def test_without_an_sdk_the_package_imports_no_opentelemetry_and_a_wait_records_nothing(root: Path) -> None:
    code = (
        "import sys, threading, flyteplugins.hitl as hitl\n"
        "before = sorted(m for m in sys.modules if m.startswith('opentelemetry.'))\n"
        "e = hitl.new_event('x', data_type=int, timeout_seconds=30)\n"
        "threading.Timer(0.2, hitl.submit, (e.form_url, 1)).start()\n"
        "assert e.wait() == 1\n"
        "print(before, 'opentelemetry.sdk' in sys.modules)\n"
    )
    proc = run_python(code)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1] == "[] False"
