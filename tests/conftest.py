"""Shared fixtures: a real storage root in a temp dir, a real server on port 0, a small HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl._answers import utc
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer, make_server, stop_server

REPO = Path(__file__).resolve().parent.parent

# What could send a test's traffic off this machine: a proxy (urllib and the client use the one the
# environment names, loopback included) and a pod's address (wake-ups bind to it inside Kubernetes).
_OFF_LOOPBACK = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test, and every process it starts, talks to loopback only."""
    for name in _OFF_LOOPBACK:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local storage root, also set as FLYTE_HITL_ROOT (and no external endpoint)."""
    path = tmp_path / "hitl-root"
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(path))
    monkeypatch.delenv("FLYTE_HITL_ENDPOINT", raising=False)
    return path


@pytest.fixture
def store(root: Path) -> Store:
    return Store(str(root))


@pytest.fixture
def server(store: Store) -> Iterator[HitlServer]:
    """A real server for `store` on a free port, stopped after the test, at once (a short poll interval)."""
    httpd = make_server(store)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    stop_server(httpd, thread)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def request(
    url_base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """One HTTP request on a new connection; returns status, headers (lower-case names) and body."""
    host, port = url_base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post_json(url_base: str, payload: object, path: str = "/submit/json") -> Reply:
    return request(url_base, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def python(*argv: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """Start this venv's interpreter with `argv`, output (stdout and stderr) piped as text."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, *argv], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def run_python(code_or_path: str, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """Start `python <path> args...` (or `python -c code args...`) with this venv's interpreter, output piped."""
    script = [code_or_path] if code_or_path.endswith(".py") else ["-c", code_or_path]
    return python(*script, *args, env=env, **kw)


def question(request_id: str, **extra: object) -> dict[str, Any]:
    """A question record with the fields `Store.read_request` requires, for tests of the store itself."""
    base = {"event_name": "q", "prompt": "?", "data_type": "int", "token": "t", "expires_at": "2099-01-01T00:00:00Z"}
    return {"request_id": request_id, **base, **extra}


def event_record(
    request_id: str,
    *,
    data_type: str = "int",
    name: str = "stress",
    prompt: str = "Stress test question",
    timeout_seconds: float = 3600,
    endpoint: str = "",
    token: str | None = None,
) -> dict[str, Any]:
    """A request record of the shape `hitl.new_event` writes (a random token unless one is given)."""
    now = time.time()
    return {
        "request_id": request_id,
        "event_name": name,
        "scope": "run",
        "prompt": prompt,
        "data_type": data_type,
        "token": secrets.token_urlsafe(24) if token is None else token,
        "created_at": utc(now),
        "expires_at": utc(now + timeout_seconds),
        "timeout_seconds": timeout_seconds,
        "endpoint": endpoint,
    }


def until(done: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for `done()` to hold, checking every 10 ms; fail after `timeout` seconds (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def after_first_read(event: Any, polls: int = 1) -> None:
    """Wait until the wait on `event` (in this process) has begun `polls` timed storage reads after
    its first one, so that its first read has returned: an answer given from now on is found by a
    wake-up or a later poll, not by that read. With `polls=0`, until the first read has begun."""
    from flyteplugins.hitl import _wait

    def reads() -> int:
        return max((w.reads for w in list(_wait._waits.get(event.request_id, ()))), default=0)

    until(lambda: reads() >= 1, f"the wait on {event.name!r} reads storage")
    for _ in range(polls):
        started = reads()
        until(lambda s=started: reads() > s, f"the wait on {event.name!r} polls again")


def read_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The next line of `proc`'s output ("" at its end); a process silent for `timeout` seconds is
    killed and the test fails, instead of hanging on the read."""
    stdout = proc.stdout
    assert stdout is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        raise AssertionError(f"no line from {proc.args} within {timeout} s")
    return got[0]


@pytest.fixture
def remote(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`python -m flyteplugins.hitl serve` in another process: it has the records but not our classes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+)\s*$", read_line(proc))
        assert url, "the server did not say where it serves"
        monkeypatch.setenv("FLYTE_HITL_ENDPOINT", url.group(1))
        yield url.group(1)
    finally:
        proc.kill()
        proc.communicate()


@pytest.fixture(params=["sync", "aio"])
def mode(request: pytest.FixtureRequest) -> str:
    """Runs a test once with the blocking calls and once with their `.aio` twins (see `create`, `wait`)."""
    return str(request.param)


def create(mode: str, *args: Any, **kwargs: Any) -> hitl.Event[Any]:
    """`hitl.new_event` or `await hitl.new_event.aio`, by mode."""
    if mode == "sync":
        return hitl.new_event(*args, **kwargs)
    return asyncio.run(hitl.new_event.aio(*args, **kwargs))


def wait(mode: str, event: hitl.Event[Any]) -> Any:
    """`event.wait()` or `await event.wait.aio()`, by mode."""
    if mode == "sync":
        return event.wait()
    return asyncio.run(event.wait.aio())


class Proc:
    """A child process whose output lines are read in a background thread, so that a test waits for
    a line with a time limit instead of hanging on the read.

    Example:
        >>> server = Proc(python("-m", "flyteplugins.hitl", "serve", "--port", "0"))
        >>> url = server.expect(r"at (http://\\S+)").group(1)
    """

    def __init__(self, proc: subprocess.Popen[str], timeout: float = 60) -> None:
        self.proc = proc
        self.timeout = timeout  # the default bound of `expect` and `finish`
        self.lines: list[str] = []  # the lines `expect` went past; after `finish`, all of them
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str | re.Pattern[str], timeout: float | None = None) -> re.Match[str]:
        """The first new output line matching `pattern`; fails with the output so far if none comes in time."""
        regex = re.compile(pattern)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {regex.pattern!r} within {timeout} s; output:\n{self.output}"
                ) from None
            if line is None:
                self._queue.put(None)  # later calls see the end too
                raise AssertionError(f"{self.proc.args} ended before a line matching {regex.pattern!r}:\n{self.output}")
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float | None = None) -> int:
        """Close the process's stdin (its cue to end, where it waits for one), wait for its exit and
        collect the rest of its output; returns its exit code."""
        timeout = self.timeout if timeout is None else timeout
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.proc.args} did not exit within {timeout} s:\n{self.output}") from None
        self._reader.join(10)
        while (line := self._queue.get_nowait() if not self._queue.empty() else None) is not None:
            self.lines.append(line)
        self._queue.put(None)
        return code

    def stop(self) -> None:
        """SIGTERM, up to 10 s for the exit, then `close`."""
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.close()

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._reader.join(10)  # it ends at the end of the output; closing the pipe under it would fail
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; any still running at the end are killed."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.close()


# The S3 fixtures import s3_helpers when used: it imports this module's helpers in turn.


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    """A moto S3 server on loopback (`s3_helpers.MotoS3`), one per test module."""
    from s3_helpers import moto_server

    yield from moto_server()


@pytest.fixture(scope="module")
def bucket(moto: Any) -> Any:
    """A fresh bucket on the module's moto server (`s3_helpers.S3Bucket`)."""
    from s3_helpers import S3Bucket

    return S3Bucket(moto)


@pytest.fixture
def s3_root(bucket: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh s3:// root, set as FLYTE_HITL_ROOT along with Flyte's S3 settings for the moto server."""
    from s3_helpers import use_root

    return use_root(bucket, monkeypatch)


class Trickler:
    """A receiver that reads the request, then sends its reply one byte a second and never finishes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connected = threading.Event()
        self.closed_by_client = threading.Event()
        self.sending = threading.Event()  # set while a connection is open and trickling
        self.sent = 0  # bytes sent so far: one a second
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            self.connected.set()
            conn.recv(65536)
            self.sending.set()
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" * 100:
                    conn.sendall(bytes([byte]))
                    self.sent += 1
                    time.sleep(1)
            except OSError:
                self.closed_by_client.set()
            finally:
                self.sending.clear()
                conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    receiver = Trickler()
    yield receiver
    receiver.close()
