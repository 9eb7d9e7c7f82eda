"""Events and the wait loop (`hitl.py`) outside Flyte: declaring, answering, waking, timing out, polling.

Every answer goes through a real server over HTTP. The sync and ``.aio`` variants run through one
shared set of cases (the `mode` fixture).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import Reply, after_first_read, create, post_json, read_line, request, run_python, wait

import flyteplugins.hitl as hitl
import flyteplugins.hitl.hitl as core
from flyteplugins.hitl import _wait
from flyteplugins.hitl._store import REQUEST_ID_RE, Store
from flyteplugins.hitl.server import make_server, stop_server


class Console:
    """Stands in for sys.stdout: keeps the lines the package prints and lets a test wait for one.

    Tests create it as their first step: pytest's output capture re-assigns sys.stdout between a
    test's setup and call phases, which would undo a patch made by a fixture.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._buffer = ""
        self.lines: list[str] = []
        self._changed = threading.Condition()
        monkeypatch.setattr(sys, "stdout", self)

    def write(self, text: str) -> int:
        with self._changed:
            self._buffer += text
            *done, self._buffer = self._buffer.split("\n")
            self.lines.extend(done)
            self._changed.notify_all()
        return len(text)

    def flush(self) -> None:
        pass

    def count(self, needle: str) -> int:
        with self._changed:
            return sum(needle in line for line in self.lines)

    def wait_for(self, needle: str, n: int = 1, timeout: float = 120) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: sum(needle in line for line in self.lines) >= n, timeout):
                raise AssertionError(f"{needle!r} was printed fewer than {n} times: {self.lines[-5:]}")


def answer(event: hitl.Event[Any], value: object, base: str | None = None) -> Reply:
    return post_json(base or event.endpoint, {"request_id": event.request_id, "token": event.token, "value": value})


class Answerer:
    """Answers an event from another thread once its wait has announced itself on the console."""

    def __init__(
        self,
        console: Console,
        event: hitl.Event[Any],
        value: object,
        base: str | None = None,
        after: tuple[str, int] | None = None,
    ) -> None:
        self.reply: Reply | None = None
        self.sent_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(console, event, value, base, after))
        self._thread.start()

    def _run(
        self, console: Console, event: hitl.Event[Any], value: object, base: str | None, after: tuple[str, int] | None
    ) -> None:
        console.wait_for(f"form: {base or event.endpoint}/form/{event.request_id}")
        if after is not None:
            console.wait_for(*after)
        # Let the wait's first storage read pass, so that what ends it is a wake-up (or a poll), not that read.
        after_first_read(event, polls=0)
        time.sleep(0.05)
        self.sent_at = time.perf_counter()
        self.reply = answer(event, value, base)

    def join(self) -> Reply:
        self._thread.join(120)
        assert self.reply is not None
        return self.reply


def wait_in_thread(mode: str, event: hitl.Event[Any], timeout: float = 120) -> tuple[Any, float]:
    """Run the wait in a thread so that a broken wake-up fails the test instead of hanging it."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = wait(mode, event)
        except BaseException as e:
            result["error"] = e
        result["at"] = time.perf_counter()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"wait() did not return within {timeout}s"
    if "error" in result:
        raise result["error"]
    return result["value"], result["at"]


def server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("hitl-server-")}


class JumpingClock:
    """A monotonic clock that leaps ten minutes per reading, so an hour's timeout passes in a moment."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += 600.0
        return self.now


@pytest.fixture
def external(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A separate server for the same root, named by FLYTE_HITL_ENDPOINT; it does not wake waiters."""
    httpd = make_server(store)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=f"hitl-server-{httpd.server_address[1]}"
    )
    thread.daemon = True
    thread.start()
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", httpd.url + "/")
    yield httpd.url
    stop_server(httpd, thread)


# -- declaring events --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_type", [list, dict, bytes, complex, None, "int", list[dict], int | None, type("Custom", (), {})]
)
def test_unsupported_data_types_are_a_type_error(mode: str, root: Path, data_type: object) -> None:
    with pytest.raises(TypeError) as info:
        create(mode, "q", data_type=data_type)
    assert isinstance(info.value, hitl.UnsupportedTypeError)
    assert any(m in str(info.value) for m in ("int, float, str, bool", "Optional is for", "lists hold int"))
    assert not root.exists(), "nothing was written"


@pytest.mark.parametrize(
    "kwargs, mentions",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"scope": "job"}, "scope"),
        ({"scope": "Run"}, "scope"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": -5}, "timeout_seconds"),
        ({"timeout_seconds": math.nan}, "timeout_seconds"),
        ({"timeout_seconds": math.inf}, "timeout_seconds"),
        ({"timeout_seconds": "60"}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"timeout_seconds": 1e12}, "at most 315,360,000 (ten years)"),
        ({"timeout_seconds": 1e300}, "at most 315,360,000 (ten years)"),
        ({"poll_interval_seconds": -1}, "poll_interval_seconds"),
        ({"poll_interval_seconds": 0}, "poll_interval_seconds"),
        ({"poll_interval_seconds": math.nan}, "poll_interval_seconds"),
        ({"prompt": 42}, "prompt"),
        ({"prompt_type": "html"}, "prompt_type of event 'q' must be 'text' or 'markdown', got 'html'"),
        ({"prompt_type": None}, "prompt_type"),
        ({"prompt": "é" * 40_000}, "prompt of event 'q' is 80,000 bytes as UTF-8; the limit is 65,536 (64 KiB)"),
    ],
    ids=lambda v: repr(v)[:30] if isinstance(v, dict) else None,
)
def test_bad_arguments_are_a_value_error_naming_the_argument(
    mode: str, root: Path, kwargs: dict[str, Any], mentions: str
) -> None:
    args = {"name": "q", "data_type": int, **kwargs}
    with pytest.raises(ValueError) as info:
        create(mode, **args)
    assert isinstance(info.value, hitl.InvalidEventError)
    assert mentions in str(info.value)
    assert not root.exists(), "nothing was written"


def test_event_scope_is_the_literal_run() -> None:
    assert typing.get_args(hitl.EventScope) == ("run",)


def test_prompt_type_is_the_literal_text_or_markdown() -> None:
    assert typing.get_args(hitl.PromptType) == ("text", "markdown") and "PromptType" in hitl.__all__


def test_event_properties_urls_and_repr(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Console(monkeypatch)
    event = hitl.new_event(
        "integer_input_event",
        data_type=int,
        prompt="What should I add to x?",
        timeout_seconds=90,
        poll_interval_seconds=2,
    )
    assert isinstance(event, hitl.Event)
    assert event.name == "integer_input_event"
    assert event.scope == "run"
    assert event.data_type is int
    assert event.prompt == "What should I add to x?"
    assert REQUEST_ID_RE.fullmatch(event.request_id)
    assert event.request_id.startswith("integer_input_event-")
    assert event.timeout_seconds == 90
    assert event.poll_interval_seconds == 2
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", event.endpoint)
    assert event.api_url == f"{event.endpoint}/submit/json"
    assert re.fullmatch(rf"{re.escape(event.endpoint)}/form/{event.request_id}\?token=[A-Za-z0-9_%-]+", event.form_url)
    assert len(event.token) >= 32, "an unguessable token"
    shown = repr(event)
    for part in ("integer_input_event", "int", event.request_id, event.endpoint, "run"):
        assert part in shown
    assert event.token not in shown, "the repr does not leak the token into logs"
    # The request is stored under the root, with the token, the type and the deadline.
    stored = json.loads((root / event.request_id / "request.json").read_text())
    assert stored["token"] == event.token
    assert stored["data_type"] == "int"
    assert stored["event_name"] == "integer_input_event"
    assert stored["prompt"] == "What should I add to x?"


def test_form_url_opens_the_form(root: Path) -> None:
    event = hitl.new_event("open me", data_type=str, prompt="Type something")
    host_path = event.form_url.removeprefix(event.endpoint)
    page = request(event.endpoint, "GET", host_path)
    assert page.status == 200
    assert "Type something" in page.text
    assert f'value="{event.token}"' in page.text


def test_events_outside_a_flyte_task_get_fresh_random_ids(root: Path) -> None:
    first = hitl.new_event("same name", data_type=int)
    second = hitl.new_event("same name", data_type=int)
    assert first.request_id != second.request_id
    assert first.token != second.token
    assert first.request_id.startswith("same-name-")
    assert sorted(p.name for p in root.iterdir()) == sorted([first.request_id, second.request_id])


def test_the_embedded_server_honours_host_and_port_settings(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that is free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("FLYTE_HITL_HOST", "127.0.0.1")
    monkeypatch.setenv("FLYTE_HITL_PORT", str(port))
    event = hitl.new_event("fixed port", data_type=int)
    assert event.endpoint == f"http://127.0.0.1:{port}"
    assert request(event.endpoint, "GET", "/health").status == 200


def test_a_bad_port_setting_is_a_clear_error_and_writes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_PORT", "eighty")
    with pytest.raises(hitl.HitlError, match="FLYTE_HITL_PORT"):
        hitl.new_event("bad port", data_type=int)
    assert not root.exists() or not any(root.iterdir())


def test_a_port_in_use_is_a_clear_error_and_writes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("FLYTE_HITL_PORT", str(port))
        with pytest.raises(hitl.ConfigurationError, match=f"127.0.0.1:{port} .*Address already in use"):
            hitl.new_event("taken port", data_type=int)
    assert not root.exists() or not any(root.iterdir())
    monkeypatch.setenv("FLYTE_HITL_PORT", "0")
    assert request(hitl.new_event("free port", data_type=int).endpoint, "GET", "/health").status == 200


def test_the_embedded_server_listens_on_ipv6_loopback(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError as e:
            pytest.skip(f"no IPv6 loopback here: {e}")
    monkeypatch.setenv("FLYTE_HITL_HOST", "::1")
    event = hitl.new_event("six", data_type=int, timeout_seconds=60)
    assert event.form_url.startswith("http://[::1]:")
    assert hitl.submit(event.form_url, 6)["status"] == "submitted"
    assert event.wait() == 6


def test_one_embedded_server_per_process_and_root(root: Path) -> None:
    before = server_threads()
    events = [hitl.new_event(f"e{i}", data_type=int) for i in range(5)]
    assert len({e.endpoint for e in events}) == 1
    assert len(server_threads() - before) == 1


@pytest.mark.parametrize("how", ["new_event", "Event.create"])
def test_event_create_and_new_event_in_both_modes(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    console = Console(monkeypatch)
    factory = hitl.new_event if how == "new_event" else hitl.Event.create
    if mode == "sync":
        event = factory("made", data_type=float, prompt="A float, please")
    else:
        event = asyncio.run(factory.aio("made", data_type=float, prompt="A float, please"))
    assert isinstance(event, hitl.Event)
    assert (event.name, event.data_type, event.prompt) == ("made", float, "A float, please")
    answerer = Answerer(console, event, "0.25")
    value, _ = wait_in_thread(mode, event)
    assert answerer.join().status == 200
    assert value == 0.25 and type(value) is float


@pytest.mark.parametrize("how", ["new_event", "Event.create", "approve"])
@pytest.mark.parametrize("prompt_type", ["text", "markdown"])
def test_prompt_type_is_stored_for_markdown_only(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch, how: str, prompt_type: str
) -> None:
    """A Markdown prompt says so in its record; a text prompt's record holds no prompt_type, as
    records written before there was one (and by 2.12.1) do."""
    Console(monkeypatch)
    args: dict[str, Any] = {"prompt": "**Ship** 2*3*4?", "prompt_type": prompt_type}
    if how == "approve":  # answered by its default, so the call returns
        args.update(timeout_seconds=0.2, default=True, poll_interval_seconds=0.05)
        call = hitl.approve if mode == "sync" else (lambda *a, **k: asyncio.run(hitl.approve.aio(*a, **k)))
        assert call("ship", **args) is True
        [listed] = Store(str(root)).list_events()
        request_id = listed.request_id
    else:
        factory = hitl.new_event if how == "new_event" else hitl.Event.create
        event = factory("ship", bool, **args) if mode == "sync" else asyncio.run(factory.aio("ship", bool, **args))
        assert event.prompt_type == prompt_type
        request_id = event.request_id
    record = Store(str(root)).read_request(request_id)
    assert record is not None and record["prompt"] == "**Ship** 2*3*4?"
    assert record.get("prompt_type") == ("markdown" if prompt_type == "markdown" else None)


def test_a_prompt_of_64_kib_is_accepted_and_a_rerun_keeps_the_stored_prompt_type(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Console(monkeypatch)
    event = hitl.new_event("big", data_type=int, prompt="é" * 32_768, prompt_type="markdown")
    assert len(event.prompt.encode()) == 65_536
    stored = Store(str(root)).read_request(event.request_id)
    assert stored is not None
    # A re-run that asks the same question with another prompt_type re-attaches to the event as stored.
    fresh = {**stored, "token": "other", "prompt_type": None}
    assert core._check_reattached(stored, fresh) is stored
    legacy = {k: v for k, v in stored.items() if k != "prompt_type"}  # as 2.12.1-format records are
    assert core._check_reattached(legacy, stored) is legacy


def test_the_console_shows_a_markdown_prompt_as_plain_text_and_invisible_characters_escaped(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(monkeypatch)
    prompt = "**Deploy** `v3`\n\nSee [the notes](https://example.com/n)\u2028for invoice_2026_\u202efdp.exe"
    event = hitl.new_event("ship\u200e\u200f\u2029", data_type=int, prompt=prompt, prompt_type="markdown")
    answering = threading.Thread(
        target=lambda: (console.wait_for("[hitl] curl:"), hitl.submit(event.form_url, 1, comment="fine\u2066ok"))
    )
    answering.start()
    assert event.wait() == 1
    answering.join()
    waiting = next(line for line in console.lines if line.startswith("[hitl] waiting for"))
    assert waiting.endswith("): Deploy v3 See the notes for invoice_2026_\\u202efdp.exe"), waiting
    assert "waiting for 'ship\\u200e\\u200f\\u2029' (int, " in waiting
    answered = next(line for line in console.lines if "answered: 1" in line)
    assert 'comment "fine\\u2066ok"' in answered
    escaped = re.compile("[\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
    assert not [line for line in console.lines if escaped.search(line)]


# -- answering and waking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_type, sent, expected",
    [
        (int, "42", 42),
        (int, -3, -3),
        (float, 1e-3, 0.001),
        (bool, "No", False),
        (bool, True, True),
        (str, " a b ", None),
    ],
)
def test_wait_returns_the_typed_answer(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch, data_type: type, sent: object, expected: object
) -> None:
    console = Console(monkeypatch)
    event = create(mode, "typed", data_type=data_type, poll_interval_seconds=3600)
    answerer = Answerer(console, event, sent)
    value, _ = wait_in_thread(mode, event)
    assert answerer.join().status == 200
    expected = sent if expected is None else expected
    assert value == expected
    assert type(value) is data_type


def test_an_answer_wakes_the_wait_at_once(mode: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(monkeypatch)
    # With an hour between polls, only the embedded server's wake-up can end this wait in time.
    event = create(mode, "wake", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)
    answerer = Answerer(console, event, 7)
    value, returned_at = wait_in_thread(mode, event)
    reply = answerer.join()
    assert reply.status == 200
    assert value == 7
    sys.__stdout__.write(
        f"\n[figure] {mode} wait woke {1000 * (returned_at - answerer.sent_at):.1f} ms after the POST\n"
    )


def test_an_answer_through_the_form_wakes_the_wait(mode: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(monkeypatch)
    event = create(mode, "via form", data_type=bool, poll_interval_seconds=3600)
    reply: dict[str, Reply] = {}

    def submit() -> None:
        console.wait_for(f"form: {event.form_url}")
        body = urlencode({"request_id": event.request_id, "token": event.token, "value": "yes"}).encode()
        reply["r"] = request(
            event.endpoint, "POST", "/submit", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )

    thread = threading.Thread(target=submit)
    thread.start()
    value, _ = wait_in_thread(mode, event)
    thread.join()
    assert value is True
    assert reply["r"].status == 200


def test_an_answer_given_before_the_wait_is_returned_at_once(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Console(monkeypatch)
    event = create(mode, "early", data_type=str, poll_interval_seconds=3600)
    assert answer(event, "already here").status == 200
    value, _ = wait_in_thread(mode, event)
    assert value == "already here"
    assert answer(event, "too late").status == 409


def test_an_in_process_answer_is_handed_to_the_wait_without_a_read(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and `submit` pass the outcome they stored to `_wait.hand_over`, and a wait on that
    root returns it as it is. Shown with an outcome that storage does not hold: a wait that read
    storage instead would find nothing there and sleep on to its next poll, an hour away."""
    console = Console(monkeypatch)
    event = create(mode, "handed", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)
    outcome = {"request_id": event.request_id, "status": "completed", "value": 5, "data_type": "int", "via": "cli"}

    def hand_over() -> None:
        console.wait_for(f"form: {event.form_url}")
        _wait.hand_over(Store(str(root)).root, event.request_id, outcome)

    thread = threading.Thread(target=hand_over)
    thread.start()
    value, _ = wait_in_thread(mode, event, timeout=30)
    thread.join()
    assert value == 5
    assert event.response == outcome and event.response is not outcome  # the wait keeps its own copy
    assert Store(str(root)).read_response(event.request_id) is None


def test_an_answer_whose_client_resets_the_connection_still_ends_the_wait_at_once(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client (a phone losing its signal, a script killed by its timeout) sends its answer and resets
    the connection: the reply cannot be written, but the answer is stored, so the server hands it on
    all the same. The wait polls hourly: only that hand-over ends it."""
    console = Console(monkeypatch)
    event = create(mode, "reset", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)

    def answer_and_reset() -> None:
        console.wait_for(f"form: {event.form_url}")
        host, port = event.endpoint.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 8}).encode()
        head = f"POST /submit/json HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    thread = threading.Thread(target=answer_and_reset)
    thread.start()
    value, _ = wait_in_thread(mode, event, timeout=30)
    thread.join()
    assert value == 8
    assert Store(str(root)).read_response(event.request_id)["value"] == 8


def test_an_outcome_stored_under_another_root_is_not_taken(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request id can exist under two roots: a wait woken by a notifier on another root
    reads its own root (nothing there yet) and returns the answer given on its own."""
    console = Console(monkeypatch)
    event = create(mode, "other root", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)
    elsewhere = {"request_id": event.request_id, "status": "completed", "value": 6, "data_type": "int"}

    def notify_then_answer() -> None:
        console.wait_for(f"form: {event.form_url}")
        _wait.hand_over(str(root) + "-elsewhere", event.request_id, elsewhere)
        time.sleep(0.3)  # the wait has read its own root and gone back to sleep
        assert answer(event, 7).status == 200

    thread = threading.Thread(target=notify_then_answer)
    thread.start()
    value, _ = wait_in_thread(mode, event, timeout=30)
    thread.join()
    assert value == 7


def test_console_shows_the_form_and_curl_lines_and_time_left(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(monkeypatch)
    event = create(mode, "console", data_type=int, prompt="Pick a number", poll_interval_seconds=3600)
    event.note_every_seconds = 0.05  # type: ignore[misc]
    answerer = Answerer(console, event, 5, after=("left", 3))
    wait_in_thread(mode, event)
    answerer.join()
    form_lines = [line for line in console.lines if line.startswith("[hitl] form: ")]
    assert form_lines == [f"[hitl] form: {event.form_url}"]
    curl_lines = [line for line in console.lines if line.startswith("[hitl] curl: ")]
    assert len(curl_lines) == 1
    assert event.api_url in curl_lines[0] and event.token in curl_lines[0]
    assert any("Pick a number" in line for line in console.lines)
    time_left = [line for line in console.lines if re.search(r"\d+[hm] \d\d[ms] left", line)]
    assert len(time_left) >= 2, "the periodic line with the time left was printed"
    assert any("answered: 5" in line for line in console.lines)


def test_a_long_answer_is_cut_on_the_console(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(monkeypatch)
    event = hitl.new_event("essay", data_type=str, timeout_seconds=60)
    hitl.submit(event.form_url, "x" * 100_000)
    assert event.wait() == "x" * 100_000  # the value itself is whole
    [line] = [line for line in console.lines if "answered: " in line]
    assert line.startswith("[hitl] 'essay' answered: 'xxx") and "... (100,002 characters) (via " in line
    assert len(line) < 300


def test_the_printed_curl_command_works_as_is(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Console(monkeypatch)
    event = hitl.new_event("curl me", data_type=str, prompt="Say hi")
    curl = event.curl_command
    assert "\n" not in curl
    argv = shlex.split(curl.replace("your answer", "hi from curl"))
    assert argv[0] == "curl"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "submitted"
    assert event.wait() == "hi from curl"


# -- timeouts ------------------------------------------------------------------------------------------


def test_timeout_raises_marks_the_event_expired_and_refuses_late_answers(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Console(monkeypatch)
    event = create(mode, "too slow", data_type=int, timeout_seconds=0.3, poll_interval_seconds=0.05)
    with pytest.raises(hitl.EventTimeoutError) as info:
        wait_in_thread(mode, event)
    error = info.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, hitl.HitlError)
    assert "too slow" in str(error) and event.request_id in str(error)
    assert (error.name, error.request_id) == ("too slow", event.request_id)
    mark = json.loads((root / event.request_id / "response.json").read_text())
    assert mark["status"] == "expired"
    assert "value" not in mark
    late = answer(event, 1)
    assert late.status == 410
    assert json.loads((root / event.request_id / "response.json").read_text()) == mark


def test_the_clock_is_injectable_so_an_hour_passes_at_once(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(monkeypatch)
    event = create(mode, "an hour", data_type=str, timeout_seconds=3600, poll_interval_seconds=3600)
    clock = JumpingClock()
    event.clock = clock  # type: ignore[method-assign]
    started = time.perf_counter()
    with pytest.raises(hitl.EventTimeoutError, match="an hour"):
        wait_in_thread(mode, event)
    assert clock.readings >= 6, "the deadline came from the injected clock"
    assert json.loads((root / event.request_id / "response.json").read_text())["status"] == "expired"
    assert answer(event, "late").status == 410
    assert any("left" in line for line in console.lines), "the periodic line follows the injected clock too"
    sys.__stdout__.write(f"\n[figure] an hour's timeout took {time.perf_counter() - started:.3f}s\n")


def test_a_second_wait_after_a_timeout_raises_again(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Console(monkeypatch)
    event = hitl.new_event("twice", data_type=int, timeout_seconds=0.1, poll_interval_seconds=0.02)
    for _ in range(2):
        with pytest.raises(hitl.EventTimeoutError):
            event.wait()


# -- an external server: no embedded one, wait by polling ----------------------------------------------


def test_with_an_endpoint_no_server_starts_and_wait_polls(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch, external: str
) -> None:
    console = Console(monkeypatch)
    before = server_threads()
    event = create(mode, "polled", data_type=int, poll_interval_seconds=0.05)
    assert event.endpoint == external, "the trailing slash is dropped"
    assert event.form_url.startswith(f"{external}/form/")
    assert event.api_url == f"{external}/submit/json"
    answerer = Answerer(console, event, 99)
    value, _ = wait_in_thread(mode, event)
    assert answerer.join().status == 200
    assert value == 99
    assert server_threads() == before, "no embedded server was started"


def test_an_answer_stored_by_another_writer_is_found_by_polling(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(monkeypatch)
    # The embedded server runs, but the answer is written straight to storage (as another replica
    # sharing the root would): the wait finds it at its next poll.
    event = create(mode, "elsewhere", data_type=int, poll_interval_seconds=0.05)
    other = Store(str(root))

    def write_later() -> None:
        console.wait_for(f"form: {event.form_url}")
        time.sleep(0.1)
        other.create_response(event.request_id, {"request_id": event.request_id, "status": "completed", "value": 8})

    thread = threading.Thread(target=write_later)
    thread.start()
    value, _ = wait_in_thread(mode, event)
    thread.join()
    assert value == 8


# -- many waits in one process --------------------------------------------------------------------------


def test_300_concurrent_aio_waits_resolve_with_their_own_values_without_starving_the_executor(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(monkeypatch)
    n = 300

    def value_for(i: int) -> int:
        return i * 7 + 1

    def user_work() -> str:
        return threading.current_thread().name

    async def main() -> tuple[list[int], list[int], float]:
        events = await asyncio.gather(
            *(hitl.new_event.aio(f"many-{i}", data_type=int, poll_interval_seconds=120) for i in range(n))
        )
        tasks = [asyncio.create_task(e.wait.aio()) for e in events]
        deadline = time.monotonic() + 60
        while console.count("[hitl] form: ") < n:
            assert time.monotonic() < deadline, "not every wait started"
            await asyncio.sleep(0.01)
        # Every wait is pending now; the user's own to_thread work must still get a thread promptly.
        started = time.perf_counter()
        worker = await asyncio.wait_for(asyncio.to_thread(user_work), 60)
        to_thread_latency = time.perf_counter() - started
        assert worker != threading.current_thread().name
        assert not any(t.done() for t in tasks), "nothing was answered yet"

        order = random.Random(1234).sample(range(n), n)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(8) as pool:
            replies = await asyncio.gather(
                *(loop.run_in_executor(pool, answer, events[i], value_for(i)) for i in order)
            )
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return results, [r.status for r in replies], to_thread_latency

    started = time.perf_counter()
    results, statuses, latency = asyncio.run(main())
    assert statuses == [200] * n
    assert results == [value_for(i) for i in range(n)]
    # Waits announce themselves from many threads at once; still, every console line stays whole.
    broken = [line for line in console.lines if line.count("[hitl]") != 1 or not line.startswith("[hitl] ")]
    assert broken == []
    sys.__stdout__.write(
        f"\n[figure] {n} aio waits: to_thread latency while pending {1000 * latency:.1f} ms; "
        f"whole test {time.perf_counter() - started:.2f}s\n"
    )


def test_twenty_concurrent_approve_aio_calls_print_their_links_at_once_and_leave_to_thread_free(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a pool of 4 threads, 20 waiting ``approve.aio`` calls all announce themselves, and the
    program's own ``asyncio.to_thread`` still gets a thread: no wait sits in the pool."""
    console = Console(monkeypatch)
    n = 20

    async def main() -> tuple[list[bool], str]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        tasks = [
            asyncio.create_task(hitl.approve.aio(f"approve-{i}", poll_interval_seconds=3600, timeout_seconds=120))
            for i in range(n)
        ]
        await asyncio.to_thread(console.wait_for, "[hitl] form: ", n, 60)
        worker = await asyncio.wait_for(asyncio.to_thread(lambda: threading.current_thread().name), 30)
        assert not any(t.done() for t in tasks), "nothing was answered yet"
        forms = [line.split("form: ", 1)[1] for line in console.lines if line.startswith("[hitl] form: ")]
        for i, url in enumerate(forms):
            await asyncio.to_thread(hitl.submit, url, i % 2 == 0)
        return await asyncio.wait_for(asyncio.gather(*tasks), 60), worker

    values, worker = asyncio.run(main())
    assert worker != threading.current_thread().name
    names = [re.search(r"'(approve-\d+)' answered: (\w+)", line) for line in console.lines]
    answered = {m.group(1): m.group(2) == "True" for m in names if m}
    assert len(answered) == n and sorted(values) == sorted(answered.values())
    assert [answered[f"approve-{i}"] for i in range(n)] == values


def test_control_characters_from_people_are_escaped_on_the_console(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name, a prompt, a value or a comment with ESC [ 2K ESC [ 1A could erase console lines and
    fake an "answered" line; every console line shows such characters escaped."""
    console = Console(monkeypatch)
    erase = "\x1b[2K\x1b[1A\r"
    event = hitl.new_event(f"tricky{erase}", data_type=str, prompt=f"Why{erase}?", poll_interval_seconds=3600)
    threading.Timer(
        0.2, hitl.submit, (event.form_url, f"v{erase}"), {"comment": f"c{erase}[hitl] 'x' answered"}
    ).start()
    assert wait_in_thread("sync", event, timeout=30)[0] == f"v{erase}"
    assert console.lines and not [line for line in console.lines if any(c in line for c in "\x1b\r\x08")]
    shown, flat = "\\x1b[2K\\x1b[1A\\r", "\\x1b[2K\\x1b[1A "  # prompts and comments are kept to one line
    # The time left is counted from the event's creation: a busy machine may announce it a little later.
    waiting = re.escape(f"[hitl] waiting for 'tricky{shown}' (str, @ left): Why{flat}?")
    waiting = waiting.replace("@", "(1h 00m|59m 5\\ds)")
    assert any(re.fullmatch(waiting, line) for line in console.lines), console.lines
    assert any(f"answered: 'v{shown}'" in line and f'comment "c{flat}[hitl]' in line for line in console.lines)


def test_a_permanent_storage_error_ends_the_wait_at_once(
    mode: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrying cannot fix a record that is not JSON: the wait raises StorageError at once, long before its deadline."""
    Console(monkeypatch)
    event = create(mode, "broken", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)
    (root / event.request_id / "response.json").write_text("{not json")
    with pytest.raises(hitl.StorageError, match="not valid JSON"):
        wait_in_thread(mode, event, timeout=30)


def test_any_thread_can_wake_a_wait_to_read_storage_now(mode: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_Wait.read_now`, the hook for wake-ups from other processes: an answer stored by another
    writer is found at once instead of at the next poll, an hour away."""
    console = Console(monkeypatch)
    event = create(mode, "read now", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)

    def store_then_wake() -> None:
        console.wait_for(f"form: {event.form_url}")
        time.sleep(0.1)  # past the wait's first read
        Store(str(root)).create_response(
            event.request_id, {"request_id": event.request_id, "status": "completed", "value": 9}
        )
        for waiting in list(_wait._waits[event.request_id]):
            waiting.read_now()

    thread = threading.Thread(target=store_then_wake)
    thread.start()
    value, _ = wait_in_thread(mode, event, timeout=30)
    thread.join()
    assert value == 9


def test_many_sync_waits_in_threads(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(monkeypatch)
    events = [hitl.new_event(f"threaded-{i}", data_type=int, poll_interval_seconds=3600) for i in range(40)]
    results: dict[int, int] = {}

    def run(i: int) -> None:
        results[i] = events[i].wait()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(40)]
    for t in threads:
        t.start()
    console.wait_for("[hitl] form: ", n=40)
    for i in random.Random(5).sample(range(40), 40):
        assert answer(events[i], -i).status == 200
    for t in threads:
        t.join(30)
    assert results == {i: -i for i in range(40)}


# -- a plain program that exits right after its answer ---------------------------------------------------

PLAIN_PROGRAM = r"""
import json, sys, threading, urllib.request
import flyteplugins.hitl as hitl

event = hitl.new_event("plain", data_type=int, prompt="A number?")
reply = {}

def answer_it():
    body = json.dumps({"request_id": event.request_id, "token": event.token, "value": 41}).encode()
    req = urllib.request.Request(event.api_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        reply["status"], reply["body"] = resp.status, json.loads(resp.read())
    # One write per line: the two threads print at about the same moment.
    sys.stdout.write(f"client got {reply['status']} {json.dumps(reply['body'])}\n")

thread = threading.Thread(target=answer_it)  # not a daemon: its reply must arrive before the exit
thread.start()
value = event.wait()
sys.stdout.write(f"value {value + 1}\n")
"""


def test_a_plain_program_exits_promptly_and_its_client_gets_the_full_reply(root: Path) -> None:
    started = time.perf_counter()
    proc = run_python(PLAIN_PROGRAM)
    out, _ = proc.communicate(timeout=60)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, out
    assert "value 42" in out
    client_lines = [line for line in out.splitlines() if line.startswith("client got ")]
    assert len(client_lines) == 1, out
    (client_line,) = client_lines
    status, body = client_line.removeprefix("client got ").split(" ", 1)
    assert status == "200"
    assert json.loads(body)["status"] == "submitted" and json.loads(body)["value"] == 41
    assert "Traceback" not in out
    sys.__stdout__.write(f"\n[figure] plain program: start to exit {elapsed:.2f}s\n")


WAIT_AND_EXIT = """
import flyteplugins.hitl as hitl
event = hitl.new_event("exit right after", data_type=str)
print(event.wait(), flush=True)
"""


def test_the_answering_client_gets_its_whole_reply_even_when_the_program_exits_at_once(root: Path) -> None:
    for attempt in range(2):
        proc = run_python(WAIT_AND_EXIT)
        try:
            form_line = read_line(proc)
            while form_line and not form_line.startswith("[hitl] form: "):
                form_line = read_line(proc)
            match = re.search(r"(http://[\d.:]+)/form/([\w-]+)\?token=([\w%-]+)", form_line)
            assert match, form_line
            base, request_id, token = match.groups()
            reply = post_json(base, {"request_id": request_id, "token": token, "value": f"bye {attempt}"})
            assert reply.status == 200
            assert reply.json()["status"] == "submitted", "the whole JSON body arrived"
            assert reply.json()["value"] == f"bye {attempt}"
            rest, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.communicate()
        assert proc.returncode == 0
        assert f"bye {attempt}" in rest


# -- package surface ------------------------------------------------------------------------------------


def test_public_api_is_exported() -> None:
    for name in ("Event", "EventScope", "new_event", "EventTimeoutError", "HitlError", "env"):
        assert name in hitl.__all__
    for name in ("Event", "EventScope", "new_event", "EventTimeoutError", "HitlError"):
        assert hasattr(hitl, name)
    for call in (hitl.new_event, hitl.Event.create):
        assert callable(call.aio)


# Importing flyte.app (behind hitl.env) trips a deprecation warning inside pydantic-using Flyte code.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_env_is_a_task_environment_users_can_depend_on() -> None:
    import flyte

    assert isinstance(hitl.env, flyte.TaskEnvironment)
    flyte.TaskEnvironment(name="user-env-with-hitl", depends_on=[hitl.env])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_code_written_for_2_12_1_runs_unchanged(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2.12.1's `Event.create` was a coroutine: `await hitl.Event.create(...)` gives the event, while
    the plain call, `.aio` and `new_event` work as before; `event_task_env` is `env`."""
    Console(monkeypatch)

    async def main() -> list[hitl.Event[int]]:
        return [
            await hitl.Event.create(name="old", data_type=int, scope="run", prompt="Awaited?"),
            await hitl.Event.create.aio("aio", data_type=int),
            hitl.Event.create("plain", data_type=int),
            await hitl.new_event.aio("new", data_type=int),
            await hitl.new_event("new, awaited", data_type=int),
        ]

    events = asyncio.run(main())
    assert [type(e) for e in events] == [hitl.Event] * 5
    assert [e.name for e in events] == ["old", "aio", "plain", "new", "new, awaited"]
    assert events[0].prompt == "Awaited?" and events[0].data_type is int
    assert hitl.event_task_env is hitl.env


def test_the_package_ships_type_information() -> None:
    assert (Path(hitl.__file__).parent / "py.typed").is_file()


def test_request_and_response_path_name_where_the_records_are(root: Path) -> None:
    event = hitl.new_event("paths", data_type=int, poll_interval_seconds=3600)
    assert event.request_path == f"{root}/{event.request_id}/request.json"
    assert event.response_path == f"{root}/{event.request_id}/response.json"
    assert json.loads(Path(event.request_path).read_text())["request_id"] == event.request_id
    with pytest.raises(AttributeError):
        event.response_path = "/elsewhere"  # type: ignore[misc]


def test_an_answer_written_to_response_path_as_flyte_sdk_slack_approvals_do_is_returned(root: Path) -> None:
    """flyte-sdk's Slack approvals (plugins/slack, approval.py) put the choice in the button's value
    with ``event.response_path``, and the webhook app writes 2.12.1's record there with
    ``flyte.storage.put_stream``; the waiting task's ``await event.wait.aio()`` returns the choice."""
    import flyte.storage

    async def approval() -> tuple[str, hitl.Event[str]]:
        event = await hitl.new_event.aio("slack-approval", data_type=str, prompt="Deploy?", timeout_seconds=60)
        button = json.dumps({"request_id": event.request_id, "response_path": event.response_path, "choice": "approve"})

        async def on_click() -> None:  # the webhook app, given only the button's value
            data = json.loads(button)
            record = {"value": data["choice"], "status": "completed", "request_id": data["request_id"]}
            record["data_type"] = "str"
            await flyte.storage.put_stream(json.dumps(record).encode(), to_path=data["response_path"])

        await on_click()
        return await event.wait.aio(), event

    decision, event = asyncio.run(approval())
    assert decision == "approve"
    assert event.response is not None and event.response["status"] == "completed"


def test_console_lines_stay_whole_while_other_threads_print(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The form and curl lines are copied by hand: another thread's output must never land inside one.
    console = Console(monkeypatch)
    events = [hitl.new_event(f"busy-{i}", data_type=int, poll_interval_seconds=3600) for i in range(150)]

    def answer_each_once_shown() -> None:  # a wait shows its form and curl lines, then is answered
        for i, event in enumerate(events):
            console.wait_for("[hitl] curl:", i + 1)
            assert answer(event, i).status == 200

    answering = threading.Thread(target=answer_each_once_shown)
    answering.start()
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            sys.stdout.write("other output\n")  # one write per line, so any break is the package's doing

    noisy = threading.Thread(target=chatter)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: between any two writes
    noisy.start()
    try:
        values = [event.wait() for event in events]
    finally:
        stop.set()
        noisy.join()
        sys.setswitchinterval(previous)
        answering.join(60)
    assert values == list(range(150))
    ours = [line for line in console.lines if "[hitl]" in line]
    assert len(ours) == 4 * 150
    assert [line for line in ours if not line.startswith("[hitl] ") or line.count("[hitl]") != 1] == []
    assert [line for line in console.lines if "other output" in line and line != "other output"] == []


class HeldReads(ThreadPoolExecutor):
    """An executor that runs each job, then holds its result back until `release` is set.

    Installed as the loop's default executor, it delays the moment an ``.aio`` wait learns what its
    storage read found: the read has found nothing, and the answer lands before the wait hears so.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.read_done = threading.Event()
        self.release = threading.Event()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        # asyncio.to_thread sends functools.partial(context.run, function, *args): hold only the
        # wait's storage read, not its other jobs (recording where it takes wake-ups, for one).
        target = fn.args[0] if isinstance(fn, functools.partial) and fn.args else fn
        target = getattr(target, "func", target)  # the wait's read is itself a partial
        if getattr(target, "__name__", "") != "_read":
            return super().submit(fn, *args, **kwargs)

        def held() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self.read_done.set()
                self.release.wait(30)

        return super().submit(held)


def test_an_answer_landing_while_a_read_is_in_flight_still_wakes_the_wait(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race between a storage read and a wake-up: the read has found nothing, the answer lands
    and wakes the wait, and only then does the wait hear that its read found nothing. It must read
    again (or take the handed-over answer) at once, not sleep on to its next poll an hour away."""
    Console(monkeypatch)
    mine = ThreadPoolExecutor(2)  # the test's own jobs, outside the held executor

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        event = await hitl.new_event.aio("in flight", data_type=int, poll_interval_seconds=3600, timeout_seconds=120)
        held = HeldReads()
        loop.set_default_executor(held)
        waiting = asyncio.create_task(event.wait.aio())
        # The wait's first read runs in `held` and finds nothing; what it found is held back.
        assert await loop.run_in_executor(mine, held.read_done.wait, 30)
        assert (await loop.run_in_executor(mine, answer, event, 4)).status == 200
        held.release.set()  # only now does the wait hear that its read found nothing
        return await asyncio.wait_for(waiting, 30)

    try:
        assert asyncio.run(scenario()) == 4
    finally:
        mine.shutdown()


def test_aio_waits_cancelled_right_after_they_start_leave_nothing_registered(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait cancelled at its first await (a `gather` sibling failing, a shutdown) or a little later
    undoes its registration in this process and with the wake-up socket, which closes with the last wait."""
    from flyteplugins.hitl import _wake

    Console(monkeypatch)

    async def scenario() -> None:
        events = [
            await hitl.new_event.aio(f"cancelled-{i}", data_type=int, poll_interval_seconds=3600) for i in range(20)
        ]
        tasks = [asyncio.create_task(e.wait.aio()) for e in events]
        for i, task in enumerate(tasks):
            for _ in range(i % 4):  # cancelled after 0 to 3 turns of the loop
                await asyncio.sleep(0)
            task.cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes

    asyncio.run(scenario())
    assert _wait._waits == {}
    assert _wake._listener._watched == {} and _wake._listener.address is None, "the socket closed"


CTRL_C_PROGRAM = r"""
import importlib
import flyteplugins.hitl as hitl

waits = importlib.import_module("flyteplugins.hitl._wait")
wake = importlib.import_module("flyteplugins.hitl._wake")
event = hitl.new_event("ctrl-c", data_type=int, poll_interval_seconds=3600)
print("waiting", flush=True)
try:
    event.wait()
except KeyboardInterrupt:
    print(f"interrupted; waits left {len(waits._waits)}, socket {wake._listener.address}", flush=True)
"""


FORK_PROGRAM = r"""
import importlib, os, sys, threading
import flyteplugins.hitl as hitl

core = importlib.import_module("flyteplugins.hitl.hitl")
waits = importlib.import_module("flyteplugins.hitl._wait")
parent = hitl.new_event("parent", data_type=int, poll_interval_seconds=3600)
got = []
waiting = threading.Thread(target=lambda: got.append(parent.wait()))
waiting.start()  # a wait in another thread while this one forks

# Another thread holds, across the fork, the locks a wait or a new event takes: the state lock, the
# registry of waits, and one inside the store that waits read through (as a read in progress does).
held, release = threading.Event(), threading.Event()
locks = [core._state_lock, waits._lock, parent._store._backend_lock]

def hold():
    for lock in locks:
        lock.acquire()
    held.set()
    release.wait()
    for lock in locks:
        lock.release()

threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    child = hitl.new_event("child", data_type=int, poll_interval_seconds=3600)
    hitl.submit(child.request_id, 5, root=os.environ["FLYTE_HITL_ROOT"])
    print("child got", child.wait(), flush=True)
    os._exit(0)
release.set()
_, status = os.waitpid(pid, 0)
hitl.submit(parent.form_url, 6)
waiting.join(30)
print("parent got", got, "child exit", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_forked_child_waits_on_its_own_events_while_the_parent_waits_on_its_own(root: Path) -> None:
    proc = run_python(FORK_PROGRAM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "child got 5" in out and "parent got [6] child exit 0" in out, out


def test_ctrl_c_interrupts_a_blocking_wait_and_stops_its_polling(root: Path) -> None:
    proc = run_python(CTRL_C_PROGRAM)
    assert read_line(proc).strip() == "waiting"
    time.sleep(0.5)  # inside wait() by now
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "interrupted; waits left 0, socket None" in out, out
