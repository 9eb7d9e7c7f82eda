"""Load: 10,000 answers to 10,000 pending events over 64 connections to one standalone server.

Every 200 must match exactly one stored answer holding the value that was sent, and nothing may be
refused, fail with a 5xx or lose its connection. A second wave of different answers to 1,000 of
the same events must all be refused with 409 and change nothing.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from flyteplugins.hitl._store import Store

from ._util import Pending, assert_clean_log, create_events, send_answers, start_server_process, stored_answers

EVENTS = 10_000
CONNECTIONS = 64
SECOND_WAVE = 1_000


def test_ten_thousand_answers_over_64_connections(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = Store(str(root))
    events = create_events(store, EVENTS, "load")
    values = {e.request_id: random.randrange(-(10**12), 10**12) for e in events}
    server = start_server_process(root, tmp_path / "server.log")
    try:
        jobs: list[tuple[Pending, int]] = [(e, values[e.request_id]) for e in events]
        random.shuffle(jobs)
        first = asyncio.run(send_answers(server.url, jobs, connections=CONNECTIONS))

        second_jobs = [(e, values[e.request_id] + 1) for e in random.sample(events, SECOND_WAVE)]
        second = asyncio.run(send_answers(server.url, second_jobs, connections=CONNECTIONS))
    finally:
        assert server.stop() == 0
    rate = EVENTS / first.seconds
    print(
        f"\nload: {EVENTS} answers over {CONNECTIONS} connections ({first.connections_opened} TCP connections "
        f"opened; half keep-alive, a quarter of answers through the form) in {first.seconds:.1f} s = "
        f"{rate:.0f} answers/s; second wave: {SECOND_WAVE} late answers in {second.seconds:.1f} s, all 409"
    )

    assert first.errors() == {}
    assert len(first.outcomes) == EVENTS
    assert first.with_status(200) == set(values)
    assert second.errors() == {}
    assert second.with_status(409) == {e.request_id for e, _ in second_jobs}

    stored = stored_answers(root)
    assert set(stored) == set(values)  # every 200 is one stored answer and every stored answer had its 200
    for request_id, response in stored.items():
        assert response["status"] == "completed"
        assert response["value"] == values[request_id]  # the first answer, never the late one
    assert not list(root.glob("*/*.tmp"))
    assert_clean_log(server.log_text())
