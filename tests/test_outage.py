"""A wait rides out a storage outage: S3 (moto on loopback) behind a TCP relay that the test cuts.

The waiter runs in its own process and reaches S3 only through the relay (`s3_helpers.Door`); the
test reaches S3 directly, so it can store an answer while the waiter's way there is cut.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from conftest import Proc, python
from s3_helpers import FORM_LINE, Door, S3Bucket

from flyteplugins.hitl._store import Store

WAITER = """
import json, logging, sys
import flyteplugins.hitl as hitl
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
hitl.Event.expiry_grace_seconds = float(sys.argv[2])
event = hitl.new_event("outage", data_type=int, poll_interval_seconds=1, timeout_seconds=float(sys.argv[1]))
try:
    print("RESULT", json.dumps(event.wait()), flush=True)
except hitl.StorageError as e:
    print("STORAGE_ERROR", json.dumps({"root": e.root, "message": str(e)}), flush=True)
    sys.exit(3)
"""


@pytest.fixture
def door(bucket: S3Bucket) -> Iterator[Door]:
    relay = Door(bucket.door.port).start()
    yield relay
    relay.stop()


def start_waiter(procs: list[Proc], bucket: S3Bucket, door: Door, timeout: float, grace: float) -> tuple[Proc, str]:
    # No embedded server: the waiter finds its answer by reading S3, through the door.
    env = {**bucket.env(door), "FLYTE_HITL_ENDPOINT": "http://127.0.0.1:9"}
    waiter = Proc(python("-c", WAITER, str(timeout), str(grace), env=env))
    procs.append(waiter)
    return waiter, waiter.expect(FORM_LINE).group("id")


def test_a_wait_rides_out_45_seconds_without_storage_and_returns_the_answer_given_meanwhile(
    s3_root: str, bucket: S3Bucket, door: Door, procs: list[Proc]
) -> None:
    waiter, request_id = start_waiter(procs, bucket, door, timeout=300, grace=60)
    time.sleep(1.5)  # a few polls that find nothing
    door.stop()
    cut_at = time.monotonic()
    waiter.expect(r"storage error under .*retrying", timeout=60)
    answer = {"request_id": request_id, "status": "completed", "value": 7, "via": "cli"}
    assert Store(s3_root).create_response(request_id, answer)  # the test's own way to S3 is open
    time.sleep(max(0.0, cut_at + 45 - time.monotonic()))  # the outage lasts 45 s
    door.start()  # the same port again
    waiter.expect(r"^RESULT 7$", timeout=90)
    waiter.finish()
    output = waiter.output
    assert waiter.proc.returncode == 0, output
    started = [line for line in output.splitlines() if "storage error under" in line]
    ended = [line for line in output.splitlines() if "answers again" in line]
    assert len(started) == 1 and len(ended) == 1, output
    assert s3_root in started[0] and s3_root in ended[0]
    assert "Traceback" not in output


def test_a_wait_whose_storage_stays_down_past_its_deadline_fails_with_an_error_naming_the_root(
    s3_root: str, bucket: S3Bucket, door: Door, procs: list[Proc]
) -> None:
    waiter, _ = start_waiter(procs, bucket, door, timeout=4, grace=2)
    door.stop()
    waiter.expect(r"storage error under .*retrying", timeout=60)  # no error yet: it waits on
    error = json.loads(waiter.expect(r"^STORAGE_ERROR (.*)$", timeout=60).group(1))
    waiter.finish()
    assert waiter.proc.returncode == 3
    assert error["root"] == s3_root
    assert f"under {s3_root!r}" in error["message"]
