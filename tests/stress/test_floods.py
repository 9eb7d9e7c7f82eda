"""Floods that once held every connection of ``hitl serve`` (512 by default), shutting everyone else out.

- 520 connections pipeline ``GET /health`` and never read a reply. Each reply the server cannot send
  holds a connection only for the write deadline (10 s): from 15 s after the flood began, ``/health``
  from new connections answers again.
- 600 long-polls (``GET /status/<id>?wait=60``) on one event. Long-polls hold at most half of the
  connections; the others are answered at once with the event's state, so every long-poll gets a 200
  and ``/health`` answers throughout.

``/health`` is asked on a new connection every quarter second (`HealthChecks`), and the test prints
how many checks were answered when. The server runs with its default limits.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

from flyteplugins.hitl._store import Store

from ._util import (
    Connection,
    HealthChecks,
    Pending,
    answer_json,
    assert_clean_log,
    create_events,
    start_server_process,
)

HEALTH_SECONDS = 6.0  # a check's own time limit: room for lost SYNs while the listen queue is full
SHARE = 0.9  # of the checks that must be answered

PIPELINERS = 520
PIPELINED = 400  # requests each: far more replies than a small receive window and the server's send buffer hold
CHECKED_FROM = 15.0  # seconds after the flood began
CHECKED_FOR = 10.0  # seconds of checks from then on
_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_LINGER_0 = struct.pack("ii", 1, 0)  # close with a reset: nothing left to send, no TIME_WAIT


def _pipeliner(host: str, port: int) -> socket.socket | None:
    """A connection that sends `PIPELINED` requests at once and never reads; None if it was refused.
    Its receive window is small and its segments short, so that the server's send buffer fills with a
    few hundred replies and the server's send blocks, as for any client that stopped reading."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(_HEALTH * PIPELINED)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        return sock
    except OSError:  # turned away (503) by a server at its limit
        sock.close()
        return None


def _open(sock: socket.socket) -> bool:
    """Whether the server has not closed `sock` yet (its TCP state is still ESTABLISHED)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


def test_connections_that_do_not_read_their_replies_are_closed_and_health_answers_again(tmp_path: Path) -> None:
    server = start_server_process(tmp_path / "root", tmp_path / "server.log")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    flood: list[socket.socket] = []
    closed_at: dict[int, float] = {}  # index in `flood` → seconds after the flood began
    checks = HealthChecks(server.url, HEALTH_SECONDS)
    began = checks.start
    try:
        for _ in range(PIPELINERS):
            sock = _pipeliner(host, int(port))
            if sock is not None:
                flood.append(sock)
        opened = time.monotonic() - began
        while time.monotonic() - began < CHECKED_FROM + CHECKED_FOR:
            for n, sock in enumerate(flood):
                if n not in closed_at and not _open(sock):
                    closed_at[n] = time.monotonic() - began
            time.sleep(0.25)
    finally:
        checks.stop()
        for sock in flood:
            sock.close()
        assert server.stop() == 0
    early = [status for at, status in checks.checks if at < CHECKED_FROM]
    late = [status for at, status in checks.checks if at >= CHECKED_FROM]
    answered = sum(status == 200 for status in late)
    print(
        f"\npipelining flood: {len(flood)} of {PIPELINERS} connections took {PIPELINED} requests each "
        f"(in {opened:.1f} s); the server closed {len(closed_at)} of them {min(closed_at.values(), default=0):.1f}-"
        f"{max(closed_at.values(), default=0):.1f} s after the flood began; /health answered "
        f"{sum(s == 200 for s in early)} of {len(early)} checks in the first {CHECKED_FROM:g} s (others: "
        f"{sorted({str(s) for s in early if s != 200})[:3]}), {answered} of {len(late)} from then on, "
        f"slowest {max(checks.latencies, default=0) * 1000:.0f} ms"
    )
    assert len(flood) >= 500, "the flood reached the connection limit"
    assert 503 in early, "the flood held every connection at first"
    assert len(late) >= CHECKED_FOR  # one a second at least, on a busy machine
    assert answered >= SHARE * len(late), [s for s in late if s != 200][:5]
    assert len(closed_at) >= len(flood) - 10, "a connection that stopped reading was closed"
    assert_clean_log(server.log_text())


LONG_POLLS = 600
SPACING = 0.005  # seconds between two long-polls' starts: 600 jobs starting within 3 s
HELD_MOST = 256  # half of the 512 connections: the share the server documents
ANSWER_AFTER = 8.0  # seconds


async def _long_polls(url: str, event: Pending) -> tuple[list[tuple[int | str, str]], int]:
    """`LONG_POLLS` long-polls on `event`, then its answer `ANSWER_AFTER` seconds after the first.
    Returns what each long-poll got (a status, or its connection error; and the state it said), and the
    answer's status."""
    target = f"/status/{event.request_id}?token={event.token}&wait=60"
    got: list[tuple[int | str, str]] = []

    async def one(n: int) -> None:
        await asyncio.sleep(n * SPACING)
        try:
            reply = await asyncio.wait_for(Connection.to(url, keep_alive=False).request("GET", target), 90)
            got.append((reply.status, reply.json().get("state", reply.json()["status"])))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            got.append((repr(e), ""))

    async def answer() -> int:
        await asyncio.sleep(ANSWER_AFTER)
        reply = await asyncio.wait_for(Connection.to(url, keep_alive=False).request("POST", *answer_json(event, 6)), 30)
        return reply.status

    polls = [asyncio.create_task(one(n)) for n in range(LONG_POLLS)]
    answered = await answer()
    await asyncio.wait_for(asyncio.gather(*polls), 120)
    return got, answered


def test_long_polls_hold_at_most_their_share_and_health_answers_throughout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (event,) = create_events(Store(str(root)), 1, "polled")
    server = start_server_process(root, tmp_path / "server.log")
    checks = HealthChecks(server.url, HEALTH_SECONDS)
    try:
        got, answered = asyncio.run(_long_polls(server.url, event))
    finally:
        health = checks.stop()
        assert server.stop() == 0
    seconds = time.monotonic() - checks.start
    statuses = [status for status, _ in got]
    held = sum(state == "answered" for _, state in got)
    print(
        f"\nlong-polls: {LONG_POLLS} on one event, started within {LONG_POLLS * SPACING:g} s; {statuses.count(200)} "
        f"got 200: {held} held until the answer {ANSWER_AFTER:g} s after the first, "
        f"{sum(state == 'waiting' for _, state in got)} answered at once with the waiting state; /health answered "
        f"{health.count(200)} of {len(health)} checks in {seconds:.1f} s, slowest "
        f"{max(checks.latencies, default=0) * 1000:.0f} ms"
    )
    assert answered == 200
    assert statuses == [200] * LONG_POLLS, sorted({str(s) for s in statuses if s != 200})[:5]
    assert 0 < held <= HELD_MOST, "long-polls past their share are answered at once"
    assert len(health) >= ANSWER_AFTER  # one a second at least, on a busy machine
    assert health.count(200) >= SHARE * len(health), [s for s in health if s != 200][:5]
    assert_clean_log(server.log_text())
