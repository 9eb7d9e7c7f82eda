"""Races: 64 simultaneous answers to one event give exactly one 200 and 63 409s, and the waiting
process returns the winner's value; the same across two server processes sharing one root.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

from conftest import Proc, run_python

from ._util import (
    Connection,
    Pending,
    answer_form,
    answer_json,
    assert_clean_log,
    burst,
    start_server_process,
)

RACERS = 64
ROUNDS = 8

# Creates one event per round and waits on it with a real Event.wait, printing what a client needs.
WAITER = """
import json, sys
import flyteplugins.hitl as hitl

rounds, poll = int(sys.argv[1]), float(sys.argv[2])
for i in range(rounds):
    event = hitl.new_event(f"race-{i}", data_type=int, prompt="First answer wins", poll_interval_seconds=poll)
    shown = {"request_id": event.request_id, "token": event.token, "url": event.endpoint}
    print("EVENT " + json.dumps(shown), flush=True)
    print("RESULT " + json.dumps({"request_id": event.request_id, "value": event.wait()}), flush=True)
# Stay until the test has every reply: the losers' 409s are still being written by the server's threads.
sys.stdin.readline()
"""


def start_waiter(tmp_path: Path, poll: float, env: dict[str, str] | None = None) -> Proc:
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    return Proc(run_python(str(script), str(ROUNDS), str(poll), env=env, stdin=subprocess.PIPE))


def race(waiter: Proc, root: Path, round_: int, urls: list[str] | None = None) -> int:
    """One round: wait until the waiter waits, fire the racers at `urls` (default: the event's own
    server) in turn, check the outcome. Returns the winner's position."""
    event = json.loads(waiter.expect(r"^EVENT (.*)$").group(1))
    waiter.expect(rf"^\[hitl\] waiting for 'race-{round_}'")
    item = Pending(event["request_id"], event["token"])
    targets = urls or [event["url"]]
    values = [round_ * 1000 + k for k in range(RACERS)]
    requests = []
    for k, value in enumerate(values):
        path, body, headers = (answer_form if k % 4 == 0 else answer_json)(item, value)
        requests.append((targets[k % len(targets)], path, body, headers))
    replies = asyncio.run(burst(requests))
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [409] * (RACERS - 1), statuses
    winner = next(k for k, r in enumerate(replies) if r.status == 200)
    result = json.loads(waiter.expect(r"^RESULT (.*)$", timeout=30).group(1))
    assert result == {"request_id": item.request_id, "value": values[winner]}
    stored = json.loads((root / item.request_id / "response.json").read_bytes())
    assert stored["status"] == "completed" and stored["value"] == values[winner]
    return winner


def test_64_racers_at_the_waiting_process_own_server(root: Path, tmp_path: Path) -> None:
    # A long poll interval: the waiter returns quickly only through the in-process wake-up.
    waiter = start_waiter(tmp_path, 30)
    try:
        winners = [race(waiter, root, i) for i in range(ROUNDS)]
        assert waiter.finish() == 0, waiter.output
    finally:
        waiter.close()
    print(f"\nraces (embedded server): {ROUNDS} rounds x {RACERS} racers, one 200 each; winners {winners}")


def test_64_racers_split_over_two_server_processes_sharing_a_root(root: Path, tmp_path: Path) -> None:
    first = start_server_process(root, tmp_path / "first.log")
    second = start_server_process(root, tmp_path / "second.log")
    # The waiter has no server of its own (an external endpoint): it learns the answer by polling.
    waiter = start_waiter(tmp_path, 0.1, {"FLYTE_HITL_ENDPOINT": first.url})
    try:
        winners = [race(waiter, root, i, [first.url, second.url]) for i in range(ROUNDS)]
        assert waiter.finish() == 0, waiter.output
    finally:
        waiter.close()
        codes = first.stop(), second.stop()
    assert codes == (0, 0)
    assert_clean_log(first.log_text())
    assert_clean_log(second.log_text())
    served = {"first" if w % 2 == 0 else "second" for w in winners}
    print(f"\nraces (two servers, one root): {ROUNDS} rounds x {RACERS} racers, one 200 each; won via {served}")


# Events that time out soon; their waits run concurrently and report a value or "timeout".
DEADLINE_WAITER = """
import asyncio, json, sys
import flyteplugins.hitl as hitl

count, timeout = int(sys.argv[1]), float(sys.argv[2])
events = [hitl.new_event(f"deadline-{i}", data_type=int, prompt="Now!", timeout_seconds=timeout) for i in range(count)]
shown = [{"request_id": e.request_id, "token": e.token, "expires_at": e.expires_at} for e in events]
print("EVENTS " + json.dumps({"url": events[0].endpoint, "events": shown}), flush=True)


async def wait(event):
    try:
        return await event.wait.aio()
    except hitl.EventTimeoutError:
        return "timeout"


async def main():
    return await asyncio.wait_for(asyncio.gather(*(wait(e) for e in events)), 60)


results = asyncio.run(main())
print("RESULTS " + json.dumps(dict(zip([e.request_id for e in events], results))), flush=True)
sys.stdin.readline()
"""
DEADLINE_EVENTS = 16
DEADLINE_ANSWERS = 16  # per event, within 0.1 s, somewhere around its deadline


def test_answers_racing_the_deadline_get_one_consistent_outcome(root: Path, tmp_path: Path) -> None:
    script = tmp_path / "deadline.py"
    script.write_text(DEADLINE_WAITER)
    waiter = Proc(run_python(str(script), str(DEADLINE_EVENTS), "2.5", stdin=subprocess.PIPE))
    try:
        shown = json.loads(waiter.expect(r"^EVENTS (.*)$").group(1))
        replies = asyncio.run(answer_around_deadlines(shown["url"], shown["events"]))
        results = json.loads(waiter.expect(r"^RESULTS (.*)$", timeout=60).group(1))
        assert waiter.finish() == 0, waiter.output
    finally:
        waiter.close()

    tally = {"answered": 0, "expired": 0}
    for event in shown["events"]:
        request_id = event["request_id"]
        got = replies[request_id]  # (value, status) in the order sent
        assert {status for _, status in got} <= {200, 409, 410}, got
        winners = [value for value, status in got if status == 200]
        stored = json.loads((root / request_id / "response.json").read_bytes())
        if results[request_id] == "timeout":
            # The expiry won: nobody got a 200, the stored outcome is the expiry, later answers got 410.
            assert winners == [] and stored["status"] == "expired", (got, stored)
            tally["expired"] += 1
        else:
            # One answer won before the deadline: one 200, the waiter returned it, the rest got 409.
            assert winners == [results[request_id]] and stored["value"] == results[request_id], (got, stored)
            after = got[[value for value, _ in got].index(winners[0]) + 1 :]
            assert {status for _, status in after} <= {409}, got
            tally["answered"] += 1
    print(
        f"\nraces (deadline): {DEADLINE_EVENTS} events x {DEADLINE_ANSWERS} answers around the deadline: "
        f"{tally['answered']} answered, {tally['expired']} expired, each outcome consistent"
    )


async def answer_around_deadlines(url: str, events: list[dict[str, str]]) -> dict[str, list[tuple[int, int]]]:
    """Send each event's answers at fixed wall-clock times around its deadline, one connection each."""
    out: dict[str, list[tuple[int, int]]] = {e["request_id"]: [] for e in events}

    async def send(event: dict[str, str], k: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        item = Pending(event["request_id"], event["token"])
        reply = await Connection.to(url, keep_alive=False).request("POST", *answer_json(item, k))
        out[item.request_id].append((k, reply.status))

    tasks = []
    for i, event in enumerate(events):
        # Event i's answers start between 0.15 s before and 0.15 s after its deadline and last 0.1 s, so
        # early events are answered, late ones expire, and those in between race the expiry.
        deadline = datetime.fromisoformat(event["expires_at"].replace("Z", "+00:00")).timestamp()
        start = deadline - 0.15 + 0.3 * i / (len(events) - 1)
        for k in range(DEADLINE_ANSWERS):
            tasks.append(send(event, k, start + 0.1 * k / (DEADLINE_ANSWERS - 1)))
    await asyncio.gather(*tasks)
    for got in out.values():
        got.sort()  # by value, which is the order of sending
    return out
