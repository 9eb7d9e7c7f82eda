"""What a task's owner sees: the console lines and the Flyte report of a real local run (report=True).

One run asks four questions: one answered over JSON, one through the form with a comment, one that
times out to its default and one that expires. The test reads the console as it comes and the
report.html the run writes under /tmp/flyte/metadata/<run name>/, while waiting and at the end.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import post_json, request
from flyte_run import FlyteRun

from flyteplugins.hitl import _html

pytestmark = pytest.mark.flyte_run

SCRIPT = """
import sys

import flyte

import flyteplugins.hitl as hitl

hitl.Event.note_every_seconds = 0.3  # the periodic line, often enough to see it in a test

env = flyte.TaskEnvironment(name="hitl-report-test")


@env.task(report=True)
async def review() -> str:
    count = await hitl.new_event.aio(
        "count", data_type=int, prompt="How many replicas?\\nProduction runs 3.", timeout_seconds=600
    )
    n = await count.wait.aio()
    approve = await hitl.new_event.aio("approve", data_type=bool, prompt="Ship <v7>?", timeout_seconds=600)
    ok = await approve.wait.aio()
    region = await hitl.new_event.aio(
        "region", data_type=str, prompt="Region?", timeout_seconds=1, default="us-east-1", poll_interval_seconds=0.1
    )
    where = await region.wait.aio()
    late = await hitl.new_event.aio("late", data_type=float, prompt="Rate?", timeout_seconds=1)
    try:
        await late.wait.aio()
        expired = False
    except hitl.EventTimeoutError:
        expired = True
    return f"{n!r} {ok!r} {where!r} {expired!r}"


if __name__ == "__main__":
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(review)
    print("RESULT " + run.outputs()[0], flush=True)
"""

FORM_LINE = r"^\[hitl\] form: (?P<url>(?P<base>http://127\.0\.0\.1:\d+)/form/(?P<id>[\w-]+)\?token=(?P<token>\S+))$"
CURL_LINE = r"^\[hitl\] curl: (?P<cmd>curl .*)$"
NOTE_LINE = r"^\[hitl\] waiting for 'count' … (?P<left>\d+m \d\ds) left$"


@pytest.fixture
def run(tmp_path: Path, root: Path) -> Iterator[FlyteRun]:
    script = tmp_path / "review.py"
    script.write_text(SCRIPT)
    flyte_run = FlyteRun(script, tmp_path)
    yield flyte_run
    flyte_run.close()


def report_tab(report: str, name: str) -> str:
    """The content of the report's tab for event `name`."""
    match = re.search(
        r'<div><style>.*?</style><div class="hitl"><h2>' + re.escape(name) + r"</h2>.*?</div></div>", report, re.S
    )
    assert match, f"no tab for {name!r} in the report"
    return match.group(0)


def wait_for_report(run: FlyteRun, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        report = run.report()
        if report is not None and needle in report:
            return report
        assert time.monotonic() < deadline, f"no report containing {needle!r}; last: {report!r}"
        time.sleep(0.05)


def test_console_and_report_follow_each_event(run: FlyteRun) -> None:
    # Waiting starts: the question on one line, then the URL and the curl command, each whole on one line.
    first = run.expect(r"^\[hitl\] waiting for 'count'")
    # The time left is counted from the event's creation: a busy machine may announce it a little later.
    assert re.fullmatch(
        r"\[hitl\] waiting for 'count' \(int, (10m 00s|9m 5\ds) left\): How many replicas\? Production runs 3\.",
        first.string,
    ), first.string
    form = run.expect(FORM_LINE)
    curl = run.expect(CURL_LINE)
    argv = shlex.split(curl["cmd"])
    assert argv[:5] == ["curl", "-sS", "-X", "POST", f"{form['base']}/submit/json"]
    body = json.loads(argv[-1])
    assert body == {"request_id": form["id"], "token": form["token"], "value": 42}

    # The report shows the question while it waits: prompt, link and curl.
    report = wait_for_report(run, form["url"].replace("&", "&amp;"))
    tab = report_tab(report, "count")
    assert ">waiting<" in tab and '<p class="plain">How many replicas?\nProduction runs 3.</p>' in tab
    assert f'href="{form["url"]}"' in tab and f"<pre>{_html.esc(curl['cmd'])}</pre>" in tab
    assert "Answer:" not in tab
    assert "HITL: count" in report

    # Then a periodic line with the time left (the script sets a short period), never the token again.
    notes = [run.expect(NOTE_LINE)["left"] for _ in range(2)]
    assert all(re.fullmatch(r"(10m 00s|9m \d\ds)", left) for left in notes), notes
    assert post_json(form["base"], {"request_id": form["id"], "token": form["token"], "value": 7}).status == 200
    run.expect(r"^\[hitl\] 'count' answered: 7 \(via the JSON API from 127\.0\.0\.1\)$")

    # A form answer with a comment: one line with the value, where it came from and the comment.
    form = run.expect(FORM_LINE)
    fields = {"request_id": form["id"], "token": form["token"], "value": "no", "comment": "Latency\nregressed"}
    reply = request(
        form["base"],
        "POST",
        "/submit",
        urlencode(fields).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200
    run.expect(
        r"""^\[hitl\] 'approve' answered: False \(via the web form from 127\.0\.0\.1, comment "Latency regressed"\)$"""
    )

    run.expect(r"^\[hitl\] 'region' timed out; using its default 'us-east-1'$")
    run.expect(r"^\[hitl\] 'late' expired without an answer$")
    assert run.expect(r"^RESULT (.*)$").group(1) == "7 False 'us-east-1' True"
    assert run.finish() == 0, run.output
    assert sum(form["token"] in line for line in run.lines) == 2, "the token is printed with the URL and curl only"

    # At the end every event has its outcome in the report.
    report = run.report()
    assert report is not None
    count = report_tab(report, "count")
    assert ">answered<" in count and "Answer: <code>7</code>" in count
    assert "via the JSON API from 127.0.0.1" in count and "Open its page" in count
    approve = report_tab(report, "approve")
    assert "Ship &lt;v7&gt;?" in approve and "Answer: <code>Rejected</code>" in approve
    assert "via the web form from 127.0.0.1" in approve and "Comment: Latency\nregressed" in approve
    region = report_tab(report, "region")
    assert ">expired · default used<" in region and "<code>us-east-1</code>" in region
    late = report_tab(report, "late")
    assert ">expired<" in late and "without an answer" in late
