"""Shared parts of the stress suite: a standalone server process, events in bulk, a small raw HTTP client.

The client speaks HTTP/1.1 over asyncio streams rather than through a library so that one test
process can keep 64 connections busy without becoming the bottleneck, and so that keep-alive and
one-request-per-connection traffic are both under the test's control.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from conftest import Reply, event_record, request

from flyteplugins.hitl._store import Store

PY = sys.executable
# Sets the handler timeout of the real server class before running the real command line, so a test
# can watch idle connections being closed without waiting the default 30 seconds.
_SERVE_WITH_TIMEOUT = (
    "import sys\n"
    "from flyteplugins.hitl import server, __main__ as cli\n"
    "server.HitlHandler.timeout = float(sys.argv[1])\n"
    "sys.exit(cli.main(sys.argv[2:]))\n"
)


@dataclass
class ServerProcess:
    """A ``python -m flyteplugins.hitl serve`` subprocess and where its log goes."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """kill -9: no chance to flush, close or clean up anything."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipe()

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(20)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server_process(root: Path, log: Path, *, handler_timeout: float | None = None) -> ServerProcess:
    """Start a standalone server for `root` on a free port; returns once it printed its URL."""
    serve = ["serve", "--root", str(root), "--port", "0"]
    if handler_timeout is None:
        argv = [PY, "-m", "flyteplugins.hitl", *serve]
    else:
        argv = [PY, "-c", _SERVE_WITH_TIMEOUT, str(handler_timeout), *serve]
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            proc.kill()
            raise AssertionError(f"server did not start within 30 s: {log.read_text(errors='replace')}")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise AssertionError(f"server exited at start: {log.read_text(errors='replace')}")
        line += chunk
    match = re.fullmatch(r"serving (.+) at (http://\S+)", line.decode().strip())
    assert match, f"unexpected first line {line!r}"
    assert match.group(1) == str(root)
    return ServerProcess(proc, match.group(2), log)


def assert_clean_log(text: str) -> None:
    """No traceback, no error line and no 5xx reply in a server's log."""
    assert "Traceback" not in text, text[-4000:]
    assert " ERROR " not in text, text[-4000:]
    fives = [line for line in text.splitlines() if re.search(r'" 5\d\d \S+$', line)]
    assert not fives, fives[:5]


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """An event waiting for its answer, as a client that was given its link knows it."""

    request_id: str
    token: str
    data_type: str = "int"


def create_events(store: Store, count: int, prefix: str, *, data_type: str = "int") -> list[Pending]:
    """Create `count` pending events through the store, from 16 threads."""

    def one(i: int) -> Pending:
        record = event_record(f"{prefix}-{i:06d}", data_type=data_type)
        assert store.create_request(record)
        return Pending(record["request_id"], record["token"], data_type)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


# -- HTTP ---------------------------------------------------------------------------------------


class Connection:
    """One HTTP/1.1 client connection; keep-alive reuses it, otherwise each request gets a new one."""

    def __init__(self, host: str, port: int, *, keep_alive: bool = True) -> None:
        self.host, self.port, self.keep_alive = host, port, keep_alive
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        #: TCP connections opened so far.
        self.opened = 0

    @classmethod
    def to(cls, url: str, *, keep_alive: bool = True) -> Connection:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(host, int(port), keep_alive=keep_alive)

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        reader, writer = self._streams
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if not self.keep_alive:
            head.append("Connection: close")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            reply = await read_reply(reader, method == "HEAD")
        except BaseException:
            await self.close()
            raise
        if not self.keep_alive or reply.headers.get("connection", "").lower() == "close":
            await self.close()
        return reply

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def read_reply(reader: asyncio.StreamReader, head_only: bool) -> Reply:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before a reply")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", status_line)
    if not match:
        raise AssertionError(f"malformed status line {status_line!r}")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    body = await reader.readexactly(length)
    return Reply(int(match.group(1)), headers, body)


def answer_json(item: Pending, value: Any) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and headers of a JSON answer."""
    body = json.dumps({"request_id": item.request_id, "token": item.token, "value": value}).encode()
    return "/submit/json", body, {"Content-Type": "application/json"}


def answer_form(item: Pending, value: Any) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and headers of a web-form answer."""
    body = urlencode({"request_id": item.request_id, "token": item.token, "value": str(value)}).encode()
    return "/submit", body, {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class LoadResult:
    """What each answer got: a status code, or the name of the connection error."""

    outcomes: dict[str, int | str] = field(default_factory=dict)
    seconds: float = 0.0
    connections_opened: int = 0

    def with_status(self, status: int) -> set[str]:
        return {k for k, v in self.outcomes.items() if v == status}

    def errors(self) -> dict[str, str]:
        return {k: v for k, v in self.outcomes.items() if isinstance(v, str)}


async def send_answers(
    url: str,
    jobs: Iterable[tuple[Pending, Any]],
    *,
    connections: int = 64,
    form_every: int = 4,
    on_reply: Callable[[Pending, Reply], None] | None = None,
    stop_after_error: bool = False,
) -> LoadResult:
    """Send one answer per job over `connections` concurrent connections; even ones keep alive.

    Every `form_every`-th answer goes through the web form, the rest through the JSON endpoint.
    With `stop_after_error`, workers stop at their first connection error (the server is gone).
    """
    queue = list(enumerate(jobs))
    queue.reverse()
    result = LoadResult()
    stopped = False

    async def worker(n: int) -> None:
        nonlocal stopped
        conn = Connection.to(url, keep_alive=n % 2 == 0)
        try:
            while queue and not stopped:
                i, (item, value) = queue.pop()
                path, body, headers = (answer_form if form_every and i % form_every == 0 else answer_json)(item, value)
                try:
                    reply = await conn.request("POST", path, body, headers)
                except (OSError, asyncio.IncompleteReadError) as e:
                    result.outcomes[item.request_id] = type(e).__name__
                    if stop_after_error:
                        stopped = True
                    continue
                result.outcomes[item.request_id] = reply.status
                if on_reply is not None:
                    on_reply(item, reply)
        finally:
            result.connections_opened += conn.opened
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


def stored_answers(root: Path) -> dict[str, Any]:
    """Every response.json under `root`, parsed (a file that does not parse fails the test)."""
    out: dict[str, Any] = {}
    for path in root.glob("*/response.json"):
        out[path.parent.name] = json.loads(path.read_bytes())
    return out


async def burst(requests: list[tuple[str, str, bytes, dict[str, str]]]) -> list[Reply]:
    """POST each (url, path, body, headers) on its own connection, all opened first and then sent at once.

    That is the closest a client gets to simultaneous arrivals.
    """
    targets = [url.removeprefix("http://").rsplit(":", 1) for url, *_ in requests]
    streams = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for host, port in targets))
    try:
        for (_, writer), (host, port), (_, path, body, headers) in zip(streams, targets, requests, strict=True):
            head = [
                f"POST {path} HTTP/1.1",
                f"Host: {host}:{port}",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await asyncio.gather(*(writer.drain() for _, writer in streams))
        return list(await asyncio.gather(*(read_reply(reader, False) for reader, _ in streams)))
    finally:
        for _, writer in streams:
            writer.close()


# -- health checks during floods ---------------------------------------------------------------------


def request_health(url: str, timeout: float = 30) -> int:
    return request(url, "GET", "/health", timeout=timeout).status


class HealthChecks:
    """``GET /health`` on a new connection every quarter second, from a thread, until stopped.

    Each check is kept as (when it began, in seconds since the checks began; its status, or the
    connection error it met within `timeout` seconds).
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout
        self.checks: list[tuple[float, int | str]] = []
        self.latencies: list[float] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            begun = time.monotonic()
            try:
                status: int | str = request_health(self.url, timeout=self.timeout)
                self.latencies.append(time.monotonic() - begun)
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
            self.checks.append((begun - self.start, status))

    def stop(self) -> list[int | str]:
        """Stop checking; every status so far."""
        self._stop.set()
        self._thread.join(30)
        return [status for _, status in self.checks]
