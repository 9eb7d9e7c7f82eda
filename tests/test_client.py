"""Answering from programs: `hitl.submit` and the `hitl` command line (list, status, submit)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Trickler

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _client
from flyteplugins.hitl._client import check_endpoint, parse_form_url, redact_url
from flyteplugins.hitl._errors import ConfigurationError, ServerReplyError, ServerUnavailableError
from flyteplugins.hitl.server import HitlServer


def cli(*args: str, env_root: Path | None = None, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYTE_HITL_")}
    if env_root is not None:
        env["FLYTE_HITL_ROOT"] = str(env_root)
    if endpoint is not None:
        env["FLYTE_HITL_ENDPOINT"] = endpoint
    return subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *args], env=env, capture_output=True, text=True, timeout=60
    )


def stored(root: Path, event: hitl.Event[Any]) -> dict[str, Any]:
    return json.loads((root / event.request_id / "response.json").read_text())


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("how", ["form_url", "endpoint", "root"])
def test_submit_wakes_the_waiter_whichever_way_it_goes(root: Path, mode: str, how: str) -> None:
    # An hour between polls and to the deadline: only the in-process wake-up can end this wait in time.
    event = hitl.new_event("n", data_type=float, timeout_seconds=3600, poll_interval_seconds=3600)
    target = event.form_url if how == "form_url" else event.request_id
    kwargs: dict[str, Any] = {"comment": "by program"}
    if how == "endpoint":
        kwargs.update(endpoint=event.endpoint, token=event.token)
    if how == "root":
        kwargs.update(root=str(root))
    results: list[Any] = []

    def answer() -> None:
        if mode == "sync":
            results.append(hitl.submit(target, "2.5", **kwargs))
        else:
            results.append(asyncio.run(hitl.submit.aio(target, "2.5", **kwargs)))

    answering = threading.Timer(0.2, answer)
    answering.start()
    got: list[float] = []
    waiting = threading.Thread(target=lambda: got.append(event.wait()), daemon=True)
    waiting.start()
    waiting.join(30)
    assert got == [2.5], "the wait was woken"
    answering.join()
    assert results and results[0]["value"] == 2.5
    record = stored(root, event)
    assert record["via"] == "python" and record["comment"] == "by program"


def test_submit_errors_are_typed(root: Path, server: HitlServer) -> None:
    event = hitl.new_event("b", data_type=bool, timeout_seconds=30)
    with pytest.raises(hitl.InvalidValueError, match="ture"):
        hitl.submit(event.form_url, "ture")
    with pytest.raises(hitl.InvalidTokenError):
        hitl.submit(event.request_id, True, endpoint=event.endpoint, token="wrong")
    with pytest.raises(hitl.InvalidTokenError):
        hitl.submit(event.request_id, True, endpoint=event.endpoint)
    with pytest.raises(hitl.InvalidTokenError):  # a server does not tell an unknown id from a wrong token
        hitl.submit("no-such-event", True, endpoint=event.endpoint, token="x")
    with pytest.raises(hitl.EventNotFoundError):
        hitl.submit("no-such-event", True, root=str(root))
    with pytest.raises(hitl.InvalidRequestIdError):
        hitl.submit("../escape", True, root=str(root))
    assert not (root / event.request_id / "response.json").exists()
    hitl.submit(event.form_url, "no")
    with pytest.raises(hitl.AlreadyAnsweredError):
        hitl.submit(event.form_url, "yes")
    with pytest.raises(hitl.AlreadyAnsweredError):
        hitl.submit(event.request_id, True, root=str(root))
    assert stored(root, event)["value"] is False


def test_submit_to_an_expired_event(root: Path) -> None:
    event = hitl.new_event("e", data_type=int, timeout_seconds=0.2)
    with pytest.raises(TimeoutError):
        event.wait()
    with pytest.raises(hitl.EventExpiredError):
        hitl.submit(event.form_url, 1)
    with pytest.raises(hitl.EventExpiredError):
        hitl.submit(event.request_id, 1, root=str(root))


def test_submit_to_an_unreachable_server_names_it(root: Path) -> None:
    with pytest.raises(ServerUnavailableError, match=re.escape("cannot reach http://127.0.0.1:9/submit/json")) as info:
        hitl.submit("http://127.0.0.1:9/form/abc?token=t", 1)
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, hitl.HitlError)


def test_parse_form_url() -> None:
    assert parse_form_url("https://h.example/app/form/x-1?token=a%2Bb") == ("https://h.example/app", "x-1", "a+b")
    with pytest.raises(ConfigurationError, match="not a form URL"):
        parse_form_url("http://h/status/x")
    with pytest.raises(ConfigurationError, match="user name or password"):
        parse_form_url("http://user:pw@h/form/x-1?token=t")
    with pytest.raises(hitl.InvalidRequestIdError):
        parse_form_url("http://h/form/../../etc")


def test_cli_list_status_and_submit(root: Path) -> None:
    pending = hitl.new_event("pending-one", data_type=int, prompt="How many?", timeout_seconds=60)
    answered = hitl.new_event("answered-one", data_type=str, timeout_seconds=60)
    hitl.submit(answered.form_url, "done")

    listing = cli("list", env_root=root)
    assert listing.returncode == 0, listing.stderr
    assert pending.request_id in listing.stdout and answered.request_id in listing.stdout
    assert pending.token not in listing.stdout and answered.token not in listing.stdout
    only_pending = cli("list", "--status", "waiting", "--json", env_root=root)
    rows = json.loads(only_pending.stdout)
    assert [r["request_id"] for r in rows] == [pending.request_id]
    assert "token" not in rows[0] and "wake" not in rows[0]  # no secret, no internal address
    everything = json.loads(cli("list", "--json", env_root=root).stdout)
    assert {(r["request_id"], r["state"]) for r in everything} == {
        (pending.request_id, "waiting"),
        (answered.request_id, "answered"),
    }

    status = cli("status", pending.request_id, env_root=root)
    assert status.returncode == 7, "still waiting"
    assert json.loads(status.stdout)["state"] == "waiting"
    assert pending.token not in status.stdout

    submitted = cli("submit", pending.request_id, "7", "--comment", "cli says 7", env_root=root)
    assert submitted.returncode == 0, submitted.stderr
    assert pending.wait() == 7
    assert (stored(root, pending)["via"], stored(root, pending)["transport"]) == ("cli", "storage")

    via_endpoint = cli("status", answered.request_id, "--endpoint", answered.endpoint, "--token", answered.token)
    assert json.loads(via_endpoint.stdout)["response"]["value"] == "done"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "{id}", "4.5"], 2, "expected int"),
        (["submit", "nope", "1"], 3, "no event"),
        (["submit", "{id}", "1", "--endpoint", "{endpoint}", "--token", "bad"], 6, "token"),
        (["status", "../x"], 2, "invalid request_id"),
        (["submit", "{url}", "1", "--json-value"], 0, ""),
        (["submit", "{url}", "2"], 4, "already answered"),
    ],
)
def test_cli_exit_codes(root: Path, args: list[str], code: int, message: str) -> None:
    event = hitl.new_event("codes", data_type=int, timeout_seconds=60)
    if code == 4:
        hitl.submit(event.form_url, 1)
    filled = [a.format(id=event.request_id, endpoint=event.endpoint, url=event.form_url) for a in args]
    result = cli(*filled, env_root=root)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_expired_exit_code(root: Path) -> None:
    event = hitl.new_event("gone", data_type=int, timeout_seconds=0.2)
    with pytest.raises(TimeoutError):
        event.wait()
    result = cli("submit", event.request_id, "1", env_root=root)
    assert result.returncode == 5 and "expired" in result.stderr


def test_cli_list_on_an_empty_root(tmp_path: Path) -> None:
    result = cli("list", "--root", str(tmp_path / "empty"))
    assert result.returncode == 0 and "no events" in result.stderr


def test_the_hitl_console_script_is_installed(root: Path) -> None:
    script = Path(sys.executable).with_name("hitl")
    assert script.exists(), "pyproject's [project.scripts] entry should install a 'hitl' command"
    event = hitl.new_event("script", data_type=int, timeout_seconds=60)
    result = subprocess.run([str(script), "submit", event.form_url, "11"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert event.wait() == 11
    assert stored(root, event)["via"] == "cli"


# -- servers that do not behave: silent, redirecting, HTML, any status -----------------------------


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with the server's `reply` (status, headers, body) and records it."""

    protocol_version = "HTTP/1.1"
    server: _CannedServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        status, headers, body = self.server.reply
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CannedServer(ThreadingHTTPServer):
    daemon_threads = True
    reply: tuple[int, list[tuple[str, str]], bytes]
    seen: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def canned() -> Iterator[Callable[[int, list[tuple[str, str]], bytes], _CannedServer]]:
    """A loopback server that gives one chosen reply to every request; call it to set the reply."""
    httpd = _CannedServer(("127.0.0.1", 0), _Canned)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def answer_with(status: int, headers: list[tuple[str, str]], body: bytes) -> _CannedServer:
        httpd.reply = (status, headers, body)
        return httpd

    yield answer_with
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("record", "code", "state"),
    [
        ({"status": "pending", "state": "waiting"}, 7, "waiting"),
        ({"status": "pending"}, 7, "waiting"),  # 2.12.1
        ({"status": "waiting"}, 7, "waiting"),  # servers of this version before `state`
        ({"status": "completed", "state": "waiting"}, 7, "waiting"),  # `state` decides
        ({"status": "completed", "state": "answered", "response": {"value": 1}}, 0, "answered"),
        ({"status": "answered", "response": {"value": 1}}, 0, "answered"),
        ({"status": "expired", "state": "expired"}, 5, "expired"),
    ],
)
def test_status_reads_the_state_and_either_words_of_status(
    canned: Callable[[int, list[tuple[str, str]], bytes], _CannedServer], record: dict[str, Any], code: int, state: str
) -> None:
    body = json.dumps({"request_id": "ev-1", "type": "int", **record}).encode()
    server = canned(200, [("Content-Type", "application/json")], body)
    done = cli("status", "ev-1", "--endpoint", server.url, "--token", SECRET)
    assert done.returncode == code, (done.stdout, done.stderr)
    shown = json.loads(done.stdout)
    assert (shown["status"], shown["state"]) == (
        {"waiting": "pending", "answered": "completed"}.get(state, state),
        state,
    )


def _json(detail: str) -> tuple[list[tuple[str, str]], bytes]:
    return [("Content-Type", "application/json")], json.dumps({"detail": detail}).encode()


SECRET = "s3cr3t-token-value"


def _submit(base: str) -> Any:
    return hitl.submit(f"{base}/form/ev-1?token={SECRET}", 1)


def _status(base: str) -> Any:
    return _client.status("ev-1", token=SECRET, endpoint=base)


def _in_time(call: Callable[[], Any]) -> BaseException | None:
    """Run `call` in a thread and return what it raised; fail if it is still running after 60 s."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the call hung"
    return raised[0] if raised else None


@pytest.mark.parametrize("call", [_submit, _status])
def test_a_server_that_never_replies_is_a_server_unavailable_error(
    call: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_client, "TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        error = _in_time(lambda: call(base))
    assert isinstance(error, ServerUnavailableError), repr(error)
    assert isinstance(error, ConnectionError)
    assert base in str(error) and "timed out" in str(error)
    assert SECRET not in str(error)


@pytest.mark.parametrize("call", [_submit, _status])
def test_a_server_that_trickles_its_reply_is_given_up_at_the_deadline(
    call: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, trickler: Trickler
) -> None:
    # A byte a second: never long enough between bytes for a read to time out; only the whole
    # exchange's deadline (twice TIMEOUT_SECONDS) ends it.
    monkeypatch.setattr(_client, "TIMEOUT_SECONDS", 4.0)  # 3 s to spare between bytes on a busy machine
    base = trickler.url.removesuffix("/hook")
    error = _in_time(lambda: call(base))
    assert isinstance(error, ServerUnavailableError), repr(error)
    assert "no complete reply within 8 s" in str(error) and SECRET not in str(error)
    assert trickler.closed_by_client.wait(30)


@pytest.mark.parametrize("call", [_submit, _status])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_is_an_error_naming_where_without_the_token(
    canned: Callable[..., _CannedServer], call: Callable[[str], Any], status: int
) -> None:
    # A login proxy's redirect that echoes the request, token included, in its own path and query.
    location = f"https://127.0.0.2:1/{SECRET}/sso?next=/status/ev-1%3Ftoken%3D{SECRET}"
    httpd = canned(status, [("Location", location)], b"<html>moved</html>")
    error = _in_time(lambda: call(httpd.url))
    assert isinstance(error, ServerReplyError), repr(error)
    assert error.status == status
    assert "redirects" in str(error) and "https://127.0.0.2:1/<token>/sso" in str(error)
    assert SECRET not in str(error)
    assert len(httpd.seen) == 1, "the redirect was not followed"


def test_a_short_token_does_not_mangle_the_error(canned: Callable[..., _CannedServer]) -> None:
    httpd = canned(302, [("Location", "http://127.0.0.1:1/x")], b"")
    error = _in_time(lambda: hitl.submit(f"{httpd.url}/form/ev-1?token=t", 5))
    assert isinstance(error, ServerReplyError), repr(error)
    assert "redirects (302) to http://127.0.0.1:1/x" in str(error), str(error)


@pytest.mark.parametrize("call", [_submit, _status])
@pytest.mark.parametrize("status", [200, 400, 403, 404])
def test_an_html_page_in_reply_is_a_clear_error_not_a_json_decode_error(
    canned: Callable[..., _CannedServer], call: Callable[[str], Any], status: int
) -> None:
    page = b"<!doctype html><title>Sign in</title><form>...</form>"
    httpd = canned(status, [("Content-Type", "text/html; charset=utf-8")], page)
    error = _in_time(lambda: call(httpd.url))
    assert isinstance(error, ServerReplyError), repr(error)
    assert "'text/html' content, not this API's JSON" in str(error)
    assert httpd.url in str(error) and SECRET not in str(error)


STATUS_ERRORS: list[tuple[int, type[hitl.HitlError]]] = [
    (400, hitl.InvalidValueError),
    (403, hitl.InvalidTokenError),
    (404, hitl.EventNotFoundError),
    (409, hitl.AlreadyAnsweredError),
    (410, hitl.EventExpiredError),
    (401, ServerReplyError),
    (405, ServerReplyError),
    (411, ServerReplyError),
    (413, ServerReplyError),
    (415, ServerReplyError),
    (431, ServerReplyError),
    (429, ServerUnavailableError),
    (500, ServerUnavailableError),
    (503, ServerUnavailableError),
]


@pytest.mark.parametrize(("status", "kind"), STATUS_ERRORS)
def test_each_status_is_its_own_error_carrying_the_server_detail(
    canned: Callable[..., _CannedServer], status: int, kind: type[hitl.HitlError]
) -> None:
    detail = f"the server's own reason for {status}"
    httpd = canned(status, *_json(detail))
    with pytest.raises(kind) as info:
        _submit(httpd.url)
    assert type(info.value) is kind
    assert detail in str(info.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_error_page_is_a_server_unavailable_error(canned: Callable[..., _CannedServer], status: int) -> None:
    httpd = canned(status, [("Content-Type", "text/html")], b"<html>Bad Gateway</html>")
    with pytest.raises(ServerUnavailableError, match="try again later"):
        _submit(httpd.url)


def test_a_reply_that_is_json_but_not_an_object_is_a_clear_error(canned: Callable[..., _CannedServer]) -> None:
    httpd = canned(200, [("Content-Type", "application/json")], b"[1, 2]")
    with pytest.raises(ServerReplyError, match="not this API's JSON"):
        _submit(httpd.url)


def test_a_value_that_is_not_json_is_an_invalid_value_error_and_sends_nothing(
    canned: Callable[..., _CannedServer],
) -> None:
    httpd = canned(200, *_json("unused"))
    with pytest.raises(hitl.InvalidValueError, match="cannot send"):
        hitl.submit(f"{httpd.url}/form/ev-1?token=t", {1, 2})
    assert httpd.seen == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example/x/y?token=abc#frag", "https://hooks.example/x/y"),
        ("http://[::1]:8080/form/a?token=b", "http://[::1]:8080/form/a"),
        ("http://host:notaport/x?token=b", "http://host:notaport/x"),
        ("/login?next=x", "/login"),
    ],
)
def test_redact_url_leaves_out_credentials_and_queries(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("bad", ["ftp://h/x", "127.0.0.1:8080", "http://", "http://h:0", "http://h/x?token=t", "x"])
def test_a_bad_endpoint_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="FLYTE_HITL_ENDPOINT"):
        check_endpoint(bad)
    with pytest.raises(ConfigurationError):
        hitl.submit("ev-1", 1, endpoint=bad, token="t")


def test_the_cli_reports_a_redirect_in_one_line_without_the_token(canned: Callable[..., _CannedServer]) -> None:
    httpd = canned(302, [("Location", f"http://127.0.0.1:1/login?next={SECRET}")], b"")
    for args in (
        ["submit", f"{httpd.url}/form/ev-1?token={SECRET}", "1"],
        ["status", "ev-1", "--endpoint", httpd.url, "--token", SECRET],
    ):
        result = cli(*args)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "redirects (302) to http://127.0.0.1:1/login" in result.stderr
        assert SECRET not in result.stderr
    assert len(httpd.seen) == 2


def test_the_cli_escapes_control_characters_in_a_server_detail(canned: Callable[..., _CannedServer]) -> None:
    httpd = canned(400, *_json("bad value\x1b[2K\x1b[1A\n[hitl] 'x' answered: 1\x9b"))
    result = cli("submit", f"{httpd.url}/form/ev-1?token=t", "1")
    assert result.returncode == 2
    assert result.stderr == "hitl: bad value\\x1b[2K\\x1b[1A\\n[hitl] 'x' answered: 1\\x9b\n"
