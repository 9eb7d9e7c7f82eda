"""The wait (`_wait.py`) settles what storage already decides (a quorum whose voter's storage failed
between its vote and the decision, votes cast before the deadline, a refusal recorded through an
outage), and an event that names who may answer says at creation where they can."""

from __future__ import annotations

import http.server
import json
import logging
import resource
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Proc, after_first_read, python, until

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _policy, _wait
from flyteplugins.hitl._answers import seconds_left, utc_now
from flyteplugins.hitl._store import Store

ALICE, BOB = "alice@example.com", "bob@example.com"


def vote(root: Path, event: hitl.Event[bool], identity: str, limit: int | None = None) -> subprocess.Popen[str]:
    """``hitl submit --as identity ID true`` in its own process; with `limit`, every write of that
    process past `limit` bytes into a file fails (EFBIG, which the store retries as an outage)."""

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    argv = ["-m", "flyteplugins.hitl", "submit", "--root", str(root), "--as", identity, event.request_id, "true"]
    return python(*argv, env={"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=cap)


def test_a_quorum_whose_voter_s_storage_failed_before_the_decision_is_decided_by_the_wait_at_its_next_poll(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = hitl.Event.create("release", bool, quorum=2, respondents=[ALICE, BOB], poll_interval_seconds=0.2)
    got: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: got.update(value=event.wait()), daemon=True)
    waiter.start()
    after_first_read(event)
    (waiting,) = _wait._waits[event.request_id]
    first = vote(root, event, ALICE)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    votes_dir = root / event.request_id / "votes"
    (alice_vote,) = votes_dir.iterdir()
    # Bob's vote (the size of Alice's, give or take a letter) is stored; the decision, which carries
    # both votes, is not: storage fails for his process between the two.
    second = vote(root, event, BOB, limit=alice_vote.stat().st_size + 64)
    until(lambda: len(list(votes_dir.iterdir())) == 2, "Bob's vote is stored")
    stored_at = waiting.reads
    waiter.join(60)
    assert not waiter.is_alive() and got["value"] is True
    assert event.response is not None and event.response["status"] == "completed"
    counted = [v["identity"] for v in event.response["votes"]]
    assert sorted(counted) == [ALICE, BOB], "each vote counted once"
    assert len(list(votes_dir.iterdir())) == 2
    stored = json.loads((root / event.request_id / "response.json").read_text())
    assert stored["votes"] == event.response["votes"]
    # A read under way when Bob's vote was stored may have missed it; the next one decides.
    assert waiting.reads - stored_at <= 1, "decided at the first poll after the votes were stored"
    # The console line shows every vote the decision counted.
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "'release' answered" in x]
    assert f"votes: {ALICE} approved at " in line and f"; {BOB} approved at " in line, line
    out, _ = second.communicate(timeout=120)
    assert second.returncode != 0 and "File too large" in out, out


def test_votes_cast_before_the_deadline_decide_instead_of_the_expiry_mark(root: Path) -> None:
    event = hitl.Event.create("release", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=1)
    store = Store(str(root))
    for who in (ALICE, BOB):  # stored as a voter stores them, before the deadline; no decision
        record = {"identity": who, "value": True, "via": "cli", "transport": "storage", "voted_at": utc_now()}
        assert store.create_vote(event.request_id, _policy.vote_key(who), record)
    until(lambda: seconds_left(event._request) < 0, "the deadline passes")
    assert event.wait() is True  # its first read is at the deadline
    assert event.response is not None and len(event.response["votes"]) == 2


WAITER = """
import dataclasses, logging, resource, sys, threading
import flyteplugins.hitl as hitl
from flyteplugins.hitl._store import Store

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
Store.attempts, Store.backoff_seconds, Store.max_backoff_seconds = 2, 0.05, 0.2


@dataclasses.dataclass
class Even:
    n: int

    def __post_init__(self) -> None:
        if self.n % 2:
            raise ValueError("n must be even")


def outage() -> None:  # every write to a file fails (EFBIG) from "down" until "up"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for line in sys.stdin:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0 if line.strip() == "down" else hard, hard))
        print("storage", line.strip(), flush=True)


event = hitl.new_event("even", data_type=Even, poll_interval_seconds=0.1, timeout_seconds=120)
threading.Thread(target=outage, daemon=True).start()
try:
    print("RESULT", event.wait().n, flush=True)
except hitl.StorageError as e:
    print("STORAGE_ERROR", e, flush=True)
"""


def test_a_refusal_recorded_during_a_storage_outage_is_retried_until_storage_answers(
    root: Path, procs: list[Proc]
) -> None:
    # No embedded server: the answers are written straight to the root, as another replica would.
    waiter = Proc(python("-c", WAITER, env={"FLYTE_HITL_ENDPOINT": "http://127.0.0.1:9"}, stdin=subprocess.PIPE))
    procs.append(waiter)
    request_id = waiter.expect(r"^\[hitl\] form: \S+/form/([\w-]+)\?")[1]
    stdin = waiter.proc.stdin
    assert stdin is not None
    stdin.write("down\n")
    stdin.flush()
    waiter.expect(r"^storage down$")
    store = Store(str(root))
    assert store.create_response(request_id, {"request_id": request_id, "status": "completed", "value": {"n": 3}})
    waiter.expect(r"storage error under .*retrying")  # recording the refusal fails
    time.sleep(1)  # the store gives up on it (two attempts, 50 ms apart); the wait keeps trying
    stdin.write("up\n")
    stdin.flush()
    waiter.expect(r"was refused \(.*n must be even.*\); waiting for another")
    assert store.read_outcome(request_id).slot == 1
    assert store.create_response(request_id, {"request_id": request_id, "status": "completed", "value": {"n": 4}})
    waiter.expect(r"^RESULT 4$")
    assert waiter.finish() == 0
    assert "STORAGE_ERROR" not in waiter.output and "Traceback" not in waiter.output


# -- who can answer, said at creation -------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "flyteplugins.hitl"]


def test_an_event_for_named_people_on_a_server_that_identifies_nobody_says_how_to_answer_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLYTE_HITL_IDENTITY_HEADER", raising=False)
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl"):
        event = hitl.Event.create("ship", bool, respondents=[ALICE], poll_interval_seconds=0.1, timeout_seconds=60)
    (warning,) = _warnings(caplog)
    assert "FLYTE_HITL_IDENTITY_HEADER" in warning and event.request_id in warning
    got: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: got.update(value=event.wait()), daemon=True)
    waiter.start()
    printed: list[str] = []
    until(lambda: "[hitl] answer: " in "".join(printed.append(capsys.readouterr().out) or printed), "the line")
    lines = "".join(printed)
    assert "[hitl] curl:" not in lines, "a token alone cannot answer it"
    # The printed command, as a person would run it, with their identity and value.
    line = next(x for x in lines.splitlines() if x.startswith("[hitl] answer: "))
    command = shlex.split(line.split("answer: ", 1)[1].split(" (", 1)[0])
    assert command[:2] == ["hitl", "submit"] and command[-3:] == ["IDENTITY", event.request_id, "VALUE"]
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *command[1:-3], ALICE, event.request_id, "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    waiter.join(60)
    assert got.get("value") is True


def test_an_event_for_named_people_on_a_server_that_identifies_them_warns_of_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLYTE_HITL_IDENTITY_HEADER", "X-Forwarded-Email")
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl"):
        event = hitl.Event.create("ship", bool, respondents=[ALICE], timeout_seconds=60)
        hitl.Event.create("open", bool, timeout_seconds=60)  # no policy: anyone with the link answers
    assert _warnings(caplog) == [] and event._unidentified is None


class _Health(http.server.BaseHTTPRequestHandler):
    """A separate form server's /health, saying whether it identifies anyone."""

    identifies: object = False

    def do_GET(self) -> None:
        body = json.dumps({"status": "healthy", "identifies": self.identifies}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("identifies", [False, True])
def test_a_separate_server_whose_health_says_it_identifies_nobody_is_named_in_a_warning(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, identifies: bool
) -> None:
    handler = type("Health", (_Health,), {"identifies": identifies})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setenv("FLYTE_HITL_ENDPOINT", endpoint)
        with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl"):
            hitl.Event.create("ship", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    warnings = _warnings(caplog)
    if identifies:
        assert warnings == []
    else:
        assert len(warnings) == 1 and endpoint in warnings[0] and "FLYTE_HITL_IDENTITY_HEADER" in warnings[0]


def test_respondents_that_are_groups_only_on_an_event_announced_in_slack_only_are_warned_of(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLYTE_HITL_IDENTITY_HEADER", "X-Forwarded-Email")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("FLYTE_HITL_SLACK_API_URL", "http://127.0.0.1:9/api/")
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl"):
        hitl.Event.create("ship", bool, respondents=["group:sre"], notify=hitl.Slack("#deploys"), timeout_seconds=60)
        both = [hitl.Slack("#deploys"), "https://hooks.example.com/x"]
        hitl.Event.create("ship2", bool, respondents=["group:sre"], notify=both, timeout_seconds=60)
        hitl.Event.create("ship3", bool, respondents=["group:sre", ALICE], notify=hitl.Slack("#d"), timeout_seconds=60)
    (warning,) = _warnings(caplog)
    assert "'ship'" in warning and "Slack" in warning and "form" in warning
