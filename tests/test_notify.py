"""Webhook notices: a real HTTP receiver on loopback gets the JSON; a failing one never fails the task."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        super().__init__(("127.0.0.1", 0), ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/abc"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


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
    [(path, content_type, body)] = receiver.received
    assert path == "/hooks/abc" and content_type == "application/json"
    assert body["event_name"] == "deploy" and body["prompt"] == "Ship\nit?" and body["data_type"] == "bool"
    assert body["form_url"] == event.form_url and body["api_url"] == event.api_url
    assert body["curl"] == event.curl_command and body["expires_at"] == event.expires_at
    assert body["request_id"] == event.request_id
    assert event.form_url in body["text"] and "deploy" in body["text"]
    # The webhook URL may hold a secret: it is never written to storage.
    assert receiver.url not in (root / event.request_id / "request.json").read_text()


def test_notify_url_from_the_environment(root: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_NOTIFY_URL", receiver.url)
    event = hitl.new_event("env", data_type=int, timeout_seconds=30)
    threading.Timer(0.3, hitl.submit, (event.form_url, 3)).start()
    assert event.wait() == 3
    assert [body["event_name"] for _, _, body in receiver.received] == ["env"]


@pytest.mark.parametrize("receiver", [500], indirect=True)
def test_failing_receiver_is_logged_and_the_wait_goes_on(
    root: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    event = hitl.new_event("x", data_type=int, timeout_seconds=30, notify=receiver.url)
    threading.Timer(0.3, hitl.submit, (event.form_url, 1)).start()
    assert event.wait() == 1
    assert len(receiver.received) == 1
    [record] = [r for r in caplog.records if r.name == "flyteplugins.hitl.notify"]
    assert "500" in record.getMessage() and record.exc_info is None


def test_unreachable_receiver_is_logged_and_the_wait_goes_on(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    event = hitl.new_event("y", data_type=int, timeout_seconds=30, notify="http://127.0.0.1:9/hook")
    threading.Timer(0.3, hitl.submit, (event.form_url, 2)).start()
    assert event.wait() == 2
    assert any("failed" in r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.notify")
