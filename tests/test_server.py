"""The form server (`server.py`), exercised over real sockets: every endpoint, status code and limit.

Events are made with the public API (`hitl.new_event`) pointed at the test's server through
``FLYTE_HITL_ENDPOINT``, so the records are exactly what a task would write.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pydantic
import pytest
from conftest import Reply, post_json, python, read_line, request, until

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _html
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlHandler, HitlServer, make_server, start_server, stop_server

XSS_NAME = '<script>alert("name")</script>'
XSS_PROMPT = "<script>alert('prompt')</script><img src=x onerror=alert(1)> & \"quotes\""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

MakeEvent = Callable[..., hitl.Event[Any]]


@pytest.fixture
def make_event(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> MakeEvent:
    """Create events through the public API, served by the test's server (no embedded server)."""
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", server.url)

    def make(
        data_type: type = int, name: str = "question", prompt: str = "How many?", timeout: float = 3600
    ) -> hitl.Event[Any]:
        return hitl.new_event(name, data_type=data_type, prompt=prompt, timeout_seconds=timeout)

    return make


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Client mistakes never put a traceback in the log or on stderr."""
    caplog.set_level(logging.DEBUG, logger="flyteplugins")
    yield
    with_tracebacks = [r.getMessage() for r in caplog.records if r.exc_info is not None]
    assert with_tracebacks == []
    assert "Traceback" not in caplog.text
    assert "Traceback" not in capfd.readouterr().err


def answer(url: str, event: hitl.Event[Any], value: object, **extra: object) -> Reply:
    return post_json(url, {"request_id": event.request_id, "token": event.token, "value": value, **extra})


def submit_form(url: str, fields: dict[str, str]) -> Reply:
    return request(url, "POST", "/submit", urlencode(fields).encode(), FORM)


def form_path(event: hitl.Event[Any], token: str | None = None) -> str:
    return f"/form/{event.request_id}?token={quote(token if token is not None else event.token)}"


def status_path(event: hitl.Event[Any], token: str | None = None) -> str:
    return f"/status/{event.request_id}?token={quote(token if token is not None else event.token)}"


def raw_exchange(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def raw_status(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert match, reply[:200]
    return int(match.group(1))


def response_file(root: Path, event: hitl.Event[Any]) -> Path:
    return root / event.request_id / "response.json"


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def state(record: dict[str, Any]) -> str:
    """The state word of a ``/status`` record (waiting, answered, expired): its `state`, else its `status`."""
    return str(record.get("state", record["status"]))


# -- health and HEAD --------------------------------------------------------------------------------


def test_health(server: HitlServer) -> None:
    reply = request(server.url, "GET", "/health")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["status"] == "healthy"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/health", "/", "FORM"])
def test_head_gives_the_headers_of_get_without_a_body(server: HitlServer, make_event: MakeEvent, path: str) -> None:
    if path == "FORM":
        path = form_path(make_event())
    get = request(server.url, "GET", path)
    head = request(server.url, "HEAD", path)
    assert get.status == head.status == 200
    assert head.body == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0


# -- the form ---------------------------------------------------------------------------------------


# An int field is a number field with step 1 or a text field with the numeric keypad; likewise for floats.
@pytest.mark.parametrize(
    "data_type, any_of",
    [
        (int, [r'type="number"[^>]*step="1"', r'inputmode="numeric"']),
        (float, [r'type="number"[^>]*step="any"', r'inputmode="decimal"']),
        (str, [r'<input[^>]*name="value"[^>]*type="text"', r'<textarea[^>]*name="value"']),
        (bool, [r'name="value" value="true"[\s\S]*name="value" value="false"']),
    ],
)
def test_form_has_an_input_fitting_the_type(
    server: HitlServer, make_event: MakeEvent, data_type: type, any_of: list[str]
) -> None:
    event = make_event(data_type, prompt="Pick one, please")
    reply = request(server.url, "GET", form_path(event))
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    page = reply.text
    assert "Pick one, please" in page
    assert any(re.search(pattern, page) for pattern in any_of), page
    assert f'<input type="hidden" name="request_id" value="{event.request_id}">' in page
    assert f'<input type="hidden" name="token" value="{event.token}">' in page
    assert 'action="/submit"' in page


def test_html_pages_carry_security_headers(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    for path in ("/", form_path(event), form_path(event, "wrong")):
        headers = request(server.url, "GET", path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'sha256-" in csp and "unsafe" not in csp, "only the pages' own script, by its hash"
        assert "frame-ancestors 'none'" in csp
        assert "form-action 'self'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("token", ["", "wrong", "X" * 32])
def test_form_with_a_wrong_token_is_403_and_shows_no_form(
    server: HitlServer, make_event: MakeEvent, token: str
) -> None:
    event = make_event()
    reply = request(server.url, "GET", form_path(event, token))
    assert reply.status == 403
    assert event.token not in reply.text
    assert "<form" not in reply.text
    no_token = request(server.url, "GET", f"/form/{event.request_id}")
    assert no_token.status == 403


def test_an_unknown_event_and_a_wrong_token_get_the_same_reply(server: HitlServer, make_event: MakeEvent) -> None:
    # Without the token, a client cannot tell whether an event exists.
    event = make_event()

    def replies(request_id: str) -> list[tuple[int, bytes]]:
        got = [
            request(server.url, "GET", f"/form/{request_id}?token=guess"),
            request(server.url, "GET", f"/status/{request_id}?token=guess"),
            post_json(server.url, {"request_id": request_id, "token": "guess", "value": 1}),
            submit_form(server.url, {"request_id": request_id, "token": "guess", "value": "1"}),
        ]
        return [(r.status, r.body.replace(request_id.encode(), b"<id>")) for r in got]

    wrong_token = replies(event.request_id)
    assert [status for status, _ in wrong_token] == [403] * 4
    assert replies("never-made") == wrong_token


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc", "../x", "a.b", "%C3%BC", "", "a" * 129])
def test_form_with_a_malformed_id_is_400(server: HitlServer, bad: str) -> None:
    reply = request(server.url, "GET", f"/form/{bad}?token=abc")
    assert reply.status == 400


# -- POST /submit/json -------------------------------------------------------------------------------


def test_json_answer_is_stored_and_acknowledged(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event(int, name="integer_input_event")
    reply = answer(server.url, event, "42")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == "submitted"
    assert body["request_id"] == event.request_id
    assert body["value"] == 42
    assert body["data_type"] == "int"
    assert isinstance(body["message"], str) and body["message"]
    stored = json.loads(response_file(root, event).read_text())
    assert stored["status"] == "completed"
    assert stored["value"] == 42
    assert stored["via"] == "json"


@pytest.mark.parametrize("how", ["json", "form"])
def test_on_answer_gets_the_stored_outcome_once(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    handed: list[tuple[str, dict[str, Any]]] = []
    httpd, thread = start_server(store, on_answer=lambda request_id, response: handed.append((request_id, response)))
    try:
        monkeypatch.setenv("FLYTE_HITL_ENDPOINT", httpd.url)
        event = hitl.new_event("handed", data_type=int)
        fields = {"request_id": event.request_id, "token": event.token, "value": "3"}
        reply = answer(httpd.url, event, "3") if how == "json" else submit_form(httpd.url, fields)
        assert reply.status == 200
        again = answer(httpd.url, event, "4") if how == "json" else submit_form(httpd.url, {**fields, "value": "4"})
        assert again.status == 409
    finally:
        stop_server(httpd, thread)
    stored = json.loads(response_file(root, event).read_text())
    assert stored["value"] == 3
    assert handed == [(event.request_id, stored)], "once, with exactly what storage holds; not for the 409"


@pytest.mark.parametrize(
    "data_type, sent, stored",
    [(int, -3, -3), (float, "2.5", 2.5), (bool, "Yes", True), (bool, "OFF", False), (str, "  exact\ntext ", None)],
)
def test_json_answers_of_each_type(
    server: HitlServer, make_event: MakeEvent, data_type: type, sent: object, stored: object
) -> None:
    event = make_event(data_type)
    reply = answer(server.url, event, sent)
    assert reply.status == 200, reply.text
    expected = sent if stored is None else stored
    assert reply.json()["value"] == expected
    status = request(server.url, "GET", status_path(event)).json()
    assert status["response"]["value"] == expected


@pytest.mark.parametrize(
    "data_type, bad, type_name",
    [(int, "4.5", "int"), (int, "abc", "int"), (float, "nan", "float"), (bool, "ture", "bool"), (str, 5, "str")],
)
def test_json_bad_value_is_400_naming_value_and_type_and_writes_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path, data_type: type, bad: object, type_name: str
) -> None:
    event = make_event(data_type)
    reply = answer(server.url, event, bad)
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert repr(bad) in detail
    assert type_name in detail
    assert not response_file(root, event).exists()


def test_json_data_type_must_match_when_given(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event(int)
    reply = answer(server.url, event, 5, data_type="str")
    assert reply.status == 400
    assert "'str'" in reply.json()["detail"] and "'int'" in reply.json()["detail"]
    assert not response_file(root, event).exists()
    assert answer(server.url, event, 5, data_type="int").status == 200


@pytest.mark.parametrize("token", [None, "", "wrong", 12345])
def test_json_without_the_right_token_is_403_and_writes_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path, token: object
) -> None:
    event = make_event()
    payload: dict[str, object] = {"request_id": event.request_id, "value": 1}
    if token is not None:
        payload["token"] = token
    reply = post_json(server.url, payload)
    assert reply.status in (401, 403)
    assert "detail" in reply.json()
    assert not response_file(root, event).exists()


def test_client_supplied_paths_are_ignored(
    server: HitlServer, make_event: MakeEvent, root: Path, tmp_path: Path
) -> None:
    # The old plugin wrote the answer wherever the client's response_path pointed; here paths come
    # only from the validated request id.
    event = make_event()
    evil = tmp_path / "evil"
    reply = answer(
        server.url, event, 4, response_path=str(evil / "response.json"), request_path=str(evil / "request.json")
    )
    assert reply.status == 200
    assert not evil.exists()
    assert json.loads(response_file(root, event).read_text())["value"] == 4


@pytest.mark.parametrize("bad_id", ["../x", "../../etc/passwd", "a/b", "..", "", "ü", "a" * 129, None, 7])
def test_json_malformed_ids_are_400_and_nothing_is_written_anywhere(
    server: HitlServer, root: Path, tmp_path: Path, bad_id: object
) -> None:
    root.mkdir(exist_ok=True)
    before = tree(tmp_path)
    reply = post_json(server.url, {"request_id": bad_id, "token": "t", "value": 1})
    assert reply.status == 400
    assert "request_id" in reply.json()["detail"]
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"request_id": "x", ', b"\xff\xfe\x00", b"[" * 200_000 + b"]" * 200_000, b"null", b"[1,2]"],
    ids=["broken", "empty", "truncated", "binary", "deeply-nested", "null", "array"],
)
def test_json_malformed_bodies_are_400(server: HitlServer, body: bytes) -> None:
    reply = request(server.url, "POST", "/submit/json", body, {"Content-Type": "application/json"})
    assert reply.status == 400
    assert "detail" in reply.json()


@pytest.mark.parametrize("field", ["token", "value", "comment"])
@pytest.mark.parametrize("spelling", ["escape", "utf-8", "utf-16", "utf-32"])
def test_json_with_an_unpaired_surrogate_is_400_and_writes_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path, field: str, spelling: str
) -> None:
    # JSON can spell a lone surrogate as an escape, and json.loads also lets one through from bytes
    # that encode it in UTF-8, UTF-16 or UTF-32.
    event = make_event(str)
    payload = {"request_id": event.request_id, "token": event.token, "value": "ok", field: "x\ud800"}
    if spelling == "escape":
        body = json.dumps(payload).encode()
    else:
        body = json.dumps(payload, ensure_ascii=False).encode(spelling, "surrogatepass")
    reply = request(server.url, "POST", "/submit/json", body, {"Content-Type": "application/json"})
    if field == "token":  # checked first: a token that is not ASCII is a wrong token
        assert reply.status == 403, reply.body
    else:
        assert reply.status == 400, reply.body
        assert "unpaired surrogate" in reply.json()["detail"]
    assert not response_file(root, event).exists()
    assert answer(server.url, event, "fine").status == 200


@pytest.mark.parametrize("depth", [600, 100_000])
def test_a_deeply_nested_value_is_400_and_writes_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    # 600 levels parse as JSON but are deeper than checking the value could recurse; 100,000 do not parse.
    event = make_event(list[int])
    value = "[" * depth + "]" * depth
    body = f'{{"request_id": "{event.request_id}", "token": "{event.token}", "value": {value}}}'.encode()
    reply = request(server.url, "POST", "/submit/json", body, {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert "nested too deeply" in reply.json()["detail"] or "recursion" in reply.json()["detail"]
    assert not response_file(root, event).exists()
    assert not [r for r in caplog.records if r.exc_info]
    assert answer(server.url, event, [1, 2]).status == 200


def test_json_without_a_value_is_400(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event()
    reply = post_json(server.url, {"request_id": event.request_id, "token": event.token})
    assert reply.status == 400
    assert "value" in reply.json()["detail"]
    assert not response_file(root, event).exists()


def test_second_answer_is_409_and_the_first_stays(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event()
    assert answer(server.url, event, 1).status == 200
    first = response_file(root, event).read_bytes()
    second = answer(server.url, event, 2)
    assert second.status == 409
    assert "detail" in second.json()
    form = submit_form(server.url, {"request_id": event.request_id, "token": event.token, "value": "3"})
    assert form.status == 409
    assert "Already answered" in form.text
    assert response_file(root, event).read_bytes() == first
    assert request(server.url, "GET", status_path(event)).json()["response"]["value"] == 1


def test_64_concurrent_answers_exactly_one_wins(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event()
    barrier = threading.Barrier(64)
    replies: dict[int, Reply] = {}

    def send(i: int) -> None:
        barrier.wait()
        replies[i] = answer(server.url, event, i)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in replies.values())
    assert statuses == [200] + [409] * 63
    (winner,) = [i for i, r in replies.items() if r.status == 200]
    assert replies[winner].json()["value"] == winner
    assert json.loads(response_file(root, event).read_text())["value"] == winner


# -- expiry -----------------------------------------------------------------------------------------


def test_expired_event_refuses_answers_with_410_and_only_the_expiry_mark_is_written(
    server: HitlServer, make_event: MakeEvent, root: Path
) -> None:
    event = make_event(timeout=0.05)
    time.sleep(0.1)
    reply = answer(server.url, event, 7)
    assert reply.status == 410
    assert "expired" in reply.json()["detail"]
    assert tree(root / event.request_id) == ["request.json", "response.json"]
    mark = json.loads(response_file(root, event).read_text())
    assert mark["status"] == "expired"
    assert "value" not in mark
    status = request(server.url, "GET", status_path(event)).json()
    assert status["status"] == "expired"
    page = request(server.url, "GET", form_path(event))
    assert page.status == 200
    assert "Expired" in page.text and "<form" not in page.text
    form = submit_form(server.url, {"request_id": event.request_id, "token": event.token, "value": "7"})
    assert form.status == 410
    assert json.loads(response_file(root, event).read_text()) == mark


def test_expired_but_unmarked_event_shows_as_expired(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event(timeout=0.05)
    time.sleep(0.1)
    assert request(server.url, "GET", status_path(event)).json()["status"] == "expired"
    assert "<form" not in request(server.url, "GET", form_path(event)).text
    assert not response_file(root, event).exists(), "reading never writes"


# -- POST /submit (the HTML form) ---------------------------------------------------------------------


def test_form_answer_shows_a_success_page(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event(float)
    reply = submit_form(server.url, {"request_id": event.request_id, "token": event.token, "value": "2.5"})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "2.5" in reply.text
    stored = json.loads(response_file(root, event).read_text())
    assert stored["value"] == 2.5 and stored["via"] == "form"


def test_form_bad_value_re_renders_the_form_with_the_error_and_the_value_kept(
    server: HitlServer, make_event: MakeEvent, root: Path
) -> None:
    event = make_event(int)
    reply = submit_form(server.url, {"request_id": event.request_id, "token": event.token, "value": "4.5"})
    assert reply.status == 400
    page = reply.text
    assert "<form" in page
    assert 'value="4.5"' in page, "the value typed is kept"
    assert "Enter a whole number" in page, "the error in the words of the field's hint"
    assert f'name="token" value="{event.token}"' in page
    assert not response_file(root, event).exists()


def test_form_bool_refuses_an_unknown_word(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event(bool)
    reply = submit_form(server.url, {"request_id": event.request_id, "token": event.token, "value": "ture"})
    assert reply.status == 400
    assert "expected bool" in reply.text
    assert not response_file(root, event).exists()


@pytest.mark.parametrize(
    "fields, status",
    [
        ({"token": "wrong", "value": "1"}, 403),
        ({"value": "1"}, 403),
        ({"request_id": "../x", "token": "t", "value": "1"}, 400),
        ({"request_id": "no-such-event", "token": "t", "value": "1"}, 403),
    ],
)
def test_form_refusals_write_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path, fields: dict[str, str], status: int
) -> None:
    event = make_event()
    fields = {"request_id": event.request_id, **fields}
    reply = submit_form(server.url, fields)
    assert reply.status == status
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert event.token not in reply.text
    assert not response_file(root, event).exists()


def test_form_needs_a_form_content_type(server: HitlServer, make_event: MakeEvent, root: Path) -> None:
    event = make_event()
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 1}).encode()
    reply = request(server.url, "POST", "/submit", body, {"Content-Type": "application/json"})
    assert reply.status == 415
    assert not response_file(root, event).exists()


def test_form_with_too_many_fields_is_400(server: HitlServer) -> None:
    body = "&".join(f"f{i}=x" for i in range(100)).encode()
    assert request(server.url, "POST", "/submit", body, FORM).status == 400


# -- escaping -----------------------------------------------------------------------------------------


def _assert_escaped(page: str) -> None:
    page = page.replace(f"<script>{_html._SCRIPT}</script>", "")
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;" in page


def test_prompt_and_name_are_escaped_in_every_page(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event(str, name=XSS_NAME, prompt=XSS_PROMPT)
    fields = {"request_id": event.request_id, "token": event.token}

    form = request(server.url, "GET", form_path(event))
    assert form.status == 200
    _assert_escaped(form.text)
    index = request(server.url, "GET", "/")
    _assert_escaped(index.text)

    success = submit_form(server.url, {**fields, "value": "<script>alert('value')</script>"})
    assert success.status == 200
    _assert_escaped(success.text)

    already = request(server.url, "GET", form_path(event))
    assert "Already answered" in already.text
    _assert_escaped(already.text)
    again = submit_form(server.url, {**fields, "value": "second"})
    assert again.status == 409
    _assert_escaped(again.text)
    _assert_escaped(request(server.url, "GET", "/").text)


def test_escaping_in_the_error_and_expired_pages(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event(int, name=XSS_NAME, prompt=XSS_PROMPT)
    error = submit_form(
        server.url, {"request_id": event.request_id, "token": event.token, "value": '"><script>alert(1)</script>'}
    )
    assert error.status == 400
    _assert_escaped(error.text)

    expiring = make_event(int, name=XSS_NAME, prompt=XSS_PROMPT, timeout=0.05)
    time.sleep(0.1)
    expired = request(server.url, "GET", form_path(expiring))
    assert "Expired" in expired.text
    _assert_escaped(expired.text)
    refused = submit_form(server.url, {"request_id": expiring.request_id, "token": expiring.token, "value": "1"})
    assert refused.status == 410
    _assert_escaped(refused.text)


# -- index and status --------------------------------------------------------------------------------


def test_index_lists_events_without_tokens_or_links(server: HitlServer, make_event: MakeEvent) -> None:
    events = [make_event(name=f"event-number-{i}") for i in range(3)]
    answer(server.url, events[0], 1)
    reply = request(server.url, "GET", "/")
    assert reply.status == 200
    page = reply.text
    for event in events:
        assert event.name in page
        assert event.token not in page
    assert "token=" not in page
    assert "/form/" not in page


def test_index_of_an_empty_root(server: HitlServer) -> None:
    reply = request(server.url, "GET", "/")
    assert reply.status == 200
    assert "<html" in reply.text


def test_status_never_echoes_the_token(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event(str, prompt="Say something")
    pending = request(server.url, "GET", status_path(event))
    assert pending.status == 200
    body = pending.json()
    assert body["request_id"] == event.request_id
    assert body["state"] == "waiting"
    assert body["response"] is None
    assert body["request"]["prompt"] == "Say something"
    assert body["request"]["data_type"] == "str"
    assert "token" not in body["request"]
    assert event.token not in pending.text

    answer(server.url, event, "hello")
    completed = request(server.url, "GET", status_path(event))
    assert completed.json()["state"] == "answered"
    assert completed.json()["response"]["value"] == "hello"
    assert event.token not in completed.text


class Deploy(pydantic.BaseModel):
    replicas: int

    @pydantic.field_validator("replicas")
    @classmethod
    def odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("replicas must be odd, to break ties")
        return value


def test_once_the_task_refuses_an_answer_every_status_says_waiting_and_why(
    remote: str, server: HitlServer, root: Path
) -> None:
    """`remote` (another process, without the task's classes) stores an answer that only the task's own
    validator refuses. Once the task has refused it, `/status` with and without `wait`, on that server
    and on another, and `hitl status --wait` through the server and through the root say waiting, and why."""
    event = hitl.new_event("deploy", data_type=Deploy, timeout_seconds=120, poll_interval_seconds=0.1)
    ids = {"request_id": event.request_id, "token": event.token}
    assert post_json(remote, {**ids, "value": {"replicas": 2}}).status == 200, "the schema alone: stored"
    result: list[Any] = []
    waiting = threading.Thread(target=lambda: result.append(event.wait()), daemon=True)
    waiting.start()
    try:
        until(lambda: (root / event.request_id / "refused.json").exists(), "the task refuses the answer", timeout=60)
        for base in (remote, server.url):
            for query in ("", "&wait=2"):
                record = request(base, "GET", status_path(event) + query).json()
                assert state(record) == "waiting" and record["response"] is None, (base, query, record)
                assert "replicas must be odd" in record["refused"]["error"]
        for where in (["--endpoint", remote, "--token", event.token], ["--root", str(root)]):
            proc = python("-m", "flyteplugins.hitl", "status", event.request_id, *where, "--wait", "2")
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 7, out  # still waiting
            assert "replicas must be odd" in json.loads(out)["refused"]["error"]
    finally:
        post_json(remote, {**ids, "value": {"replicas": 3}})
        waiting.join(60)
    assert result == [Deploy(replicas=3)]


def test_status_refusals(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    assert request(server.url, "GET", status_path(event, "wrong")).status == 403
    assert request(server.url, "GET", f"/status/{event.request_id}").status == 403
    assert request(server.url, "GET", "/status/never-made?token=x").status == 403
    assert request(server.url, "GET", "/status/..%2Fx?token=x").status == 400


# -- methods, paths, bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/submit/json", "POST"),
        ("DELETE", "/submit/json", "POST"),
        ("GET", "/submit/json", "POST"),
        ("GET", "/submit", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
        ("PUT", "/form/abc", "GET, HEAD"),
        ("FOO", "/status/abc", "GET, HEAD"),
        ("PATCH", "/health", "GET, HEAD"),
        ("OPTIONS", "/submit", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(server: HitlServer, method: str, path: str, allow: str) -> None:
    reply = request(server.url, method, path)
    assert reply.status == 405
    assert reply.headers["allow"] == allow
    assert method in reply.json()["detail"]


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/nope"), ("GET", "/form"), ("FOO", "/x/y")])
def test_unknown_path_is_404(server: HitlServer, method: str, path: str) -> None:
    reply = request(server.url, method, path)
    assert reply.status == 404
    assert "detail" in reply.json()


def test_body_over_one_mebibyte_is_413_and_writes_nothing(
    server: HitlServer, make_event: MakeEvent, root: Path
) -> None:
    event = make_event()
    head = (
        "POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {(1 << 20) + 1}\r\n\r\n"
    ).encode()
    reply = raw_exchange(server.url, head + b"{" * 1000)
    assert raw_status(reply) == 413
    assert b"exceeds" in reply
    assert not response_file(root, event).exists()


def test_body_of_exactly_one_mebibyte_is_accepted(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 9}).encode()
    body += b" " * ((1 << 20) - len(body))
    reply = request(server.url, "POST", "/submit/json", body, {"Content-Type": "application/json"})
    assert reply.status == 200
    assert reply.json()["value"] == 9


@pytest.mark.parametrize(
    "headers",
    ["", "Transfer-Encoding: chunked\r\n"],
    ids=["no-content-length", "chunked"],
)
def test_body_without_content_length_is_411(
    server: HitlServer, make_event: MakeEvent, root: Path, headers: str
) -> None:
    event = make_event()
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 1}).encode()
    data = f"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}\r\n".encode()
    if headers:
        data += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reply = raw_exchange(server.url, data)
    assert raw_status(reply) == 411
    assert not response_file(root, event).exists()


@pytest.mark.parametrize("length", ["-1", "abc", "1e3"])
def test_invalid_content_length_is_400(server: HitlServer, length: str) -> None:
    data = f"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()
    assert raw_status(raw_exchange(server.url, data)) == 400


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "bad-version", "huge-request-line", "huge-header"],
)
def test_malformed_requests_get_an_error_reply_and_no_traceback(server: HitlServer, data: bytes, status: int) -> None:
    reply = raw_exchange(server.url, data)
    assert raw_status(reply) == status
    assert reply.endswith(b"}"), "a JSON detail, not the standard library's HTML error page"
    assert request(server.url, "GET", "/health").status == 200


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /health HTTP/1.1\r\nNo-Colon-Here\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n: no name\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX-A: 1\r\n folded: 2\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n" + b"X-H: v\r\n" * 101 + b"\r\n", 431),
        (b"GET /health\r\n\r\n", 400),
        (b"GET /health HTTP/1.2\r\n\r\n", 400),
        (b"GET / health HTTP/1.1\r\n\r\n", 400),
    ],
    ids=["no-colon", "space-in-name", "no-name", "folded", "101-headers", "no-version", "http-1.2", "four-words"],
)
def test_malformed_header_and_request_lines_are_refused_and_close(server: HitlServer, data: bytes, status: int) -> None:
    reply = raw_exchange(server.url, data)
    assert raw_status(reply) == status
    assert b"\r\nConnection: close\r\n" in reply
    assert reply.endswith(b"}")


@pytest.mark.parametrize(
    "data, replies",
    [
        (b"GET /health HTTP/1.0\r\n\r\nGET /health HTTP/1.0\r\n\r\n", 1),
        (b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n", 2),
        (
            b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
            b"GET /health HTTP/1.1\r\n\r\n",
            2,
        ),
        (b"GET /health HTTP/1.1\r\nconnection:   CLOSE  \r\n\r\nGET /health HTTP/1.1\r\n\r\n", 1),
    ],
    ids=["1.0-closes", "1.0-keep-alive", "1.1-keeps-until-close", "header-names-any-case"],
)
def test_connections_stay_open_as_the_version_and_connection_header_say(
    server: HitlServer, data: bytes, replies: int
) -> None:
    reply = raw_exchange(server.url, data)
    assert reply.count(b'{"status": "healthy",') == replies
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == replies


def test_expect_100_continue_gets_an_interim_reply_before_the_answer(
    server: HitlServer, make_event: MakeEvent, root: Path
) -> None:
    event = make_event()
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 5}).encode()
    head = (
        "POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reply = raw_exchange(server.url, head.encode() + body)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert json.loads(response_file(root, event).read_text())["value"] == 5


# -- connections ---------------------------------------------------------------------------------------


def test_a_burst_of_64_simultaneous_connections_is_accepted(server: HitlServer) -> None:
    host, port = server.server_address[:2]
    # Connect all 64 before any request is sent: they all wait in the listen backlog at once.
    socks = [socket.create_connection((str(host), port), timeout=10) for _ in range(64)]
    try:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        replies = []
        for sock in socks:
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            replies.append(b"".join(chunks))
    finally:
        for sock in socks:
            sock.close()
    assert [raw_status(r) for r in replies] == [200] * 64
    assert all(r.rpartition(b"\r\n\r\n")[2].startswith(b'{"status": "healthy",') for r in replies)


def test_64_simultaneous_clients_all_get_answers(server: HitlServer, make_event: MakeEvent) -> None:
    events = [make_event(name=f"burst-{i}") for i in range(64)]
    barrier = threading.Barrier(64)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def client(event: hitl.Event[Any]) -> None:
        barrier.wait()
        try:
            statuses.append(request(server.url, "GET", form_path(event)).status)
        except Exception as e:  # a reset would show up here
            errors.append(e)

    threads = [threading.Thread(target=client, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert statuses == [200] * 64


def test_keep_alive_serves_many_requests_on_one_connection(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 5})
    steps: list[tuple[str, str, str | None, int, bool]] = [
        ("GET", "/health", None, 200, True),
        ("HEAD", "/health", None, 200, False),
        ("GET", "/nope", None, 404, True),
        ("HEAD", "/nope", None, 404, False),
        ("GET", "/health", None, 200, True),
        ("GET", status_path(event), None, 200, True),
        ("POST", "/submit/json", body, 200, True),
        ("POST", "/submit/json", body, 409, True),
        ("PUT", "/health", None, 405, True),
        ("GET", form_path(event), None, 200, True),
        ("GET", status_path(event), None, 200, True),
    ]
    try:
        first_sock = None
        for method, path, payload, status, has_body in steps:
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == status, (method, path, data)
            assert bool(data) == has_body, (method, path)
            assert resp.getheader("Connection") != "close"
            first_sock = first_sock or conn.sock
            assert conn.sock is first_sock, f"the connection was reopened before {method} {path}"
    finally:
        conn.close()
    assert request(server.url, "GET", status_path(event)).json()["response"]["value"] == 5


def test_clients_that_vanish_mid_request_do_not_break_the_server(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    host, port = server.server_address[:2]
    partials = [
        b"",  # connect and close
        b"GET /hea",  # half a request line
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never finished
        b'POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200\r\n\r\n{"request_id": ',  # short body
        b"GET " + form_path(event).encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # leaves before the reply
    ]
    for data in partials:
        sock = socket.create_connection((str(host), port), timeout=10)
        if data:
            sock.sendall(data)
        # SO_LINGER 0 makes close() send a reset, the rudest way a client can leave.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        assert request(server.url, "GET", "/health").status == 200
    assert answer(server.url, event, 3).status == 200


def test_a_slow_client_does_not_block_others(server: HitlServer, make_event: MakeEvent) -> None:
    event = make_event()
    host, port = server.server_address[:2]
    slow = [socket.create_connection((str(host), port), timeout=10) for _ in range(3)]
    try:
        slow[0].sendall(b"GET /health HTTP/1.1\r\n")  # and never finishes
        slow[1].sendall(
            b"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"
        )  # body stalls
        for _ in range(5):
            assert request(server.url, "GET", "/health").status == 200
        assert answer(server.url, event, 11).status == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_client_that_does_not_read_its_replies_does_not_block_others(
    server: HitlServer, make_event: MakeEvent
) -> None:
    """Pipelined form GETs whose replies are never read fill the socket buffers until the server's
    send blocks; its thread must not hold anything the other clients need meanwhile."""
    event = make_event()
    request_bytes = f"GET {form_path(event)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the buffers fill sooner
    hog.connect(server.server_address[:2])
    hog.settimeout(2)
    try:
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 64 << 20:  # until our own send blocks too: the server has stopped reading
                sent += hog.send(request_bytes * 64)
        assert sent < 64 << 20, "the server kept reading requests: its sends never blocked"
        time.sleep(0.5)  # the server thread is now blocked sending a reply nobody reads
        # Blocked behind it, these would wait for the server's 10 s write deadline; the client gives up at 10 s.
        assert request(server.url, "GET", "/health").status == 200
        assert answer(server.url, event, 5).status == 200
    finally:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        hog.close()


@pytest.fixture
def quick_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """A handler timeout of half a second for servers started after this fixture."""
    monkeypatch.setattr(HitlHandler, "timeout", 0.5)
    return 0.5


@pytest.fixture
def trickle_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """A handler timeout of two seconds for servers started after this fixture: room for a busy
    machine between the parts of a trickled request."""
    monkeypatch.setattr(HitlHandler, "timeout", 2.0)
    return 2.0


def _closed_after(sock: socket.socket, start: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes `sock`, and how long since `start` that took (taken
    before connecting, so the server's timer cannot have started earlier)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # nothing at all
        b"GET /hea",  # half a request line
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never finished
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc",  # half a header line
        b"GET /health HTTP/1.1\r\n\r\n",  # one whole request, then silence on a keep-alive connection
    ],
    ids=["silent", "half-request-line", "unfinished-headers", "half-header-line", "idle-keep-alive"],
)
def test_a_stalled_connection_is_closed_after_the_handler_timeout_without_a_reply_to_half_a_request(
    quick_timeout: float, server: HitlServer, sent: bytes
) -> None:
    start = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(sent)
        received, waited = _closed_after(sock, start)
    complete = sent.endswith(b"\r\n\r\n")
    assert raw_status(received) == 200 if complete else received == b""
    assert quick_timeout <= waited < quick_timeout + 5
    assert request(server.url, "GET", "/health").status == 200


def test_a_body_that_stalls_gets_a_400_saying_how_much_came(quick_timeout: float, server: HitlServer) -> None:
    start = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
        received, waited = _closed_after(sock, start)
    assert raw_status(received) == 400
    assert b"request body ended after 1 of 1000 bytes" in received
    assert b"Connection: close" in received
    assert quick_timeout <= waited < quick_timeout + 5


def test_a_request_still_trickling_in_at_the_deadline_is_closed(trickle_timeout: float, server: HitlServer) -> None:
    # Each byte comes well within the timeout, but the whole request must come within it too.
    start = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while not closed and time.monotonic() - start < trickle_timeout + 20:
            time.sleep(trickle_timeout / 8)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                sock.settimeout(0.01)
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionError:
                closed = True
            sock.settimeout(30)
        waited = time.monotonic() - start
    assert closed, "the trickling connection was never closed"
    assert waited >= trickle_timeout
    assert request(server.url, "GET", "/health").status == 200


def test_a_request_sent_whole_in_time_is_served_though_it_came_in_pieces(
    trickle_timeout: float, server: HitlServer
) -> None:
    request_bytes = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        for i in range(0, len(request_bytes), 16):
            sock.sendall(request_bytes[i : i + 16])
            time.sleep(0.02)
        received, _ = _closed_after(sock, time.monotonic())
    assert raw_status(received) == 200


# -- the connection limit ------------------------------------------------------------------------------


@pytest.fixture
def small_server(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[HitlServer]:
    """A server that serves at most 4 connections at once."""
    monkeypatch.setenv("FLYTE_HITL_MAX_CONNECTIONS", "4")
    httpd, thread = start_server(store)
    yield httpd
    stop_server(httpd, thread)


def _connect(httpd: HitlServer, n: int) -> list[socket.socket]:
    """`n` connections that send nothing, each one accepted and waiting for its request."""
    socks = [socket.create_connection(httpd.server_address[:2], timeout=10) for _ in range(n)]
    until(lambda: len(httpd._waiting) >= n, f"{n} connections waiting")
    return socks


def test_over_the_limit_the_connection_waiting_longest_makes_room(small_server: HitlServer) -> None:
    idle = _connect(small_server, 4)
    try:
        assert request(small_server.url, "GET", "/health").status == 200
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b"", "the connection waiting longest is closed, without a reply"
        for sock in idle[1:]:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)
    finally:
        for sock in idle:
            sock.close()


def test_over_the_limit_with_every_connection_busy_a_new_one_gets_503(
    small_server: HitlServer, make_event: MakeEvent, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Four long-polls keep every connection busy with a request: nothing to make room with.
    small_server.watch.most = 4  # here every connection may long-poll
    event = make_event()
    target = status_path(event) + "&wait=30"
    polls = [threading.Thread(target=request, args=(small_server.url, "GET", target)) for _ in range(4)]
    for poll in polls:
        poll.start()
    watch = small_server.site.watch
    until(lambda: sum(w.count for w in watch._watched.values()) == 4, "four long-polls")
    try:
        reply = raw_exchange(small_server.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert raw_status(reply) == 503
        assert b"Retry-After: 1" in reply and b"connection limit" in reply
        assert "at the limit of 4 connections (FLYTE_HITL_MAX_CONNECTIONS)" in caplog.text
    finally:
        hitl.submit(event.request_id, 1, root=str(root))  # the polls find it and end
        for poll in polls:
            poll.join(30)
    assert request(small_server.url, "GET", "/health").status == 200


def test_long_polls_past_their_share_of_the_connections_are_answered_at_once(
    small_server: HitlServer, make_event: MakeEvent, root: Path
) -> None:
    event = make_event()
    target = status_path(event) + "&wait=30"
    polls = [threading.Thread(target=request, args=(small_server.url, "GET", target, None, None, 60)) for _ in range(2)]
    for poll in polls:
        poll.start()
    until(lambda: small_server.watch._held == 2, "two long-polls held: half of the four connections")
    try:
        third = request(small_server.url, "GET", target)  # a held one would outlast this client's 10 s
        assert third.status == 200 and state(third.json()) == "waiting"
        assert request(small_server.url, "GET", "/health").status == 200
    finally:
        hitl.submit(event.request_id, 1, root=str(root))  # the polls find it and end
        for poll in polls:
            poll.join(30)


def _still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed `sock` yet (its TCP state is still ESTABLISHED)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


def test_connections_that_stop_reading_their_replies_are_closed_after_the_write_deadline(
    small_server: HitlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HitlHandler, "write_timeout", 1.0)
    hogs = []
    try:
        for _ in range(small_server.max_connections):  # every connection, each pipelining without reading
            hog = socket.socket()
            hogs.append(hog)
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.settimeout(10)
            hog.connect(small_server.server_address[:2])
            hog.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 1000)
        # Closed 1 s after a reply could not be sent; the handler timeout (30 s) would come too late.
        until(lambda: not any(_still_open(hog) for hog in hogs), "every connection that stopped reading closed", 20)
        assert request(small_server.url, "GET", "/health").status == 200
    finally:
        for hog in hogs:
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            hog.close()


def test_a_bad_trusted_proxy_setting_is_a_configuration_error(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_TRUSTED_PROXY", "maybe")
    with pytest.raises(hitl.ConfigurationError, match="FLYTE_HITL_TRUSTED_PROXY"):
        make_server(store)


@pytest.mark.parametrize("value", ["0", "-1", "many", "1e3"])
def test_a_bad_connection_limit_is_a_configuration_error(
    store: Store, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLYTE_HITL_MAX_CONNECTIONS", value)
    with pytest.raises(hitl.ConfigurationError, match="FLYTE_HITL_MAX_CONNECTIONS"):
        make_server(store)


# -- storage failures ------------------------------------------------------------------------------------


def test_storage_failure_is_a_reply_not_a_dropped_connection(tmp_path: Path) -> None:
    # A root that is a file: no retry can fix it, so 500 without Retry-After (an outage is 503:
    # test_s3.py). The log says what is wrong; the client is not told where the root is.
    broken_root = tmp_path / "a-file"
    broken_root.write_text("not a directory")
    store = Store(str(broken_root), sleep=lambda seconds: None)
    httpd, thread = start_server(store)
    try:
        for path in ("/status/some-event?token=t", "/form/some-event?token=t"):
            reply = request(httpd.url, "GET", path)
            assert reply.status == 500, reply.body
            assert not reply.headers.get("retry-after")
            assert str(broken_root) not in reply.text, "clients are not told where the root is"
        reply = post_json(httpd.url, {"request_id": "some-event", "token": "t", "value": 1})
        assert reply.status == 500
    finally:
        stop_server(httpd, thread)


def test_the_access_log_never_shows_a_token(
    server: HitlServer, make_event: MakeEvent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flyteplugins.hitl.server")
    event = make_event()
    assert request(server.url, "GET", form_path(event)).status == 200
    assert request(server.url, "GET", status_path(event)).status == 200
    assert request(server.url, "GET", form_path(event, "a-wrong-token-Z9")).status == 403
    malformed = f"GET /form/{event.request_id}?x=1&token={event.token} HTTP/1.1 extra\r\n\r\n".encode()
    assert raw_status(raw_exchange(server.url, malformed)) == 400
    assert answer(server.url, event, 3).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.server"]
    assert len(lines) == 5
    assert not [line for line in lines if event.token in line or "a-wrong-token-Z9" in line], lines
    assert f'"GET /form/{event.request_id}?... HTTP/1.1" 200' in lines[0]
    assert f'"GET /status/{event.request_id}?... HTTP/1.1" 200' in lines[1]


# -- framing (RFC 9112 §6.3): one reply per ambiguous request, and the connection closes ---------------

SMUGGLED = b"GET /health?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _post_with(headers: str, body: bytes) -> bytes:
    head = f"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}\r\n"
    return head.encode("utf-8" if "\u0662" in headers else "latin-1") + body


@pytest.mark.parametrize(
    "data, status",
    [
        (_post_with("Content-Length: 2\r\nContent-Length: 48\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 48\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 2\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 2, 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Transfer-Encoding: gzip\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Transfer-Encoding: identity\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED), 411),
        (_post_with("Transfer-Encoding: gzip\r\n", b"{}" + SMUGGLED), 411),
        (_post_with("Content-Length: 1_0\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: +2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: \x0b2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 2\xa0\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: \u0662\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 0x2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("Content-Length: 2\rX: 1\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("X-A: 1\rContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("X-A: 1\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (_post_with("X-A: 1\x00\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED), 400),
        (b"GET /health HTTP/1.1\r\nHost: x\n\r\n" + SMUGGLED, 400),
        (b"GET /health HTTP/1.1\n\r\n" + SMUGGLED, 400),
        (b"GET /health\rHTTP/1.1\r\n\r\n" + SMUGGLED, 400),
        (b"GET /health HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n" + SMUGGLED, 400),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    ],
    ids=[
        "two-lengths",
        "two-lengths-reversed",
        "identical-lengths",
        "length-list",
        "gzip-and-length",
        "length-and-chunked",
        "identity-and-length",
        "chunked-alone",
        "gzip-alone",
        "underscore",
        "plus",
        "vertical-tab",
        "nbsp",
        "arabic-digit",
        "hex",
        "bare-cr-after-length",
        "bare-cr-hides-length",
        "bare-lf-hides-length",
        "nul",
        "bare-lf-header-line",
        "bare-lf-request-line",
        "bare-cr-request-line",
        "twenty-digits",
        "two-hosts",
    ],
)
def test_an_ambiguous_request_gets_one_reply_and_the_connection_closes(
    server: HitlServer, data: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flyteplugins.hitl.server")
    reply = raw_exchange(server.url, data)
    assert raw_status(reply) == status
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1, reply
    assert b"\r\nConnection: close\r\n" in reply
    assert reply.endswith(b"}")
    assert not [r for r in caplog.records if "smuggled" in r.getMessage()]


def test_a_malformed_request_after_a_head_gets_its_body(server: HitlServer) -> None:
    data = b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\nBad Name: x\r\n\r\n"
    reply = raw_exchange(server.url, data)
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert raw_status(head) == 200
    error_head, _, error_body = rest.partition(b"\r\n\r\n")
    assert raw_status(error_head) == 400
    length = int(re.search(rb"Content-Length: (\d+)", error_head).group(1))  # type: ignore[union-attr]
    assert len(error_body) == length > 0


def test_on_answer_that_raises_after_the_reply_sends_no_second_reply(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request_id: str, response: dict[str, Any]) -> None:
        raise RuntimeError("waiter broke")

    httpd, thread = start_server(store, on_answer=broken)
    try:
        monkeypatch.setenv("FLYTE_HITL_ENDPOINT", httpd.url)
        event = hitl.new_event("handed", data_type=int)
        body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 3}).encode()
        head = f"POST /submit/json HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        reply = raw_exchange(httpd.url, head.encode() + b"Connection: close\r\n\r\n" + body)
    finally:
        stop_server(httpd, thread)
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1, reply
    assert raw_status(reply) == 200
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        f"handing the answer to {event.request_id} to its waiter failed"
    ]
    caplog.clear()  # the traceback of our own bug is expected here


def test_a_header_section_over_64_kib_is_431(server: HitlServer) -> None:
    lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 8000) for i in range(9))
    reply = raw_exchange(server.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n")
    assert raw_status(reply) == 431
    assert b"header section" in reply
    under = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 7000) for i in range(9))
    assert raw_status(raw_exchange(server.url, b"GET /health HTTP/1.0\r\n" + under + b"\r\n")) == 200


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_every_other_method_gets_405_with_allow_and_keeps_the_connection(server: HitlServer, method: str) -> None:
    text = f"{method} /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(server.url, text.encode())
    assert raw_status(reply) == 405
    assert b"\r\nAllow: GET, HEAD\r\n" in reply
    assert reply.rpartition(b"\r\n\r\n")[2].startswith(b'{"status": "healthy",')


# -- the embedded server: its own Host names, and replies finished at exit --------------------------------


def test_a_server_bound_to_loopback_answers_only_loopback_names(server: HitlServer) -> None:
    port = server.server_address[1]
    for host, status in (
        (f"127.0.0.1:{port}", 200),
        (f"localhost:{port}", 200),
        ("localhost:9000", 200),  # a tunnel or port-forward to this port
        ("evil.example", 421),
        (f"127.0.0.1.evil.example:{port}", 421),
    ):
        data = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        assert raw_status(raw_exchange(server.url, data)) == status, host
    assert request(server.url, "GET", "/health").status == 200, "http.client sends the address it used"


def test_behind_a_trusted_proxy_a_loopback_server_answers_any_host(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_HITL_TRUSTED_PROXY", "1")
    httpd, thread = start_server(store)
    try:
        data = b"GET / HTTP/1.1\r\nHost: hitl.example.com\r\nConnection: close\r\n\r\n"
        assert raw_status(raw_exchange(httpd.url, data)) == 200
    finally:
        stop_server(httpd, thread)


def test_hitl_serve_on_loopback_refuses_other_hosts(root: Path) -> None:
    # What a DNS-rebinding page would send: its own name, resolved to 127.0.0.1.
    env = {**os.environ, "FLYTE_HITL_TRUSTED_PROXY": ""}
    cmd = [sys.executable, "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = read_line(proc).split(" at ")[-1].strip()
        data = b"GET / HTTP/1.1\r\nHost: rebound.attacker.example\r\nConnection: close\r\n\r\n"
        assert raw_status(raw_exchange(url, data)) == 421
        assert request(url, "GET", "/health").status == 200
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_stop_server_lets_the_requests_being_handled_finish(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_waiter(request_id: str, response: dict[str, Any]) -> None:
        entered.set()
        release.wait(30)

    httpd, thread = start_server(store, on_answer=slow_waiter)
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", httpd.url)
    event = hitl.new_event("stopping", data_type=int)
    assert answer(httpd.url, event, 3).status == 200
    assert entered.wait(30)  # the handler is still busy with the answer
    stopper = threading.Thread(target=stop_server, args=(httpd, thread, 30.0))
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop_server returned while a request was still being handled"
    release.set()
    stopper.join(30)
    assert not stopper.is_alive()


def test_an_ambiguous_request_expecting_100_continue_gets_no_interim_reply(server: HitlServer) -> None:
    data = _post_with("Expect: 100-continue\r\nContent-Length: 2\r\nContent-Length: 3\r\n", b"{}")
    reply = raw_exchange(server.url, data)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"100 Continue" not in reply
