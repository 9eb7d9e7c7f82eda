"""A fake Slack on loopback: the Web API methods the package calls, and the ``response_url`` of clicks;
plus interaction payloads shaped like Slack's, signed like Slack signs them.

It records every call (method, body, Authorization) and answers as Slack's documentation says:
``{"ok": true, ...}`` with a ``ts`` for a posted message, a profile with an e-mail for ``users.info``
(no ``email`` field for a user missing from `emails`, as without the ``users:read.email`` scope).
While `held` is clear every call waits for it (a slow Slack); `delays`, `slow`, `limited` and
`failing` make a method slow, rate-limited (HTTP 429) or failing. `shown` keeps each message as it
stands, its posts and updates applied in the order Slack replies to them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

TOKEN = "xoxb-test-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL_ID = "C0TEST"


class FakeSlack(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets a burst of concurrent calls

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        #: (method, body) of every call, in order; "response_url" for posts to a click's response_url.
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self.emails = {"U1": "alice@example.com", "U2": "bob@example.com"}
        self.held = threading.Event()
        self.held.set()
        #: Seconds to wait before replying to a method, and when (time.monotonic) each method last replied.
        self.delays: dict[str, float] = {}
        self.replied: dict[str, float] = {}
        #: Seconds to hold each of the next calls of a method (one entry per call, then `delays`).
        self.slow: dict[str, list[float]] = {}
        #: The Retry-After of each of the next calls of a method, answered HTTP 429 (one entry per call).
        self.limited: dict[str, list[int]] = {}
        #: Methods that answer ``{"ok": false}``.
        self.failing: set[str] = set()
        #: What this server's ``GET /health`` says of Slack (when it plays a separate form server).
        self.verifies = True
        #: How many replies each method got.
        self.answered: dict[str, int] = {}
        #: ts -> the message as it stands (the body of the last post or update applied).
        self.shown: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._ts = itertools.count(1)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a caller that gave up (its deadline passed) before the reply: expected here

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"

    def response_url(self, name: str = "r") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/actions/{name}"

    def record(self, method: str, body: dict[str, Any], authorization: str | None) -> None:
        with self._changed:
            self.calls.append((method, body))
            self.authorizations.append(authorization)
            self._changed.notify_all()

    def of(self, method: str) -> list[dict[str, Any]]:
        with self._changed:
            return [body for m, body in self.calls if m == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        """The bodies of the first `count` calls of `method`, once there are that many (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [b for m, b in self.calls if m == method]) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"the fake Slack got {len(found)} {method} calls, not {count}: {self.calls}"
                self._changed.wait(left)
            return found[:count]

    def next_ts(self) -> str:
        return f"1712345678.{next(self._ts):06d}"

    def next_of(self, queues: dict[str, list[Any]], method: str) -> Any:
        with self._changed:
            queue = queues.get(method) or []
            return queue.pop(0) if queue else None

    def show(self, ts: str, body: dict[str, Any]) -> None:
        with self._changed:
            self.shown[ts] = body
            self._changed.notify_all()

    def showing(self, ts: str, done: Any, timeout: float = 30) -> dict[str, Any]:
        """The message `ts` once `done(message)` holds for it as it stands (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ((message := self.shown.get(ts)) and done(message)):
                left = deadline - time.monotonic()
                assert left > 0, f"message {ts} never showed what was expected: {message}"
                self._changed.wait(left)
            return message


class _Handler(BaseHTTPRequestHandler):
    server: FakeSlack

    def do_GET(self) -> None:
        """``/health`` as a separate form server answers it, saying whether it can verify Slack's clicks."""
        if self.path != "/health":
            return self._reply(b"not found", "text/plain", 404)
        self._reply(json.dumps({"status": "healthy", "slack": self.server.verifies}).encode(), "application/json")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            body: dict[str, Any] = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        else:
            body = json.loads(raw or b"{}")
        if self.path.startswith("/actions/"):
            self.server.record("response_url", body, None)
            self.server.held.wait(60)
            return self._reply(b"ok", "text/plain")
        method = self.path.removeprefix("/api/")
        self.server.record(method, body, self.headers.get("Authorization"))
        self.server.held.wait(60)
        slow = self.server.next_of(self.server.slow, method)
        time.sleep(self.server.delays.get(method, 0) if slow is None else slow)
        retry_after = self.server.next_of(self.server.limited, method)
        if retry_after is not None:
            return self._reply(b'{"ok": false, "error": "ratelimited"}', "application/json", 429, retry_after)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json({"ok": False, "error": "invalid_auth"})
        if method in self.server.failing:
            return self._json({"ok": False, "error": "fatal_error"})
        if method == "chat.postMessage":
            ts = self.server.next_ts()
            self.server.show(ts, body)
            return self._json({"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {}})
        if method == "chat.update":
            self.server.show(str(body.get("ts")), body)
            return self._json({"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})
        if method == "chat.postEphemeral":
            return self._json({"ok": True, "message_ts": self.server.next_ts()})
        if method == "views.open":
            return self._json({"ok": True, "view": {"id": "V1"}})
        if method == "users.info":
            email = self.server.emails.get(body.get("user", ""))
            profile = {"email": email} if email else {}
            return self._json({"ok": True, "user": {"id": body.get("user"), "profile": profile}})
        return self._json({"ok": False, "error": "unknown_method"})

    def _json(self, payload: dict[str, Any]) -> None:
        self._reply(json.dumps(payload).encode(), "application/json; charset=utf-8")
        method = self.path.removeprefix("/api/")
        self.server.replied[method] = time.monotonic()
        with self.server._changed:
            self.server.answered[method] = self.server.answered.get(method, 0) + 1
            self.server._changed.notify_all()

    def _reply(self, data: bytes, content_type: str, status: int = 200, retry_after: int | None = None) -> None:
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.held.set()
        fake.shutdown()
        fake.server_close()
        thread.join(10)


# -- interaction payloads, as Slack sends them ---------------------------------------------------------


def signed(payload: dict[str, Any], *, secret: str = SECRET, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an interaction request carrying `payload`, signed as Slack signs it."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time() if at is None else at))
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac}",
    }
    return body, headers


def _user(user: str) -> dict[str, Any]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEST"}


def click(
    message: dict[str, Any], action_id: str, *, user: str = "U1", response_url: str = "", selected: str | None = None
) -> dict[str, Any]:
    """A ``block_actions`` payload: `user` clicked the control `action_id` of the posted `message`."""
    actions_block = next(b for b in message["blocks"] if b["type"] == "actions")
    element = next(e for e in actions_block["elements"] if e["action_id"] == action_id)
    action: dict[str, Any] = {
        "type": element["type"],
        "action_id": action_id,
        "block_id": actions_block["block_id"],
        "action_ts": f"{time.time():.6f}",
    }
    if element["type"] == "button":
        action.update(value=element.get("value"), text=element["text"])
    if selected is not None:
        option = next(o for o in element["options"] if o["value"] == selected)
        action["selected_option"] = option
    return {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": "A0TEST",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": "1712345678.000001", "channel_id": CHANNEL_ID},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": {"id": "T0TEST", "domain": "example"},
        "channel": {"id": CHANNEL_ID, "name": "deploys"},
        "message": {"type": "message", "ts": "1712345678.000001", "blocks": message["blocks"]},
        "response_url": response_url,
        "actions": [action],
    }


def submission(view: dict[str, Any], values: dict[str, dict[str, Any]], *, user: str = "U1") -> dict[str, Any]:
    """A ``view_submission`` payload for the opened `view`, with the inputs' states as `values`
    (block_id -> the state of its element ``v``); every input block is present, as in Slack."""
    state = {}
    for block in view["blocks"]:
        if block["type"] == "input":
            element = block["element"]
            state[block["block_id"]] = {"v": {"type": element["type"], **values.get(block["block_id"], {})}}
    return {
        "type": "view_submission",
        "team": {"id": "T0TEST", "domain": "example"},
        "user": _user(user),
        "api_app_id": "A0TEST",
        "trigger_id": "12345.98765.abcd2358fdea",
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "blocks": view["blocks"],
            "state": {"values": state},
            "hash": "156772938.1827394",
        },
        "response_urls": [],
    }
