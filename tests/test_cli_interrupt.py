"""Ctrl-C during a wait ends the program with one line, no traceback, and withdraws an event nothing
can re-attach to; other cancellations go on as raised; a wait that finds its answer already given does
not show the form and curl lines again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_line, run_python

import flyteplugins.hitl as hitl

_ASYNCIO_310 = "asyncio.run on Python 3.10 cancels the waits only after Ctrl-C has left its loop"

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


# Python 3.10's asyncio.run lets Ctrl-C out of its loop as a KeyboardInterrupt and cancels the waits only
# afterwards, so nothing ties the two: there an `.aio` wait ends with Python's usual traceback.
MODES = ["sync", pytest.param("aio", marks=pytest.mark.skipif(sys.version_info < (3, 11), reason=_ASYNCIO_310))]


@pytest.mark.parametrize("mode", MODES)
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


def _stored_outcome(root: Path) -> dict[str, object]:
    (event_dir,) = root.iterdir()
    return json.loads((event_dir / "response.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_c_during_event_wait_withdraws_the_event_in_one_line_with_no_traceback(root: Path, mode: str) -> None:
    proc = run_python(_WAIT, mode, env={"FLYTE_HITL_ROOT": str(root)})
    out = _interrupt(proc, "[hitl] curl:")
    assert out == "[hitl] interrupted: 'x' is withdrawn; it takes no more answers\n", out
    assert proc.returncode == -signal.SIGINT
    # 2.12.1's closed state, so that every reader (old ones included) sees it closed.
    stored = _stored_outcome(root)
    assert stored["status"] == "expired" and set(stored) == {"request_id", "status", "withdrawn_at"}
    reply = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", "submit", "--root", str(root), str(stored["request_id"]), "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reply.returncode != 0 and not (root / str(stored["request_id"]) / "response.1.json").exists()


def test_ctrl_c_during_the_readme_example_withdraws_its_event(root: Path) -> None:
    # `make demo`: a Flyte local run waits in a thread of its own; the Ctrl-C reaches the main thread.
    proc = run_python(str(REPO / "examples" / "example.py"), env={"FLYTE_HITL_ROOT": str(root)})
    out = _interrupt(proc, "[hitl] curl:")
    assert out == "[hitl] interrupted: 'replicas' is withdrawn; it takes no more answers\n", out
    assert proc.returncode != 0
    assert _stored_outcome(root)["status"] == "expired"


_WAIT_FOR = """
import asyncio, sys, threading
import flyteplugins.hitl as hitl

event = hitl.new_event("x", data_type=int, prompt="A number?", timeout_seconds=600)
try:
    asyncio.run(asyncio.wait_for(event.wait.aio(), 0.2))
except Exception as e:
    print("caught", type(e).__name__, flush=True)
if sys.argv[1] == "again":
    asyncio.run(asyncio.wait_for(event.wait.aio(), 0.2))
print("ready", flush=True)
threading.Event().wait(600)
"""


def test_a_wait_for_timeout_propagates_as_raised_with_no_interrupted_line(root: Path) -> None:
    proc = run_python(_WAIT_FOR, "again", env={"FLYTE_HITL_ROOT": str(root)})
    out, _ = proc.communicate(timeout=60)
    assert "caught TimeoutError" in out, out
    assert out.rstrip().splitlines()[-1].startswith("TimeoutError"), out
    # The real traceback, through asyncio's wait_for (whose last line differs between Pythons).
    assert ", in wait_for" in out and "[hitl] interrupted" not in out, out
    assert proc.returncode == 1
    assert not list(root.glob("*/response.json")), "a timeout is no Ctrl-C: nothing withdrawn"


def test_a_ctrl_c_after_a_wait_for_timeout_says_nothing_of_that_wait(root: Path) -> None:
    proc = run_python(_WAIT_FOR, "once", env={"FLYTE_HITL_ROOT": str(root)})
    out = _interrupt(proc, "ready")
    assert "[hitl] interrupted" not in out and "KeyboardInterrupt" in out, out
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
