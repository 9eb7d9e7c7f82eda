"""Slow clients: 200 idle or byte-at-a-time connections do not stop a normal answer, and idle
connections are closed once the handler timeout passes.

The server runs with an 8-second handler timeout (the real class with its attribute lowered) so the
closing can be watched without waiting the default 30 seconds, while the answers (about 2 s of them)
still go through well before any slow connection times out, even on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flyteplugins.hitl._store import Store

from ._util import Connection, Pending, answer_json, assert_clean_log, create_events, read_reply, start_server_process

TIMEOUT = 8.0
IDLE, DRIPPING, AFTER_ONE_REQUEST = 70, 70, 60
ANSWERS = 10


@dataclass
class Outcome:
    latencies: list[float]  # of the normal answers, in seconds
    still_open: int  # slow connections still open when the last normal answer was accepted
    idle_for: list[float]  # silence before each slow connection was closed, in seconds


async def scenario(url: str, events: list[Pending]) -> Outcome:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    last_activity: dict[int, float] = {}
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
        last_activity[n] = time.monotonic()
        await watch_close(n, reader)
        writer.close()

    async def drip(n: int) -> None:
        # A valid request, far too long to finish at one byte per half second.
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b'{"request_id": "nobody", "token": "x", "value": 1}' + b" " * 1000
        data = b"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        watcher = asyncio.create_task(watch_close(n, reader))
        for byte in data:
            if stop_dripping.is_set() or watcher.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            last_activity[n] = time.monotonic()
            await asyncio.sleep(0.5)
        await watcher
        writer.close()

    async def after_one_request(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await read_reply(reader, False)
        assert reply.status == 200
        last_activity[n] = time.monotonic()
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
    return Outcome(latencies, still_open, [closed_at[n] - last_activity[n] for n in range(len(kinds))])


def test_slow_clients_do_not_block_answers_and_idle_ones_are_closed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    events = create_events(Store(str(root)), ANSWERS, "slow")
    server = start_server_process(root, tmp_path / "server.log", handler_timeout=TIMEOUT)
    try:
        out = asyncio.run(scenario(server.url, events))
    finally:
        assert server.stop() == 0
    latencies, idle_for = out.latencies, out.idle_for
    print(
        f"\nslow clients: {IDLE} idle, {DRIPPING} byte-at-a-time, {AFTER_ONE_REQUEST} idle keep-alive connections; "
        f"{ANSWERS} answers meanwhile, slowest {max(latencies) * 1000:.0f} ms; idle connections closed after "
        f"{min(idle_for):.1f}-{max(idle_for):.1f} s of silence (handler timeout {TIMEOUT:g} s)"
    )
    assert out.still_open == IDLE + DRIPPING + AFTER_ONE_REQUEST  # none was dropped while answers went through
    # Served while the slow connections are held, not once they time out (the figure above is the measure).
    assert max(latencies) < TIMEOUT
    # Closed for being idle, once the timeout passed. The client stamps each connection's last activity
    # when its own event loop gets round to it, so the lower bound allows for a busy machine.
    assert min(idle_for) >= TIMEOUT * 0.5
    assert max(idle_for) < TIMEOUT + 15
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


def request_health(url: str) -> int:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()
