"""Answering in Slack, against a fake Slack Web API on loopback (`slack_fake`): the message posted when a
wait starts, signed clicks and modals answering through the real server, the message rewritten with
the outcome however it came, and a Slack that is down or slow holding up nothing."""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import annotated_types
import pytest
import slack_fake
from conftest import Reply, question, request, run_python, until
from slack_fake import SECRET, TOKEN, FakeSlack, click, signed, submission

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _slack
from flyteplugins.hitl._store import Store, put_slack, read_slack
from flyteplugins.hitl.server import HitlServer, make_server, stop_server


@pytest.fixture
def fake(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """A fake Slack, with the settings that point the package at it; the caches start empty."""
    for server in slack_fake.serve():
        monkeypatch.setenv(_slack.TOKEN_ENV, TOKEN)
        monkeypatch.setenv(_slack.SECRET_ENV, SECRET)
        monkeypatch.setenv(_slack.API_ENV, server.api_url)
        monkeypatch.delenv(_slack.CHANNEL_ENV, raising=False)
        monkeypatch.delenv("FLYTE_HITL_NOTIFY_URL", raising=False)
        monkeypatch.setattr(_slack, "_health", _slack._Health())
        monkeypatch.setattr(_slack, "_warned", set())
        _slack._users.clear()
        yield server


def interact(endpoint: str, payload: dict[str, Any], **kw: Any) -> Reply:
    body, headers = signed(payload, **kw)
    return request(endpoint, "POST", "/slack/interactions", body, headers)


def waiting(event: hitl.Event[Any]) -> tuple[threading.Thread, list[Any]]:
    """`event.wait()` in a thread; its result (or error) lands in the list."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(event.wait())
        except Exception as e:
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def finished(thread: threading.Thread, result: list[Any]) -> Any:
    thread.join(60)
    assert not thread.is_alive(), "the wait never returned"
    return result[0]


def posted(fake: FakeSlack, event: hitl.Event[Any]) -> dict[str, Any]:
    """The message posted for `event`, once the server can find it to update it."""
    [message] = fake.wait_for("chat.postMessage")
    store = Store(str(event._store.root))
    until(lambda: read_slack(store, event.request_id) is not None, "slack.json")
    return message


def update_of(fake: FakeSlack, count: int = 1) -> dict[str, Any]:
    return fake.wait_for("chat.update", count)[-1]


def has_controls(message: dict[str, Any]) -> bool:
    return any(b["type"] == "actions" for b in message["blocks"])


def last_text(message: dict[str, Any]) -> str:
    return str(message["blocks"][-1]["text"]["text"])


def settled(fake: FakeSlack) -> None:
    """Wait until no message rewrite runs in this process and Slack has replied to every update."""
    until(lambda: not _slack._running, "the rewrites to end")
    until(lambda: fake.answered.get("chat.update", 0) == len(fake.of("chat.update")), "Slack's replies")


def posted_at(store: Store, request_id: str, **extra: object) -> str:
    """Store a question of `request_id` as posted to Slack (its message's ts), as the waiting task does."""
    store.create_request(question(request_id, slack=True, **extra))
    put_slack(store, request_id, {"messages": [{"channel": slack_fake.CHANNEL_ID, "ts": "1.1"}]})
    return "1.1"


# -- importing ---------------------------------------------------------------------------------------------


def test_the_package_imports_slack_only_when_it_is_used() -> None:
    code = (
        "import sys\n"
        "import flyteplugins.hitl as hitl, flyteplugins.hitl.server, flyteplugins.hitl._endpoints\n"
        "assert 'flyteplugins.hitl._slack' not in sys.modules, 'imported at once'\n"
        "hitl.Slack('#deploys')\n"
        "assert 'flyteplugins.hitl._slack' in sys.modules\n"
        "print('ok')\n"
    )
    proc = run_python(code)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip().endswith("ok"), out


# -- approve, reject, choices ----------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "approved", "said"), [("approve", True, "Approved"), ("reject", False, "Rejected")])
def test_approve_and_reject_in_slack(fake: FakeSlack, action: str, approved: bool, said: str) -> None:
    event = hitl.new_event(
        "deploy",
        data_type=bool,
        prompt="Ship <v3> & *all*?",
        timeout_seconds=60,
        details={"model": "v3", "rows": 1200},
        notify=hitl.Slack("#deploys", mention="U0BOSS"),
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    assert message["channel"] == "#deploys" and fake.authorizations[0] == f"Bearer {TOKEN}"
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e.get("style")) for e in actions["elements"]] == [
        ("approve", "primary"),
        ("reject", "danger"),
    ]
    prompt = message["blocks"][1]["text"]
    assert prompt == {"type": "plain_text", "text": "Ship <v3> & *all*?", "emoji": False}  # verbatim
    fields = [f["text"] for b in message["blocks"] for f in b.get("fields", [])]
    assert fields == ["*model*\nv3", "*rows*\n1,200"]
    context = json.dumps([b for b in message["blocks"] if b["type"] == "context"])
    assert "<@U0BOSS>" in context and "<!date^" in context

    reply = interact(event.endpoint, click(message, action, user="U1", response_url=fake.response_url()))
    assert reply.status == 200 and reply.body == b""
    assert finished(thread, result) is approved
    assert event.response is not None
    assert event.response["identity"] == "slack:U1" and event.response["via"] == "slack"
    update = update_of(fake)
    assert update["channel"] == slack_fake.CHANNEL_ID and update["ts"] == "1712345678.000001"
    assert not has_controls(update) and f"{said} by <@U1>" in last_text(update)
    assert fake.of("users.info") == [], "anyone in the channel answers an event that names no one"
    # No capability token in anything sent to Slack.
    assert event.token not in json.dumps(fake.calls)


def test_a_quorum_in_slack_keeps_its_buttons_and_shows_the_tally_until_it_decides(fake: FakeSlack) -> None:
    # U1 is alice@example.com and U2 bob@example.com in the fake's users.info.
    event = hitl.Event.create(
        "release", bool, quorum=2, respondents=["alice@example.com", "bob@example.com"], notify=hitl.Slack("#rel")
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    assert "2 approvals needed; one rejection decides" in json.dumps(message["blocks"]), "the rule before any vote"
    assert interact(event.endpoint, click(message, "approve", user="U1")).status == 200
    tally = update_of(fake)
    assert has_controls(tally), "still waiting for the second approval"
    assert "1 of 2 approvals" in json.dumps(tally["blocks"]) and "alice" not in json.dumps(tally["blocks"])
    assert thread.is_alive() and result == []
    again = interact(event.endpoint, click(message, "approve", user="U1", response_url=fake.response_url("u1")))
    assert again.status == 200
    [told] = fake.wait_for("response_url")
    assert told["text"] == "You have voted on this question already: each person votes once."
    assert interact(event.endpoint, click(message, "approve", user="U2")).status == 200
    assert finished(thread, result) is True
    decided = fake.showing("1712345678.000001", lambda m: not has_controls(m))
    assert [v["identity"] for v in event.response["votes"]] == ["alice@example.com", "bob@example.com"]
    # Every vote: who, what, when.
    lines = last_text(decided).splitlines()
    assert lines[0] == ":white_check_mark: Approved: 2 of 2 approvals"
    assert lines[1].startswith("• alice@example.com approved <!date^") and lines[2].startswith("• bob@example.com")


@dataclasses.dataclass
class Rated:
    score: int
    note: str = ""

    def __post_init__(self) -> None:
        if self.score < 2 and not self.note:
            raise ValueError("a low score needs a note")


def test_an_answer_the_task_refuses_gives_the_message_its_controls_back(fake: FakeSlack) -> None:
    event = hitl.new_event(
        "rate", data_type=Rated, timeout_seconds=60, poll_interval_seconds=0.1, notify=hitl.Slack("C1")
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    # Stored by a server that has only the schema (another replica): __post_init__ runs in the task.
    answer = {"status": "completed", "value": {"score": 1}, "answered_at": "2026-12-05T10:00:00.000Z", "via": "json"}
    assert Store(str(event._store.root)).create_response(event.request_id, answer, slot=0)
    reopened = update_of(fake)
    assert has_controls(reopened), "the event takes answers again"
    shown = json.dumps(reopened["blocks"])
    assert "The task refused the last answer (" in shown and "a low score needs a note" in shown
    ids = {"request_id": event.request_id, "token": event.token}
    reply = request(
        event.endpoint,
        "POST",
        "/submit/json",
        json.dumps({**ids, "value": {"score": 1, "note": "ok"}}).encode(),
        {"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.text
    assert finished(thread, result) == Rated(1, "ok")
    assert not has_controls(update_of(fake, 2))
    assert message["channel"] == "C1"


def test_a_choice_is_a_button_per_option_or_a_select(fake: FakeSlack, server: HitlServer, store: Store) -> None:
    few = hitl.new_event("size", data_type=str, choices=["S", "M", "L"], timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(few)
    message = posted(fake, few)
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["text"]["text"] for e in actions["elements"]] == ["S", "M", "L"]
    assert interact(few.endpoint, click(message, "choice:1")).status == 200
    assert finished(thread, result) == "M"
    assert "Answered M by <@U1>" in last_text(update_of(fake))

    class Color(enum.Enum):
        RED = "red"
        GREEN = "green"
        BLUE = "blue"
        CYAN = "cyan"
        MAGENTA = "magenta"
        YELLOW = "yellow"

    many = hitl.new_event("color", data_type=Color, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(many)
    [_, message] = fake.wait_for("chat.postMessage", 2)
    until(lambda: read_slack(many._store, many.request_id) is not None, "slack.json")
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    [select] = actions["elements"]
    assert select["type"] == "static_select" and len(select["options"]) == 6
    assert interact(many.endpoint, click(message, "select", selected="4")).status == 200
    assert finished(thread, result) is Color.MAGENTA


# -- typed answers in a modal --------------------------------------------------------------------------


class Label(enum.Enum):
    CAT = "cat"
    DOG = "dog"


@dataclasses.dataclass
class Review:
    score: Annotated[int, annotated_types.Interval(ge=1, le=5)]
    label: Label
    tags: list[str] = dataclasses.field(default_factory=list)
    due: date | None = None


def test_a_typed_answer_in_a_modal_refused_then_valid(fake: FakeSlack) -> None:
    event = hitl.new_event(
        "review", data_type=Review, prompt="Label img-42", timeout_seconds=60, notify=hitl.Slack("C1")
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    reply = interact(event.endpoint, click(message, "answer", response_url=fake.response_url()))
    assert reply.status == 200
    [opened] = fake.wait_for("views.open")
    assert opened["trigger_id"] == "13345224609.738474920.8088930838d88f008e0"
    view = opened["view"]
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert list(inputs) == ["score", "label", "tags", "due"]
    score = inputs["score"]["element"]
    assert score["type"] == "number_input" and not score["is_decimal_allowed"]
    assert (score["min_value"], score["max_value"]) == ("1", "5")
    assert inputs["label"]["element"]["type"] == "static_select"
    assert inputs["tags"]["element"]["multiline"] is True
    assert inputs["due"]["element"]["type"] == "datepicker"
    assert [b["optional"] for b in inputs.values()] == [False, False, True, True]
    assert event.token not in json.dumps(view)

    values = {
        "score": {"value": "9"},
        "label": {"selected_option": {"text": {"type": "plain_text", "text": "dog"}, "value": "1"}},
        "tags": {"value": "fluffy\n\nsmall"},
        "due": {"selected_date": None},
    }
    refused = interact(event.endpoint, submission(view, values))
    assert refused.status == 200
    assert refused.json() == {
        "response_action": "errors",
        "errors": {"score": "'9' is more than the maximum 5"},
    }
    assert event._store.read_response(event.request_id) is None

    values["score"] = {"value": "4"}
    values["due"] = {"selected_date": "2026-12-24"}
    accepted = interact(event.endpoint, submission(view, values))
    assert accepted.status == 200 and accepted.body == b""  # the modal closes
    assert finished(thread, result) == Review(4, Label.DOG, ["fluffy", "small"], date(2026, 12, 24))
    assert "Answered" in last_text(update_of(fake))


def test_a_rejection_that_needs_a_comment_opens_a_modal_for_it(fake: FakeSlack) -> None:
    event = hitl.Event.create(
        "deploy", bool, timeout_seconds=60, notify=hitl.Slack("C1"), comment_required_on_reject=True
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    assert interact(event.endpoint, click(message, "reject")).status == 200
    [opened] = fake.wait_for("views.open")
    view = opened["view"]
    refused = interact(event.endpoint, submission(view, {"comment": {"value": None}}))
    assert refused.json()["errors"] == {"comment": "a comment is required to reject 'deploy'"}
    assert interact(event.endpoint, submission(view, {"comment": {"value": "not on a Friday"}})).body == b""
    assert finished(thread, result) is False
    assert event.response is not None and event.response["comment"] == "not on a Friday"
    assert "not on a Friday" in last_text(update_of(fake))


# -- signatures ------------------------------------------------------------------------------------------


def a_click(request_id: str, user: str = "U1", response_url: str = "") -> dict[str, Any]:
    message = {"blocks": [_slack._controls({"request_id": request_id, "data_type": "bool"})]}
    return click(message, "approve", user=user, response_url=response_url)


@pytest.mark.parametrize(
    ("how", "kw"),
    [
        ("another secret", {"secret": "not-the-secret"}),
        ("stale", {"at": -301}),
        ("future", {"at": 330}),
    ],
)
def test_a_bad_or_stale_signature_is_401_and_stores_nothing(
    fake: FakeSlack, server: HitlServer, store: Store, how: str, kw: dict[str, Any]
) -> None:
    store.create_request(question("sig-1", data_type="bool"))
    if "at" in kw:  # seconds from now
        kw = {"at": time.time() + kw["at"]}
    reply = interact(server.url, a_click("sig-1"), **kw)
    assert reply.status == 401 and "signed by Slack" in reply.json()["detail"]
    assert store.read_response("sig-1") is None and fake.calls == []


def test_unsigned_requests_are_401_before_their_body_is_read(fake: FakeSlack, server: HitlServer, store: Store) -> None:
    for headers in (
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    ):
        reply = request(server.url, "POST", "/slack/interactions", b"\xff not a form", headers)
        assert reply.status == 401
    # Signed, the same body is parsed, and refused for what it is.
    body = b"\xff not a form"
    stamp = str(int(time.time()))
    import hashlib
    import hmac

    mac = hmac.new(SECRET.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={mac}"}
    assert request(server.url, "POST", "/slack/interactions", body, headers).status == 400


def test_without_a_signing_secret_interactions_are_refused(
    fake: FakeSlack, server: HitlServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_slack.SECRET_ENV)
    store.create_request(question("nosecret-1", data_type="bool"))
    reply = interact(server.url, a_click("nosecret-1"))
    assert reply.status == 503 and _slack.SECRET_ENV in reply.json()["detail"]
    assert store.read_response("nosecret-1") is None


# -- who may answer, and the first click -------------------------------------------------------------------


def test_a_non_respondent_stores_nothing_and_is_told_privately(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    store.create_request(question("resp-1", data_type="bool", respondents=["bob@example.com"]))
    reply = interact(server.url, a_click("resp-1", user="U1", response_url=fake.response_url("u1")))
    assert reply.status == 200
    [told] = fake.wait_for("response_url")
    assert told["response_type"] == "ephemeral" and told["replace_original"] is False
    assert told["text"] == "Only the people this question names may answer it." and "bob" not in told["text"]
    assert store.read_response("resp-1") is None
    # Bob, known to Slack as U2 with that e-mail, may.
    assert interact(server.url, a_click("resp-1", user="U2")).status == 200
    response = store.read_response("resp-1")
    assert response is not None and response["identity"] == "bob@example.com", "the name the policy knows"


def test_the_requester_may_not_approve_their_own_question_in_slack(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    # U2 is bob@example.com in Slack (see the fake's users.info): the requester, refused as on the form.
    store.create_request(question("self-1", data_type="bool", requester="bob@example.com"))
    assert interact(server.url, a_click("self-1", user="U2", response_url=fake.response_url("u2"))).status == 200
    [told] = fake.wait_for("response_url")
    assert told["text"] == "You asked this question, so someone else must answer it."
    assert store.read_response("self-1") is None
    assert interact(server.url, a_click("self-1", user="U1")).status == 200, "anyone else may"
    response = store.read_response("self-1")
    assert response is not None and response["identity"] == "alice@example.com"


def test_of_twenty_concurrent_clicks_exactly_one_is_stored(fake: FakeSlack, server: HitlServer, store: Store) -> None:
    store.create_request(question("race-1", data_type="bool"))
    users = [f"U{n:02d}" for n in range(20)]
    replies: list[int] = []
    start = threading.Barrier(len(users))

    def one(user: str) -> None:
        start.wait(30)
        replies.append(interact(server.url, a_click("race-1", user=user, response_url=fake.response_url(user))).status)

    threads = [threading.Thread(target=one, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert replies == [200] * 20
    response = store.read_response("race-1")
    assert response is not None and response["value"] is True
    winner = response["identity"].removeprefix("slack:")
    told = fake.wait_for("response_url", 19)
    assert all(t["text"] == f"Already answered by <@{winner}>." for t in told)


@pytest.mark.parametrize("how", ["no e-mail", "slow", "failing"])
def test_a_requester_slack_cannot_vouch_for_stores_nothing_and_is_told_where_to_answer(
    fake: FakeSlack, server: HitlServer, store: Store, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.slack")
    fake.emails["U3"] = "carol@example.com"
    if how == "no e-mail":  # the app lacks users:read.email: the profile has no email field
        del fake.emails["U3"]
    elif how == "slow":
        fake.delays["users.info"] = 2.5
    else:
        fake.failing.add("users.info")
    forms = "http://forms.example:8080"
    store.create_request(question("self-3", data_type="bool", requester="carol@example.com", endpoint=forms))
    for n in (1, 2):  # a failed look-up is not kept as "no e-mail": the second click asks Slack again
        assert interact(server.url, a_click("self-3", user="U3", response_url=fake.response_url(f"c{n}"))).status == 200
        told = fake.wait_for("response_url", n)[-1]
        assert told["response_type"] == "ephemeral" and told["replace_original"] is False
        assert told["text"].startswith("Slack did not say who you are") and "was not stored" in told["text"]
        # The form takes the token and still the identity the proxy vouches for: the link is hers alone.
        assert told["text"].endswith(f"{forms}/form/self-3?token=t")
    assert len(fake.of("users.info")) == 2
    assert store.read_response("self-3") is None and store.list_votes("self-3") == []
    scope = [r for r in caplog.records if "users:read.email" in r.getMessage()]
    assert len(scope) == (1 if how == "no e-mail" else 0), "one warning naming the scope"
    assert all(r.levelno == logging.WARNING for r in scope)
    # On an event with respondents the form opens without its token: the link carries none.
    store.create_request(question("resp-3", data_type="bool", respondents=["carol@example.com"], endpoint=forms))
    assert interact(server.url, a_click("resp-3", user="U3", response_url=fake.response_url("c3"))).status == 200
    assert fake.wait_for("response_url", 3)[-1]["text"].endswith(f"{forms}/form/resp-3")
    assert store.read_response("resp-3") is None


def test_one_person_voting_on_the_form_and_in_slack_is_counted_once(fake: FakeSlack, store: Store) -> None:
    httpd = make_server(store, identity_header="X-Forwarded-Email")  # behind a proxy that sets it
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        people = ["alice@example.com", "bob@example.com"]
        ts = posted_at(store, "twice-1", data_type="bool", quorum=2, respondents=people)
        body = json.dumps({"request_id": "twice-1", "value": True}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-Email": "Alice@Example.com"}
        assert request(httpd.url, "POST", "/submit/json", body, headers).status == 200
        fake.showing(ts, lambda m: "1 of 2 approvals" in json.dumps(m["blocks"]))  # the tally, whoever voted where
        # Alice again, as U1 in Slack, whose e-mail Slack gives: the same person, whose vote is in.
        assert interact(httpd.url, a_click("twice-1", user="U1", response_url=fake.response_url())).status == 200
        [told] = fake.wait_for("response_url")
        assert told["text"] == "You have voted on this question already: each person votes once."
        assert len(store.list_votes("twice-1")) == 1 and store.read_response("twice-1") is None
        assert interact(httpd.url, a_click("twice-1", user="U2")).status == 200
        response = store.read_response("twice-1")
        assert response is not None and [v["identity"].casefold() for v in response["votes"]] == people
        fake.showing(ts, lambda m: not has_controls(m))
    finally:
        stop_server(httpd, thread)


def test_a_respondent_named_by_slack_id_is_that_user_under_their_email(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    # U1 is alice@example.com, U2 bob@example.com: named by their Slack ids, checked by their e-mails.
    store.create_request(
        question("sid-1", data_type="bool", respondents=["slack:U1", "slack:U2"], requester="alice@example.com")
    )
    assert interact(server.url, a_click("sid-1", user="U1", response_url=fake.response_url())).status == 200
    [told] = fake.wait_for("response_url")
    assert told["text"] == "You asked this question, so someone else must answer it."
    assert store.read_response("sid-1") is None
    assert interact(server.url, a_click("sid-1", user="U2")).status == 200
    response = store.read_response("sid-1")
    assert response is not None and response["identity"] == "bob@example.com"


# -- the message kept true -------------------------------------------------------------------------------


def test_an_answer_on_the_web_form_rewrites_the_message(fake: FakeSlack) -> None:
    event = hitl.new_event("deploy", data_type=bool, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(event)
    posted(fake, event)
    form = urlencode({"request_id": event.request_id, "token": event.token, "value": "true"}).encode()
    reply = request(event.endpoint, "POST", "/submit", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200
    assert finished(thread, result) is True
    update = update_of(fake)
    assert not has_controls(update) and "Approved by the web form" in last_text(update)


def test_an_answer_stored_by_the_command_line_rewrites_the_message(fake: FakeSlack) -> None:
    event = hitl.new_event("count", data_type=int, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(event)
    posted(fake, event)
    hitl.submit(event.request_id, 7, root=event._store.root)
    assert finished(thread, result) == 7
    assert "Answered 7 by the Python API" in last_text(update_of(fake))


@pytest.mark.parametrize(("default", "said"), [(None, "Expired without an answer"), ("M", "Expired, default M used")])
def test_an_expiry_rewrites_the_message(fake: FakeSlack, default: str | None, said: str) -> None:
    event = hitl.new_event(
        "size", data_type=str, choices=["S", "M"], default=default, timeout_seconds=1.5, notify=hitl.Slack("C1")
    )
    thread, result = waiting(event)
    posted(fake, event)
    outcome = finished(thread, result)
    assert isinstance(outcome, hitl.EventTimeoutError) if default is None else outcome == "M"
    update = update_of(fake)
    assert not has_controls(update) and said in last_text(update)


def test_a_click_after_the_deadline_is_refused_and_the_message_says_so(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    store.create_request(question("late-1", data_type="bool", expires_at="2020-01-01T00:00:00Z", slack=True))
    from flyteplugins.hitl._store import put_slack

    put_slack(store, "late-1", {"messages": [{"channel": "C1", "ts": "1.2"}]})
    assert interact(server.url, a_click("late-1", response_url=fake.response_url())).status == 200
    [told] = fake.wait_for("response_url")
    assert told["text"] == "This question expired; it takes no more answers."
    assert "Expired without an answer" in last_text(update_of(fake))
    response = store.read_response("late-1")
    assert response is not None and response["status"] == "expired"


def test_a_quorum_whose_first_rewrite_reaches_slack_last_ends_showing_the_decision(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    people = ["alice@example.com", "bob@example.com"]
    ts = posted_at(store, "slowq-1", data_type="bool", quorum=2, respondents=people)
    fake.slow["chat.update"] = [3.0]  # the first rewrite (the tally) is slow to reach Slack
    assert interact(server.url, a_click("slowq-1", user="U1")).status == 200
    fake.wait_for("chat.update")  # the tally is on its way
    assert interact(server.url, a_click("slowq-1", user="U2")).status == 200
    settled(fake)
    final = fake.shown[ts]
    assert not has_controls(final) and last_text(final).startswith(":white_check_mark: Approved: 2 of 2 approvals")
    assert "Approved: 2 of 2 approvals" in final["text"]


def test_a_rewrite_sent_by_another_replica_first_does_not_leave_the_message_behind(
    fake: FakeSlack, remote: str, server: HitlServer, store: Store
) -> None:
    people = ["alice@example.com", "bob@example.com"]
    ts = posted_at(store, "replica-1", data_type="bool", quorum=2, respondents=people)
    fake.slow["chat.update"] = [4.0]  # this server's rewrite (the tally) reaches Slack last
    assert interact(server.url, a_click("replica-1", user="U1")).status == 200
    fake.wait_for("chat.update")
    assert interact(remote, a_click("replica-1", user="U2")).status == 200  # the deciding vote, elsewhere
    fake.showing(ts, lambda m: not has_controls(m))  # the other replica's rewrite lands first...
    fake.wait_for("chat.update", 3)  # ...then this one's tally, and this one reads again and rewrites
    settled(fake)
    final = fake.shown[ts]
    assert not has_controls(final) and "Approved: 2 of 2 approvals" in last_text(final)


def test_a_rate_limited_rewrite_waits_for_retry_after_and_lands(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    ts = posted_at(store, "limited-1", data_type="bool")
    fake.limited["chat.update"] = [1]  # HTTP 429 with Retry-After: 1
    assert interact(server.url, a_click("limited-1")).status == 200
    shown = fake.showing(ts, lambda m: not has_controls(m))
    assert "Approved by <@U1>" in last_text(shown)
    assert len(fake.of("chat.update")) == 2, "sent once more after the wait"


def test_what_people_type_reaches_slack_escaped_quoted_and_marked(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    ts = posted_at(store, "typed-1", data_type="bool", comment_required_on_reject=True)
    view = _slack._reject_modal(store.read_request("typed-1") or {}, slack_fake.CHANNEL_ID)
    comment = "<!here> not on a Friday & see <https://evil.example|this>\nsecond line \u202eevil"
    assert interact(server.url, submission(view, {"comment": {"value": comment}})).body == b""
    shown = fake.showing(ts, lambda m: not has_controls(m))
    quoted = (
        "\n> &lt;!here&gt; not on a Friday &amp; see &lt;https://evil.example|this&gt;"
        "\n> second line &lt;U+202E&gt;evil"
    )
    assert last_text(shown) == f":x: Rejected by <@U1>{quoted}"
    assert shown["text"].endswith(quoted), "the fallback text too"
    assert "<!here>" not in json.dumps(shown) and "\u202e" not in json.dumps(shown, ensure_ascii=False)


def test_a_modal_value_is_refused_in_time_whatever_users_info_takes(
    fake: FakeSlack, server: HitlServer, store: Store
) -> None:
    store.create_request(question("slowm-1", respondents=["alice@example.com"]))
    fake.delays["users.info"] = 3.0  # slower than the acknowledgement itself
    view = _slack.modal(store.read_request("slowm-1") or {}, slack_fake.CHANNEL_ID)
    refused = interact(server.url, submission(view, {"value": {"value": "many"}}))
    assert refused.json()["response_action"] == "errors" and "many" in refused.json()["errors"]["value"]
    assert fake.of("users.info") == [], "checked before any look-up"
    # A good value waits for the look-up, whose budget ends within the acknowledgement: refused in time.
    unverified = interact(server.url, submission(view, {"value": {"value": "5"}}))
    assert unverified.json()["errors"]["value"].startswith("Slack did not say who you are")
    assert store.read_response("slowm-1") is None


def test_a_refusal_after_the_acknowledgement_reaches_the_person_privately(
    fake: FakeSlack, server: HitlServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_slack, "ACK_SECONDS", 0.05)
    store.create_request(question("late-2", respondents=["alice@example.com"]))
    fake.delays["users.info"] = 3.0
    view = _slack.modal(store.read_request("late-2") or {}, slack_fake.CHANNEL_ID)
    assert interact(server.url, submission(view, {"value": {"value": "5"}})).body == b""  # Slack closes the modal
    [told] = fake.wait_for("chat.postEphemeral")
    assert (told["channel"], told["user"]) == (slack_fake.CHANNEL_ID, "U1")
    assert told["text"].startswith("Your answer to q was not stored: Slack did not say who you are")
    assert store.read_response("late-2") is None


@pytest.mark.parametrize("where", ["embedded", "separate"])
def test_without_a_server_that_verifies_clicks_the_message_has_no_buttons_and_says_where_to_answer(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.slack")
    if where == "embedded":  # this process's own server, without the signing secret
        monkeypatch.delenv(_slack.SECRET_ENV)
    else:  # a separate form server, whose /health says it has none
        fake.verifies = False
        monkeypatch.setenv("FLYTE_HITL_ENDPOINT", f"http://127.0.0.1:{fake.server_address[1]}")
    events = [hitl.new_event(n, data_type=bool, timeout_seconds=60, notify=hitl.Slack("C1")) for n in ("a", "b")]
    waits = [waiting(e) for e in events]
    messages = fake.wait_for("chat.postMessage", 2)
    for event, message in zip(events, sorted(messages, key=lambda m: m["blocks"][0]["text"]["text"]), strict=True):
        assert not has_controls(message)
        assert last_text(message) == f"Answer on the web form: {event.endpoint}/"
    assert all(e.token not in json.dumps(fake.calls) for e in events)
    why = [r for r in caplog.records if _slack.SECRET_ENV in r.getMessage()]
    assert len(why) == 1 and why[0].levelno == logging.WARNING, "logged once"
    until(lambda: read_slack(events[0]._store, events[0].request_id) is not None, "slack.json")
    hitl.submit(events[0].request_id, True, root=events[0]._store.root)
    assert finished(*waits[0]) is True
    update = update_of(fake)
    assert not has_controls(update) and "Approved by the Python API" in last_text(update)
    hitl.submit(events[1].request_id, False, root=events[1]._store.root)
    assert finished(*waits[1]) is False


# -- a Slack that is down or slow ------------------------------------------------------------------------


def test_a_slack_that_is_down_holds_up_nothing_and_is_logged_once(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flyteplugins.hitl.slack")
    monkeypatch.setenv(_slack.API_ENV, "http://127.0.0.1:9/api/")  # nothing listens there
    event = hitl.new_event("deploy", data_type=bool, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(event)
    until(
        lambda: any("chat.postMessage" in r.getMessage() or "posting" in r.getMessage() for r in caplog.records), "log"
    )
    # A click still answers (without the e-mail Slack could not give), and the wait returns.
    message = {"blocks": [_slack._controls(event._request)]}
    assert interact(event.endpoint, click(message, "approve")).status == 200
    assert finished(thread, result) is True
    assert event.response is not None and event.response["identity"] == "slack:U1"
    warnings = [r for r in caplog.records if r.name == "flyteplugins.hitl.slack" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "posting 'deploy' to C1 failed" in warnings[0].getMessage()
    assert fake.calls == []


def test_a_slow_slack_gets_its_ack_first_and_the_answer_is_stored_after(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = hitl.new_event(
        "deploy", data_type=bool, timeout_seconds=60, notify=hitl.Slack("C1"), respondents=["alice@example.com"]
    )
    thread, result = waiting(event)
    message = posted(fake, event)
    fake.held.clear()  # from now on Slack answers nothing until released
    monkeypatch.setattr(_slack, "ACK_SECONDS", 0.05)
    monkeypatch.setattr(_slack, "USERS_INFO_SECONDS", 60.0)
    reply = interact(event.endpoint, click(message, "approve"))
    assert reply.status == 200 and reply.body == b""
    fake.wait_for("users.info")  # the answer waits for the clicker's e-mail, after the acknowledgement
    assert thread.is_alive() and event._store.read_response(event.request_id) is None
    fake.held.set()
    assert finished(thread, result) is True
    assert "Approved by alice@example.com" in last_text(update_of(fake))


def test_a_slow_slack_holds_up_no_wait(fake: FakeSlack) -> None:
    fake.held.clear()
    event = hitl.new_event("deploy", data_type=bool, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(event)
    fake.wait_for("chat.postMessage")  # posting, and stuck
    hitl.submit(event.form_url, True)
    assert finished(thread, result) is True
    fake.held.set()


# -- settings -------------------------------------------------------------------------------------------


def test_missing_settings_are_a_configuration_error_and_nothing_is_written(
    fake: FakeSlack, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(hitl.ConfigurationError, match="needs a channel"):
        hitl.new_event("x", data_type=int, notify=hitl.Slack())
    monkeypatch.delenv(_slack.TOKEN_ENV)
    with pytest.raises(hitl.ConfigurationError, match=_slack.TOKEN_ENV):
        hitl.new_event("x", data_type=int, notify=hitl.Slack("C1"))
    monkeypatch.setenv(_slack.TOKEN_ENV, TOKEN)
    monkeypatch.setenv(_slack.API_ENV, "slack.com/api")
    with pytest.raises(hitl.ConfigurationError, match=_slack.API_ENV):
        hitl.new_event("x", data_type=int, notify=hitl.Slack("C1"))
    with pytest.raises(hitl.InvalidEventError, match="mention"):
        hitl.new_event("x", data_type=int, notify=hitl.Slack("C1", mention="<!channel>"))
    with pytest.raises(hitl.InvalidEventError, match="notify must be"):
        hitl.new_event("x", data_type=int, notify=[42])  # type: ignore[list-item]
    assert not root.exists() or list(root.iterdir()) == []
    assert fake.calls == []


def test_the_default_channel_and_a_list_of_targets(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_slack.CHANNEL_ENV, "#default")
    event = hitl.new_event("a", data_type=int, timeout_seconds=60)
    thread, result = waiting(event)
    assert posted(fake, event)["channel"] == "#default"
    hitl.submit(event.form_url, 1)
    finished(thread, result)
    both = hitl.new_event(
        "b", data_type=int, timeout_seconds=60, notify=[hitl.Slack(thread_ts="1.5"), hitl.Slack("#two")]
    )
    thread, result = waiting(both)
    [_, first, second] = fake.wait_for("chat.postMessage", 3)
    assert (first["channel"], first["thread_ts"], second["channel"]) == ("#default", "1.5", "#two")
    until(lambda: read_slack(both._store, both.request_id) is not None, "slack.json")
    hitl.submit(both.form_url, 2)
    finished(thread, result)
    updates = fake.wait_for("chat.update", 3)  # "a" once, "b" in both channels
    assert sorted(u["ts"] for u in updates) == [f"1712345678.{n:06d}" for n in (1, 2, 3)]


def test_a_markdown_prompt_becomes_mrkdwn_and_plain_text_stays_verbatim() -> None:
    request = {"request_id": "md-1", "event_name": "q", "prompt": "Ship **v3** <now> to [prod](https://x.example)?"}
    request.update(data_type="bool", expires_at="2099-01-01T00:00:00Z")
    plain = _slack.blocks(request, None, _slack.Slack("C1"))[1]["text"]
    assert plain == {"type": "plain_text", "text": request["prompt"], "emoji": False}
    marked = _slack.blocks({**request, "prompt_type": "markdown"}, None, _slack.Slack("C1"))[1]["text"]
    assert marked == {"type": "mrkdwn", "text": "Ship *v3* &lt;now&gt; to <https://x.example|prod>?"}


def test_a_task_that_ends_at_the_expiry_still_rewrites_the_message(fake: FakeSlack) -> None:
    code = (
        "import flyteplugins.hitl as hitl\n"
        "event = hitl.new_event('bye', data_type=int, timeout_seconds=3, notify=hitl.Slack('C1'))\n"
        "try:\n"
        "    event.wait()\n"
        "except hitl.EventTimeoutError:\n"
        "    print('expired')\n"
    )
    fake.delays["chat.update"] = 1.0  # a slow Slack: the program ends before it replies, unless it waits
    proc = run_python(code)
    out, _ = proc.communicate(timeout=120)
    ended = time.monotonic()
    assert proc.returncode == 0 and "expired" in out, out
    assert "Expired without an answer" in last_text(update_of(fake))
    assert fake.replied["chat.update"] < ended  # the program waited for Slack's reply


def test_a_slack_only_server_serves_nothing_else(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyteplugins.hitl._endpoints import SLACK_ONLY_ENV, Request, Site, handle

    monkeypatch.setenv(SLACK_ONLY_ENV, "1")
    site = Site(store)
    for path in ("/", "/form/x-1?token=t", "/status/x-1", "/submit/json", "/submit"):
        assert handle(site, Request("GET", path)).status == 404
    assert handle(site, Request("GET", "/health")).status == 200
    assert handle(site, Request("POST", "/slack/interactions", body=b"")).status == 503  # no signing secret here
    monkeypatch.delenv(SLACK_ONLY_ENV)
    assert handle(Site(store), Request("GET", "/")).status == 200


@dataclasses.dataclass
class Rollout:
    start: datetime
    regions: list[Label]
    canary: bool
    share: Annotated[float, annotated_types.Interval(gt=0, le=1)]
    note: str | None = None


def test_every_kind_of_field_in_a_modal(fake: FakeSlack) -> None:
    event = hitl.new_event("rollout", data_type=Rollout, timeout_seconds=60, notify=hitl.Slack("C1"))
    thread, result = waiting(event)
    message = posted(fake, event)
    assert interact(event.endpoint, click(message, "answer")).status == 200
    view = fake.wait_for("views.open")[0]["view"]
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    kinds = {k: b["element"]["type"] for k, b in inputs.items()}
    assert kinds == {
        "start": "datetimepicker",
        "regions": "checkboxes",
        "canary": "static_select",
        "share": "number_input",
        "note": "plain_text_input",
    }
    assert inputs["share"]["element"]["is_decimal_allowed"] and inputs["share"]["element"]["max_value"] == "1"
    assert inputs["note"]["optional"] and not inputs["start"]["optional"]
    options = inputs["regions"]["element"]["options"]
    values = {
        "start": {"selected_date_time": 1796500000},
        "regions": {"selected_options": [options[0], options[1]]},
        "canary": {"selected_option": {"text": {"type": "plain_text", "text": "Yes"}, "value": "true"}},
        "share": {"value": "0.25"},
        "note": {"value": None},
    }
    assert interact(event.endpoint, submission(view, values)).body == b""
    expected = Rollout(datetime.fromtimestamp(1796500000, timezone.utc), [Label.CAT, Label.DOG], True, 0.25)
    assert finished(thread, result) == expected
