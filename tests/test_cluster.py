"""The cluster layout on one machine: form servers and the waiting task in separate processes on 127.0.0.x.

Each form server is started the way the app starts it (``python -m flyteplugins.hitl serve``, and
once through ``flyte.with_servecontext(mode="local").serve(hitl.app_env)``); the waiting side is a
Flyte local run with ``FLYTE_HITL_ENDPOINT`` pointing at the first server, polling once an hour,
so only a wake-up can return its wait while the test runs. They share only the storage root (a
local directory, or a bucket on the S3 test server); the servers find the task only by the address
it records there, as pods do.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Proc, post_json, python, request
from flyte_run import FlyteRun
from s3_helpers import FORM_LINE, MotoS3, S3Bucket, closed_port

from flyteplugins.hitl import _wake
from flyteplugins.hitl._store import Store

TASK_HOST = "127.0.0.2"
SERVER_HOSTS = ("127.0.0.3", "127.0.0.4")
HANG_GUARD = 60.0

WAITING_TASK = """
import logging, os, sys

import flyte

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _wake

MODE = os.environ.get("T_MODE", "aio")


def show_reads(event, args):
    # The test answers only once the wait has read a local root's response (an os.open, seen
    # through Python's audit hooks), so that the answer cannot be found by that first read.
    if event == "open" and str(args[0]).endswith("/response.json"):
        print("READ", args[0], flush=True)


sys.addaudithook(show_reads)
if MODE == "log-wake":
    # Show the listener's decisions, and take every authentic wake-up (no rate limit), so the test
    # can count what each datagram cost.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("WAKE %(message)s"))
    logging.getLogger("flyteplugins.hitl.wake").addHandler(handler)
    logging.getLogger("flyteplugins.hitl.wake").setLevel(logging.DEBUG)
    _wake.Listener.min_gap_seconds = 0

env = flyte.TaskEnvironment(name="hitl-cluster-test")


@env.task
async def ask_aio() -> int:
    event = await hitl.new_event.aio("cluster", data_type=int, prompt="How many?", poll_interval_seconds=3600)
    return await event.wait.aio()


@env.task
def ask_sync() -> int:
    event = hitl.new_event("cluster", data_type=int, prompt="How many?", poll_interval_seconds=3600)
    return event.wait()


if __name__ == "__main__":
    task = ask_sync if MODE == "sync" else ask_aio
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(task)
    print("RESULT", run.outputs()[0], flush=True)
"""


def _loopback_aliases_work() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((SERVER_HOSTS[1], 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _loopback_aliases_work(), reason="127.0.0.x addresses are not all local here")


# -- the places a root can be --------------------------------------------------------------------------


class Root:
    """A fresh root, the environment that reaches it, and a way to see its objects and count its reads."""

    def __init__(self, url: str, env: dict[str, str], moto: MotoS3 | None = None) -> None:
        self.url = url
        self.env = {**env, "FLYTE_HITL_ROOT": url}
        self.moto = moto

    def store(self, monkeypatch: pytest.MonkeyPatch) -> Store:
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return Store(self.url)

    def reads_of(self, request_id: str) -> int:
        """GETs of the event's response so far (S3 only)."""
        assert self.moto is not None
        return self.moto.count("GET", f"/{request_id}/response.json")


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Root:
    if request.param == "local":
        return Root(str(tmp_path / "hitl-root"), {})
    moto = request.getfixturevalue("moto")
    bucket = S3Bucket(moto)
    return Root(bucket.new_root(), bucket.env(), moto)


# -- processes --------------------------------------------------------------------------------------


def serve(procs: list[Proc], root: Root, host: str) -> str:
    """``python -m flyteplugins.hitl serve`` on `host` for `root`; returns its URL."""
    argv = ["-m", "flyteplugins.hitl", "serve", "--root", root.url, "--host", host, "--port", "0"]
    proc = Proc(python(*argv, env=root.env))
    procs.append(proc)
    return proc.expect(r"^serving \S+ at (http://\S+)$").group(1)


@pytest.fixture
def task_run(tmp_path: Path) -> Iterator[Callable[..., FlyteRun]]:
    """Start the waiting task as a Flyte local run on TASK_HOST; runs still going at the end are killed.

    `mode`: "aio" or "sync" waits, or "log-wake" (aio, printing the listener's decisions, no rate limit).
    """
    script = tmp_path / "waiting_task.py"
    script.write_text(WAITING_TASK)
    runs: list[FlyteRun] = []

    def start(root: Root, endpoint: str, mode: str = "aio") -> FlyteRun:
        env = {**root.env, "FLYTE_HITL_ENDPOINT": endpoint, _wake.HOST_ENV: TASK_HOST, "T_MODE": mode}
        runs.append(FlyteRun(script, tmp_path, env=env))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def first_read_done(run: FlyteRun, root: Root, request_id: str) -> int:
    """Wait until the task's wait has read its response once (it found nothing); returns the reads so far.
    Called after the run printed its form line, which a wait prints after that first read."""
    if root.moto is None:
        assert any(re.fullmatch(rf"READ \S+/{request_id}/response.json", line) for line in run.lines), run.output
        return 1
    deadline = time.monotonic() + HANG_GUARD
    while root.reads_of(request_id) < 1:
        assert time.monotonic() < deadline, "the waiting task never read its response"
        time.sleep(0.02)
    return root.reads_of(request_id)


def wake_address(store: Store, request_id: str) -> dict:
    """Where the task takes wake-ups, as its new event's request records it (and no waiter.json written)."""
    request = store.read_request(request_id)
    assert request is not None and store.read_waiter(request_id) is None
    return request["wake"]


# -- the cluster layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2])
def test_an_answer_on_any_replica_wakes_the_task_long_before_its_poll(
    root: Root, replicas: int, procs: list[Proc], task_run: Callable[..., FlyteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = root.store(monkeypatch)
    servers = [serve(procs, root, host) for host in SERVER_HOSTS[:replicas]]
    mode = "sync" if replicas == 1 and not root.moto else "aio"
    run = task_run(root, servers[0], mode)
    form = run.expect(FORM_LINE.pattern)
    assert form.group("endpoint") == servers[0]
    request_id, token = form.group("id"), form.group("token")
    first_read_done(run, root, request_id)  # after the wait registered for wake-ups
    assert wake_address(store, request_id)["host"] == TASK_HOST
    # Posted to the last replica: with two, not the one in the event's links.
    reply = post_json(servers[-1], {"request_id": request_id, "token": token, "value": 7})
    assert reply.status == 200, reply.text
    # The task polls once an hour: only a wake-up returns its wait within the hang guard.
    run.expect(r"^RESULT 7$", timeout=HANG_GUARD)
    assert run.finish() == 0


def test_a_forged_wake_up_causes_no_storage_read(
    moto: MotoS3, procs: list[Proc], task_run: Callable[..., FlyteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = S3Bucket(moto)
    root = Root(bucket.new_root(), bucket.env(), moto)
    store = root.store(monkeypatch)
    server = serve(procs, root, SERVER_HOSTS[0])
    run = task_run(root, server, "log-wake")
    form = run.expect(FORM_LINE.pattern)
    request_id, token = form.group("id"), form.group("token")
    reads = first_read_done(run, root, request_id)
    waiter = wake_address(store, request_id)
    address = (waiter["host"], waiter["port"])

    forged = [
        _wake.datagram({"request_id": request_id, "token": "a guessed token"}),
        _wake.datagram({"request_id": request_id, "token": token}).rsplit(b" ", 1)[0] + b" " + b"f" * 64,
        b"HITLWAKE1 " + request_id.encode(),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in forged:
            sock.sendto(data, address)
    for _ in forged:
        run.expect(r"^WAKE wake-up dropped from .*: (not authenticated|malformed)", timeout=HANG_GUARD)
    # Every forged datagram has been handled, and none of them read storage.
    assert root.reads_of(request_id) == reads

    # An authentic one (as a writer would send it) reads the response once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(_wake.datagram({"request_id": request_id, "token": token}), address)
    run.expect(rf"^WAKE wake-up for '{request_id}'$", timeout=HANG_GUARD)
    deadline = time.monotonic() + HANG_GUARD
    while root.reads_of(request_id) < reads + 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert root.reads_of(request_id) == reads + 1

    assert post_json(server, {"request_id": request_id, "token": token, "value": 5}).status == 200
    run.expect(r"^RESULT 5$", timeout=HANG_GUARD)
    assert run.finish() == 0
    # The server reads the outcome once before it stores the answer; the woken task reads it once.
    assert root.reads_of(request_id) == reads + 3


# -- the app as Flyte serves it ------------------------------------------------------------------------

LOCAL_SERVE = """
import sys

import flyte

import flyteplugins.hitl as hitl

handle = flyte.with_servecontext(mode="local", health_check_interval=0.1).serve(hitl.app_env)
handle.activate(wait=True)
print("ENDPOINT", handle.endpoint, flush=True)
sys.stdin.readline()
handle.deactivate(wait=True)
print("DEACTIVATED", flush=True)
"""


def test_the_app_served_by_flyte_wakes_the_task(
    tmp_path: Path, procs: list[Proc], task_run: Callable[..., FlyteRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Root(str(tmp_path / "hitl-root"), {})
    store = root.store(monkeypatch)
    env = {
        **root.env,
        "FLYTE_HITL_APP_PORT": str(closed_port()),
        "PATH": f"{Path(sys.executable).parent}:{_path()}",
    }
    serving = Proc(python("-c", LOCAL_SERVE, env=env, cwd=tmp_path, stdin=subprocess.PIPE))
    procs.append(serving)
    endpoint = serving.expect(r"^ENDPOINT (\S+)$", timeout=90).group(1)
    try:
        assert request(endpoint, "GET", "/health").status == 200
        run = task_run(root, endpoint)
        form = run.expect(FORM_LINE.pattern)
        request_id, token = form.group("id"), form.group("token")
        first_read_done(run, root, request_id)
        wake_address(store, request_id)
        assert post_json(endpoint, {"request_id": request_id, "token": token, "value": 11}).status == 200
        run.expect(r"^RESULT 11$", timeout=HANG_GUARD)
        assert run.finish() == 0
    finally:
        # Stopped through flyte, which stops the app's process: killing only the serving process
        # would leave the app holding its output pipe.
        assert serving.proc.stdin is not None
        serving.proc.stdin.write("\n")
        serving.proc.stdin.flush()
        serving.expect(r"^DEACTIVATED$", timeout=HANG_GUARD)


def _path() -> str:
    import os

    return os.environ.get("PATH", "")
