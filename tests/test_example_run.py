"""Real Flyte local runs in subprocesses: the README example, answers over HTTP, crash and re-run.

Each run gets its own storage root (``FLYTE_HITL_ROOT``) in a temp dir. Runs with a chosen name keep
Flyte's local metadata under ``/tmp/flyte/{metadata,raw_data}/<run name>``; those are removed after.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from conftest import REPO, Proc, post_json, request
from flyte_run import FlyteRun

pytestmark = pytest.mark.flyte_run

EXAMPLE = REPO / "examples" / "example.py"
APP = Path(__file__).resolve().parent / "flyte_app.py"
FORM_LINE = r"^\[hitl\] form: (?P<base>http://[\d.]+:\d+)/form/(?P<id>[\w-]+)\?token=(?P<token>\S+)$"
CURL_LINE = r"^\[hitl\] curl: (?P<cmd>curl .*)$"


@pytest.fixture
def spawn(root: Path) -> Iterator[Any]:
    """Start processes with FLYTE_HITL_ROOT set to the test's root; all are killed afterwards."""
    started: list[Proc] = []

    def start(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        full_env = env if env is not None else {**os.environ}
        full_env = {**full_env, "FLYTE_HITL_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(
            [sys.executable, *argv], env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        process = Proc(popen, timeout=90)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture
def run_name() -> Iterator[str]:
    """A fresh Flyte run name; Flyte's local files for it are removed afterwards."""
    name = f"hitl-test-{uuid.uuid4().hex[:12]}"
    yield name
    for kind in ("metadata", "raw_data"):
        shutil.rmtree(Path("/tmp/flyte") / kind / name, ignore_errors=True)


def clean_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment with no Flyte configuration anywhere: no FLYTE_* variables, an empty home and cwd."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "UCTL", "UNION", "XDG_CONFIG", "HOME"))}
    env["HOME"] = str(home)
    return env, cwd


def answer_by_form(base: str, form_path: str, value: str) -> int:
    """Answer the way a browser does: open the form, read its hidden fields, post it back."""
    page = request(base, "GET", form_path)
    assert page.status == 200
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert set(fields) >= {"request_id", "token"}
    body = urlencode({**fields, "value": value}).encode()
    reply = request(base, "POST", "/submit", body, {"Content-Type": "application/x-www-form-urlencoded"})
    return reply.status


# -- the README example -----------------------------------------------------------------------------------


def test_the_readme_example_runs_locally_with_no_flyte_config_and_returns_the_answer(
    spawn: Any, tmp_path: Path, root: Path
) -> None:
    env, cwd = clean_env(tmp_path)
    started = time.perf_counter()
    run = spawn(str(EXAMPLE), env=env, cwd=cwd)
    form = run.expect(FORM_LINE)
    curl = run.expect(CURL_LINE)
    shown_at = time.perf_counter()
    assert form["id"] in curl["cmd"] and form["token"] in curl["cmd"]
    # Run the printed curl command as is, with our value in place of the placeholder 42.
    argv = shlex.split(curl["cmd"])
    payload = json.loads(argv[-1])
    assert payload == {"request_id": form["id"], "token": form["token"], "value": 42}
    argv[-1] = json.dumps({**payload, "value": 73519})
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "submitted"
    assert run.finish() == 0, run.output
    finished_at = time.perf_counter()
    assert re.search(r"\b73519\b", run.lines[-1]), run.output
    assert "Project has not been initialized" not in run.output
    assert "Traceback" not in run.output
    assert [p.name for p in root.iterdir()] == [form["id"]]
    sys.__stdout__.write(
        f"\n[figure] example: form line {shown_at - started:.2f}s after start; "
        f"exit {1000 * (finished_at - shown_at):.0f} ms after it\n"
    )


def test_the_readme_example_answered_through_the_web_form(spawn: Any, root: Path) -> None:
    run = spawn(str(EXAMPLE))
    form = run.expect(FORM_LINE)
    path = urlsplit(form[0].split("form: ", 1)[1])
    assert parse_qs(path.query)["token"] == [form["token"]]
    assert answer_by_form(form["base"], f"{path.path}?{path.query}", "-12") == 200
    assert run.finish() == 0, run.output
    assert re.search(r"-12\b", run.lines[-1]), run.output
    stored = json.loads((root / form["id"] / "response.json").read_text())
    assert stored["value"] == -12 and stored["via"] == "form"


# -- crash and re-run ---------------------------------------------------------------------------------------


def test_a_crashed_run_re_attaches_and_returns_the_answer_given_while_it_was_down(
    spawn: Any, root: Path, run_name: str
) -> None:
    first = spawn(str(APP), run_name, "1")
    (first_id,) = first.expect(r"^\[app\] ids: (\S+)$").groups()
    form = first.expect(FORM_LINE)
    assert form["id"] == first_id
    first.proc.send_signal(signal.SIGKILL)
    assert first.finish() == -signal.SIGKILL
    with pytest.raises(ConnectionError):  # its embedded server died with it
        request(form["base"], "GET", "/health")

    # While the task is down, a standalone server on the same root takes the answer.
    server = spawn("-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0")
    base = server.expect(r"(http://127\.0\.0\.1:\d+)\s*$", timeout=30)[1]
    reply = post_json(base, {"request_id": form["id"], "token": form["token"], "value": 2024})
    assert reply.status == 200, reply.text
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish(30) == 0

    second = spawn(str(APP), run_name, "1")
    assert second.expect(r"^\[app\] ids: (\S+)$")[1] == first_id, "the same event, not a new one"
    assert second.expect(r"^\[app\] result: (.*)$")[1] == '"2024"'
    assert second.finish() == 0, second.output
    assert "[hitl] form:" not in second.output, "an answered event's form is not shown again"
    assert [p.name for p in root.iterdir()] == [first_id], "no second event was created"
    token = json.loads((root / first_id / "request.json").read_text())["token"]
    assert token == form["token"]
    assert run_name not in token and first_id not in token


def test_events_of_the_same_name_in_one_task_get_their_own_ids_and_a_re_run_finds_both(
    spawn: Any, root: Path, run_name: str
) -> None:
    first = spawn(str(APP), run_name, "2")
    ids = first.expect(r"^\[app\] ids: (\S+) (\S+)$").groups()
    assert ids[0] != ids[1], "the occurrence counter tells them apart"
    one = first.expect(FORM_LINE)
    assert one["id"] == ids[0]
    assert answer_by_form(one["base"], f"/form/{one['id']}?token={one['token']}", "5") == 200
    two = first.expect(FORM_LINE)
    assert two["id"] == ids[1]
    assert two["token"] != one["token"]
    assert post_json(two["base"], {"request_id": two["id"], "token": two["token"], "value": 6}).status == 200
    assert first.expect(r"^\[app\] result: (.*)$")[1] == '"5,6"'
    assert first.finish() == 0, first.output

    # The same run name again: the same two events, already answered, in the same order.
    second = spawn(str(APP), run_name, "2")
    assert second.expect(r"^\[app\] ids: (\S+) (\S+)$").groups() == ids
    assert second.expect(r"^\[app\] result: (.*)$")[1] == '"5,6"'
    assert second.finish() == 0, second.output
    assert sorted(p.name for p in root.iterdir()) == sorted(ids)


RETRY = """
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-retry")
attempts = []


@env.task(retries=1)
def ask() -> str:
    event = hitl.new_event("approve", data_type=bool, prompt="Ship it?", poll_interval_seconds=60)
    attempts.append(event.request_id)
    print("ATTEMPT " + event.request_id, flush=True)
    if len(attempts) == 1:
        # Answered while the first attempt is still running, which then fails: the retry must find it.
        hitl.submit(event.request_id, True, comment="before the retry")
        raise RuntimeError("the first attempt fails")
    return f"{event.wait()!r} {event.response['comment']}"


if __name__ == "__main__":
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(ask)
    print("RESULT " + run.outputs()[0], flush=True)
"""


def test_a_retry_in_the_same_process_re_attaches_to_its_event_and_gets_its_answer(
    tmp_path: Path, root: Path, run_name: str
) -> None:
    script = tmp_path / "retry.py"
    script.write_text(RETRY)
    proc = subprocess.run(
        [sys.executable, str(script), run_name, str(tmp_path / "raw")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLYTE_HITL_ROOT": str(root)},
    )
    attempts = re.findall(r"^ATTEMPT (\S+)$", proc.stdout, re.M)
    assert len(attempts) == 2 and attempts[0] == attempts[1], proc.stdout + proc.stderr
    assert "RESULT True before the retry" in proc.stdout, proc.stdout + proc.stderr
    assert [p.name for p in root.iterdir()] == [attempts[0]]


def test_another_run_name_gets_other_events(spawn: Any, root: Path, run_name: str, tmp_path: Path) -> None:
    other_name = f"{run_name}-other"
    try:
        runs = [spawn(str(APP), name, "1") for name in (run_name, other_name)]
        forms = [run.expect(FORM_LINE) for run in runs]
        assert forms[0]["id"] != forms[1]["id"]
        for n, (run, form) in enumerate(zip(runs, forms, strict=True)):
            assert post_json(form["base"], {"request_id": form["id"], "token": form["token"], "value": n}).status == 200
            assert run.expect(r"^\[app\] result: (.*)$")[1] == f'"{n}"'
            assert run.finish() == 0
    finally:
        for kind in ("metadata", "raw_data"):
            shutil.rmtree(Path("/tmp/flyte") / kind / other_name, ignore_errors=True)


# -- blocking calls inside an async task ------------------------------------------------------------------

BLOCKING_IN_ASYNC = """
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-blocking-in-async")


@env.task(report=True)
async def main() -> str:
    event = await hitl.new_event.aio("first", data_type=bool, prompt="Blocking wait in an async task?")
    first = event.wait()  # blocks Flyte's event loop: nothing the wait needs may run there
    ok = hitl.approve("ship", prompt="Ship it?")
    return f"{first!r} {ok!r}"


if __name__ == "__main__":
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(main)
    print("RESULT " + run.outputs()[0], flush=True)
"""


def test_blocking_waits_inside_an_async_task_return_their_answers(tmp_path: Path, root: Path) -> None:
    """A blocking ``wait()`` (and ``approve()``) inside an ``async def`` task, with a report, in a
    local run: each returns its answer, and the run ends."""
    script = tmp_path / "blocking_in_async.py"
    script.write_text(BLOCKING_IN_ASYNC)
    run = FlyteRun(script, tmp_path)
    try:
        for value in (True, False):
            form = run.expect(FORM_LINE)
            reply = post_json(form["base"], {"request_id": form["id"], "token": form["token"], "value": value})
            assert reply.status == 200, reply.text
        assert run.expect(r"^RESULT (.*)$")[1] == "True False"
        assert run.finish() == 0, run.output
        # A report write that waited for Flyte's event loop (held by the blocking waits) would give up.
        assert "could not update the Flyte report" not in run.output
        report = run.report()
        assert report is not None and "HITL: first" in report and "HITL: ship" in report
        assert "Answer: <code>Rejected</code>" in report
    finally:
        run.close()


# -- re-attaching ---------------------------------------------------------------------------------------

REATTACH = """
import os
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-reattach")


@env.task
async def ask() -> str:
    # From the environment, not the task's inputs: the same run with other inputs is another action.
    choices, default = os.environ["T_CHOICES"].split(","), os.environ["T_DEFAULT"]
    event = await hitl.Event.create("size", data_type=str, scope="run", choices=choices, default=default)
    return event.request_id


if __name__ == "__main__":
    name, raw = sys.argv[1:3]
    try:
        run = flyte.with_runcontext(mode="local", name=name, raw_data_path=raw).run(ask)
        print("ID " + run.outputs()[0], flush=True)
    except Exception as e:
        print("ERROR " + " ".join(str(e).split()), flush=True)
"""


def test_re_attaching_with_other_choices_or_default_is_a_clear_error(tmp_path: Path, root: Path, run_name: str) -> None:
    script = tmp_path / "reattach.py"
    script.write_text(REATTACH)

    def run(choices: str, default: str) -> str:
        proc = subprocess.run(
            [sys.executable, str(script), run_name, str(tmp_path / "raw")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "FLYTE_HITL_ROOT": str(root), "T_CHOICES": choices, "T_DEFAULT": default},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(("ID ", "ERROR "))]
        assert lines, proc.stdout + proc.stderr
        return lines[-1]

    first = run("S,M,L", "M")
    assert first.startswith("ID size-")
    assert run("S,M,L", "M") == first, "the same declaration re-attaches (2.12.1's `await Event.create`)"
    changed = run("S,M,L,XL", "M")
    assert changed.startswith("ERROR ") and "choices ['S', 'M', 'L']" in changed, changed
    assert "['S', 'M', 'L', 'XL']" in changed
    other_default = run("S,M,L", "L")
    assert other_default.startswith("ERROR ") and "default 'M'" in other_default and "'L'" in other_default
