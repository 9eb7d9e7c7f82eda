"""Programs past a login in front of the form server: ``--header``, ``FLYTE_HITL_HEADERS`` and
``headers=``, against a loopback proxy that demands a bearer token and forwards to a real server."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _client
from flyteplugins.hitl._client import request_headers
from flyteplugins.hitl._errors import ConfigurationError, ServerReplyError
from flyteplugins.hitl.server import HitlServer

BEARER = "platform-bearer-credential-0123456789"


class _Login(BaseHTTPRequestHandler):
    """The platform's login: no ``Authorization: Bearer BEARER``, no entry (401, echoing what it got,
    as careless proxies do); with it, the request goes on to the form server."""

    protocol_version = "HTTP/1.1"
    server: _LoginProxy

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _forward(self, body: bytes | None) -> None:
        given = self.headers.get("Authorization") or ""
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        if given != f"Bearer {BEARER}":
            self._send(401, "application/json", json.dumps({"detail": f"login required; got {given!r}"}).encode())
            return
        upstream = urlsplit(self.server.upstream)
        conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=90)
        try:
            headers = {"Content-Type": self.headers["Content-Type"]} if self.headers["Content-Type"] else {}
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            self._send(reply.status, reply.getheader("Content-Type") or "", reply.read())
        finally:
            conn.close()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _LoginProxy(ThreadingHTTPServer):
    daemon_threads = True
    upstream: str
    seen: list[dict[str, str]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[_LoginProxy]:
    """A login proxy on port 0 in front of the real form server `server`; events' links point at the proxy."""
    httpd = _LoginProxy(("127.0.0.1", 0), _Login)
    httpd.upstream, httpd.seen = server.url, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", httpd.url)
    monkeypatch.delenv("FLYTE_HITL_HEADERS", raising=False)
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "FLYTE_HITL_HEADERS"}
    return subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _event(name: str = "login") -> hitl.Event[int]:
    return hitl.new_event(name, data_type=int, timeout_seconds=600)


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_submit_with_headers_gets_past_the_login(proxy: _LoginProxy, mode: str) -> None:
    event = _event()
    assert event.form_url.startswith(proxy.url)
    with pytest.raises(ServerReplyError, match="asks for a login") as info:
        hitl.submit(event.form_url, 1, headers={"Authorization": "Bearer wrong-credential-abcdef"})
    assert "wrong-credential-abcdef" not in str(info.value), "the proxy's echo of the header is not shown"
    headers = {"Authorization": f"Bearer {BEARER}"}
    if mode == "sync":
        reply = hitl.submit(event.form_url, 5, headers=headers)
    else:
        reply = asyncio.run(hitl.submit.aio(event.form_url, 5, headers=headers))
    assert reply["value"] == 5
    assert event.wait() == 5
    assert proxy.seen[-1]["authorization"] == f"Bearer {BEARER}"


def test_the_cli_sends_repeated_headers_to_submit_and_status(proxy: _LoginProxy, root: Path) -> None:
    event = _event()
    server = ["--endpoint", proxy.url, "--token", event.token]
    login = ["--header", f"Authorization: Bearer {BEARER}", "--header", "X-Team:  sre "]
    refused = cli("status", event.request_id, *server)
    assert refused.returncode == 1 and "asks for a login (401 Unauthorized)" in refused.stderr, refused.stderr
    assert "send its credentials with --header or FLYTE_HITL_HEADERS" in refused.stderr

    waiting = cli("status", event.request_id, *server, *login, "--wait", "0.5")
    assert waiting.returncode == 7, waiting.stderr
    assert json.loads(waiting.stdout)["state"] == "waiting"
    assert proxy.seen[-1]["x-team"] == "sre"

    answered = cli("submit", event.request_id, "8", *server, *login)
    assert answered.returncode == 0, answered.stderr
    assert event.wait() == 8
    done = cli("status", event.request_id, *server, *login, "--wait", "30")
    assert done.returncode == 0 and json.loads(done.stdout)["response"]["value"] == 8


def test_the_cli_lists_a_servers_events_past_the_login(proxy: _LoginProxy, root: Path) -> None:
    waiting = _event("still")
    time.sleep(0.01)  # creation times are kept to the millisecond: the second is the newer one
    answered = _event("done")
    hitl.submit(answered.form_url, 3, headers={"Authorization": f"Bearer {BEARER}"})
    refused = cli("list", "--endpoint", proxy.url)
    assert refused.returncode == 1 and "asks for a login (401 Unauthorized)" in refused.stderr, refused.stderr
    login = ["--endpoint", proxy.url, "--header", f"Authorization: Bearer {BEARER}"]
    table = cli("list", *login)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "TYPE", "CREATED", "REQUEST_ID", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == ["answered", "waiting"], "newest first"
    listed = json.loads(cli("list", *login, "--status", "waiting", "--json").stdout)
    assert [e["request_id"] for e in listed] == [waiting.request_id]
    assert all("token" not in e for e in listed) and waiting.token not in table.stdout
    assert proxy.seen[-1]["authorization"] == f"Bearer {BEARER}"


def test_the_cli_and_submit_take_headers_from_the_environment(proxy: _LoginProxy, root: Path) -> None:
    event = _event()
    lines = f"Authorization: Bearer {BEARER}\n\nX-Team: sre\n"
    done = cli("submit", event.form_url, "3", FLYTE_HITL_HEADERS=lines)
    assert done.returncode == 0, done.stderr
    assert event.wait() == 3
    assert proxy.seen[-1]["x-team"] == "sre"

    # A header given explicitly wins over the environment's of the same name (in any case).
    later = _event("later")
    refused = cli("submit", later.form_url, "3", "--header", "authorization: Bearer nope", FLYTE_HITL_HEADERS=lines)
    assert refused.returncode == 1 and "asks for a login" in refused.stderr
    assert "Bearer nope" not in refused.stderr and BEARER not in refused.stderr


def test_python_submit_takes_headers_from_the_environment(proxy: _LoginProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    event = _event()
    monkeypatch.setenv("FLYTE_HITL_HEADERS", f"Authorization: Bearer {BEARER}")
    assert hitl.submit(event.form_url, 2)["value"] == 2
    assert event.wait() == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--header", "Authorization Bearer sekrit-value-123"], {}, "--header takes 'Name: value'"),
        (["--header", ": sekrit-value-123"], {}, "--header takes 'Name: value'"),
        (["--header", "Bad Name: sekrit-value-123"], {}, "'Bad Name' is not a header name"),
        (["--header", "Content-Length: 5"], {}, "Content-Length is set by the request itself"),
        ([], {"FLYTE_HITL_HEADERS": "X-Ok: 1\n\nsekrit-value-123"}, "FLYTE_HITL_HEADERS line 3 takes 'Name: value'"),
        ([], {"FLYTE_HITL_HEADERS": "Host: sekrit-value-123"}, "Host is set by the request itself"),
    ],
)
def test_a_bad_header_is_a_one_line_usage_error_without_its_value(
    proxy: _LoginProxy, args: list[str], env: dict[str, str], message: str
) -> None:
    event = _event()
    status = ["status", event.request_id, "--endpoint", proxy.url, "--token", "t"]
    for argv in (["submit", event.form_url, "1"], status):
        done = cli(*argv, *args, **env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert "sekrit" not in done.stderr and "Traceback" not in done.stderr
    assert proxy.seen == [], "nothing was sent"


def test_a_login_page_without_json_says_to_send_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>Sign in</html>"
            self.send_response(401)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(
            ServerReplyError, match=r"asks for a login \(401 Unauthorized\) with 'text/html' content; send"
        ) as info:
            _client.status("ev-1", token="t", endpoint=f"http://127.0.0.1:{httpd.server_address[1]}")
        assert info.value.status == 401
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_header_value_on_two_lines_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_HITL_HEADERS", raising=False)
    with pytest.raises(ConfigurationError, match="the value of Authorization is not a text on one line") as info:
        request_headers({"Authorization": "Bearer sekrit\r\nX-Injected: 1"})
    assert "sekrit" not in str(info.value)
    with pytest.raises(ConfigurationError, match="is not a header name"):
        request_headers({"X-Bad\n": "1"})


def test_the_headers_merge_environment_first_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_HEADERS", "Authorization: Bearer from-env\r\nX-Team: sre\n")
    assert request_headers() == {"Authorization": "Bearer from-env", "X-Team": "sre"}
    assert request_headers({"authorization": "Bearer given"}) == {"authorization": "Bearer given", "X-Team": "sre"}
