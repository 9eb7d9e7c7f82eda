"""``POST /submit/batch`` and ``hitl submit --batch`` (`_batch`): each answer checked and stored as if alone."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import python, request

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _policy
from flyteplugins.hitl.__main__ import main
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer, start_server, stop_server

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def proxied(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[HitlServer]:
    """A server that trusts a proxy's identity header."""
    monkeypatch.setenv(_policy.GROUPS_HEADER_ENV, "X-Forwarded-Groups")
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    yield httpd
    stop_server(httpd, thread)


def batch(base: str, items: object, who: str | None = None, **headers: str) -> Any:
    sent = {"Content-Type": "application/json", **headers}
    if who is not None:
        sent["X-Forwarded-Email"] = who
    return request(base, "POST", "/submit/batch", json.dumps(items).encode(), sent)


def stored(root: Path, event: hitl.Event[Any]) -> dict[str, Any] | None:
    path = root / event.request_id / "response.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_batch_mixing_good_and_bad_answers_stores_the_good_ones(root: Path, proxied: HitlServer) -> None:
    good = [hitl.new_event("label-ok", data_type=bool, poll_interval_seconds=60) for _ in range(3)]
    number = hitl.new_event("count", data_type=int, poll_interval_seconds=60)
    answered = hitl.new_event("label-ok", data_type=bool)
    choice = hitl.new_event("size", data_type=str, choices=["S", "M"])
    alices = hitl.new_event("label-ok", data_type=bool, respondents=[ALICE])
    first = [{"request_id": answered.request_id, "token": answered.token, "value": True}]
    assert batch(proxied.url, first).status == 200
    waits: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda e=e: waits.update({e.request_id: e.wait()}), daemon=True)
        for e in [*good, number]
    ]
    for t in threads:
        t.start()

    items = [
        {"request_id": good[0].request_id, "token": good[0].token, "value": True, "comment": "fine"},
        {"request_id": number.request_id, "token": number.token, "value": "seven"},  # invalid
        {"request_id": good[1].request_id, "token": good[1].token, "value": False},
        {"request_id": answered.request_id, "token": answered.token, "value": False},  # already answered
        {"request_id": alices.request_id, "value": True},  # not allowed: bob is not a respondent
        {"request_id": choice.request_id, "token": "wrong-token-0123456789abcdef012", "value": "S"},
        {"request_id": "no-such-event-0123456789abcdef01", "token": "x" * 32, "value": True},
        {"request_id": "../etc", "token": "x", "value": True},
        {"request_id": choice.request_id, "token": choice.token},  # no value
        {"request_id": choice.request_id, "token": choice.token, "value": "S", "data_type": "int"},
        {"request_id": choice.request_id, "token": choice.token, "value": "S", "extra": 1},
        "not an object",
        {"request_id": good[2].request_id, "token": good[2].token, "value": True},
        {"request_id": good[2].request_id, "token": good[2].token, "value": False},  # twice in one batch
        {"request_id": number.request_id, "token": number.token, "value": 7},
    ]
    reply = batch(proxied.url, items, who=BOB)
    assert reply.status == 200
    results = reply.json()["results"]
    got = [(r["request_id"], r["status"]) for r in results]
    assert got == [
        (good[0].request_id, 200),
        (number.request_id, 400),
        (good[1].request_id, 200),
        (answered.request_id, 409),
        (alices.request_id, 403),
        (choice.request_id, 403),
        ("no-such-event-0123456789abcdef01", 403),  # like a wrong token: which events exist stays hidden
        ("../etc", 400),
        (choice.request_id, 400),
        (choice.request_id, 400),
        (choice.request_id, 400),
        (None, 400),
        (good[2].request_id, 200),
        (good[2].request_id, 409),
        (number.request_id, 200),
    ]
    details = [r["detail"] for r in results]
    assert "accepted" in details[0] and "'seven'" in details[1] and "already answered" in details[3]
    assert "missing or wrong token" in details[4] and ALICE not in details[4]  # as /submit/json answers
    assert "missing field 'value'" in details[8] and "data_type 'int'" in details[9] and "'extra'" in details[10]
    assert "expected a JSON object" in details[11]

    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert waits == {
        good[0].request_id: True,
        good[1].request_id: False,
        good[2].request_id: True,
        number.request_id: 7,
    }
    assert stored(root, good[0])["comment"] == "fine"  # type: ignore[index]
    assert stored(root, good[0])["via"] == "batch"  # type: ignore[index]  # the audit trail says how it came
    assert stored(root, good[2])["value"] is True  # type: ignore[index]
    assert stored(root, answered)["value"] is True  # type: ignore[index]
    assert stored(root, alices) is None and stored(root, choice) is None


def test_quorum_votes_in_batches_count_once_per_person(root: Path, proxied: HitlServer) -> None:
    events = [
        hitl.new_event("label-ok", data_type=bool, respondents=[ALICE, BOB], requester="carol@example.com")
        for _ in range(2)
    ]
    # new_event takes no quorum: Event.create does.
    voted = [hitl.Event.create("ship", bool, respondents=[ALICE, BOB], quorum=2) for _ in range(2)]
    items = [{"request_id": e.request_id, "value": True} for e in voted]
    first = batch(proxied.url, items, who=ALICE).json()["results"]
    assert [r["status"] for r in first] == [200, 200] and all("1 of 2 approvals" in r["detail"] for r in first)
    again = batch(proxied.url, items, who=ALICE).json()["results"]
    assert [r["status"] for r in again] == [409, 409] and all("already voted" in r["detail"] for r in again)
    assert all(stored(root, e) is None for e in voted)
    second = batch(proxied.url, [*items, {"request_id": events[0].request_id, "value": False}], who=BOB).json()
    assert [r["status"] for r in second["results"]] == [200, 200, 200]
    assert all(stored(root, e)["value"] is True for e in voted)  # type: ignore[index]
    assert [e.wait() for e in voted] == [True, True]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b"{}", "application/json", 400, "expected a JSON array of answers, got dict"),
        (b"[]", "application/json", 400, "a batch holds 1 to 1000 answers, got 0"),
        (json.dumps([{}] * 1001).encode(), "application/json", 400, "got 1001"),
        (b"[{", "application/json", 400, "malformed JSON body"),
        (b'[{"request_id": "a", "request_id": "b"}]', "application/json", 400, "duplicate key 'request_id'"),
        (b'[{"value": "\\ud800"}]', "application/json", 400, "unpaired surrogate"),
        (b"[]", "text/plain", 415, "expected application/json"),
    ],
)
def test_a_malformed_batch_is_refused_whole(
    root: Path, server: HitlServer, body: bytes, content_type: str, status: int, detail: str
) -> None:
    event = hitl.new_event("label-ok", data_type=bool)
    reply = request(server.url, "POST", "/submit/batch", body, {"Content-Type": content_type})
    assert reply.status == status and detail in reply.json()["detail"]
    assert stored(root, event) is None


def test_a_cross_origin_batch_is_refused(root: Path, server: HitlServer) -> None:
    event = hitl.new_event("label-ok", data_type=bool)
    items = [{"request_id": event.request_id, "token": event.token, "value": True}]
    reply = batch(server.url, items, Origin="https://evil.example", **{"Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403 and "cross-origin" in reply.json()["detail"]
    assert stored(root, event) is None
    same = batch(server.url, items, **{"Sec-Fetch-Site": "same-origin"})
    assert same.status == 200 and same.json()["results"][0]["status"] == 200


def test_a_thousand_answers_fit_the_body_limit_and_more_bytes_do_not(root: Path, server: HitlServer) -> None:
    event = hitl.new_event("label-ok", data_type=bool)
    comment = "c" * 4000  # the longest comment: a batch of them is far above the 1 MiB of one answer
    items = [{"request_id": event.request_id, "token": event.token, "value": True, "comment": comment}] * 1000
    reply = batch(server.url, items)
    assert reply.status == 200
    assert [r["status"] for r in reply.json()["results"]] == [200] + [409] * 999
    for path, length in [("/submit/batch", (8 << 20) + 1), ("/submit/json", (1 << 20) + 1)]:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        with socket.create_connection(server.server_address[:2], timeout=30) as sock:
            sock.sendall(f"{head}Content-Length: {length}\r\n\r\n[".encode())
            reply = sock.makefile("rb").read()
        assert reply.startswith(b"HTTP/1.1 413 ") and b"exceeds the limit" in reply


# -- the command line ----------------------------------------------------------------------------------


def write_answers(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(item) + "\n\n" for item in items), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("through", ["root", "endpoint"])
def test_the_cli_answers_a_file(
    root: Path, server: HitlServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], through: str
) -> None:
    events = [hitl.new_event("label-ok", data_type=bool) for _ in range(3)]
    items = [{"request_id": e.request_id, "token": e.token, "value": True} for e in events[:2]]
    where = ["--root", str(root)] if through == "root" else ["--endpoint", server.url]
    assert main(["submit", "--batch", write_answers(tmp_path / "a.jsonl", items), *where]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [(r["request_id"], r["status"]) for r in results] == [(e.request_id, 200) for e in events[:2]]
    assert [e.wait() for e in events[:2]] == [True, True]
    assert stored(root, events[0])["via"] == "cli"  # type: ignore[index]
    capsys.readouterr()  # what the waits printed

    mixed = [*items, {"request_id": events[2].request_id, "value": False}]
    where += ["--token", events[2].token]  # for the line without one
    assert main(["submit", "--batch", write_answers(tmp_path / "b.jsonl", mixed), *where]) == 4  # already answered
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["status"] for r in results] == [409, 409, 200]
    assert stored(root, events[2])["value"] is False  # type: ignore[index]


def test_the_cli_refuses_a_bad_file_before_sending_anything(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = hitl.new_event("label-ok", data_type=bool)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"request_id": event.request_id, "value": True}) + "\n[1]\n", encoding="utf-8")
    assert main(["submit", "--batch", str(path), "--root", str(root)]) == 2
    assert "bad.jsonl:2: expected a JSON object, got list" in capsys.readouterr().err
    assert stored(root, event) is None
    assert main(["submit", "--batch", str(tmp_path / "missing.jsonl"), "--root", str(root)]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        main(["submit", event.request_id, "--root", str(root)])  # without --batch, VALUE is still required
    assert usage.value.code == 2 and "the following arguments are required: value" in capsys.readouterr().err
    assert main(["submit", event.request_id, "true", "--batch", str(path)]) == 2
    assert "--batch takes no TARGET or VALUE" in capsys.readouterr().err


def test_the_cli_reads_answers_from_stdin(root: Path) -> None:
    event = hitl.new_event("label-ok", data_type=bool)
    proc = python("-m", "flyteplugins.hitl", "submit", "--batch", "-", "--root", str(root), stdin=-1)
    out, _ = proc.communicate(json.dumps({"request_id": event.request_id, "value": True}) + "\n", timeout=60)
    assert proc.returncode == 0, out
    assert json.loads(out)["results"][0]["status"] == 200
    assert event.wait() is True


def test_two_reviewers_racing_over_one_group_answer_each_item_once(root: Path, proxied: HitlServer) -> None:
    events = hitl.new_events("label-ok", [{"n": n} for n in range(40)], data_type=bool, respondents=[ALICE, BOB])
    replies: dict[str, list[dict[str, Any]]] = {}

    def review(who: str, value: bool) -> None:
        items = [{"request_id": e.request_id, "value": value} for e in events]
        replies[who] = batch(proxied.url, items, who=who).json()["results"]

    racers = [threading.Thread(target=review, args=(ALICE, True)), threading.Thread(target=review, args=(BOB, False))]
    for t in racers:
        t.start()
    for t in racers:
        t.join(60)
    for n, event in enumerate(events):
        statuses = sorted([replies[ALICE][n]["status"], replies[BOB][n]["status"]])
        assert statuses == [200, 409], (n, statuses)
        winner = ALICE if replies[ALICE][n]["status"] == 200 else BOB
        assert stored(root, event) is not None
        assert (stored(root, event)["value"], stored(root, event)["identity"]) == (winner == ALICE, winner)  # type: ignore[index]


def test_five_hundred_answers_in_one_batch_reach_their_waits(
    root: Path, server: HitlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    events = hitl.new_events("label-ok", [{"n": n} for n in range(500)], data_type=bool, poll_interval_seconds=60)
    arrived: dict[str, float] = {}

    def consume() -> None:
        for event, _value in hitl.as_completed(events):
            arrived[event.request_id] = time.monotonic()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    items = [{"request_id": e.request_id, "token": e.token, "value": True} for e in events]
    started = time.monotonic()
    reply = batch(server.url, items)
    stored_all = time.monotonic()
    assert [r["status"] for r in reply.json()["results"]] == [200] * 500
    consumer.join(60)
    assert not consumer.is_alive() and len(arrived) == 500
    with capsys.disabled():
        print(
            f"\n500 answers in one batch (local root): stored in {stored_all - started:.2f} s; "
            f"the last wait returned {max(arrived.values()) - stored_all:+.2f} s after the reply"
        )


def test_five_hundred_answers_in_one_batch_on_s3(s3_root: str, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    store = Store(s3_root)
    httpd, thread = start_server(store)
    try:
        events = hitl.new_events("label-ok", [{"n": n} for n in range(500)], data_type=bool, poll_interval_seconds=60)
        items = [{"request_id": e.request_id, "token": e.token, "value": True} for e in events]
        started = time.monotonic()
        body = json.dumps(items).encode()
        reply = request(httpd.url, "POST", "/submit/batch", body, {"Content-Type": "application/json"}, timeout=120)
        took = time.monotonic() - started
        assert [r["status"] for r in reply.json()["results"]] == [200] * 500
        assert all(store.read_response(e.request_id) is not None for e in events[::50])
    finally:
        stop_server(httpd, thread)
    with capsys.disabled():
        print(f"\n500 answers in one batch on moto S3: stored in {took:.2f} s")
