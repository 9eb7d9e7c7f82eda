"""Object storage (`_store`'s object backend) against a real S3-protocol server (moto, in server mode).

The waiting process, the form servers and the test talk to the bucket through separate
processes and sockets, as pods in a cluster do; nothing of boto or of this package is mocked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Proc, post_json, python, question, request
from s3_helpers import (
    FORM_LINE,
    Door,
    MotoS3,
    S3Bucket,
    check_race_over_two_replicas,
    check_round_trip,
    closed_port,
    start_server,
    start_waiter,
)

from flyteplugins.hitl import StorageError
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import start_server as start_server_thread
from flyteplugins.hitl.server import stop_server

# -- fixtures and process helpers -------------------------------------------------------------------


# -- the store on S3 --------------------------------------------------------------------------------


def test_store_layout_create_only_and_listing_on_s3(s3_root: str, bucket: S3Bucket) -> None:
    store = Store(s3_root)
    assert store.read_request("ev-1") is None
    assert store.create_request(question("ev-1", prompt="Größe? <b>")) is True
    assert store.create_request(question("ev-1", prompt="second")) is False
    assert store.create_response("ev-1", {"status": "completed", "value": 3}) is True
    assert store.create_response("ev-1", {"status": "completed", "value": 4}) is False
    assert store.create_request(question("ev-2")) is True
    assert store.read_request("ev-1") == question("ev-1", prompt="Größe? <b>")
    assert store.read_response("ev-1") == {"status": "completed", "value": 3}
    assert sorted([e.request_id for e in store.list_events()]) == ["ev-1", "ev-2"]
    assert bucket.keys(s3_root) == ["ev-1/request.json", "ev-1/response.json", "ev-2/request.json"]
    assert bucket.get_json(s3_root, "ev-1", "response.json") == {"status": "completed", "value": 3}


def test_a_root_ending_in_a_slash_and_a_bucket_root_work(s3_root: str, bucket: S3Bucket) -> None:
    assert Store(s3_root + "/").create_request(question("slash"))
    assert Store(s3_root).read_request("slash") == question("slash")
    whole = Store(f"s3://{bucket.name}")
    assert whole.read_request("nothing-here") is None
    assert whole.root == f"s3://{bucket.name}"


def test_one_poll_is_one_get_and_one_create_is_one_put(s3_root: str, moto: MotoS3) -> None:
    store = Store(s3_root)
    store.create_request({"request_id": "costly"})
    prefix = s3_root.split("/", 3)[3] + "/costly/"
    gets, puts, heads = (moto.count(m, prefix) for m in ("GET", "PUT", "HEAD"))
    for _ in range(10):
        assert store.read_response("costly") is None
    assert store.create_response("costly", {"status": "completed", "value": 1}, slot=0)
    assert moto.count("GET", prefix) - gets == 10, "one GET per poll (no exists-then-get)"
    assert moto.count("PUT", prefix) - puts == 1
    assert moto.count("HEAD", prefix) == heads


def test_a_refused_create_is_confirmed_with_one_head(s3_root: str, moto: MotoS3) -> None:
    store = Store(s3_root)
    store.create_request({"request_id": "dup"})
    prefix = s3_root.split("/", 3)[3] + "/dup/"
    heads = moto.count("HEAD", prefix)
    assert store.create_request({"request_id": "dup", "x": 2}) is False
    assert moto.count("HEAD", prefix) - heads == 1


def test_32_threads_racing_on_one_key_exactly_one_wins(s3_root: str) -> None:
    store = Store(s3_root)
    barrier = threading.Barrier(32)
    results: dict[int, bool] = {}

    def answer(i: int) -> None:
        barrier.wait()
        results[i] = store.create_response("race", {"status": "completed", "value": i})

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == 32 and len(winners) == 1, winners
    assert store.read_response("race") == {"status": "completed", "value": winners[0]}


def test_a_missing_bucket_is_a_storage_error_at_once(s3_root: str, bucket: S3Bucket) -> None:
    store = Store(f"s3://no-such-bucket-{bucket.name}/x")
    store.backoff_seconds = 30  # would make the test hang if the error were retried
    with pytest.raises(StorageError) as info:
        store.create_request({"request_id": "ev"})
    assert "does the bucket exist" in str(info.value)
    assert info.value.root == store.root


# -- outages ----------------------------------------------------------------------------------------


def test_refused_connections_are_retried_then_a_storage_error_names_the_root(
    s3_root: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLYTE_AWS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    sleeps: list[float] = []
    store = Store(s3_root, sleep=sleeps.append)
    store.attempts, store.backoff_seconds, store.max_backoff_seconds = 4, 0.5, 1.0
    caplog.set_level(logging.INFO, logger="flyteplugins.hitl.store")
    for _ in range(3):
        with pytest.raises(StorageError) as info:
            store.read_response("ev-1")
        assert info.value.root == s3_root
        assert f"under {s3_root!r} after 4 attempts" in str(info.value)
        assert "\n" not in str(info.value), "obstore's multi-line debug dump is left out"
    assert sleeps == [0.5, 1.0, 1.0] * 3, "exponential back-off, capped"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not one per attempt or per call"


class _Always503(BaseHTTPRequestHandler):
    hits = 0

    def _fail(self) -> None:
        type(self).hits += 1
        body = b"<Error><Code>SlowDown</Code></Error>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _fail

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Always403(_Always503):
    hits = 0

    def _fail(self) -> None:
        type(self).hits += 1
        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _fail


class _Silent(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(60)  # never answers while the test runs

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def fake_s3(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stdlib HTTP server standing in for a failing S3 service; yields its endpoint."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_access_denied_is_a_storage_error_at_once(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Always403.hits = 0
    with fake_s3(_Always403) as endpoint:
        monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
        store = Store(s3_root)
        store.backoff_seconds = 30  # the test would hang if this were retried
        with pytest.raises(StorageError) as info:
            store.read_response("ev-1")
    assert _Always403.hits == 1
    assert info.value.root == s3_root and s3_root in str(info.value)


def test_5xx_answers_are_retried_one_request_per_attempt(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Always503.hits = 0
    with fake_s3(_Always503) as endpoint:
        monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
        store = Store(s3_root, sleep=lambda s: None)
        store.attempts = 3
        with pytest.raises(StorageError, match="after 3 attempts") as info:
            store.read_response("ev-1")
    assert _Always503.hits == 3, "one request per attempt: obstore does not retry on its own"
    assert "503" in str(info.value)


@pytest.mark.parametrize(("handler", "status"), [(_Always503, 503), (_Always403, 500)], ids=["outage", "denied"])
def test_the_form_server_says_whether_a_storage_failure_is_worth_retrying(
    s3_root: str, monkeypatch: pytest.MonkeyPatch, handler: type[BaseHTTPRequestHandler], status: int
) -> None:
    # An outage is 503 with Retry-After; denied access will not heal by retrying, and is 500.
    with fake_s3(handler) as endpoint:
        monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
        store = Store(s3_root, sleep=lambda s: None)
        store.attempts = 2
        httpd, thread = start_server_thread(store)
        try:
            reply = request(httpd.url, "GET", "/status/ev-1?token=t")
        finally:
            stop_server(httpd, thread)
    assert reply.status == status, reply.text
    assert bool(reply.headers.get("retry-after")) == (status == 503)
    assert s3_root not in reply.text and endpoint not in reply.text, "clients are not told where storage is"


def test_a_server_that_never_answers_times_out_and_is_retried(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Silent.release.clear()
    with fake_s3(_Silent) as endpoint:
        monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
        store = Store(s3_root, sleep=lambda s: None)
        store.attempts = 3
        store.request_timeout_seconds = 0.3
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                store.read_response("ev-1")
            except BaseException as e:
                errors.append(e)

        polling = threading.Thread(target=poll)
        polling.start()
        polling.join(30)  # without a request timeout the read would wait until release
        finished = not polling.is_alive()
        _Silent.release.set()
        polling.join()
    assert finished, "the read gave up at the request timeout instead of waiting for the server"
    assert len(errors) == 1 and isinstance(errors[0], StorageError), errors
    assert "after 3 attempts" in str(errors[0])


def test_a_waiter_rides_out_an_outage_and_logs_it_once(s3_root: str, bucket: S3Bucket, procs: list[Proc]) -> None:
    """The waiter's own door to S3 closes mid-wait; the answer arrives through another; the door reopens."""
    door = Door(bucket.door.port).start()
    try:
        server = start_server(procs, s3_root)
        env = {**bucket.env(door), "T_ATTEMPTS": "40", "T_BACKOFF_SECONDS": "0.1", "T_MAX_BACKOFF_SECONDS": "0.3"}
        waiter, request_id, token = start_waiter(procs, server, env)
        time.sleep(0.5)
        door.stop()
        waiter.expect(r"storage error under .*retrying", timeout=60)  # a failed poll
        time.sleep(1.0)  # and a few more
        assert post_json(server, {"request_id": request_id, "token": token, "value": 7}).status == 200
        time.sleep(0.5)
        door.start()  # the same port again
        waiter.expect(r"^RESULT 7$", timeout=90)
        waiter.finish()
        output = waiter.output
    finally:
        door.stop()
    assert waiter.proc.returncode == 0, output
    warnings = [line for line in output.splitlines() if "storage error under" in line]
    assert len(warnings) == 1, output
    assert s3_root in warnings[0]


# A waiter whose storage stays down past its deadline: tests/test_outage.py (a wait rides out
# transient errors until then).


# -- across processes: waiter, form servers, test ---------------------------------------------------


def test_round_trip_with_waiter_and_server_in_separate_processes(
    s3_root: str, bucket: S3Bucket, procs: list[Proc]
) -> None:
    check_round_trip(procs, s3_root, bucket, timeout=90)


def test_32_racing_answers_over_two_replicas_exactly_one_wins(
    s3_root: str, bucket: S3Bucket, procs: list[Proc]
) -> None:
    check_race_over_two_replicas(procs, s3_root, bucket, timeout=90)


FLYTE_RUN = """
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-s3-rerun")


@env.task
async def ask() -> int:
    event = await hitl.new_event.aio("rerun_question", data_type=int, prompt="Which number?", poll_interval_seconds=0.2)
    return await event.wait.aio()


if __name__ == "__main__":
    flyte.init()
    run = flyte.with_runcontext(mode="local", name=sys.argv[1]).run(ask)
    print("RESULT", run.outputs()[0], flush=True)
"""


@pytest.mark.flyte_run
def test_a_killed_flyte_run_rerun_with_its_name_gets_the_answer_given_meanwhile(
    s3_root: str, bucket: S3Bucket, procs: list[Proc], tmp_path: Path
) -> None:
    script = tmp_path / "rerun.py"
    script.write_text(FLYTE_RUN)
    server = start_server(procs, s3_root)
    run_name = f"hitl-s3-{os.getpid()}-{int(time.time())}"
    env = {"FLYTE_HITL_ENDPOINT": server}

    first = Proc(python(str(script), run_name, env=env, cwd=tmp_path))
    procs.append(first)
    match = first.expect(FORM_LINE, timeout=120)
    request_id, token = match.group("id"), match.group("token")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=90)
    assert first.proc.returncode == -signal.SIGKILL

    assert post_json(server, {"request_id": request_id, "token": token, "value": 41}).status == 200

    second = Proc(python(str(script), run_name, env=env, cwd=tmp_path))
    procs.append(second)
    second.expect(r"^RESULT 41$", timeout=120)
    second.finish()
    assert second.proc.returncode == 0, second.output
    assert "[hitl] form:" not in second.output, "the re-run found its event answered: no form shown again"
    # The re-run's wait recorded where it takes wake-ups (the request names the killed process), in one
    # attempt that a very busy machine may see fail: then it says so, and the wait polls.
    recorded = "cannot record where this process takes wake-ups" not in second.output
    names = ("request", "response", "waiter") if recorded else ("request", "response")
    assert bucket.keys(s3_root) == [f"{request_id}/{n}.json" for n in names]


def test_answer_slots_and_their_listing_on_s3(s3_root: str) -> None:
    store = Store(s3_root)
    store.create_request({"request_id": "slots"})
    assert store.create_response("slots", {"status": "completed", "value": 7})
    assert [(e.request_id, e.answered) for e in store.list_events()] == [("slots", True)]
    assert store.create_refusal("slots", 0, {"error": "no"})
    assert store.read_outcome("slots") == (None, 1, {"error": "no"})
    assert [(e.request_id, e.answered) for e in store.list_events()] == [("slots", False)]
    assert store.create_response("slots", {"status": "completed", "value": 10})
    assert store.read_response("slots") == {"status": "completed", "value": 10}
    assert [(e.request_id, e.answered) for e in store.list_events()] == [("slots", True)]
