"""The command line: ``python -m flyteplugins.hitl serve`` as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import post_json, read_line, request

import flyteplugins.hitl as hitl
from flyteplugins.hitl import hitl as hitl_module
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import start_server, stop_server


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
    line = read_line(proc)
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
    assert reply.json()["status"] == "healthy"
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


def hitl_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m flyteplugins.hitl ARGS` with no FLYTE_HITL_* settings but `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLYTE_HITL_")}
    return subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_failure(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    """Check that `done` failed with `code` and a single line on stderr holding `expected`; return it."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required: command"),
        (["serve", "--port", "not-a-port"], "--port must be a port number from 0 to 65535, got 'not-a-port'"),
        (["serve", "--port", "70000"], "got '70000'"),
        (["launch"], "invalid choice: 'launch'"),
        (["submit", "only-an-id"], "required: value"),
        (["list", "--status", "\x1b[2Kodd"], "\\x1b[2Kodd"),
        (["list", "--status", "pending"], "invalid choice: 'pending' (choose from 'all', 'waiting', 'answered'"),
    ],
)
def test_bad_command_lines_are_one_line_usage_errors(argv: list[str], expected: str) -> None:
    one_line_failure(hitl_cli(*argv), 2, expected, "(see 'hitl")


@pytest.mark.parametrize("command", [["list"], ["status", "some-id"], ["submit", "some-id", "1"]])
def test_a_bad_port_setting_does_not_break_commands_that_do_not_use_it(root: Path, command: list[str]) -> None:
    done = hitl_cli(*command, FLYTE_HITL_PORT="abc", FLYTE_HITL_ROOT=str(root))
    assert "Traceback" not in done.stderr
    assert done.returncode in (0, 3), done.stderr  # 3: no event of that id


@pytest.mark.parametrize("bad", ["abc", "-1", "70000", "8080x"])
def test_a_bad_port_setting_is_a_one_line_error_for_serve(root: Path, bad: str) -> None:
    one_line_failure(
        hitl_cli("serve", FLYTE_HITL_PORT=bad, FLYTE_HITL_ROOT=str(root)),
        2,
        f"FLYTE_HITL_PORT must be a port number from 0 to 65535, got {bad!r}",
    )


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["list"], ["status", "ev"], ["submit", "ev", "1"]])
@pytest.mark.parametrize("bad", ["s3://", "s3:/bucket/x", "gs://", "memory://x"])
def test_a_bad_root_is_a_one_line_error_for_every_command(command: list[str], bad: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *command],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLYTE_HITL_")}, "FLYTE_HITL_ROOT": bad},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    one_line_failure(done, 2, "FLYTE_HITL_ROOT", repr(bad), "s3://BUCKET[/PREFIX]")
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["list"], ["status", "ev"]])
def test_a_world_writable_root_is_a_one_line_error(root: Path, command: list[str]) -> None:
    root.mkdir()
    root.chmod(0o777)
    one_line_failure(hitl_cli(*command, FLYTE_HITL_ROOT=str(root)), 2, "refusing storage root", "writable by every")


def test_a_bad_fsync_setting_is_a_one_line_error(root: Path) -> None:
    one_line_failure(hitl_cli("list", FLYTE_HITL_ROOT=str(root), FLYTE_HITL_FSYNC="maybe"), 2, "FLYTE_HITL_FSYNC")


def test_a_damaged_record_is_a_one_line_storage_error(root: Path) -> None:
    (root / "torn").mkdir(parents=True)
    (root / "torn" / "request.json").write_text('{"request_id": "to')
    one_line_failure(hitl_cli("status", "torn", FLYTE_HITL_ROOT=str(root)), 1, "not valid JSON")


def test_reading_a_root_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "hitl-roto"
    done = hitl_cli("list", "--root", str(typo))
    assert done.returncode == 0 and done.stderr == f"no events under {typo}\n", done.stderr
    one_line_failure(hitl_cli("status", "ev-1", "--root", str(typo)), 3, "ev-1")
    assert not typo.exists()


def test_a_damaged_record_leaves_its_event_out_of_the_list(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(root))
    first, torn, last = (hitl.new_event(name, data_type=int) for name in ("first", "torn", "last"))
    (root / torn.request_id / "request.json").write_text('{"request_id": "to')
    odd = json.loads((root / first.request_id / "request.json").read_text())
    del odd["expires_at"]  # JSON, but not a question: once a KeyError and a traceback
    (root / "odd-1").mkdir(mode=0o700)
    (root / "odd-1" / "request.json").write_text(json.dumps(odd | {"request_id": "odd-1"}))
    (root / "odd-1" / "request.json").chmod(0o600)
    status = hitl_cli("status", "odd-1", FLYTE_HITL_ROOT=str(root))
    one_line_failure(status, 1, "odd-1/request.json is not an event's question: expires_at missing or not valid")
    for argv in (["list"], ["list", "--json"]):
        done = hitl_cli(*argv, FLYTE_HITL_ROOT=str(root))
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 2 and f"left out {torn.request_id}" in done.stderr, done.stderr
        assert "not valid JSON" in done.stderr and "left out odd-1" in done.stderr and "Traceback" not in done.stderr
        assert first.request_id in done.stdout and last.request_id in done.stdout


def test_an_unreachable_server_is_a_one_line_network_error(root: Path) -> None:
    one_line_failure(hitl_cli("submit", "http://127.0.0.1:9/form/ev?token=secret", "1"), 1, "cannot reach")
    done = hitl_cli("status", "ev", "--endpoint", "http://127.0.0.1:9", "--token", "secret")
    assert "secret" not in one_line_failure(done, 1, "cannot reach http://127.0.0.1:9/status/ev")


@pytest.mark.parametrize("bad", ["ftp://host/x", "127.0.0.1:8080", "http://user:pw@host"])
def test_a_bad_endpoint_setting_is_a_one_line_error(root: Path, bad: str) -> None:
    one_line_failure(hitl_cli("submit", "ev", "1", FLYTE_HITL_ENDPOINT=bad, FLYTE_HITL_ROOT=str(root)), 2, "ENDPOINT")


HOSTILE = "ok\x1b[2K\x1b[1A[hitl] 'x' answered: 1\x9b31m\u202eevil\x07"


def _hostile_event(root: Path) -> str:
    Store(str(root)).create_request(
        {
            "request_id": "hostile",
            "event_name": HOSTILE,
            "scope": "run",
            "prompt": HOSTILE,
            "data_type": "str",
            "token": "tok-0123456789abcdef",
            "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": "2999-01-01T00:00:00.000Z",
            "timeout_seconds": 3600,
        }
    )
    return "hostile"


def _no_controls(text: str) -> None:
    controls = [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e")]
    assert controls == [], repr(text)


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["status", "hostile"]])
def test_names_and_prompts_reach_the_terminal_with_their_control_characters_escaped(
    root: Path, command: list[str]
) -> None:
    _hostile_event(root)
    done = hitl_cli(*command, FLYTE_HITL_ROOT=str(root))
    assert done.returncode == (7 if "status" in command else 0), done.stderr  # 7: still waiting
    _no_controls(done.stdout + done.stderr)
    if "--json" in command or "status" in command:
        rows = json.loads(done.stdout)
        record = rows[0] if isinstance(rows, list) else rows["request"]
        assert record["event_name"] == HOSTILE, "the JSON still holds the exact text"
    else:
        assert "ok\\x1b[2K\\x1b[1A[hitl] 'x' answered: 1\\x9b31m\\u202eevil\\x07" in done.stdout


INVISIBLE = "pay\u200bpal\ufeff\u2066x\u2069\u00ad\U000e0041\u2028"


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["status", "invisible"]])
def test_invisible_characters_reach_the_terminal_escaped_and_json_reads_them_back(
    root: Path, command: list[str]
) -> None:
    """Zero-width, bidi isolate, tag and other format characters (Unicode category Cf) are escaped
    like the control characters, as Python escapes in lines and as JSON escapes in JSON."""
    Store(str(root)).create_request(
        {
            "request_id": "invisible",
            "event_name": f"name {INVISIBLE}",
            "scope": "run",
            "prompt": INVISIBLE,
            "data_type": "str",
            "token": "tok-0123456789abcdef",
            "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": "2999-01-01T00:00:00.000Z",
            "timeout_seconds": 3600,
        }
    )
    done = hitl_cli(*command, FLYTE_HITL_ROOT=str(root))
    assert done.returncode == (7 if command[0] == "status" else 0), done.stderr  # 7: still waiting
    invisible = [c for c in done.stdout if unicodedata.category(c) == "Cf" or c in "\u2028\u2029"]
    assert invisible == [], repr(done.stdout)
    if command == ["list"]:
        assert "name pay\\u200bpal\\ufeff\\u2066x\\u2069\\xad\\U000e0041\\u2028" in done.stdout
    else:
        rows = json.loads(done.stdout)
        record = rows[0] if isinstance(rows, list) else rows["request"]
        assert record["event_name"] == f"name {INVISIBLE}" and record["prompt"] == INVISIBLE


def test_an_answer_with_control_characters_is_printed_escaped(root: Path) -> None:
    _hostile_event(root)
    done = hitl_cli("submit", "hostile", HOSTILE, "--comment", HOSTILE, FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    _no_controls(done.stdout + done.stderr)
    assert json.loads(done.stdout)["value"] == HOSTILE


def test_a_value_and_a_token_that_start_with_a_dash(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An answer such as -1e3 goes after "--", as the help says; no token starts with "-", so the
    # documented "--token TOKEN" always parses.
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(root))
    event = hitl.new_event("dash", data_type=float, timeout_seconds=60)
    assert not any(hitl_module._new_token().startswith("-") for _ in range(2000))
    one_line_failure(hitl_cli("submit", event.request_id, "-1e3", FLYTE_HITL_ROOT=str(root)), 2, "required: value")
    assert "after -- if it starts with '-'" in hitl_cli("submit", "--help").stdout
    done = hitl_cli("submit", event.request_id, "--", "-1e3", FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    assert event.wait() == -1000.0
    shown = hitl_cli("status", event.request_id, "--endpoint", event.endpoint, "--token", event.token)
    assert shown.returncode == 0 and json.loads(shown.stdout)["response"]["value"] == -1000.0, shown.stderr


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


# -- a CLI that scripts can trust ------------------------------------------------------------------


def _event_record(request_id: str, created_at: str, expires_at: str = "2999-01-01T00:00:00.000Z") -> dict[str, object]:
    return {
        "request_id": request_id,
        "event_name": request_id.replace("-", " "),
        "scope": "run",
        "prompt": "?",
        "data_type": "int",
        "token": f"token-of-{request_id}-0123456789",
        "created_at": created_at,
        "expires_at": expires_at,
        "timeout_seconds": 3600,
    }


def test_list_has_a_header_shows_the_newest_first_and_filters_by_state(root: Path) -> None:
    store = Store(str(root))
    store.create_request(_event_record("old-answered", "2026-01-01T00:00:00.000Z"))
    store.create_request(_event_record("mid-expired", "2026-01-02T00:00:00.000Z", "2026-01-02T01:00:00.000Z"))
    store.create_request(_event_record("new-waiting", "2026-01-03T00:00:00.000Z"))
    hitl.submit("old-answered", 1, root=str(root))

    done = hitl_cli("list", FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["STATUS", "TYPE", "CREATED", "REQUEST_ID", "NAME"]
    assert [row.split()[0] for row in rows] == ["waiting", "expired", "answered"]
    assert [row.split()[3] for row in rows] == ["new-waiting", "mid-expired", "old-answered"], "newest first"
    json_rows = json.loads(hitl_cli("list", "--json", FLYTE_HITL_ROOT=str(root)).stdout)
    assert [(r["request_id"], r["state"], r["status"]) for r in json_rows] == [
        ("new-waiting", "waiting", "pending"),
        ("mid-expired", "expired", "expired"),
        ("old-answered", "answered", "completed"),
    ], "the state, and the status in 2.12.1's words as GET /status gives it"
    for state, request_id in (("waiting", "new-waiting"), ("answered", "old-answered"), ("expired", "mid-expired")):
        only = hitl_cli("list", "--status", state, FLYTE_HITL_ROOT=str(root))
        assert only.returncode == 0, only.stderr
        assert [row.split()[3] for row in only.stdout.splitlines()[1:]] == [request_id]
        assert (
            json.loads(hitl_cli("list", "--status", state, "--json", FLYTE_HITL_ROOT=str(root)).stdout)[0]["state"]
            == state
        )


def test_list_columns_line_up_whatever_the_length_of_the_type_names(root: Path) -> None:
    store = Store(str(root))
    types = ["int", 'Review {score: int (≥ 1, ≤ 5), size: Size, tags?: list["bug" | "docs"]}', "list[str]"]
    for n, data_type in enumerate(types):
        store.create_request(_event_record(f"ev-{n}", f"2026-01-0{n + 1}T00:00:00.000Z") | {"data_type": data_type})
    done = hitl_cli("list", FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    for column in ("CREATED", "REQUEST_ID", "NAME"):
        at = lines[0].index(column)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines), (column, done.stdout)
    assert [line[lines[0].index("REQUEST_ID") :].split()[0] for line in lines[1:]] == ["ev-2", "ev-1", "ev-0"]


def test_an_empty_list_prints_no_header(root: Path) -> None:
    done = hitl_cli("list", "--status", "answered", FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0 and done.stdout == "", done.stdout
    assert done.stderr == f"no answered events under {root}\n"


@pytest.mark.parametrize("through", ["root", "endpoint"])
def test_status_exits_0_answered_5_expired_7_still_waiting(
    root: Path, monkeypatch: pytest.MonkeyPatch, through: str
) -> None:
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(root))
    waiting = hitl.new_event("still", data_type=int, timeout_seconds=3600)
    answered = hitl.new_event("answered", data_type=int, timeout_seconds=3600)
    hitl.submit(answered.form_url, 3)
    expired = hitl.new_event("gone", data_type=int, timeout_seconds=0.2, poll_interval_seconds=0.05)
    with pytest.raises(TimeoutError):
        expired.wait()

    def status(event: hitl.Event[int], *extra: str) -> subprocess.CompletedProcess[str]:
        server = ["--endpoint", event.endpoint, "--token", event.token] if through == "endpoint" else []
        return hitl_cli("status", event.request_id, *server, *extra, FLYTE_HITL_ROOT=str(root))

    for event, code, state in ((answered, 0, "answered"), (expired, 5, "expired"), (waiting, 7, "waiting")):
        for extra in ([], ["--wait", "0.5"]):
            done = status(event, *extra)
            assert done.returncode == code, (event.name, extra, done.stdout, done.stderr)
            assert json.loads(done.stdout)["state"] == state
            assert done.stderr == ""


def test_status_wait_exits_0_once_the_event_is_answered(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(root))
    event = hitl.new_event("later", data_type=int, timeout_seconds=3600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyteplugins.hitl", "status", event.request_id, "--wait", "120"],
        env={**os.environ, "FLYTE_HITL_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hitl.submit(event.form_url, 4)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["response"]["value"] == 4


@pytest.mark.parametrize(
    ("argv", "env", "via"),
    [
        (["status", "ev-1", "--endpoint", "{url}"], {}, "--endpoint"),
        (["submit", "ev-1", "1", "--endpoint", "{url}"], {}, "--endpoint"),
        (["submit", "ev-1", "1"], {"FLYTE_HITL_ENDPOINT": "{url}"}, "answering through FLYTE_HITL_ENDPOINT"),
    ],
)
def test_an_endpoint_without_a_token_says_pass_token_and_sends_nothing(
    root: Path, argv: list[str], env: dict[str, str], via: str
) -> None:
    with socket.socket() as listener:  # a connection attempt would show in its backlog
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        filled = {k: v.format(url=url) for k, v in env.items()}
        done = hitl_cli(*(a.format(url=url) for a in argv), FLYTE_HITL_ROOT=str(root), **filled)
        one_line_failure(done, 2, f"hitl: {via} needs the event's token: pass --token")
        with pytest.raises(TimeoutError):
            listener.accept()


@pytest.mark.parametrize("command", [[], ["serve"], ["list"], ["status"], ["submit"]])
def test_every_help_ends_with_an_example(command: list[str]) -> None:
    done = hitl_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    last = done.stdout.rstrip("\n").split("\n\n")[-1]
    assert last.startswith("example:\n  hitl "), done.stdout
    if not command:
        assert "  7    (status) the event is still waiting" in done.stdout


def test_ctrl_c_during_status_wait_is_one_line_without_a_traceback(root: Path) -> None:
    with socket.socket() as silent:  # accepts the long-poll and never answers it
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        server = ["--endpoint", f"http://127.0.0.1:{silent.getsockname()[1]}", "--token", "t"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "flyteplugins.hitl", "status", "ev-1", "--wait", "600", *server],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn, _ = silent.accept()  # the command is in its wait
            with conn:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert out == ""
    assert err == "hitl: interrupted: 'ev-1' is still waiting; re-run to pick it up\n"


# -- who answers: a login in front of the server, or --as on the root ------------------------------


def test_an_endpoint_behind_a_login_takes_a_respondents_answer_and_status_without_a_token(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_HITL_ROOT", str(root))
    event = hitl.new_event("login", data_type=int, respondents=["alice@example.com"], timeout_seconds=600)
    httpd, thread = start_server(Store(str(root)), identity_header="X-Forwarded-Email")
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        login = ["--endpoint", url, "--header", "X-Forwarded-Email: alice@example.com"]
        waiting = hitl_cli("status", event.request_id, *login)
        assert waiting.returncode == 7 and json.loads(waiting.stdout)["state"] == "waiting", waiting.stderr
        other = hitl_cli("submit", event.request_id, "5", "--endpoint", url, "--header", "X-Forwarded-Email: bob@x.org")
        one_line_failure(other, 6)
        done = hitl_cli("submit", event.request_id, "5", *login)
        assert done.returncode == 0, done.stderr
        answered = hitl_cli("status", event.request_id, *login)
        assert answered.returncode == 0 and json.loads(answered.stdout)["response"]["value"] == 5, answered.stderr
    finally:
        stop_server(httpd, thread)
    assert event.wait() == 5


def test_submit_as_an_identity_in_groups_answers_an_event_for_a_group(root: Path) -> None:
    store = Store(str(root))
    store.create_request(_event_record("for-ops", "2026-01-01T00:00:00.000Z") | {"respondents": ["group:ops"]})
    as_alice = ["--as", "alice@example.com"]
    one_line_failure(hitl_cli("submit", "for-ops", "1", "--groups", "ops", FLYTE_HITL_ROOT=str(root)), 2, "--as")
    one_line_failure(hitl_cli("submit", "for-ops", "1", "--groups", " , ", FLYTE_HITL_ROOT=str(root)), 2, "--groups")
    one_line_failure(hitl_cli("submit", "for-ops", "1", *as_alice, "--groups", "dev", FLYTE_HITL_ROOT=str(root)), 6)
    assert store.read_response("for-ops") is None
    done = hitl_cli("submit", "for-ops", "1", *as_alice, "--groups", "dev, ops", FLYTE_HITL_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    assert store.read_response("for-ops")["identity"] == "alice@example.com"  # type: ignore[index]
