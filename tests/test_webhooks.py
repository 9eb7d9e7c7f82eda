"""Webhook notices as CloudEvents, signed as Standard Webhooks: checked by a verifier written here from
the Standard Webhooks spec (and by the receiver docs/GUIDE.md shows), through a real receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, request, until

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _notify

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def spec_verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """The Standard Webhooks check: the timestamp within 5 minutes, and one ``v1,`` signature that is the
    base64 HMAC-SHA256, keyed by the base64-decoded secret after ``whsec_``, of ``id.timestamp.body``."""
    try:
        message_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split(" ")
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > 300:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    return any(
        version == "v1" and hmac.compare_digest(sig.encode(), expected)
        for version, _, sig in (s.partition(",") for s in signatures)
    )


def guide_verify() -> Any:
    """The receiver's check as docs/GUIDE.md shows it, run as written."""
    guide = (REPO / "docs" / "GUIDE.md").read_text()
    [code] = re.findall(r"```python\n(# Verify a signed notice.*?)```", guide, re.DOTALL)
    assert len(code.strip().splitlines()) <= 12, code
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verified"]


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses  # the status of each reply in turn; the last one repeats
        self.received: list[tuple[dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/xyz"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        statuses = self.server.statuses
        self.send_response(statuses.pop(0) if len(statuses) > 1 else statuses[0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(list(getattr(request, "param", [200])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLYTE_HITL_WEBHOOK_SECRET", SECRET)
    return SECRET


def test_a_waiting_notice_is_a_signed_cloudevent(root: Path, receiver: Receiver, signed: str) -> None:
    event = hitl.new_event("deploy", data_type=bool, prompt="Ship it?", timeout_seconds=30, notify=receiver.url)
    threading.Timer(0.3, hitl.submit, (event.form_url, True)).start()
    assert event.wait() is True
    until(lambda: any(b"org.flyte.hitl.waiting" in b for _, b in receiver.received), "the notice")
    [(headers, body)] = [(h, b) for h, b in receiver.received if b"org.flyte.hitl.waiting" in b]
    assert headers["content-type"] == "application/cloudevents+json"
    notice = json.loads(body)
    assert {k: notice[k] for k in ("specversion", "type", "subject", "datacontenttype")} == {
        "specversion": "1.0",
        "type": "org.flyte.hitl.waiting",
        "subject": event.request_id,
        "datacontenttype": "application/json",
    }
    assert notice["source"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", notice["time"])
    assert notice["data"]["event_name"] == "deploy" and notice["data"]["form_url"] == event.form_url
    assert headers["webhook-id"] == notice["id"]
    assert spec_verify(signed, headers, body) and guide_verify()(signed, headers, body)


def test_a_replayed_or_altered_notice_is_refused_by_the_verifiers(receiver: Receiver, signed: str) -> None:
    assert _notify.post(receiver.url, _notify.notice("waiting", {"request_id": "r-1", "event_name": "r"}))
    [(headers, body)] = receiver.received
    verifiers = [spec_verify, guide_verify()]
    for verify in verifiers:
        assert verify(signed, headers, body)
        assert not verify(signed, headers, body.replace(b'"r-1"', b'"r-2"'))  # altered body
        assert not verify(signed, {**headers, "webhook-id": "msg_other"}, body)  # another notice's id
        assert not verify("whsec_" + base64.b64encode(os.urandom(32)).decode(), headers, body)  # another secret
    assert not spec_verify(signed, headers, body, now=time.time() + 600)  # replayed ten minutes later


@pytest.mark.parametrize("receiver", [[503, 503, 200]], indirect=True)
def test_a_503_is_retried_with_the_same_id_each_attempt_signed(receiver: Receiver, signed: str) -> None:
    body = _notify.notice("waiting", {"request_id": "r-2", "event_name": "retry"})
    assert _notify.post(receiver.url, body, delays=(0.05, 0.05, 0.05)) is True
    assert len(receiver.received) == 3
    assert {h["webhook-id"] for h, _ in receiver.received} == {body["id"]}
    assert all(spec_verify(signed, h, b) for h, b in receiver.received)


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
def test_a_refusal_by_the_receiver_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.notify")
    assert _notify.post(receiver.url, _notify.notice("waiting", {"request_id": "r-3"}), delays=(0.05,)) is False
    assert len(receiver.received) == 1
    assert any("HTTP 400" in r.getMessage() for r in caplog.records)


def test_without_a_secret_notices_are_unsigned(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_HITL_WEBHOOK_SECRET", raising=False)
    assert _notify.post(receiver.url, _notify.notice("waiting", {"request_id": "r-4"}))
    [(headers, _)] = receiver.received
    assert "webhook-signature" not in headers


def test_the_legacy_format_keeps_the_earlier_shape(
    root: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_HITL_WEBHOOK_FORMAT", "legacy")
    event = hitl.new_event("old", data_type=int, timeout_seconds=30, notify=receiver.url)
    threading.Timer(0.3, hitl.submit, (event.form_url, 1)).start()
    assert event.wait() == 1
    until(lambda: any(json.loads(b).get("kind") == "waiting" for _, b in receiver.received), "the notice")
    [(headers, body)] = [(h, b) for h, b in receiver.received if json.loads(b).get("kind") == "waiting"]
    notice = json.loads(body)
    assert headers["content-type"] == "application/json" and "specversion" not in notice
    assert notice["event_name"] == "old" and notice["kind"] == "waiting" and notice["form_url"] == event.form_url


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLYTE_HITL_WEBHOOK_SECRET", "hunter2", "must be 'whsec_' followed by the base64 of 24 to 64"),
        ("FLYTE_HITL_WEBHOOK_SECRET", "whsec_c2hvcnQ=", "must be 'whsec_' followed by the base64 of 24 to 64"),
        ("FLYTE_HITL_WEBHOOK_SECRET", "whsec_not base64!", "must be 'whsec_'"),
        ("FLYTE_HITL_WEBHOOK_FORMAT", "xml", "must be 'cloudevents' (the default) or 'legacy', got 'xml'"),
    ],
)
def test_a_bad_webhook_setting_is_refused_when_the_event_is_created(
    root: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(hitl.ConfigurationError, match=re.escape(expected)) as caught:
        hitl.new_event("bad setting", data_type=int, notify="http://127.0.0.1:9/hook")
    assert isinstance(caught.value, ValueError)
    assert value not in str(caught.value) or name.endswith("FORMAT")  # a secret is never echoed
    assert not root.exists() or list(root.iterdir()) == []  # nothing written


def notices(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in receiver.received]


def test_the_server_that_stores_the_answer_sends_its_notice_once(root: Path, receiver: Receiver, remote: str) -> None:
    # The form server is another process: the answered notice comes from it, and once.
    event = hitl.new_event("ship", data_type=bool, timeout_seconds=60, notify=receiver.url)
    threading.Timer(0.3, hitl.submit, (event.form_url, True)).start()
    assert event.wait() is True
    until(lambda: len(receiver.received) >= 2, "the waiting and answered notices")
    time.sleep(0.5)  # a second answered notice, if one were sent, would come now
    by_type = {n["type"]: n for n in notices(receiver)}
    assert sorted(n["type"] for n in notices(receiver)) == ["org.flyte.hitl.answered", "org.flyte.hitl.waiting"]
    answered = by_type["org.flyte.hitl.answered"]
    assert answered["subject"] == event.request_id and answered["data"]["value"] is True
    assert answered["data"]["state"] == "answered" and answered["data"]["via"] == "python"
    # The webhook's URL is kept for the writers, never shown.
    status = request(remote, "GET", f"/status/{event.request_id}?token={event.token}").json()
    assert receiver.url not in json.dumps(status) and "woke" not in json.dumps(status["response"])


def test_an_expiry_sends_one_expired_notice(root: Path, receiver: Receiver) -> None:
    event = hitl.new_event(
        "late", data_type=int, default=7, timeout_seconds=0.5, poll_interval_seconds=0.1, notify=receiver.url
    )
    assert event.wait() == 7
    until(lambda: len(receiver.received) >= 2, "the waiting and expired notices")
    [expired] = [n for n in notices(receiver) if n["type"] == "org.flyte.hitl.expired"]
    assert expired["data"]["state"] == "expired" and expired["data"]["value"] == 7
    assert expired["data"]["default_applied"] is True
