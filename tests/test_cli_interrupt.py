"""Ctrl-C during a wait ends the program with one line, no traceback; a wait that finds its answer
already given does not show the form and curl lines again."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from conftest import read_line, run_python

import flyteplugins.hitl as hitl

_BARE = """
import asyncio, sys, threading
from flyteplugins.hitl import _console

async def main():
    with _console.interruptible("x\\u202e"):
        print("ready", flush=True)
        await asyncio.Event().wait()

if sys.argv[1] == "sync":
    with _console.interruptible("x\\u202e"):
        print("ready", flush=True)
        threading.Event().wait(600)
else:
    asyncio.run(main())
"""

_CAUGHT = """
import threading
from flyteplugins.hitl import _console
try:
    with _console.interruptible("x"):
        print("ready", flush=True)
        threading.Event().wait(600)
except KeyboardInterrupt:
    print("the program caught it", flush=True)
raise ValueError("a later, unrelated error")
"""


def _interrupt(proc: subprocess.Popen[str], ready: str) -> str:
    """Send SIGINT once `proc` printed a line starting with `ready`; return the rest of its output."""
    try:
        while not (line := read_line(proc)).startswith(ready):
            assert line, f"the process ended before {ready!r}"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_ctrl_c_in_an_interruptible_wait_is_one_line_and_a_sigint_exit(mode: str) -> None:
    proc = run_python(_BARE, mode)
    out = _interrupt(proc, "ready")
    assert out == "[hitl] interrupted: 'x\\u202e' is still waiting; re-run to pick it up\n", out
    assert proc.returncode == -signal.SIGINT, "the process still ends as a Ctrl-C does"


def test_a_program_that_catches_the_ctrl_c_keeps_its_own_error_output() -> None:
    proc = run_python(_CAUGHT)
    out = _interrupt(proc, "ready")
    assert out.startswith("the program caught it\n"), out
    assert "Traceback" in out and "ValueError: a later, unrelated error" in out
    assert "[hitl] interrupted" not in out
    assert proc.returncode == 1


_WAIT = """
import asyncio, sys
import flyteplugins.hitl as hitl

event = hitl.new_event("x", data_type=int, prompt="A number?", timeout_seconds=600)
if sys.argv[1] == "sync":
    event.wait()
else:
    asyncio.run(event.wait.aio())
"""


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_ctrl_c_during_event_wait_ends_with_one_line_and_no_traceback(root: Path, mode: str) -> None:
    proc = run_python(_WAIT, mode, env={"FLYTE_HITL_ROOT": str(root)})
    out = _interrupt(proc, "[hitl] curl:")
    assert out == "[hitl] interrupted: 'x' is still waiting; re-run to pick it up\n", out
    assert proc.returncode == -signal.SIGINT


def test_a_wait_that_finds_its_answer_given_does_not_show_the_form_again(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = hitl.new_event("x", data_type=int, prompt="A number?", timeout_seconds=600)
    hitl.submit(event.request_id, 6, root=str(root))  # as when a re-run finds the event answered meanwhile
    assert event.wait() == 6
    out = capsys.readouterr().out
    assert "[hitl] 'x' answered: 6" in out
    assert "form:" not in out and "curl:" not in out, out
