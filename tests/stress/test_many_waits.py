"""Many waits: 1,000 concurrent ``await event.wait.aio()`` in one process.

Answers arrive in random order over several seconds, most through the process's own server (an
in-process wake-up) and some through another server process on the same root (found by polling).
Every wait must return its own event's answer, and the few events nobody answers must time out on
time while the others are still waiting. Peak memory is reported.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl

from ._util import Pending, assert_clean_log, send_answers, start_server_process

WAITS = 1_000
SHORT = 20  # never answered: they must time out
POLLED = 100  # answered through the other server process
SHORT_TIMEOUT = 4.0
POLL = 5.0  # the default
CHUNK = 70  # answers sent together, then a pause
ANSWERING = SHORT_TIMEOUT + 3  # seconds over which the answers are spread


@dataclass
class Outcome:
    results: dict[str, Any]  # request id -> value or exception
    done_at: dict[str, float]  # request id -> wall-clock time the wait returned
    answered_at: dict[str, float]  # request id -> wall-clock time the answer's 200 arrived
    values: dict[str, int]
    short: list[hitl.Event[int]]
    polled: set[str]
    created_in: float


async def scenario(other_url: str) -> Outcome:
    start = time.perf_counter()
    answered_events = await asyncio.gather(
        *(
            hitl.new_event.aio(f"many-{i}", data_type=int, prompt="A number?", poll_interval_seconds=POLL)
            for i in range(WAITS - SHORT)
        )
    )
    short = await asyncio.gather(
        *(
            hitl.new_event.aio(
                f"short-{i}", data_type=int, prompt="Nobody", timeout_seconds=SHORT_TIMEOUT, poll_interval_seconds=POLL
            )
            for i in range(SHORT)
        )
    )
    created_in = time.perf_counter() - start
    results: dict[str, Any] = {}
    done_at: dict[str, float] = {}

    async def wait(event: hitl.Event[int]) -> None:
        try:
            results[event.request_id] = await event.wait.aio()
        except hitl.EventTimeoutError as e:
            results[event.request_id] = e
        done_at[event.request_id] = time.time()

    waits = [asyncio.create_task(wait(e)) for e in [*answered_events, *short]]
    await asyncio.sleep(0.5)

    values = {e.request_id: random.randrange(10**9) for e in answered_events}
    order = random.sample(list(answered_events), len(answered_events))
    polled = {e.request_id for e in order[:POLLED]}
    random.shuffle(order)
    answered_at: dict[str, float] = {}

    def record(item: Pending, reply: Any) -> None:
        assert reply.status == 200, reply.body
        answered_at[item.request_id] = time.time()

    own_url = answered_events[0].endpoint
    loop = asyncio.get_running_loop()
    began, chunks = loop.time(), range(0, len(order), CHUNK)
    for n, i in enumerate(chunks):
        chunk = [(Pending(e.request_id, e.token), values[e.request_id]) for e in order[i : i + CHUNK]]
        mine = [job for job in chunk if job[0].request_id not in polled]
        theirs = [job for job in chunk if job[0].request_id in polled]
        await asyncio.gather(
            send_answers(own_url, mine, connections=4, on_reply=record),
            send_answers(other_url, theirs, connections=2, on_reply=record),
        )
        # Paced to span ANSWERING seconds however fast the machine, so answers outlast the short timeouts.
        await asyncio.sleep(max(0.0, began + (n + 1) * ANSWERING / len(chunks) - loop.time()))
    await asyncio.wait_for(asyncio.gather(*waits), 60)
    return Outcome(results, done_at, answered_at, values, list(short), polled, created_in)


def peak_rss_mib() -> float:
    """The process's peak resident set since the last `reset_peak_rss` (Linux), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the peak-RSS count from now
        return True
    except OSError:
        return False


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_thousand_concurrent_waits(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = start_server_process(root, tmp_path / "other.log")
    # Peak RSS rather than tracemalloc, whose bookkeeping would double the time of every allocation here.
    before, scoped = current_rss_mib(), reset_peak_rss()
    try:
        out = asyncio.run(scenario(other.url))
    finally:
        assert other.stop() == 0
    peak = peak_rss_mib()

    assert len(out.results) == WAITS
    for request_id, value in out.values.items():
        assert out.results[request_id] == value  # its own answer, whichever order they came in
    late = []
    for event in out.short:
        assert isinstance(out.results[event.request_id], hitl.EventTimeoutError)
        deadline = datetime.fromisoformat(event.expires_at.replace("Z", "+00:00")).timestamp()
        late.append(out.done_at[event.request_id] - deadline)
    last_answer = max(out.answered_at.values())
    last_timeout = max(out.done_at[e.request_id] for e in out.short)
    in_process = [out.done_at[r] - out.answered_at[r] for r in out.values if r not in out.polled]
    by_polling = [out.done_at[r] - out.answered_at[r] for r in out.polled]
    settled = max(out.done_at[r] for r in out.values) - last_answer
    answering_span = last_answer - min(out.answered_at.values())

    printed = capsys.readouterr().out
    assert printed.count("answered: ") == WAITS - SHORT
    with capsys.disabled():
        print(
            f"\nmany waits: {WAITS} concurrent waits ({WAITS - SHORT} answered in random order over "
            f"{answering_span:.1f} s, {POLLED} of them through another server process; {SHORT} left to time out); "
            f"created in {out.created_in:.1f} s; all resolved {max(settled, 0):.2f} s after the last answer; "
            f"wake-up in-process max {max(in_process) * 1000:.0f} ms, by polling max {max(by_polling):.1f} s "
            f"(poll {POLL:g} s); timeouts fired {min(late) * 1000:.0f}-{max(late) * 1000:.0f} ms after their "
            f"deadline; peak RSS {peak:.0f} MiB {'during the waits' if scoped else 'of the process'} "
            f"(RSS before: {before:.0f} MiB)"
        )
    # The bounds, with generous margins: within seconds of the last answer, timeouts on time.
    assert last_timeout < last_answer  # the timeouts fired while answers were still arriving
    assert settled < POLL + 10
    assert min(late) >= -0.1 and max(late) < 3.0
    assert_clean_log(other.log_text())
