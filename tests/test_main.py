"""The command line: ``python -m flyteplugins.hitl serve`` as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import post_json, request

from flyteplugins.hitl._store import Store


def serve(root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", "0", *extra],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_url(proc: subprocess.Popen[str]) -> str:
    """The URL from the server's first line ("serving ROOT at URL"), which carries the actual port."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:(\d+))\s*$", line)
    assert match, f"unexpected first line {line!r}"
    assert int(match.group(2)) > 0, "port 0 was replaced by the port actually bound"
    return match.group(1)


@pytest.fixture
def cli_server(root: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = serve(root)
    try:
        yield proc, first_url(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_serve_starts_answers_health_and_exits_cleanly_on_sigterm(
    cli_server: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = cli_server
    reply = request(url, "GET", "/health")
    assert reply.status == 200
    assert reply.json() == {"status": "healthy"}
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Traceback" not in out + err


def test_serve_exits_cleanly_on_ctrl_c(cli_server: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = cli_server
    assert request(url, "GET", "/health").status == 200
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Traceback" not in out + err


def test_serve_answers_events_written_by_another_process_and_logs_requests(
    cli_server: tuple[subprocess.Popen[str], str], root: Path
) -> None:
    proc, url = cli_server
    store = Store(str(root))
    store.create_request(
        {
            "request_id": "made-elsewhere",
            "event_name": "made elsewhere",
            "scope": "run",
            "prompt": "A number?",
            "data_type": "int",
            "token": "secret-token-for-the-test-0123456789",
            "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": "2999-01-01T00:00:00.000Z",
            "timeout_seconds": 3600,
        }
    )
    payload = {"request_id": "made-elsewhere", "token": "secret-token-for-the-test-0123456789", "value": "12"}
    assert post_json(url, payload).status == 200
    assert store.read_response("made-elsewhere")["value"] == 12  # type: ignore[index]
    assert post_json(url, payload).status == 409
    assert post_json(url, {**payload, "token": "wrong"}).status == 403
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "POST /submit/json" in err, "requests are logged"
    # One access line per request: time, level, logger, client, request line, status.
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    line = stamp + r' INFO flyteplugins\.hitl\.server: 127\.0\.0\.1 "POST /submit/json HTTP/1\.1" 409 -'
    assert re.search(line, err), err
    assert "secret-token-for-the-test" not in out + err, "answers' tokens never reach the log"
    assert "Traceback" not in out + err


def test_two_servers_share_one_root(root: Path) -> None:
    procs = [serve(root), serve(root)]
    try:
        urls = [first_url(p) for p in procs]
        assert urls[0] != urls[1]
        store = Store(str(root))
        store.create_request(
            {
                "request_id": "shared",
                "event_name": "shared",
                "scope": "run",
                "prompt": "?",
                "data_type": "str",
                "token": "shared-token-0123456789abcdef",
                "created_at": "2026-01-01T00:00:00.000Z",
                "expires_at": "2999-01-01T00:00:00.000Z",
                "timeout_seconds": 3600,
            }
        )
        payload = {"request_id": "shared", "token": "shared-token-0123456789abcdef"}
        assert post_json(urls[0], {**payload, "value": "first"}).status == 200
        assert post_json(urls[1], {**payload, "value": "second"}).status == 409
        status = request(urls[1], "GET", "/status/shared?token=shared-token-0123456789abcdef")
        assert json.loads(status.body)["response"]["value"] == "first"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=15)
    assert [p.returncode for p in procs] == [0, 0]


@pytest.mark.parametrize("argv", [[], ["serve", "--port", "not-a-port"], ["launch"]])
def test_bad_command_lines_exit_with_usage_errors(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_a_clear_error(cli_server: tuple[subprocess.Popen[str], str], root: Path) -> None:
    _, url = cli_server
    port = url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
