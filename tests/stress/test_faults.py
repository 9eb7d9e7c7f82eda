"""Process faults: kill -9 the server in the middle of a load, and kill -9 a task while it waits.

An answer acknowledged with 200 is on disk before the reply leaves, so killing the server at any
moment may lose only answers that were never acknowledged; a restarted server serves on, and the
clients' retries of unacknowledged answers get 200 (not stored) or 409 (stored, reply lost).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
from pathlib import Path

import pytest
from conftest import Proc, post_json, run_python

from flyteplugins.hitl._store import Store

from ._util import (
    Pending,
    Reply,
    ServerProcess,
    assert_clean_log,
    create_events,
    send_answers,
    start_server_process,
    stored_answers,
)

EVENTS = 4_000
KILLS = 3


def test_kill_9_the_server_in_the_middle_of_the_load(tmp_path: Path) -> None:
    root = tmp_path / "root"
    events = create_events(Store(str(root)), EVENTS, "fault")
    values = {e.request_id: random.randrange(10**9) for e in events}
    pending: list[Pending] = list(events)
    random.shuffle(pending)
    acked: set[str] = set()  # every answer that got its 200, over all server lives
    late: set[str] = set()  # answers stored by a killed server whose reply never arrived (409 on retry)
    lost_in_flight = tmp_leftovers = 0
    for life in range(KILLS + 1):
        server = start_server_process(root, tmp_path / f"server-{life}.log")
        kill_at = len(acked) + EVENTS // (KILLS + 2) if life < KILLS else None

        def on_reply(
            item: Pending, reply: Reply, server: ServerProcess = server, kill_at: int | None = kill_at
        ) -> None:
            if reply.status == 200:
                assert item.request_id not in acked, "a second 200 for one event"
                acked.add(item.request_id)
                if kill_at is not None and len(acked) >= kill_at and server.proc.poll() is None:
                    server.kill()

        jobs = [(item, values[item.request_id]) for item in pending]
        try:
            result = asyncio.run(send_answers(server.url, jobs, on_reply=on_reply, stop_after_error=True))
        finally:
            if server.proc.poll() is None and kill_at is not None:
                server.kill()  # the load ended before the kill point: kill it between requests instead
        if kill_at is None:
            assert result.errors() == {}
            assert server.stop() == 0
        else:
            assert server.proc.returncode == -signal.SIGKILL
            lost_in_flight += len(result.errors())

        refused = result.with_status(409)
        assert refused <= set(values) - acked
        late |= refused
        assert set(result.outcomes) - result.with_status(200) - refused == set(result.errors())

        # After each life: every acknowledged answer intact, every stored file whole and the value sent.
        stored = stored_answers(root)
        assert acked <= set(stored)
        for request_id, response in stored.items():
            assert response["status"] == "completed"
            assert response["value"] == values[request_id]
        # A kill between writing a temp file and linking it leaves the temp file; nothing reads it.
        tmp_leftovers = len(list(root.glob("*/*.tmp")))
        assert_clean_log(server.log_text())
        pending = [item for item in pending if item.request_id not in acked | late]

    assert pending == []
    assert acked | late == set(values)
    assert not acked & late
    print(
        f"\nfaults: {KILLS} kill -9 of the server under a {EVENTS}-answer load; {len(acked)} answers acknowledged, "
        f"all intact; {lost_in_flight} requests cut off in flight, of which {len(late)} had been stored (409 on "
        f"retry) and the rest stored on retry; {tmp_leftovers} leftover temp files"
    )


# A task that waits for a number; the run name is fixed, so a re-run finds the same event.
TASK = """
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="stress_faults")


@env.task
async def ask() -> int:
    event = await hitl.new_event.aio("kill_me", data_type=int, prompt="A number?", poll_interval_seconds=0.5)
    return await event.wait.aio()


if __name__ == "__main__":
    flyte.init()
    run = flyte.with_runcontext(mode="local", name=sys.argv[1]).run(ask)
    print("RESULT", run.outputs(), flush=True)
"""


def start_task(script: Path, run_name: str, cwd: Path) -> Proc:
    # A session of its own, so kill -9 reaches every process the run may have started.
    return Proc(run_python(str(script), run_name, cwd=cwd, start_new_session=True))


@pytest.mark.flyte_run
def test_kill_9_a_waiting_task_and_rerun_it(root: Path, tmp_path: Path) -> None:
    script = tmp_path / "task.py"
    script.write_text(TASK)
    run_name = f"stress-kill-{os.getpid()}"

    first = start_task(script, run_name, tmp_path)
    try:
        form = first.expect(r"^\[hitl\] form: (http://[^/]+)/form/([\w-]+)\?token=(\S+)", timeout=120)
        os.killpg(first.proc.pid, signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL
    finally:
        first.close()
    _, request_id, token = form.groups()
    assert not (root / request_id / "response.json").exists()

    # While the task is down, someone answers through a standalone server on the same root.
    server = start_server_process(root, tmp_path / "server.log")
    try:
        reply = post_json(server.url, {"request_id": request_id, "token": token, "value": 4242})
        assert reply.status == 200, reply.body
    finally:
        assert server.stop() == 0

    second = start_task(script, run_name, tmp_path)
    try:
        outputs = second.expect(r"^RESULT (.*)$", timeout=120).group(1)
        assert re.search(r"(?<!\d)4242(?!\d)", outputs), outputs  # printed as ActionOutputs(o0=4242)
        assert second.proc.wait(60) == 0, second.output
    finally:
        second.close()
    # The re-run re-attached to the same event and found it answered: no new event, no form shown again.
    assert [p.name for p in root.iterdir()] == [request_id]
    assert "[hitl] form:" not in second.output
    assert json.loads((root / request_id / "response.json").read_bytes())["value"] == 4242
    assert not re.search(r"Traceback", first.output + second.output)
    print(f"\nfaults: kill -9 of a waiting Flyte run ({run_name}); the re-run returned the answer given meanwhile")
