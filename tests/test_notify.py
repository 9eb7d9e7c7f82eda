"""Webhook notices: a real HTTP receiver on loopback gets the JSON; a failing, slow or redirecting one
never fails the task, holds up no wait and no exit, and no log shows the webhook's credentials."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import Trickler, run_python, until

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _client, _notify


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        super().__init__(("127.0.0.1", 0), ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/abc"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, self.headers["Content-Type"], body))
        self.server.authorizations.append(self.headers["Authorization"])
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def waiting_notices(receiver: Receiver) -> list[tuple[str, str, dict[str, Any]]]:
    """The notices that an event waits (an answered one follows each answer)."""
    return [r for r in receiver.received if r[2].get("type") == "org.flyte.hitl.waiting"]


def notice_logs(caplog: pytest.LogCaptureFixture, event_name: str) -> list[logging.LogRecord]:
    # Only this test's: notices of earlier tests may still be logging from their own threads.
    return [r for r in caplog.records if r.name == "flyteplugins.hitl.notify" and repr(event_name) in r.getMessage()]


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(getattr(request, "param", 200))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_notice_is_posted_when_waiting_starts(root: Path, receiver: Receiver) -> None:
    event = hitl.new_event("deploy", data_type=bool, prompt="Ship\nit?", timeout_seconds=30, notify=receiver.url)
    assert receiver.received == []  # creating is not waiting
    threading.Timer(0.3, hitl.submit, (event.form_url, True)).start()
    assert event.wait() is True
    until(lambda: waiting_notices(receiver) != [], "the notice")
    [(path, content_type, notice)] = waiting_notices(receiver)
    assert path == "/hooks/abc" and content_type == "application/cloudevents+json"
    assert notice["specversion"] == "1.0" and notice["type"] == "org.flyte.hitl.waiting"
    assert notice["subject"] == event.request_id and notice["id"] and notice["source"]
    body = notice["data"]
    assert body["event_name"] == "deploy" and body["prompt"] == "Ship\nit?" and body["data_type"] == "bool"
    assert body["form_url"] == event.form_url and body["api_url"] == event.api_url
    assert body["curl"] == event.curl_command and body["expires_at"] == event.expires_at
    assert body["request_id"] == event.request_id
    assert event.form_url in body["text"] and "deploy" in body["text"]
    # The webhook URL may hold a secret: kept where the writer of the outcome reads it, shown nowhere.
    stored = json.loads((root / event.request_id / "request.json").read_text())
    assert stored["webhooks"] == [receiver.url]
    assert receiver.url not in json.dumps(_client.status(event.request_id, root=str(root)))


def test_a_markdown_prompt_is_plain_text_in_the_notice(root: Path, receiver: Receiver) -> None:
    prompt = "**Ship** `v3`? See [notes](https://example.com/n)"
    event = hitl.new_event("md", data_type=bool, prompt=prompt, prompt_type="markdown", notify=receiver.url)
    answering = threading.Thread(
        target=lambda: (until(lambda: receiver.received != [], "the notice"), hitl.submit(event.form_url, True))
    )
    answering.start()
    assert event.wait() is True
    answering.join()
    [(_, _, notice)] = waiting_notices(receiver)
    body = notice["data"]
    assert body["text"] == f"Human input needed for 'md': Ship v3? See notes\nAnswer: {event.form_url}"
    assert body["prompt"] == prompt and body["prompt_type"] == "markdown"


def test_notify_url_from_the_environment(root: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_NOTIFY_URL", receiver.url)
    event = hitl.new_event("env", data_type=int, timeout_seconds=30)
    threading.Timer(0.3, hitl.submit, (event.form_url, 3)).start()
    assert event.wait() == 3
    until(lambda: waiting_notices(receiver) != [], "the notice")
    assert [notice["data"]["event_name"] for _, _, notice in waiting_notices(receiver)] == ["env"]


@pytest.mark.parametrize("receiver", [500], indirect=True)
def test_failing_receiver_is_logged_and_the_wait_goes_on(
    root: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_notify, "RETRY_DELAYS", (0.05, 0.05))
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    event = hitl.new_event("x", data_type=int, timeout_seconds=30, notify=receiver.url)
    threading.Timer(0.3, hitl.submit, (event.form_url, 1)).start()
    assert event.wait() == 1
    until(lambda: len(notice_logs(caplog, "x")) == 2, "the failures' log lines (waiting, answered)")
    assert len(waiting_notices(receiver)) == 3  # tried again after each delay, then given up
    for record in notice_logs(caplog, "x"):
        assert "500" in record.getMessage() and "after 3 attempts" in record.getMessage() and record.exc_info is None


def test_unreachable_receiver_is_logged_and_the_wait_goes_on(
    root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_notify, "RETRY_DELAYS", (0.05,))
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    event = hitl.new_event("y", data_type=int, timeout_seconds=30, notify="http://127.0.0.1:9/hook")
    threading.Timer(0.3, hitl.submit, (event.form_url, 2)).start()
    assert event.wait() == 2
    until(lambda: notice_logs(caplog, "y") != [], "the failure's log line")
    assert all("failed" in r.getMessage() for r in notice_logs(caplog, "y"))


def test_a_trickling_receiver_holds_up_neither_the_wait_nor_other_waits(
    root: Path, trickler: Trickler, capsys: pytest.CaptureFixture[str]
) -> None:
    event = hitl.new_event("slow hook", data_type=int, timeout_seconds=60, notify=trickler.url)
    other = hitl.new_event("other", data_type=int, timeout_seconds=60)
    threading.Timer(0.1, hitl.submit, (event.form_url, 5)).start()
    assert event.wait() == 5
    threading.Timer(0.1, hitl.submit, (other.form_url, 6)).start()  # after its wait showed the form
    assert other.wait() == 6
    # Waiting for the notice to time out would have taken ten of the receiver's one-a-second bytes.
    assert trickler.sent < 8, f"the waits returned {trickler.sent} s into the reply"
    assert "[hitl] form: " + other.form_url in capsys.readouterr().out


def test_the_whole_exchange_has_one_deadline(trickler: Trickler, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(_notify.post(trickler.url, {"event_name": "deadline"}, 1.5)))
    thread.start()
    thread.join(30)  # each byte comes within a socket timeout: only an overall deadline ends this
    assert result == [False]
    assert trickler.closed_by_client.wait(30)
    [record] = notice_logs(caplog, "deadline")
    assert "no complete reply within 1.5 s" in record.getMessage()


def test_a_slow_connect_counts_against_the_deadline(
    trickler: Trickler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The deadline passes while connecting, before there is a socket for it to shut: the exchange
    # must still end there, not trickle on for an hour.
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    connect = socket.create_connection

    def slow_connect(*args: Any, **kwargs: Any) -> socket.socket:
        time.sleep(1.5)
        return connect(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)  # a slow network, not our code
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(_notify.post(trickler.url, {"event_name": "slow"}, 1.0)))
    thread.start()
    thread.join(30)
    assert result == [False]
    [record] = notice_logs(caplog, "slow")
    assert "no complete reply within 1 s" in record.getMessage()


EXITING = """
import sys
import flyteplugins.hitl as hitl
event = hitl.new_event("exit", data_type=int, notify=sys.argv[1])
print("value", event.wait(), flush=True)
"""


def test_a_trickling_receiver_does_not_hold_up_the_program_exit(root: Path, trickler: Trickler) -> None:
    proc = run_python(EXITING, trickler.url)
    try:
        assert proc.stdout is not None
        form = next(line for line in proc.stdout if line.startswith("[hitl] form: "))
        assert trickler.connected.wait(30), "the notice is on its way"
        hitl.submit(form.split("form: ", 1)[1].strip(), 1)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, out
    assert "value 1" in out
    # Waiting for the notice to time out would have taken ten of the receiver's one-a-second bytes.
    assert trickler.sent < 8, f"the program ended {trickler.sent} s into the reply"


class Redirecting(BaseHTTPRequestHandler):
    location = "ftp://files.example.com/drop?token=abc"
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        Redirecting.paths.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("location", ["ftp://files.example.com/drop?token=abc", "/elsewhere?token=abc"])
def test_a_redirect_is_a_logged_failure_and_is_not_followed(location: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    Redirecting.location, Redirecting.paths = location, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _notify.post(f"http://127.0.0.1:{server.server_address[1]}/hook", {"event_name": "r"}) is False
    finally:
        server.shutdown()
        server.server_close()
    assert Redirecting.paths == ["/hook"], "nothing else was requested"
    [record] = notice_logs(caplog, "r")
    message = record.getMessage()
    assert "redirected (302) to" in message and location.split("?")[0] in message
    assert "token=abc" not in message


def test_credentials_in_the_webhook_url_are_sent_but_never_logged(
    root: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    port = receiver.server_address[1]
    assert _notify.post(f"http://bot:s3cr%40t@127.0.0.1:{port}/hooks/abc", {"event_name": "c"}) is True
    assert receiver.authorizations == ["Basic " + base64.b64encode(b"bot:s3cr@t").decode()]
    assert _notify.post("http://bot:s3cret@127.0.0.1:9/hooks/secret-path", {"event_name": "c"}) is False
    with pytest.raises(hitl.InvalidEventError) as info:
        hitl.new_event("bad", data_type=int, notify="ftp://bot:s3cret@example.com/x")
    logged = " ".join(r.getMessage() for r in caplog.records) + str(info.value)
    assert "s3cret" not in logged and "bot" not in logged and "secret-path" not in logged
    assert "http://127.0.0.1:9" in logged


def test_a_notice_goes_through_the_proxy_the_environment_names(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{receiver.server_address[1]}")
    assert _notify.post("http://hooks.invalid:8080/services/abc?x=1", {"event_name": "p"}) is True
    [(path, _, body)] = receiver.received
    assert path == "http://hooks.invalid:8080/services/abc?x=1" and body == {"event_name": "p"}


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "http://", "http://host:port/x", "http://host:99999/x", "hooks"]
)
def test_a_bad_webhook_url_is_refused_when_the_event_is_created(root: Path, url: str) -> None:
    with pytest.raises(hitl.InvalidEventError, match="notify must be an http"):
        hitl.new_event("bad hook", data_type=int, notify=url)
    assert not root.exists(), "nothing was written"


def test_a_bad_webhook_url_in_the_environment_is_named_without_its_secret(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Slack-style URL pasted without its scheme: the path is the secret, and the message says
    # which variable is wrong without showing it.
    monkeypatch.setenv("FLYTE_HITL_NOTIFY_URL", "hooks.slack.com/services/T0/B0/s3cretXYZ")
    with pytest.raises(hitl.InvalidEventError) as info:
        hitl.new_event("bad hook", data_type=int)
    message = str(info.value)
    assert message == "FLYTE_HITL_NOTIFY_URL must be an http:// or https:// URL, got 40 characters without a scheme"
    monkeypatch.setenv("FLYTE_HITL_NOTIFY_URL", "ftp://bot:pw@files.example.com/drop?key=s3cretXYZ")
    with pytest.raises(hitl.InvalidEventError, match="FLYTE_HITL_NOTIFY_URL must be an http") as info:
        hitl.new_event("bad hook", data_type=int)
    assert "'ftp://files.example.com'" in str(info.value) and "s3cret" not in str(info.value)
    assert not root.exists(), "nothing was written"
