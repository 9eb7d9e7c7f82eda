"""Clean shutdown: the embedded server never keeps a finished program alive, and no answer that got
its 200 is lost when a program (or a standalone server) ends in the middle of traffic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Proc, request, run_python

from flyteplugins.hitl._store import Store

from ._util import (
    Pending,
    Reply,
    answer_form,
    answer_json,
    assert_clean_log,
    burst,
    create_events,
    send_answers,
    start_server_process,
    stored_answers,
)

# Creates events (starting the embedded server), maybe waits for the first one, then simply ends:
# nothing stops the server.
PROGRAM = """
import asyncio, json, sys
import flyteplugins.hitl as hitl

mode, count = sys.argv[1], int(sys.argv[2])
events = [hitl.new_event(f"shutdown-{i}", data_type=int, prompt="A number?") for i in range(count)]
shown = [{"request_id": e.request_id, "token": e.token} for e in events]
print("EVENTS " + json.dumps({"url": events[0].endpoint, "events": shown}), flush=True)
if mode == "sync":
    value = events[0].wait()
elif mode == "async":
    value = asyncio.run(events[0].wait.aio())
else:
    value = None
print("RESULT " + json.dumps(value), flush=True)
"""

EXIT_WITHIN = 20.0  # seconds; generous: a stuck program would wait for its clients forever


def start_program(tmp_path: Path, mode: str, count: int) -> tuple[Proc, str, list[Pending]]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    program = Proc(run_python(str(script), mode, str(count)))
    shown = json.loads(program.expect(r"^EVENTS (.*)$").group(1))
    return program, shown["url"], [Pending(e["request_id"], e["token"]) for e in shown["events"]]


def hold_connections(url: str) -> list[socket.socket]:
    """An idle keep-alive client, a client stuck half-way through a body, and one that never sent a byte."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=30) for _ in range(3)]
    socks[0].sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert socks[0].recv(4096).startswith(b"HTTP/1.1 200")
    socks[1].sendall(
        f'POST /submit/json HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100\r\n\r\n{{"request_id": '.encode()
    )
    return socks


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_program_that_got_its_answer_ends_despite_open_connections(root: Path, tmp_path: Path, mode: str) -> None:
    program, url, (event,) = start_program(tmp_path, mode, 1)
    held = hold_connections(url)
    try:
        reply = asyncio.run(burst([(url, *answer_json(event, 31337))]))[0]
        assert reply.status == 200
        answered = time.monotonic()
        assert program.expect(r"^RESULT (.*)$").group(1) == "31337"
        assert program.proc.wait(EXIT_WITHIN) == 0, program.output
        exited_in = time.monotonic() - answered
        for sock in held:  # the server went with the program
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(4096) == b""
    finally:
        for sock in held:
            sock.close()
        program.close()
    assert stored_answers(root)[event.request_id]["value"] == 31337
    print(f"\nshutdown ({mode}): program ended {exited_in * 1000:.0f} ms after its answer, 3 client connections open")


def test_a_program_that_never_waits_ends_at_once(root: Path, tmp_path: Path) -> None:
    program, _, _ = start_program(tmp_path, "none", 3)
    try:
        assert program.expect(r"^RESULT (.*)$").group(1) == "null"
        assert program.proc.wait(EXIT_WITHIN) == 0, program.output
    finally:
        program.close()


ROUNDS = 4
EVENTS_PER_ROUND = 50


def test_answers_acknowledged_while_the_program_ends_are_kept(root: Path, tmp_path: Path) -> None:
    """The first answer ends the program while 49 more are in flight: every 200 among them is on disk."""
    acked = cut_off = stored_unacked = 0
    for round_ in range(ROUNDS):
        program, url, events = start_program(tmp_path, "sync", EVENTS_PER_ROUND)
        values = {e.request_id: round_ * 1000 + i for i, e in enumerate(events)}
        requests = [
            (url, *(answer_form if i % 3 == 0 else answer_json)(e, values[e.request_id])) for i, e in enumerate(events)
        ]
        try:
            replies = asyncio.run(burst_tolerant(requests))
            assert program.proc.wait(EXIT_WITHIN) == 0, program.output
        finally:
            program.close()
        stored = stored_answers(root)
        for event, reply in zip(events, replies, strict=True):
            if isinstance(reply, Reply):
                assert reply.status == 200, reply.body
                assert stored[event.request_id]["value"] == values[event.request_id]
                acked += 1
            else:
                cut_off += 1
                stored_unacked += event.request_id in stored
        for request_id, response in stored.items():
            assert response["value"] == values.get(request_id, response["value"])
    print(
        f"\nshutdown: {ROUNDS} programs ended by their first answer with {EVENTS_PER_ROUND} answers in flight: "
        f"{acked} acknowledged (all stored), {cut_off} cut off by the exit ({stored_unacked} of those stored anyway)"
    )
    assert acked >= ROUNDS  # at least each program's own first answer


async def burst_tolerant(requests: list[tuple[str, str, bytes, dict[str, str]]]) -> list[Reply | str]:
    """Like `burst`, but a connection the exiting program cut off gives the error's name instead of a reply."""

    async def one(request: tuple[str, str, bytes, dict[str, str]]) -> Reply | str:
        try:
            return (await burst([request]))[0]
        except (OSError, asyncio.IncompleteReadError) as e:
            return type(e).__name__

    return list(await asyncio.gather(*(one(r) for r in requests)))


def test_sigterm_stops_a_standalone_server_under_load_without_losing_an_acknowledged_answer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    events = create_events(Store(str(root)), 2_000, "term")
    values = {e.request_id: i for i, e in enumerate(events)}
    server = start_server_process(root, tmp_path / "server.log")
    held = hold_connections(server.url)
    acked: set[str] = set()
    signalled: list[float] = []

    def on_reply(item: Pending, reply: Reply) -> None:
        if reply.status == 200:
            acked.add(item.request_id)
            if len(acked) == 500 and not signalled:
                os.kill(server.proc.pid, signal.SIGTERM)
                signalled.append(time.monotonic())

    try:
        jobs = [(e, values[e.request_id]) for e in events]
        asyncio.run(send_answers(server.url, jobs, on_reply=on_reply, stop_after_error=True))
        assert server.proc.wait(EXIT_WITHIN) == 0
        stopped_in = time.monotonic() - signalled[0]
    finally:
        for sock in held:
            sock.close()
        server.stop()
    stored = stored_answers(root)
    assert acked <= set(stored)
    for request_id, response in stored.items():
        assert response["value"] == values[request_id]
    assert_clean_log(server.log_text())
    print(
        f"\nshutdown: SIGTERM to a standalone server under load with 3 stalled connections: exited (code 0) in "
        f"{stopped_in * 1000:.0f} ms; {len(acked)} acknowledged answers, all stored"
    )


# A task waiting in a Flyte local run; the run must end once answered, whatever connections are open.
TASK = """
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="stress_shutdown")


@env.task
async def ask() -> int:
    event = await hitl.new_event.aio("done_then_exit", data_type=int, prompt="A number?")
    return await event.wait.aio()


if __name__ == "__main__":
    flyte.init()
    print("RESULT", flyte.with_runcontext(mode="local").run(ask).outputs(), flush=True)
"""


@pytest.mark.flyte_run
def test_a_flyte_local_run_ends_once_answered_despite_open_connections(root: Path, tmp_path: Path) -> None:
    script = tmp_path / "task.py"
    script.write_text(TASK)
    run = Proc(run_python(str(script), cwd=tmp_path))
    held: list[socket.socket] = []
    try:
        form = run.expect(r"^\[hitl\] form: (http://[^/]+)/form/([\w-]+)\?token=(\S+)", timeout=120)
        url, request_id, token = form.groups()
        held = hold_connections(url)
        reply = asyncio.run(burst([(url, *answer_json(Pending(request_id, token), 77))]))[0]
        assert reply.status == 200
        answered = time.monotonic()
        assert "77" in run.expect(r"^RESULT (.*)$", timeout=60).group(1)
        assert run.proc.wait(EXIT_WITHIN) == 0, run.output
        exited_in = time.monotonic() - answered
    finally:
        for sock in held:
            sock.close()
        run.close()
    print(f"\nshutdown: a Flyte local run ended {exited_in:.1f} s after its answer, 3 client connections open")


# Creates one event, waits for it and ends at once: the answer's reply races the end of the program.
RACE_PROGRAM = """
import json, signal, sys
import flyteplugins.hitl as hitl

# Timed reads every millisecond: one of them is bound to find the answer before its reply is written.
event = hitl.new_event("race", data_type=int, prompt="A number?", poll_interval_seconds=0.001)
shown = {"url": event.endpoint, "request_id": event.request_id, "token": event.token}
print("EVENT " + json.dumps(shown), flush=True)
print("RESULT " + json.dumps(event.wait()), flush=True)
if sys.argv[1] == "sys.exit":
    sys.exit(0)
if sys.argv[1] == "ctrl-c":
    signal.raise_signal(signal.SIGINT)  # as if Ctrl-C was pressed the moment the answer came
"""
ENDINGS = {"return": 0, "sys.exit": 0, "ctrl-c": -signal.SIGINT}  # how the program ends: its exit code
RACES = 100  # per way of answering
RACING = 6  # programs at a time


def answer_at_once(url: str, event: Pending, how: str, value: int) -> str | None:
    """Post the answer; None if its 200 reply came, else what the answerer saw instead."""
    path, body, headers = (answer_json if how == "json" else answer_form)(event, value)
    try:
        reply = request(url, "POST", path, body, headers, timeout=30)
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    return None if reply.status == 200 else f"status {reply.status}"


def race_once(script: Path, ending: str, how: str, value: int) -> str | None:
    """Run the program, answer its event the moment it is shown; None if the reply came, else what happened."""
    program = Proc(run_python(str(script), ending))
    try:
        shown = json.loads(program.expect(r"^EVENT (.*)$").group(1))
        lost = answer_at_once(shown["url"], Pending(shown["request_id"], shown["token"]), how, value)
        assert program.expect(r"^RESULT (.*)$").group(1) == str(value)
        assert program.proc.wait(EXIT_WITHIN) == ENDINGS[ending], program.output
        return lost
    finally:
        program.close()


@pytest.mark.parametrize("how", ["json", "form"])
def test_an_answer_gets_its_reply_when_the_program_ends_right_after_the_wait(
    root: Path, tmp_path: Path, how: str
) -> None:
    """The programs end in turn by returning, by `sys.exit` and by Ctrl-C."""
    script = tmp_path / "race.py"
    script.write_text(RACE_PROGRAM)
    endings = list(ENDINGS)
    races = [(script, endings[i % len(endings)], how, 1000 + i) for i in range(RACES)]
    with concurrent.futures.ThreadPoolExecutor(RACING) as pool:
        outcomes = list(pool.map(lambda race: race_once(*race), races))
    lost = [outcome for outcome in outcomes if outcome is not None]
    print(f"\nshutdown race ({how}): {RACES} programs ended right after their wait; {len(lost)} replies lost")
    assert lost == []


EXAMPLE = REPO / "examples" / "example.py"
FLYTE_RACING = 4  # Flyte local runs at a time


def example_race_once(cwd: Path, how: str, value: int) -> str | None:
    """A Flyte local run of the README example, answered the moment its form link is printed."""
    cwd.mkdir()
    run = Proc(run_python(str(EXAMPLE), cwd=cwd))
    try:
        form = run.expect(r"^\[hitl\] form: (http://[^/]+)/form/([\w-]+)\?token=(\S+)$", timeout=120)
        url, request_id, token = form.groups()
        lost = answer_at_once(url, Pending(request_id, token), how, value)
        run.expect(rf"^(?!\[hitl\]).*\b{value}\b")  # the run's printed outputs, not a console line
        assert run.proc.wait(EXIT_WITHIN) == 0, run.output
        return lost
    finally:
        run.close()


@pytest.mark.flyte_run
def test_an_answer_gets_its_reply_when_a_flyte_local_run_of_the_example_ends_right_after_the_wait(
    root: Path, tmp_path: Path
) -> None:
    """The example's task ends with its wait, and its run with the task. Its wait's first read comes
    right after the form link, and the answer is posted the moment that link is printed, so now and
    then the read finds the answer before the server has replied. Half the answers come through the
    JSON API, half through the form."""
    runs = [(tmp_path / f"run-{i}", "json" if i % 2 else "form", 2000 + i) for i in range(RACES)]
    with flyte_local_files_removed(), concurrent.futures.ThreadPoolExecutor(FLYTE_RACING) as pool:
        outcomes = list(pool.map(lambda run: example_race_once(*run), runs))
    lost = [outcome for outcome in outcomes if outcome is not None]
    print(f"\nshutdown race (Flyte local run): {RACES} runs of the example ended at once; {len(lost)} replies lost")
    assert lost == []


@contextlib.contextmanager
def flyte_local_files_removed() -> Iterator[None]:
    """Remove the files that the Flyte local runs started inside this block leave under /tmp/flyte."""
    base = Path("/tmp/flyte")
    kinds = ("metadata", "raw_data")
    before = {kind: set(os.listdir(base / kind)) if (base / kind).is_dir() else set() for kind in kinds}
    try:
        yield
    finally:
        for kind in kinds:
            if (base / kind).is_dir():
                for name in set(os.listdir(base / kind)) - before[kind]:
                    shutil.rmtree(base / kind / name, ignore_errors=True)
