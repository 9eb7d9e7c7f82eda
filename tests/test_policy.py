"""Who may answer: respondents, groups, the requester, quorum votes with a veto, through real servers.

The servers trust ``X-Forwarded-Email`` and ``X-Forwarded-Groups`` as a proxy in front of them would
set them; the tests send those headers themselves, as that proxy.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import request, until

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _answers, _policy
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.hitl import _check_reattached
from flyteplugins.hitl.server import HitlServer, start_server, stop_server

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"


@pytest.fixture
def proxied(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server that trusts the identity and groups headers of a proxy in front of it; its base URL."""
    monkeypatch.setenv(_policy.GROUPS_HEADER_ENV, "X-Forwarded-Groups")
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop_server(httpd, thread)


def answer(base: str, payload: dict[str, Any], who: str | None = None, groups: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if who is not None:
        headers["X-Forwarded-Email"] = who
    if groups is not None:
        headers["X-Forwarded-Groups"] = groups
    return request(base, "POST", "/submit/json", json.dumps(payload).encode(), headers)


def stored(root: Path, event: hitl.Event[Any]) -> bool:
    return (root / event.request_id / "response.json").exists()


# -- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quorum": 0}, "quorum must be a whole number of at least 1"),
        ({"quorum": True}, "quorum must be a whole number"),
        ({"quorum": 3, "respondents": [ALICE, BOB]}, "quorum 3 is more than the 2 respondents"),
        ({"quorum": 3, "respondents": [ALICE, ALICE.upper(), BOB]}, "quorum 3 is more than the 2 respondents"),
        ({"respondents": ALICE}, "respondents must be a list"),
        ({"respondents": []}, "respondents must name 1 to 100 entries"),
        ({"respondents": [""]}, "respondents entry '' is refused: it is empty"),
        ({"respondents": [None]}, "respondents entry None is refused: it is not a string"),
        ({"respondents": ["x" * 321]}, r"respondents entry 'x{80}\.\.\.' is refused: it is 321 characters long"),
        ({"respondents": ["group:"]}, "respondents entry's group '' is refused: it is empty"),
        ({"respondents": [f"u{i}" for i in range(101)]}, "respondents must name 1 to 100 entries"),
        ({"respondents": ["slack: U3"]}, "a Slack user is named slack:<id>"),
        ({"requester": " "}, "requester ' ' is refused: it is empty"),
        ({"requester": "alice\u202e@example.com"}, r"requester 'alice\\u202e@example.com' is refused: .*bidi"),
        ({"quorum": 2, "respondents": [ALICE, BOB], "requester": "Alice@example.com"}, "quorum 2 is more than the 1"),
        ({"respondents": [ALICE], "requester": ALICE}, "no one may answer the event"),
        ({"allow_self_approval": "yes"}, "allow_self_approval must be True or False"),
    ],
)
def test_bad_policy_arguments_are_refused_at_once_and_nothing_is_written(
    root: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(hitl.InvalidEventError, match=message):
        hitl.approve("deploy", timeout_seconds=30, **kwargs)
    assert not root.exists() or not any(root.iterdir())


def test_quorum_is_for_approvals_only(root: Path) -> None:
    with pytest.raises(hitl.InvalidEventError, match="quorum applies to approvals only"):
        hitl.Event.create("size", int, quorum=2)
    assert "quorum" not in inspect.signature(hitl.new_event).parameters
    assert "quorum" in inspect.signature(hitl.approve).parameters


def test_a_quorum_above_the_people_named_is_allowed_when_a_group_is_named(root: Path) -> None:
    event = hitl.Event.create("release", bool, quorum=3, respondents=[ALICE, "group:sre"], timeout_seconds=30)
    assert event._request["quorum"] == 3 and event._request["respondents"] == [ALICE, "group:sre"]


def test_the_requester_defaults_to_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_policy.REQUESTER_ENV, ALICE)
    assert hitl.new_event("a", data_type=int, timeout_seconds=30)._request["requester"] == ALICE
    assert hitl.new_event("b", data_type=int, requester=BOB, timeout_seconds=30)._request["requester"] == BOB
    monkeypatch.delenv(_policy.REQUESTER_ENV)
    assert "requester" not in hitl.new_event("c", data_type=int, timeout_seconds=30)._request


def test_a_rerun_reattaches_with_the_same_policy_and_refuses_another(root: Path) -> None:
    event = hitl.Event.create("ship", bool, respondents=[ALICE], quorum=1, requester=BOB, timeout_seconds=30)
    same = dict(event._request)
    assert _check_reattached(event._request, same) is event._request
    for key, value in (("respondents", [CAROL]), ("quorum", 2), ("allow_self_approval", True)):
        with pytest.raises(hitl.InvalidEventError, match=key):
            _check_reattached(event._request, {**same, key: value})


# -- who may answer, through a server behind a proxy ------------------------------------------------------


def test_only_a_named_respondent_answers_and_needs_no_token(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=int, respondents=[ALICE, "group:sre"], timeout_seconds=30)
    rid = event.request_id
    nobody = answer(proxied, {"request_id": rid, "value": 1})
    assert nobody.status == 401 and "identified person" in nobody.json()["detail"]
    with_token = answer(proxied, {"request_id": rid, "token": event.token, "value": 1})
    assert with_token.status == 401  # a link alone is not enough where respondents are named
    eve = answer(proxied, {"request_id": rid, "token": event.token, "value": 1}, who="eve@example.com")
    assert eve.status == 403
    assert rid in eve.json()["detail"] and ALICE not in eve.json()["detail"] and "sre" not in eve.json()["detail"]
    assert not stored(root, event)
    ok = answer(proxied, {"request_id": rid, "value": 7}, who="Alice@Example.COM")
    assert ok.status == 200, ok.text
    assert event.wait() == 7
    assert event.response is not None and event.response["identity"] == ALICE  # as compared: one name


def test_a_group_member_answers_by_group(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=int, respondents=["group:sre"], timeout_seconds=30)
    rid = event.request_id
    assert answer(proxied, {"request_id": rid, "value": 1}, who=BOB, groups="dev, ops").status == 403
    assert answer(proxied, {"request_id": rid, "value": 2}, who=BOB, groups="dev, sre").status == 200
    assert event.wait() == 2


def test_a_server_that_trusts_no_header_refuses_a_question_with_respondents(root: Path) -> None:
    event = hitl.new_event("n", data_type=int, respondents=[ALICE], timeout_seconds=30)
    # The embedded server trusts no header: the one sent is not an identity.
    reply = answer(event.endpoint, {"request_id": event.request_id, "token": event.token, "value": 1}, who=ALICE)
    assert reply.status == 401
    assert not stored(root, event)


def test_a_repeated_identity_header_is_refused(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=int, respondents=[ALICE], timeout_seconds=30)
    body = json.dumps({"request_id": event.request_id, "value": 1}).encode()
    headers = [("Content-Type", "application/json"), ("X-Forwarded-Email", ALICE), ("X-Forwarded-Email", BOB)]
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(proxied.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest("POST", "/submit/json")
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        assert reply.status == 400 and b"more than one X-Forwarded-Email" in reply.read()
    finally:
        conn.close()
    assert not stored(root, event)


def test_the_requester_may_not_answer_unless_self_approval_is_allowed(root: Path, proxied: str) -> None:
    mine = hitl.new_event("mine", data_type=bool, requester=ALICE, timeout_seconds=30)
    reply = answer(
        proxied, {"request_id": mine.request_id, "token": mine.token, "value": True}, who="ALICE@example.com"
    )
    assert reply.status == 403 and "asked the question" in reply.json()["detail"]
    unidentified = answer(proxied, {"request_id": mine.request_id, "token": mine.token, "value": True})
    assert unidentified.status == 401
    assert answer(proxied, {"request_id": mine.request_id, "token": mine.token, "value": True}, who=BOB).status == 200
    assert mine.wait() is True
    own = hitl.new_event("own", data_type=bool, requester=ALICE, allow_self_approval=True, timeout_seconds=30)
    assert answer(proxied, {"request_id": own.request_id, "token": own.token, "value": True}, who=ALICE).status == 200
    assert own.wait() is True


def test_a_question_without_respondents_still_needs_its_token(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=bool, requester=ALICE, timeout_seconds=30)
    assert answer(proxied, {"request_id": event.request_id, "value": True}, who=BOB).status == 403
    assert not stored(root, event)


def test_the_form_opens_and_takes_an_answer_without_the_token_for_a_respondent(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=int, respondents=[ALICE], timeout_seconds=30)
    page = request(proxied, "GET", f"/form/{event.request_id}", headers={"X-Forwarded-Email": ALICE})
    assert page.status == 200 and 'name="value"' in page.text
    assert request(proxied, "GET", f"/form/{event.request_id}", headers={"X-Forwarded-Email": BOB}).status == 403
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Email": BOB}
    body = f"request_id={event.request_id}&value=3".encode()
    refused = request(proxied, "POST", "/submit", body, form)
    assert refused.status == 403 and "text/html" in refused.headers["content-type"]
    assert not stored(root, event)
    accepted = request(proxied, "POST", "/submit", body, {**form, "X-Forwarded-Email": ALICE})
    assert accepted.status == 200, accepted.text
    assert event.wait() == 3
    assert event.response is not None and event.response["identity"] == ALICE and event.response["transport"] == "form"


# -- votes ----------------------------------------------------------------------------------------------


def approval(quorum: int = 2, **kwargs: Any) -> hitl.Event[bool]:
    people = kwargs.pop("respondents", [ALICE, BOB, CAROL])
    kwargs.setdefault("timeout_seconds", 30)
    return hitl.Event.create("ship", bool, quorum=quorum, respondents=people, poll_interval_seconds=0.1, **kwargs)


def test_a_quorum_needs_that_many_distinct_approvals(root: Path, proxied: str) -> None:
    event = approval(2)
    rid = event.request_id
    first = answer(proxied, {"request_id": rid, "value": True, "comment": "fine"}, who=ALICE)
    assert first.status == 200 and first.json()["status"] == "voted" and first.json()["approvals"] == 1
    again = answer(proxied, {"request_id": rid, "value": False}, who="ALICE@example.com")
    assert again.status == 409 and "already voted" in again.json()["detail"]
    assert not stored(root, event)
    status = request(proxied, "GET", f"/status/{rid}?token={event.token}").json()
    assert status["state"] == "waiting" and [(v["identity"], v["value"]) for v in status["votes"]] == [(ALICE, True)]
    assert status["votes"][0]["comment"] == "fine" and status["votes"][0]["voted_at"].endswith("Z")
    page = request(proxied, "GET", f"/form/{rid}", headers={"X-Forwarded-Email": ALICE}).text
    assert "1 of 2 approvals: alice@example.com" in page and "You approved at" in page and 'class="yes"' not in page
    page = request(proxied, "GET", f"/form/{rid}", headers={"X-Forwarded-Email": BOB}).text
    assert "1 of 2 approvals" in page and "You approved" not in page and 'class="yes"' in page
    second = answer(proxied, {"request_id": rid, "value": True}, who=BOB)
    assert second.status == 200 and second.json()["status"] == "submitted"
    assert event.wait() is True
    assert event.response is not None
    assert [(v["identity"], v["value"]) for v in event.response["votes"]] == [(ALICE, True), (BOB, True)]
    assert event.response["identity"] == BOB and event.response["quorum"] == 2
    late = answer(proxied, {"request_id": rid, "value": False}, who=CAROL)
    assert late.status == 409


def test_a_single_rejection_vetoes(root: Path, proxied: str) -> None:
    event = approval(2)
    rid = event.request_id
    assert answer(proxied, {"request_id": rid, "value": True}, who=ALICE).json()["status"] == "voted"
    veto = answer(proxied, {"request_id": rid, "value": False, "comment": "not today"}, who=CAROL)
    assert veto.status == 200 and veto.json()["value"] is False
    assert event.wait() is False
    assert event.response is not None and event.response["identity"] == CAROL
    assert [v["value"] for v in event.response["votes"]] == [True, False]


def test_a_vote_through_the_form_shows_the_count(root: Path, proxied: str) -> None:
    event = approval(2)
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Email": ALICE}
    reply = request(proxied, "POST", "/submit", f"request_id={event.request_id}&value=true".encode(), form)
    assert reply.status == 200 and "Vote received" in reply.text and "You approved at" in reply.text
    assert "1 of 2 approvals" in reply.text
    assert not stored(root, event)
    index = request(proxied, "GET", "/").text
    assert '<li class="chip">1 of 2 approvals</li>' in index, "the index shows the tally, without who voted"
    assert ALICE not in index


def test_a_timeout_applies_the_default_over_partial_votes(root: Path, proxied: str) -> None:
    event = approval(2, default=False, timeout_seconds=1.5)
    assert answer(proxied, {"request_id": event.request_id, "value": True}, who=ALICE).status == 200
    assert event.wait() is False
    assert event.response is not None and event.response.get("default_applied") is True


def test_a_vote_from_the_storage_root_names_its_identity(root: Path, proxied: str) -> None:
    event = approval(2)
    vote = hitl.submit(event.request_id, True, root=str(root), identity=ALICE)
    assert vote["status"] == "voted" and vote["transport"] == "storage"
    with pytest.raises(hitl.HitlError, match="identified person"):
        hitl.submit(event.request_id, True, root=str(root))
    decision = hitl.submit(event.request_id, True, root=str(root), identity=BOB)
    assert decision["status"] == "completed" and decision["transport"] == "storage"
    assert event.wait() is True


def test_votes_race_on_two_replicas_and_make_exactly_one_decision(root: Path, store: Store) -> None:
    """64 people vote at once on a quorum of 3 through two servers on one root: one decision, counted
    from the votes in the order cast (the first three approvals, or a rejection before them)."""
    people = [f"user{i}@example.com" for i in range(64)]
    event = approval(3, respondents=people)
    replicas: list[tuple[HitlServer, threading.Thread]] = [
        start_server(Store(str(root)), identity_header="X-Forwarded-Email") for _ in range(2)
    ]
    bases = [f"http://127.0.0.1:{httpd.server_address[1]}" for httpd, _ in replicas]
    replies: dict[str, Any] = {}
    go = threading.Barrier(len(people), timeout=60)

    def vote(i: int) -> None:
        go.wait()
        value = i % 5 != 4  # one in five rejects
        replies[people[i]] = answer(bases[i % 2], {"request_id": event.request_id, "value": value}, who=people[i])

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(len(people))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    finally:
        for httpd, thread in replicas:
            stop_server(httpd, thread)
    assert len(replies) == 64 and all(r.status in (200, 409) for r in replies.values())
    responses = list((root / event.request_id).glob("response*.json"))
    assert [p.name for p in responses] == ["response.json"]
    decision = json.loads(responses[0].read_text())
    counted = decision["votes"]
    stored_votes = {v["identity"]: v for v in store.list_votes(event.request_id)}
    assert all(stored_votes[v["identity"]] == v for v in counted)
    # The decision is the one its votes make, in the order cast: the first 3 approvals, or a veto before them.
    approvals = [v for v in counted if v["value"] is True]
    if decision["value"]:
        assert len(approvals) == 3 and all(v["value"] for v in counted)
    else:
        assert counted[-1]["value"] is False and len(approvals) < 3 and len(counted) == len(approvals) + 1
    assert _answers.decide(event._request, counted)["value"] == decision["value"]  # type: ignore[index]
    # Every counted voter was told their vote counted; nobody counted got a 409.
    assert all(replies[v["identity"]].status == 200 for v in counted)
    # Whoever was told of a decision was told of this one.
    told = [r.json()["value"] for r in replies.values() if r.status == 200 and r.json()["status"] == "submitted"]
    assert told and set(told) == {decision["value"]}
    assert event.wait() is decision["value"]


def test_the_cli_votes_as_a_named_identity_and_status_lists_the_votes(root: Path) -> None:
    event = approval(2)
    cli = [sys.executable, "-m", "flyteplugins.hitl"]
    done = subprocess.run(
        [*cli, "submit", event.request_id, "true", "--json-value", "--root", str(root), "--as", ALICE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "voted"
    again = subprocess.run(
        [*cli, "submit", event.request_id, "true", "--json-value", "--root", str(root), "--as", ALICE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 4 and "already voted" in again.stderr
    anonymous = subprocess.run(
        [*cli, "submit", event.request_id, "true", "--json-value", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert anonymous.returncode == 6 and "identified person" in anonymous.stderr
    status = subprocess.run(
        [*cli, "status", event.request_id, "--root", str(root)], capture_output=True, text=True, timeout=60
    )
    votes = json.loads(status.stdout)["votes"]
    assert [(v["identity"], v["value"], v["transport"], v["via"]) for v in votes] == [(ALICE, True, "storage", "cli")]
    through_server = subprocess.run(
        [*cli, "submit", event.form_url, "true", "--json-value", "--as", BOB],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert through_server.returncode != 0 and "storage root" in through_server.stderr


def test_a_timeout_without_default_says_how_many_votes_came(root: Path, proxied: str) -> None:
    event = approval(2, timeout_seconds=1.5)
    assert answer(proxied, {"request_id": event.request_id, "value": True}, who=ALICE).status == 200
    with pytest.raises(hitl.EventTimeoutError, match="1 vote came: 1 of 2 approvals"):
        event.wait()


def test_a_wait_goes_on_through_votes_from_this_process_until_the_decision(root: Path) -> None:
    event = approval(2)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(event.wait()))
    waiter.start()
    try:
        assert hitl.submit(event.request_id, True, root=str(root), identity=ALICE)["status"] == "voted"
        waiter.join(0.5)
        assert waiter.is_alive() and not result  # one vote of two decides nothing
        hitl.submit(event.request_id, True, root=str(root), identity=BOB)
    finally:
        waiter.join(60)
    assert result == [True]


def test_a_non_respondent_without_the_token_is_refused_as_for_an_unknown_id(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=int, respondents=[ALICE], timeout_seconds=30)
    for payload in (
        {"request_id": event.request_id, "value": 1},
        {"request_id": event.request_id, "value": 1, "token": "x"},
    ):
        reply = answer(proxied, payload, who=BOB)
        assert reply.status == 403 and "missing or wrong token" in reply.json()["detail"]
        assert ALICE not in reply.json()["detail"]
    assert not stored(root, event)


def test_the_form_of_a_question_naming_respondents_asks_an_unidentified_visitor_to_sign_in(
    root: Path, proxied: str
) -> None:
    event = approval(2)
    page = request(proxied, "GET", f"/form/{event.request_id}")
    assert page.status == 401 and "sign in" in page.text
    assert (
        request(proxied, "GET", f"/form/{event.request_id}?token={event.token}").status == 200
    )  # the link still opens
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Email": ALICE}
    body = f"request_id={event.request_id}&value=true".encode()
    assert request(proxied, "POST", "/submit", body, form).status == 200
    again = request(proxied, "POST", "/submit", body, form)
    assert again.status == 409 and "Already voted" in again.text


def test_votes_on_an_s3_root_are_one_per_person_and_listed(s3_root: str) -> None:
    store = Store(s3_root)
    request = {
        "request_id": "ship-s3",
        "event_name": "ship",
        "prompt": "?",
        "data_type": "bool",
        "token": "t" * 32,
        "expires_at": "2099-01-01T00:00:00Z",
        "quorum": 2,
        "respondents": [ALICE, BOB],
    }
    assert store.create_request(request)
    vote = _answers.submit(store, request, True, via="python", client="c", identity=ALICE)
    assert vote["status"] == "voted"
    with pytest.raises(hitl.AlreadyVotedError):
        _answers.submit(store, request, False, via="python", client="c", identity=ALICE.upper())
    assert [v["identity"] for v in store.list_votes("ship-s3")] == [ALICE]
    decision = _answers.submit(store, request, True, via="python", client="c", identity=BOB)
    assert decision["status"] == "completed" and decision["value"] is True
    assert store.read_response("ship-s3") == decision
    assert [e.request_id for e in store.list_events() if e.answered] == ["ship-s3"]


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_approve_takes_the_policy_in_both_forms(root: Path, proxied: str, mode: str) -> None:
    kwargs: dict[str, Any] = {
        "respondents": [ALICE, BOB],
        "quorum": 2,
        "timeout_seconds": 30,
        "poll_interval_seconds": 0.1,
    }
    result: list[bool] = []

    def run() -> None:
        if mode == "sync":
            result.append(hitl.approve("ship", **kwargs))
        else:
            result.append(asyncio.run(hitl.approve.aio("ship", **kwargs)))

    waiter = threading.Thread(target=run)
    waiter.start()
    try:
        until(lambda: any(root.glob("*/request.json")), "the approval is stored")
        request_id = next(root.glob("*/request.json")).parent.name
        assert answer(proxied, {"request_id": request_id, "value": True}, who=ALICE).json()["status"] == "voted"
        assert answer(proxied, {"request_id": request_id, "value": True}, who=BOB).json()["status"] == "submitted"
    finally:
        waiter.join(60)
    assert result == [True]


# -- one person, one name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (" Alice@Example.COM ", "alice@example.com"),
        ("\uff21\uff2c\uff29\uff23\uff25", "alice"),  # full-width letters: NFKC
        ("Stra\u00dfe", "strasse"),  # case-folded, not only lower-cased
        ("\u00a0bob\u3000", "bob"),  # surrounding space of any kind
        ("Slack:u012ab3cd", "slack:U012AB3CD"),  # Slack's ids are upper-case
        ("slack:U0BOSS <Boss@Example.com>", "slack:U0BOSS <boss@example.com>"),
        ("GROUP:SRE", "group:sre"),
        ("x" * 320, "x" * 320),
    ],
)
def test_canonical_gives_one_name_per_person(given: str, name: str) -> None:
    assert _policy.canonical(given) == name
    assert _policy.canonical(name) == name  # stored names are compared as they are


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        (42, "it is not a string"),
        ("x" * 321, "it is 321 characters long; the limit is 320"),
        ("\ufb03" * 200, "it is 600 characters long"),  # each ligature is three letters once normalized
        ("alice\u202e@example.com", r"control, bidi or invisible character \(\\u202e\)"),
        ("al\u200bice", r"\(\\u200b\)"),
        ("al\x1bice", r"\(\\x1b\)"),
        ("slack:-U3", "a Slack user is named slack:<id>"),
    ],
)
def test_canonical_refuses_a_name_it_would_have_to_cut_or_hide(given: object, rule: str) -> None:
    with pytest.raises(hitl.InvalidIdentityError, match=rule) as info:
        _policy.canonical(given, "requester")
    assert isinstance(info.value, ValueError) and str(info.value).startswith(f"requester {given!r:.80}")


def test_respondents_and_requester_are_stored_canonical(root: Path) -> None:
    event = hitl.Event.create(
        "ship",
        bool,
        quorum=2,
        respondents=[" Alice@Example.COM", "GROUP: SRE ", "slack:u3abc"],
        requester="Bob",
        timeout_seconds=30,
    )
    assert event._request["respondents"] == [ALICE, "group:sre", "slack:U3ABC"]
    assert event._request["requester"] == "bob"
    assert _policy.is_respondent(event._request, _policy.Who("SLACK:U3ABC"))
    assert _policy.is_respondent(event._request, _policy.Who("eve@example.com", frozenset({"Sre"})))
    assert not _policy.is_respondent(event._request, _policy.Who("slack:U3ABD"))


def test_a_quorum_the_requester_cannot_help_meet_is_allowed_only_when_it_can_be_met(root: Path) -> None:
    for kwargs in (
        {"respondents": [ALICE, BOB], "requester": ALICE, "allow_self_approval": True},
        {"respondents": [ALICE, BOB], "requester": CAROL},
        {"respondents": [ALICE, "group:sre"], "requester": ALICE},
        {"requester": ALICE},
    ):
        assert hitl.Event.create("ship", bool, quorum=2, timeout_seconds=30, **kwargs)._request["quorum"] == 2


def test_one_person_votes_once_whatever_the_case_of_their_name(root: Path, store: Store, proxied: str) -> None:
    event = approval(3, respondents=["alice", "ALICE@example.com", BOB])
    rid = event.request_id
    for first, second in (("alice", "ALICE"), ("ALICE@example.com", "alice@example.com")):
        assert answer(proxied, {"request_id": rid, "value": True}, who=first).json()["status"] == "voted"
        again = answer(proxied, {"request_id": rid, "value": True}, who=second)
        assert again.status == 409 and "already voted" in again.json()["detail"]
    assert sorted(v["identity"] for v in store.list_votes(rid)) == ["alice", ALICE]
    assert not stored(root, event), "two people have voted, not four"
    assert answer(proxied, {"request_id": rid, "value": True}, who=BOB).json()["status"] == "submitted"
    assert event.wait() is True
    assert event.response is not None
    assert [v["identity"] for v in event.response["votes"]] == ["alice", ALICE, BOB]


def test_the_requester_is_known_by_any_case_of_their_name(root: Path, proxied: str) -> None:
    event = hitl.new_event("n", data_type=bool, requester="alice", timeout_seconds=30)
    reply = answer(proxied, {"request_id": event.request_id, "token": event.token, "value": True}, who="Alice")
    assert reply.status == 403 and "asked the question" in reply.json()["detail"]
    assert not stored(root, event)


def raw_answer(base: str, payload: dict[str, Any], headers: list[tuple[str, str | bytes]]) -> tuple[int, str]:
    """POST /submit/json with header values sent as given (bytes as they are: UTF-8 a proxy passes on)."""
    import http.client

    body = json.dumps(payload).encode()
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest("POST", "/submit/json")
        for name, value in [("Content-Type", "application/json"), *headers, ("Content-Length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("email", "groups", "rule"),
    [
        ("a" * 321 + "@example.com", "sre", "X-Forwarded-Email header is refused: identity 'a.*333 characters long"),
        ("alice\u202e@example.com".encode(), "sre", r"X-Forwarded-Email header .* bidi or invisible character"),
        (ALICE, "ops, " + "g" * 321, "X-Forwarded-Groups header is refused: group 'g.*321 characters long"),
        (ALICE, b"ops, sr\xe2\x80\x8be", r"X-Forwarded-Groups header .* bidi or invisible character"),
    ],
)
def test_a_bad_identity_or_groups_header_is_refused_never_cut(
    root: Path, store: Store, proxied: str, email: str | bytes, groups: str | bytes, rule: str
) -> None:
    event = approval(2, respondents=[ALICE, BOB, "group:sre"])
    status, text = raw_answer(
        proxied,
        {"request_id": event.request_id, "value": True},
        [("X-Forwarded-Email", email), ("X-Forwarded-Groups", groups)],
    )
    assert status == 400, text
    assert re.search(rule, json.loads(text)["detail"]), text
    assert store.list_votes(event.request_id) == [] and not stored(root, event)


def test_a_bad_identity_from_the_storage_root_is_refused_and_nothing_is_written(root: Path, store: Store) -> None:
    event = approval(2)
    with pytest.raises(hitl.InvalidIdentityError, match=r"identity 'alice\\u202e@example.com' is refused"):
        hitl.submit(event.request_id, True, root=str(root), identity="alice\u202e@example.com")
    assert store.list_votes(event.request_id) == [] and not stored(root, event)
