"""The answer rule and what builds on it: choices, default on timeout, approve(), comments, audit trail."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from conftest import create, post_json, request, until, wait

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _answers, _policy
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import start_server, stop_server


def later(seconds: float, fn: Any, *args: Any, **kwargs: Any) -> threading.Thread:
    thread = threading.Timer(seconds, fn, args, kwargs)
    thread.start()
    return thread


def first_request_id(root: Path) -> str:
    """The id of the first event stored under `root`, once its question is stored (60 s hang guard)."""
    until(lambda: any(root.glob("*/request.json")), "the event is stored", timeout=60)
    return next(root.glob("*/request.json")).parent.name


def response_file(root: Path, event: hitl.Event[Any]) -> dict[str, Any]:
    return json.loads((root / event.request_id / "response.json").read_text())


def test_choices_refuse_other_values_and_accept_a_listed_one(root: Path, mode: str) -> None:
    event = create(mode, "size", data_type=str, choices=["S", "M", "L"], timeout_seconds=30)
    assert event.choices == ["S", "M", "L"]
    refused = post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": "XL"})
    assert refused.status == 400
    assert refused.json()["detail"] == "'XL' is not an option; choose one of S, M, L"
    assert not (root / event.request_id / "response.json").exists()
    later(0.2, post_json, event.endpoint, {"request_id": event.request_id, "token": event.token, "value": "M"})
    assert wait(mode, event) == "M"


def test_int_choices_accept_integer_strings(root: Path) -> None:
    event = hitl.new_event("replicas", data_type=int, choices=[1, 3, 5], timeout_seconds=30)
    assert post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": "2"}).status == 400
    assert post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": "3"}).status == 200
    assert event.wait() == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_type": bool, "choices": [True]}, "bool event already has two"),
        ({"data_type": int, "choices": ["a"]}, "choices must all be int"),
        ({"data_type": int, "choices": []}, "non-empty list of distinct"),
        ({"data_type": int, "choices": [1, 1]}, "non-empty list of distinct"),
        ({"data_type": str, "choices": "abc"}, "must be a list"),
        ({"data_type": int, "default": "abc"}, "default 'abc' does not fit"),
        ({"data_type": str, "choices": ["a", "b"], "default": "c"}, "default 'c' does not fit"),
        ({"data_type": int, "notify": "ftp://example"}, "notify must be an http"),
    ],
)
def test_bad_choices_default_and_notify_fail_fast_and_write_nothing(
    root: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(hitl.InvalidEventError, match=message) as info:
        hitl.new_event("bad", **kwargs)
    assert isinstance(info.value, ValueError)
    assert not root.exists() or not any(root.iterdir())


def test_default_is_returned_on_timeout_and_recorded_and_late_answers_refused(root: Path, mode: str) -> None:
    event = create(mode, "size", data_type=str, choices=["S", "M"], default="M", timeout_seconds=0.5)
    assert event.default == "M"
    assert wait(mode, event) == "M"
    stored = response_file(root, event)
    assert stored["status"] == "expired" and stored["default_applied"] is True and stored["value"] == "M"
    assert event.response == stored
    late = post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": "S"})
    assert late.status == 410
    assert response_file(root, event) == stored
    status = request(event.endpoint, "GET", f"/status/{event.request_id}?token={event.token}").json()
    assert status["status"] == "expired" and status["response"]["default_applied"] is True


def test_without_default_timeout_still_raises(root: Path) -> None:
    event = hitl.new_event("plain", data_type=int, timeout_seconds=0.3)
    with pytest.raises(TimeoutError):
        event.wait()
    assert response_file(root, event)["status"] == "expired"
    assert "default_applied" not in response_file(root, event)


def test_server_applies_the_default_when_the_first_writer_after_the_deadline_is_a_late_answer(
    root: Path, store: Store
) -> None:
    event = hitl.new_event("late", data_type=bool, default=False, timeout_seconds=0.2)
    time.sleep(0.4)  # nobody waits: the late answer itself finds the deadline passed
    late = post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": True})
    assert late.status == 410
    assert response_file(root, event)["value"] is False
    assert event.wait() is False


def test_approve_returns_the_answer_and_keeps_the_comment(root: Path, mode: str) -> None:
    def answer() -> None:
        rid = first_request_id(root)
        hitl.submit(rid, "yes", comment="looks good")

    later(0, answer)
    if mode == "sync":
        approved = hitl.approve("deploy", prompt="Deploy?", timeout_seconds=30)
    else:
        approved = asyncio.run(hitl.approve.aio("deploy", prompt="Deploy?", timeout_seconds=30))
    assert approved is True
    stored = json.loads(next(root.glob("*/response.json")).read_text())
    assert stored["comment"] == "looks good" and stored["via"] == "python"


def test_approve_can_require_a_comment_to_reject(root: Path) -> None:
    outcome: dict[str, Any] = {}

    def answer() -> None:
        rid = first_request_id(root)
        with pytest.raises(hitl.InvalidValueError, match="comment is required to reject"):
            hitl.submit(rid, False)
        outcome["bare"] = (root / rid / "response.json").exists()
        hitl.submit(rid, False, comment="tests are red")

    later(0, answer)
    assert hitl.approve("deploy", require_reject_comment=True, timeout_seconds=30) is False
    assert outcome == {"bare": False}
    assert json.loads(next(root.glob("*/response.json")).read_text())["comment"] == "tests are red"


def test_approve_with_default_on_timeout(root: Path) -> None:
    assert hitl.approve("nobody", timeout_seconds=0.3, default=True) is True


def test_form_post_records_comment_and_the_audit_trail(root: Path) -> None:
    event = hitl.new_event("n", data_type=int, timeout_seconds=30)
    body = f"request_id={event.request_id}&token={event.token}&value=5&comment=from+the+form".encode()
    reply = request(event.endpoint, "POST", "/submit", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200
    assert event.wait() == 5
    stored = event.response
    assert stored is not None
    assert stored["via"] == "form" and stored["client"] == "127.0.0.1" and stored["comment"] == "from the form"
    assert stored["answered_at"].endswith("Z")
    assert "identity" not in stored


def test_identity_header_is_recorded_only_when_configured(root: Path, store: Store) -> None:
    event = hitl.new_event("who", data_type=int, timeout_seconds=30)
    other = hitl.new_event("who2", data_type=int, timeout_seconds=30)
    trusted, thread = start_server(store, identity_header="X-Forwarded-Email")
    try:
        base = f"http://127.0.0.1:{trusted.server_address[1]}"
        body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 1}).encode()
        assert (
            request(
                base,
                "POST",
                "/submit/json",
                body,
                {"X-Forwarded-Email": "ana@example.com", "Content-Type": "application/json"},
            ).status
            == 200
        )
    finally:
        stop_server(trusted, thread)
    # The embedded server was started without the setting: the same header is ignored there.
    body = json.dumps({"request_id": other.request_id, "token": other.token, "value": 2}).encode()
    assert (
        request(
            other.endpoint,
            "POST",
            "/submit/json",
            body,
            {"X-Forwarded-Email": "eve@example.com", "Content-Type": "application/json"},
        ).status
        == 200
    )
    assert response_file(root, event)["identity"] == "ana@example.com"
    assert "identity" not in response_file(root, other)


def test_comment_must_be_a_short_string(root: Path, store: Store) -> None:
    event = hitl.new_event("c", data_type=int, timeout_seconds=30)
    base = {"request_id": event.request_id, "token": event.token, "value": 1}
    assert post_json(event.endpoint, {**base, "comment": 5}).status == 400
    assert post_json(event.endpoint, {**base, "comment": "x" * 5000}).status == 400
    assert not (root / event.request_id / "response.json").exists()


def test_via_claims_other_than_cli_and_python_are_recorded_as_json(root: Path) -> None:
    event = hitl.new_event("v", data_type=int, timeout_seconds=30)
    assert post_json(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": 1, "via": "form"})
    assert response_file(root, event)["via"] == "json"


def test_status_record_never_contains_the_token(root: Path, store: Store) -> None:
    event = hitl.new_event("s", data_type=str, timeout_seconds=30)
    request_record = store.read_request(event.request_id)
    assert request_record is not None
    record = _answers.status_record(request_record, None)
    assert record["status"] == "pending" and record["state"] == "waiting"
    assert event.token not in json.dumps(record)


def test_a_huge_float_answer_is_refused_at_once_and_the_server_keeps_serving(root: Path, server: Any) -> None:
    # A backtracking float pattern held the GIL about 10 s on this value: /health waited as long.
    event = hitl.new_event("rate", data_type=float, timeout_seconds=60, poll_interval_seconds=60)
    hostile = {"request_id": event.request_id, "token": event.token, "value": "1" * 20_000 + "x"}
    replies: list[Any] = []
    poster = threading.Thread(target=lambda: replies.append(post_json(server.url, hostile)))
    poster.start()
    slowest = 0.0
    while poster.is_alive() or slowest == 0.0:  # /health on other connections while the value is checked
        started = time.monotonic()
        assert request(server.url, "GET", "/health").status == 200
        slowest = max(slowest, time.monotonic() - started)
    poster.join()
    assert replies[0].status == 400 and "expected float" in replies[0].json()["detail"]
    assert slowest < 5.0, f"/health took {slowest:.1f} s while a float answer was checked"  # a hang guard
    assert not (root / event.request_id / "response.json").exists()


def test_an_answered_event_refuses_before_looking_at_the_value(root: Path, server: Any) -> None:
    event = hitl.new_event("rate", data_type=float, timeout_seconds=60, poll_interval_seconds=60)
    ids = {"request_id": event.request_id, "token": event.token}
    assert post_json(server.url, {**ids, "value": 0.5}).status == 200
    # Not 400 for the bad value: the event is settled, and its old token buys no value check.
    late = post_json(server.url, {**ids, "value": "1" * 20_000 + "x"})
    assert late.status == 409
    assert response_file(root, event)["value"] == 0.5


# -- structured answers over HTTP -----------------------------------------------------------------


class Size(enum.Enum):
    S = "small"
    M = "medium"
    L = "large"


@dataclasses.dataclass
class Review:
    score: Annotated[int, annotated_types.Ge(1), annotated_types.Le(5), "How good, 1 to 5"]
    size: Size
    tags: list[Literal["bug", "docs", "perf"]] = dataclasses.field(default_factory=list)
    due: datetime.date | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.score == 1 and not self.note:
            raise ValueError("a score of 1 needs a note")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def review_event(**kwargs: Any) -> hitl.Event[Review]:
    return hitl.new_event(
        "review",
        data_type=Review,
        prompt="**Label** this item.\n\n| metric | value |\n|---|---|\n| f1 | 0.91 |",
        prompt_type="markdown",
        timeout_seconds=60,
        poll_interval_seconds=0.1,
        details={"item": "img-0042.png", "model_scores": {"cat": 0.7, "dog": 0.3}},
        **kwargs,
    )


def test_json_api_names_every_bad_field_stores_nothing_then_the_task_gets_the_instance(root: Path, remote: str) -> None:
    event = review_event()
    ids = {"request_id": event.request_id, "token": event.token}
    bad = post_json(remote, {**ids, "value": {"score": 7, "size": "huge", "due": "someday", "extra": 1}})
    assert bad.status == 400
    detail = bad.json()["detail"]
    for name in ("score:", "size:", "due:", "extra:"):
        assert name in detail
    assert not (root / event.request_id / "response.json").exists()
    good = {"score": 4, "size": "medium", "tags": ["bug", "perf"], "due": "2026-12-24"}
    ok = post_json(remote, {**ids, "value": good})
    assert ok.status == 200, ok.text
    assert ok.json()["value"] == {**good, "note": ""}
    assert event.wait() == Review(score=4, size=Size.M, tags=["bug", "perf"], due=datetime.date(2026, 12, 24))


def test_form_of_a_dataclass_over_http_keeps_values_and_shows_field_errors(root: Path, remote: str) -> None:
    event = review_event()
    page = request(remote, "GET", f"/form/{event.request_id}?token={event.token}").text
    assert '<label for="f-score">Score <span class="req">required</span>' in page
    assert "How good, 1 to 5" in page and "<h1><strong>Label</strong> this item.</h1>" in page and "<table>" in page
    assert "img-0042.png" in page and "cat: 0.7" in page, "details are shown as a table"
    assert 'type="checkbox" name="f.tags" value="docs"' in page and 'type="date"' in page
    ids = f"request_id={event.request_id}&token={event.token}"
    fields = "&f.score=9&f.size=large&f.tags=bug&f.tags=docs&f.due=2026-12-24&f.note=looks+fine"
    refused = request(remote, "POST", "/submit", (ids + fields).encode(), FORM)
    assert refused.status == 400
    html = refused.text
    assert '<p class="field-error" id="e-f-score">Must be at most 5.</p>' in html
    assert 'name="f.score" type="text" value="9"' in html
    assert 'value="large" checked' in html and 'value="bug" checked' in html and 'value="docs" checked' in html
    assert 'value="perf" checked' not in html and 'value="2026-12-24"' in html and 'value="looks fine"' in html
    assert not (root / event.request_id / "response.json").exists()
    accepted = request(remote, "POST", "/submit", (ids + fields.replace("score=9", "score=5")).encode(), FORM)
    assert accepted.status == 200, accepted.text
    assert event.wait() == Review(
        score=5, size=Size.L, tags=["bug", "docs"], due=datetime.date(2026, 12, 24), note="looks fine"
    )
    assert event.response is not None and event.response["via"] == "form"


def test_status_shows_the_readable_type_schema_and_details(root: Path, remote: str) -> None:
    event = review_event()
    status = request(remote, "GET", f"/status/{event.request_id}?token={event.token}").json()
    assert status["type"] == (
        'Review {score: int (≥ 1, ≤ 5), size: Size, tags?: list["bug" | "docs" | "perf"], due?: date | None, '
        "note?: str}"
    )
    assert status["request"]["data_type"] == "Review"
    assert [f["name"] for f in status["request"]["schema"]["fields"]] == ["score", "size", "tags", "due", "note"]
    assert status["request"]["details"]["item"] == "img-0042.png"


def test_an_answer_the_tasks_own_rule_refuses_reopens_the_event_for_a_new_one(
    root: Path, remote: str, mode: str
) -> None:
    """A separate server sees only the schema, not __post_init__'s rule: it stores the answer; the
    waiting task's type refuses it, records why, and waits for the next answer, which it returns."""
    event = review_event()
    ids = {"request_id": event.request_id, "token": event.token}
    reply = post_json(remote, {**ids, "value": {"score": 1, "size": "XL"}})
    assert reply.status == 400 and "'XL' is not an option" in reply.json()["detail"]
    assert post_json(remote, {**ids, "value": {"score": 1, "size": "small"}}).status == 200, "schema alone: stored"
    result: list[Any] = []
    waiting = threading.Thread(target=lambda: result.append(wait(mode, event)))
    waiting.start()
    until(lambda: (root / event.request_id / "refused.json").exists(), "the task records its refusal", timeout=60)
    refusal = json.loads((root / event.request_id / "refused.json").read_text())
    assert "a score of 1 needs a note" in refusal["error"] and refusal["answer"]["value"]["score"] == 1

    status = request(remote, "GET", f"/status/{event.request_id}?token={event.token}").json()
    assert status["state"] == "waiting" and "a score of 1 needs a note" in status["refused"]["error"]
    form = request(remote, "GET", f"/form/{event.request_id}?token={event.token}")
    assert (
        form.status == 200
        and "The task refused the last answer" in form.text
        and "a score of 1 needs a note" in form.text
    )
    again = post_json(remote, {**ids, "value": {"score": 1, "size": "small", "note": "blurry"}})
    assert again.status == 200 and "a score of 1 needs a note" in again.json()["refused_before"]["error"]
    waiting.join(60)
    assert result == [Review(score=1, size=Size.S, note="blurry")]
    assert event.response is not None and "refused_before" in event.response
    assert post_json(remote, {**ids, "value": {"score": 2, "size": "small"}}).status == 409, "first valid one won"


def test_a_wait_never_raises_on_an_answer_its_type_refuses(root: Path, remote: str, mode: str) -> None:
    """Like a re-run that finds a refused answer stored: the wait reopens the event and keeps waiting;
    without a new answer it ends as any unanswered event does, at its deadline."""
    event = hitl.new_event("strict", data_type=Review, timeout_seconds=3, poll_interval_seconds=0.1)
    ids = {"request_id": event.request_id, "token": event.token}
    assert post_json(remote, {**ids, "value": {"score": 1, "size": "small"}}).status == 200
    with pytest.raises(hitl.EventTimeoutError):
        wait(mode, event)
    assert (root / event.request_id / "refused.json").exists()
    assert json.loads((root / event.request_id / "response.1.json").read_text())["status"] == "expired"


def test_the_embedded_server_runs_post_init_before_storing(root: Path) -> None:
    event = review_event()
    ids = {"request_id": event.request_id, "token": event.token}
    refused = post_json(event.endpoint, {**ids, "value": {"score": 1, "size": "small"}})
    assert refused.status == 400 and "a score of 1 needs a note" in refused.json()["detail"]
    assert not (root / event.request_id / "response.json").exists()
    assert post_json(event.endpoint, {**ids, "value": {"score": 1, "size": "small", "note": "why"}}).status == 200
    assert event.wait() == Review(score=1, size=Size.S, note="why")


def test_submit_takes_an_instance_and_the_default_is_an_instance_too(root: Path) -> None:
    event = review_event()
    hitl.submit(event.request_id, Review(score=3, size=Size.L, tags=["docs"]), root=str(root))
    assert response_file(root, event)["value"] == {
        "score": 3,
        "size": "large",
        "tags": ["docs"],
        "due": None,
        "note": "",
    }
    assert event.wait() == Review(score=3, size=Size.L, tags=["docs"])
    late = hitl.new_event("late", data_type=Size, timeout_seconds=0.3, poll_interval_seconds=0.1, default=Size.M)
    assert late.wait() is Size.M
    assert response_file(root, late)["value"] == "medium"


def test_unsupported_types_and_bad_details_write_nothing(root: Path) -> None:
    @dataclasses.dataclass
    class Bad:
        blob: dict[str, Any]

    with pytest.raises(hitl.UnsupportedTypeError, match="field 'blob'"):
        hitl.new_event("bad", data_type=Bad)
    with pytest.raises(hitl.InvalidEventError, match="details must be a mapping"):
        hitl.new_event("bad", data_type=int, details=["a"])  # type: ignore[arg-type]
    with pytest.raises(hitl.InvalidEventError, match=r"details\['when'\] is not JSON data"):
        hitl.new_event("bad", data_type=int, details={"when": object()})
    assert not root.exists()


def test_the_command_line_answers_a_dataclass_event_with_json_text(root: Path, remote: str) -> None:
    event = review_event()
    answer = '{"score": 2, "size": "small", "tags": ["docs"]}'
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", "submit", event.form_url, answer],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["value"] == {"score": 2, "size": "small", "tags": ["docs"], "due": None, "note": ""}
    assert event.wait() == Review(score=2, size=Size.S, tags=["docs"])


def test_approve_stores_and_shows_the_details_of_an_agents_tool_call(root: Path, store: Store) -> None:
    details = {"tool": "delete_rows", "arguments": {"table": "events"}, "estimated rows": 120_431}
    result: list[bool] = []
    asker = threading.Thread(
        target=lambda: result.append(
            hitl.approve(
                "run_tool",
                prompt="Run **`delete_rows`**?",
                prompt_type="markdown",
                details=details,
                timeout_seconds=60,
            )
        )
    )
    asker.start()
    deadline = time.monotonic() + 60  # a hang guard while the event is created
    while not [e.request_id for e in store.list_events()] and time.monotonic() < deadline:
        time.sleep(0.02)
    (request_id,) = [e.request_id for e in store.list_events()]
    stored = store.read_request(request_id)
    assert stored is not None and stored["details"] == details
    page = request(stored["endpoint"], "GET", f"/form/{request_id}?token={stored['token']}").text
    assert "<h1>Run <strong><code>delete_rows</code></strong>?</h1>" in page and "<td>120,431</td>" in page
    reply = post_json(stored["endpoint"], {"request_id": request_id, "token": stored["token"], "value": True})
    assert reply.status == 200
    asker.join(60)
    assert result == [True]


def test_an_events_choices_and_default_are_instances_of_its_type(root: Path) -> None:
    event = hitl.new_event("size", data_type=Size, choices=[Size.S, Size.M], default=Size.M, timeout_seconds=60)
    assert event.choices == [Size.S, Size.M] and event.default is Size.M
    review = review_event(default=Review(score=3, size=Size.L))
    assert review.default == Review(score=3, size=Size.L) and review.choices is None


# -- /status in 2.12.1's words and today's ---------------------------------------------------------


def test_status_keeps_2_12_1_words_beside_the_state(root: Path, store: Store, server: Any) -> None:
    """A script written for 2.12.1 loops on `status` until "completed"; new clients read `state`."""

    def status(event: hitl.Event[Any]) -> dict[str, Any]:
        reply = request(server.url, "GET", f"/status/{event.request_id}?token={event.token}")
        assert reply.status == 200
        return reply.json()

    event = hitl.new_event("count", data_type=int, timeout_seconds=60)
    seen = [(record := status(event))["status"], record["state"]]
    assert seen == ["pending", "waiting"]
    later(0.3, post_json, server.url, {"request_id": event.request_id, "token": event.token, "value": 5})
    deadline = time.monotonic() + 60  # a hang guard
    while record["status"] == "pending" and time.monotonic() < deadline:  # 2.12.1's loop
        time.sleep(0.1)
        record = status(event)
    assert (record["status"], record["state"], record["response"]["value"]) == ("completed", "answered", 5)

    gone = hitl.new_event("gone", data_type=int, timeout_seconds=0.2)
    until(lambda: status(gone)["status"] == "expired", "the deadline passes")
    assert status(gone)["state"] == "expired"

    withdrawn = hitl.new_event("stopped", data_type=int, timeout_seconds=60)
    now = _answers.utc_now()
    mark = {"request_id": withdrawn.request_id, "status": "expired", "expired_at": now, "withdrawn_at": now}
    assert store.create_response(withdrawn.request_id, mark)
    assert (status(withdrawn)["status"], status(withdrawn)["state"]) == ("expired", "withdrawn")


# -- a decision is never stranded --------------------------------------------------------------------

ALICE = "alice@example.com"
BOB = "bob@example.com"


class CutOnDecision:
    """WSGI middleware in front of the S3 server: once armed, the first write of a response (the
    decision) closes `door`, the storage's only way in, and is never stored: an outage that begins
    between the vote and the decision."""

    def __init__(self, app: Any, door: Any) -> None:
        self.app, self.door, self.armed, self.cut = app, door, False, threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.armed and environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"].endswith("/response.json"):
            self.armed = False
            self.door.stop()
            self.cut.set()
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)


def vote(base: str, request_id: str, who: str) -> Any:
    body = json.dumps({"request_id": request_id, "value": True}).encode()
    return request(base, "POST", "/submit/json", body, {"Content-Type": "application/json", "X-Forwarded-Email": who})


@pytest.mark.parametrize("first", ["reader", "retry"])
def test_a_decision_lost_in_a_storage_outage_is_settled_once_storage_is_back(
    bucket: Any, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    from s3_helpers import Door

    door = Door(bucket.door.port).start()
    wsgi = bucket.door._server._server  # werkzeug's server, as s3_helpers.MotoS3 reaches it
    cutter = wsgi.app = CutOnDecision(wsgi.app, door)
    root = bucket.new_root()
    for key, value in {**bucket.env(door), "FLYTE_HITL_ROOT": root}.items():
        monkeypatch.setenv(key, value)  # this process reaches storage through the door only
    monkeypatch.delenv("FLYTE_HITL_ENDPOINT", raising=False)
    replica = Store(root)
    replica.attempts, replica.backoff_seconds = 2, 0.05  # its decision write gives up at once
    httpd, thread = start_server(replica, identity_header="X-Forwarded-Email")
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        event = hitl.Event.create(
            "ship", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=120, poll_interval_seconds=0.2
        )
        rid = event.request_id
        assert vote(base, rid, ALICE).json()["status"] == "voted"
        cutter.armed = True
        cut = vote(base, rid, BOB)
        assert cutter.cut.is_set() and cut.status == 503, cut.text  # Bob's vote is stored, the decision is not
        assert bucket.keys(root) == sorted(
            [f"{rid}/request.json", *(f"{rid}/votes/{_policy.vote_key(p)}.json" for p in (ALICE, BOB))]
        )
        door.start()  # storage is back, on the same port

        def reader() -> dict[str, Any] | None:
            return _answers.outcome(Store(root), event._request).response

        def retry() -> dict[str, Any]:
            reply = vote(base, rid, BOB)
            assert reply.status == 200, reply.text
            return reply.json()

        if first == "reader":
            decision, told = reader(), retry()
        else:
            told, decision = retry(), reader()
        assert decision is not None and decision["value"] is True
        assert told["status"] == "submitted" and told["value"] is True
        assert [v["identity"] for v in decision["votes"]] == [ALICE, BOB]  # each vote counted once
        assert bucket.get_json(root, rid, "response.json") == decision
        assert [k for k in bucket.keys(root) if "response" in k] == [f"{rid}/response.json"]
        assert event.wait() is True
        late = vote(base, rid, ALICE)
        assert late.status == 200 and late.json()["value"] is True, "Alice's vote counted: her retry is told so"
    finally:
        wsgi.app = cutter.app
        stop_server(httpd, thread)
        door.stop()


def race_to_settle(root: Path, request: dict[str, Any]) -> dict[int, Any]:
    """Two replicas (two stores on one root) each read the event and take Bob's retry, all at once:
    what each was given."""
    replicas = [Store(str(root)), Store(str(root))]
    go = threading.Barrier(4, timeout=60)
    seen: dict[int, Any] = {}

    def settle(i: int) -> None:
        go.wait()
        if i < 2:
            seen[i] = _answers.outcome(replicas[i], request).response
        else:
            seen[i] = _answers.submit(replicas[i % 2], request, True, via="json", client="b", identity=BOB)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return seen


def test_replicas_racing_to_settle_a_stranded_decision_store_exactly_one(root: Path, store: Store) -> None:
    """Bob's vote is stored and his replica stops before the decision, as a crash leaves it; then two
    replicas (two stores on one root) read the event and Bob retries on each, all at once."""
    for _ in range(8):
        event = hitl.Event.create("ship", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=60)
        request, rid = event._request, event.request_id
        assert _answers.submit(store, request, True, via="python", client="a", identity=ALICE)["status"] == "voted"
        stranded = {"identity": BOB, "value": True, "via": "json", "transport": "json", "client": "b"}
        assert store.create_vote(rid, _policy.vote_key(BOB), {**stranded, "voted_at": _answers.utc_now()})
        assert not (root / rid / "response.json").exists()
        seen = race_to_settle(root, request)
        assert len(seen) == 4
        assert [p.name for p in (root / rid).glob("response*.json")] == ["response.json"]
        decision = json.loads((root / rid / "response.json").read_text())
        assert all(record == decision for record in seen.values()), "every reader and retry got the one decision"
        assert [v["identity"] for v in decision["votes"]] == [ALICE, BOB]


def test_votes_decide_only_if_cast_before_the_deadline(root: Path, store: Store) -> None:
    event = hitl.Event.create("ship", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=1)
    request, rid = event._request, event.request_id
    _answers.submit(store, request, True, via="python", client="a", identity=ALICE)
    until(lambda: _answers.seconds_left(request) < 0, "the deadline passes")
    with pytest.raises(hitl.EventExpiredError):
        _answers.submit(store, request, True, via="python", client="b", identity=BOB)
    # A vote stored with a time after the deadline (a replica whose clock runs late) decides nothing.
    late = {"identity": BOB, "value": True, "via": "json", "transport": "json", "client": "b"}
    store.create_vote(rid, _policy.vote_key(BOB), {**late, "voted_at": _answers.utc_now()})
    found = _answers.outcome(store, request).response
    assert found is not None and found["status"] == "expired"
