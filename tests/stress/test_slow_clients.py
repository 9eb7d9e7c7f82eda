"""Slow clients: 200 idle or byte-at-a-time connections do not stop a normal answer, and a connection
is closed once the handler timeout passes without a whole request on it. Past the connection limit
and the open-files limit, floods of idle and trickling connections do not stop ``/health``.

The server runs with an 8-second handler timeout (the real class with its attribute lowered) so the
closing can be watched without waiting the default 30 seconds, while the answers (about 2 s of them)
still go through well before any slow connection times out, even on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flyteplugins.hitl._store import Store

from ._util import (
    Connection,
    HealthChecks,
    Pending,
    ServerProcess,
    answer_json,
    assert_clean_log,
    create_events,
    read_reply,
    request_health,
    start_server_process,
)

TIMEOUT = 8.0
IDLE, DRIPPING, AFTER_ONE_REQUEST = 70, 70, 60
ANSWERS = 10


@dataclass
class Outcome:
    latencies: list[float]  # of the normal answers, in seconds
    still_open: int  # slow connections still open when the last normal answer was accepted
    waited: list[float]  # how long the server waited for a request on each slow connection, in seconds


async def scenario(url: str, events: list[Pending]) -> Outcome:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    waiting_since: dict[int, float] = {}  # when the server started waiting for a request
    closed_at: dict[int, float] = {}
    stop_dripping = asyncio.Event()

    async def watch_close(n: int, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        closed_at[n] = time.monotonic()

    async def idle(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        waiting_since[n] = time.monotonic()
        await watch_close(n, reader)
        writer.close()

    async def drip(n: int) -> None:
        # A valid request, far too long to finish at one byte per half second.
        reader, writer = await asyncio.open_connection(host, int(port))
        waiting_since[n] = time.monotonic()
        body = b'{"request_id": "nobody", "token": "x", "value": 1}' + b" " * 1000
        data = b"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        watcher = asyncio.create_task(watch_close(n, reader))
        for byte in data:
            if stop_dripping.is_set() or watcher.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):  # closed by the server meanwhile
                await writer.drain()
            await asyncio.sleep(0.5)
        await watcher
        writer.close()

    async def after_one_request(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await read_reply(reader, False)
        assert reply.status == 200
        waiting_since[n] = time.monotonic()
        await watch_close(n, reader)
        writer.close()

    kinds = [idle] * IDLE + [drip] * DRIPPING + [after_one_request] * AFTER_ONE_REQUEST
    tasks = [asyncio.create_task(kind(n)) for n, kind in enumerate(kinds)]
    await asyncio.sleep(1.0)  # every slow connection is open and holds a server thread

    latencies = []
    for item in events[:ANSWERS]:
        start = time.monotonic()
        reply = await Connection.to(url, keep_alive=False).request("POST", *answer_json(item, 7))
        latencies.append(time.monotonic() - start)
        assert reply.status == 200, reply.body
        await asyncio.sleep(0.1)
    still_open = len(kinds) - len(closed_at)

    stop_dripping.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT + 30)
    return Outcome(latencies, still_open, [closed_at[n] - waiting_since[n] for n in range(len(kinds))])


def test_slow_clients_do_not_block_answers_and_idle_ones_are_closed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    events = create_events(Store(str(root)), ANSWERS, "slow")
    server = start_server_process(root, tmp_path / "server.log", handler_timeout=TIMEOUT)
    try:
        out = asyncio.run(scenario(server.url, events))
    finally:
        assert server.stop() == 0
    latencies, waited = out.latencies, out.waited
    print(
        f"\nslow clients: {IDLE} idle, {DRIPPING} byte-at-a-time, {AFTER_ONE_REQUEST} idle keep-alive connections; "
        f"{ANSWERS} answers meanwhile, slowest {max(latencies) * 1000:.0f} ms; slow connections closed after "
        f"{min(waited):.1f}-{max(waited):.1f} s without a whole request (handler timeout {TIMEOUT:g} s)"
    )
    assert out.still_open == IDLE + DRIPPING + AFTER_ONE_REQUEST  # none was dropped while answers went through
    # Served while the slow connections are held, not once they time out (the figure above is the measure).
    assert max(latencies) < TIMEOUT
    # Closed once the timeout passed without a whole request, trickling or not. The client stamps each
    # connection when its own event loop gets round to it, so the lower bound allows for a busy machine.
    assert min(waited) >= TIMEOUT * 0.5
    assert max(waited) < TIMEOUT + 15
    for item in events:
        assert (root / item.request_id / "response.json").exists()
    assert_clean_log(server.log_text())


HEAVY = 40  # connections
HEAVY_LINES = 99  # header lines each, of HEAVY_LINE bytes: 6.3 MB of headers per connection, never finished
HEAVY_LINE = 64_000
MAX_RSS_MIB = 100


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_big_headers_on_many_slow_connections_stay_within_the_header_budget(tmp_path: Path) -> None:
    server = start_server_process(tmp_path / "root", tmp_path / "server.log")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    before = _peak_rss_mib(server.proc.pid)
    line = b"X-Big-%03d: " + b"b" * HEAVY_LINE + b"\r\n"
    data = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(line % i for i in range(HEAVY_LINES))
    socks = [socket.create_connection((host, int(port)), timeout=60) for _ in range(HEAVY)]
    replies: list[bytes] = []

    def send(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the server refused the headers and closed: our send fails
            sock.sendall(data)  # and never the blank line that would end them
        with contextlib.suppress(OSError):
            replies.append(sock.recv(4096))

    try:
        threads = [threading.Thread(target=send, args=(sock,)) for sock in socks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        peak = _peak_rss_mib(server.proc.pid)
        assert request_health(server.url) == 200
    finally:
        for sock in socks:
            sock.close()
        assert server.stop() == 0
    print(
        f"\nheader budget: {HEAVY} connections each sending {HEAVY_LINES} header lines of {HEAVY_LINE} bytes; "
        f"server peak RSS {before:.0f} MiB before, {peak:.0f} MiB after"
    )
    assert peak < MAX_RSS_MIB
    assert sum(reply.startswith(b"HTTP/1.1 431 ") for reply in replies) == HEAVY
    assert_clean_log(server.log_text())


# -- floods past the connection limit and past the open-files limit -------------------------------------

# A server with its open-files limit (argv[1]) and handler timeout (argv[2]) lowered.
_SERVE_LIMITED = (
    "import resource, sys\n"
    "from flyteplugins.hitl import server, __main__ as cli\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))\n"
    "server.HitlHandler.timeout = float(sys.argv[2])\n"
    "sys.exit(cli.main(sys.argv[3:]))\n"
)
FLOOD = 600  # connections per attack, well past both limits below
FLOOD_TIMEOUT = 8.0  # the server's handler timeout
FLOOD_SECONDS = 10.0  # longer than a /health check may take (HEALTH_SECONDS)
HEALTH_SECONDS = 6.0  # room for two lost SYNs (1 s + 2 s) when the flood fills the listen queue


def _start_limited(tmp_path: Path, open_files: int, max_connections: int) -> ServerProcess:
    argv = [sys.executable, "-c", _SERVE_LIMITED, str(open_files), str(FLOOD_TIMEOUT)]
    argv += ["serve", "--root", str(tmp_path / "root"), "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLYTE_HITL_MAX_CONNECTIONS": str(max_connections)}
    log = tmp_path / "server.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, f"the server did not start within 30 s: {log.read_text(errors='replace')}"
    line = proc.stdout.readline().decode()
    assert line.startswith("serving "), (line, log.read_text(errors="replace"))
    return ServerProcess(proc, line.split(" at ")[-1].strip(), log)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _flood(url: str, seconds: float) -> int:
    """Open `FLOOD` connections at once and hold them for `seconds`: half of them silent, half sending
    a header line a byte at a time and never finishing. Returns how many the server closed meanwhile."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    closed = 0

    async def one(trickle: bool) -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            closed += 1
            return
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if trickle:
                    writer.write(b"x")
                    await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    if not await asyncio.wait_for(reader.read(4096), 1.0):
                        closed += 1
                        return
        except ConnectionError:
            closed += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(trickle=n % 2 == 1) for n in range(FLOOD)))
    return closed


@pytest.mark.parametrize(
    "open_files, max_connections",
    [(256, 64), (128, 1000)],
    ids=["connection-limit", "open-files-limit"],
)
def test_health_answers_throughout_floods_of_idle_and_trickling_connections(
    tmp_path: Path, open_files: int, max_connections: int
) -> None:
    server = _start_limited(tmp_path, open_files, max_connections)
    pid = server.proc.pid
    try:
        checks = HealthChecks(server.url, HEALTH_SECONDS)
        cpu, start = _cpu_seconds(pid), time.monotonic()
        closed = asyncio.run(_flood(server.url, seconds=FLOOD_SECONDS))
        cpu_per_second = (_cpu_seconds(pid) - cpu) / (time.monotonic() - start)
        statuses = checks.stop()
    finally:
        assert server.stop() == 0
    print(
        f"\nflood ({open_files} open files, {max_connections} connections): {FLOOD} idle or trickling connections "
        f"held {FLOOD_SECONDS:g} s, {closed} of them closed by the server; {len(statuses)} /health checks meanwhile, "
        f"slowest {max(checks.latencies, default=0) * 1000:.0f} ms; server CPU {cpu_per_second:.2f} s/s"
    )
    assert len(statuses) >= 4
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert closed > 0, "the flood went past the limits"
    assert cpu_per_second < 0.25, "an accept loop that retries at once takes a whole core"
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]
