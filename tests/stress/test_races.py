"""Races: 64 simultaneous answers to one event give exactly one 200 and 63 409s, and the waiting
process returns the winner's value; the same across two server processes sharing one root.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from conftest import run_python

from ._util import Lines, Pending, answer_form, answer_json, assert_clean_log, burst, start_server_process

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


def start_waiter(tmp_path: Path, poll: float, env: dict[str, str] | None = None) -> Lines:
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    return Lines(run_python(str(script), str(ROUNDS), str(poll), env=env, stdin=subprocess.PIPE))


def race(waiter: Lines, root: Path, round_: int, urls: list[str] | None = None) -> int:
    """One round: wait until the waiter waits, fire the racers at `urls` (default: the event's own
    server) in turn, check the outcome. Returns the winner's position."""
    event = json.loads(waiter.wait_for(r"^EVENT (.*)$").group(1))
    waiter.wait_for(rf"^\[hitl\] waiting for 'race-{round_}'")
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
    result = json.loads(waiter.wait_for(r"^RESULT (.*)$", timeout=30).group(1))
    assert result == {"request_id": item.request_id, "value": values[winner]}
    stored = json.loads((root / item.request_id / "response.json").read_bytes())
    assert stored["status"] == "completed" and stored["value"] == values[winner]
    return winner


def test_64_racers_at_the_waiting_process_own_server(root: Path, tmp_path: Path) -> None:
    # A long poll interval: the waiter returns quickly only through the in-process wake-up.
    waiter = start_waiter(tmp_path, 30)
    try:
        winners = [race(waiter, root, i) for i in range(ROUNDS)]
        assert waiter.finish() == 0, waiter.text()
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
        assert waiter.finish() == 0, waiter.text()
    finally:
        waiter.close()
        codes = first.stop(), second.stop()
    assert codes == (0, 0)
    assert_clean_log(first.log_text())
    assert_clean_log(second.log_text())
    served = {"first" if w % 2 == 0 else "second" for w in winners}
    print(f"\nraces (two servers, one root): {ROUNDS} rounds x {RACERS} racers, one 200 each; won via {served}")
