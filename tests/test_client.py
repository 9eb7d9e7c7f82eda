"""Answering from programs: `hitl.submit` and the `hitl` command line (list, status, submit)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl._client import parse_form_url
from flyteplugins.hitl.server import HitlServer


def cli(*args: str, env_root: Path | None = None, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYTE_HITL_")}
    if env_root is not None:
        env["FLYTE_HITL_ROOT"] = str(env_root)
    if endpoint is not None:
        env["FLYTE_HITL_ENDPOINT"] = endpoint
    return subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *args], env=env, capture_output=True, text=True, timeout=60
    )


def stored(root: Path, event: hitl.Event[Any]) -> dict[str, Any]:
    return json.loads((root / event.request_id / "response.json").read_text())


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("how", ["form_url", "endpoint", "root"])
def test_submit_wakes_the_waiter_whichever_way_it_goes(root: Path, mode: str, how: str) -> None:
    # An hour between polls and to the deadline: only the in-process wake-up can end this wait in time.
    event = hitl.new_event("n", data_type=float, timeout_seconds=3600, poll_interval_seconds=3600)
    target = event.form_url if how == "form_url" else event.request_id
    kwargs: dict[str, Any] = {"comment": "by program"}
    if how == "endpoint":
        kwargs.update(endpoint=event.endpoint, token=event.token)
    if how == "root":
        kwargs.update(root=str(root))
    results: list[Any] = []

    def answer() -> None:
        if mode == "sync":
            results.append(hitl.submit(target, "2.5", **kwargs))
        else:
            results.append(asyncio.run(hitl.submit.aio(target, "2.5", **kwargs)))

    answering = threading.Timer(0.2, answer)
    answering.start()
    got: list[float] = []
    waiting = threading.Thread(target=lambda: got.append(event.wait()), daemon=True)
    waiting.start()
    waiting.join(30)
    assert got == [2.5], "the wait was woken"
    answering.join()
    assert results and results[0]["value"] == 2.5
    record = stored(root, event)
    assert record["via"] == "python" and record["comment"] == "by program"


def test_submit_errors_are_typed(root: Path, server: HitlServer) -> None:
    event = hitl.new_event("b", data_type=bool, timeout_seconds=30)
    with pytest.raises(hitl.InvalidValueError, match="ture"):
        hitl.submit(event.form_url, "ture")
    with pytest.raises(hitl.InvalidTokenError):
        hitl.submit(event.request_id, True, endpoint=event.endpoint, token="wrong")
    with pytest.raises(hitl.InvalidTokenError):
        hitl.submit(event.request_id, True, endpoint=event.endpoint)
    with pytest.raises(hitl.EventNotFoundError):
        hitl.submit("no-such-event", True, endpoint=event.endpoint, token="x")
    with pytest.raises(hitl.EventNotFoundError):
        hitl.submit("no-such-event", True, root=str(root))
    with pytest.raises(hitl.InvalidRequestIdError):
        hitl.submit("../escape", True, root=str(root))
    assert not (root / event.request_id / "response.json").exists()
    hitl.submit(event.form_url, "no")
    with pytest.raises(hitl.AlreadyAnsweredError):
        hitl.submit(event.form_url, "yes")
    with pytest.raises(hitl.AlreadyAnsweredError):
        hitl.submit(event.request_id, True, root=str(root))
    assert stored(root, event)["value"] is False


def test_submit_to_an_expired_event(root: Path) -> None:
    event = hitl.new_event("e", data_type=int, timeout_seconds=0.2)
    with pytest.raises(TimeoutError):
        event.wait()
    with pytest.raises(hitl.EventExpiredError):
        hitl.submit(event.form_url, 1)
    with pytest.raises(hitl.EventExpiredError):
        hitl.submit(event.request_id, 1, root=str(root))


def test_submit_to_an_unreachable_server_names_it(root: Path) -> None:
    with pytest.raises(hitl.HitlError, match=re.escape("cannot reach http://127.0.0.1:9/submit/json")):
        hitl.submit("http://127.0.0.1:9/form/abc?token=t", 1)


def test_parse_form_url() -> None:
    assert parse_form_url("https://h.example/app/form/x-1?token=a%2Bb") == ("https://h.example/app", "x-1", "a+b")
    with pytest.raises(hitl.HitlError, match="not a form URL"):
        parse_form_url("http://h/status/x")
    with pytest.raises(hitl.InvalidRequestIdError):
        parse_form_url("http://h/form/../../etc")


def test_cli_list_status_and_submit(root: Path) -> None:
    pending = hitl.new_event("pending-one", data_type=int, prompt="How many?", timeout_seconds=60)
    answered = hitl.new_event("answered-one", data_type=str, timeout_seconds=60)
    hitl.submit(answered.form_url, "done")

    listing = cli("list", env_root=root)
    assert listing.returncode == 0, listing.stderr
    assert pending.request_id in listing.stdout and answered.request_id in listing.stdout
    assert pending.token not in listing.stdout and answered.token not in listing.stdout
    only_pending = cli("list", "--status", "pending", "--json", env_root=root)
    rows = json.loads(only_pending.stdout)
    assert [r["request_id"] for r in rows] == [pending.request_id]
    assert "token" not in rows[0]

    status = cli("status", pending.request_id, env_root=root)
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "pending"
    assert pending.token not in status.stdout

    submitted = cli("submit", pending.request_id, "7", "--comment", "cli says 7", env_root=root)
    assert submitted.returncode == 0, submitted.stderr
    assert pending.wait() == 7
    assert stored(root, pending)["via"] == "cli"

    via_endpoint = cli("status", answered.request_id, "--endpoint", answered.endpoint, "--token", answered.token)
    assert json.loads(via_endpoint.stdout)["response"]["value"] == "done"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "{id}", "4.5"], 2, "expected int"),
        (["submit", "nope", "1"], 3, "no event"),
        (["submit", "{id}", "1", "--endpoint", "{endpoint}", "--token", "bad"], 6, "token"),
        (["status", "../x"], 2, "invalid request_id"),
        (["submit", "{url}", "1", "--json-value"], 0, ""),
        (["submit", "{url}", "2"], 4, "already answered"),
    ],
)
def test_cli_exit_codes(root: Path, args: list[str], code: int, message: str) -> None:
    event = hitl.new_event("codes", data_type=int, timeout_seconds=60)
    if code == 4:
        hitl.submit(event.form_url, 1)
    filled = [a.format(id=event.request_id, endpoint=event.endpoint, url=event.form_url) for a in args]
    result = cli(*filled, env_root=root)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_expired_exit_code(root: Path) -> None:
    event = hitl.new_event("gone", data_type=int, timeout_seconds=0.2)
    with pytest.raises(TimeoutError):
        event.wait()
    result = cli("submit", event.request_id, "1", env_root=root)
    assert result.returncode == 5 and "expired" in result.stderr


def test_cli_list_on_an_empty_root(tmp_path: Path) -> None:
    result = cli("list", "--root", str(tmp_path / "empty"))
    assert result.returncode == 0 and "no events" in result.stderr


def test_the_hitl_console_script_is_installed(root: Path) -> None:
    script = Path(sys.executable).with_name("hitl")
    assert script.exists(), "pyproject's [project.scripts] entry should install a 'hitl' command"
    event = hitl.new_event("script", data_type=int, timeout_seconds=60)
    result = subprocess.run([str(script), "submit", event.form_url, "11"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert event.wait() == 11
    assert stored(root, event)["via"] == "cli"
