"""Object storage (`_store`'s object backend) on ``abfs://`` against Azurite, Azure's Blob emulator.

As in test_s3.py, the waiting process, the form servers and the test reach the container through
separate processes and sockets; nothing of obstore or of this package is mocked. Unlike moto,
Azurite gets no lock around conditional writes: its ``If-None-Match: *`` check held in every race.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from azure_helpers import AzureContainer, Azurite, azurite_server, use_root
from conftest import post_json, request
from s3_helpers import Proc, start_server, start_waiter

from flyteplugins.hitl import StorageError
from flyteplugins.hitl._store import Store


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    yield from azurite_server()


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> AzureContainer:
    return AzureContainer(azurite)


@pytest.fixture
def abfs_root(container: AzureContainer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh abfs:// root, set as FLYTE_HITL_ROOT along with the Azure settings for Azurite."""
    return use_root(container, monkeypatch)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; any still running at the end are killed."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


# -- the store on Azure Blob ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["abfs", "abfss"])
def test_store_layout_create_only_and_listing_on_azure(
    scheme: str, container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_root(container, monkeypatch)
    root = container.new_root(scheme=scheme)
    store = Store(root)
    assert store.read_request("ev-1") is None
    assert store.create_request({"request_id": "ev-1", "prompt": "Größe? <b>"}) is True
    assert store.create_request({"request_id": "ev-1", "prompt": "second"}) is False
    assert store.create_response("ev-1", {"status": "completed", "value": 3}) is True
    assert store.create_response("ev-1", {"status": "completed", "value": 4}) is False
    assert store.create_request({"request_id": "ev-2"}) is True
    assert store.read_request("ev-1") == {"request_id": "ev-1", "prompt": "Größe? <b>"}
    assert store.read_response("ev-1") == {"status": "completed", "value": 3}
    assert store.read_response("ev-2") is None
    assert sorted(store.list_ids()) == ["ev-1", "ev-2"]
    assert store._backend.list_answered() == {"ev-1"}
    # What another client of the container sees: exactly the documented layout, one blob per record.
    assert container.keys(root) == ["ev-1/request.json", "ev-1/response.json", "ev-2/request.json"]
    assert container.get_json(root, "ev-1", "response.json") == {"status": "completed", "value": 3}


def test_a_missing_container_is_a_storage_error_at_once(abfs_root: str, container: AzureContainer) -> None:
    root = f"abfs://no-such-container-{container.name}/hitl"
    store = Store(root, sleep=lambda s: pytest.fail(f"retried after {s} s: a missing container cannot recover"))
    with pytest.raises(StorageError) as info:
        store.create_request({"request_id": "ev-1"})
    assert info.value.root == root
    assert f"{root!r} cannot be written (does the bucket exist?)" in str(info.value)
    assert store.read_response("ev-1") is None, "a read of a missing container is just 'no record'"


# -- across processes: waiter, form servers, test ---------------------------------------------------


def test_round_trip_with_waiter_and_server_in_separate_processes(
    abfs_root: str, container: AzureContainer, procs: list[Proc]
) -> None:
    server = start_server(procs, abfs_root)
    assert request(server, "GET", "/health").json() == {"status": "healthy"}
    waiter, request_id, token = start_waiter(procs, server)

    form = request(server, "GET", f"/form/{request_id}?token={token}")
    assert form.status == 200
    assert "How many replicas?" in form.text
    assert request(server, "GET", f"/form/{request_id}?token=wrong").status == 403

    reply = post_json(server, {"request_id": request_id, "token": token, "value": 5})
    assert reply.status == 200, reply.text
    assert reply.json()["value"] == 5
    again = post_json(server, {"request_id": request_id, "token": token, "value": 6})
    assert again.status == 409, again.text

    waiter.expect(r"^RESULT 5$", timeout=60)
    waiter.finish()
    assert waiter.popen.returncode == 0

    stored = container.get_json(abfs_root, request_id, "response.json")
    assert stored["status"] == "completed" and stored["value"] == 5 and stored["via"] == "json"
    assert container.get_json(abfs_root, request_id, "request.json")["prompt"] == "How many replicas?"
    status = request(server, "GET", f"/status/{request_id}?token={token}").json()
    assert status["status"] == "completed" and status["response"]["value"] == 5


def test_32_racing_answers_over_two_replicas_exactly_one_wins(
    abfs_root: str, container: AzureContainer, procs: list[Proc]
) -> None:
    replicas = [start_server(procs, abfs_root), start_server(procs, abfs_root)]
    waiter, request_id, token = start_waiter(procs, replicas[0])
    barrier = threading.Barrier(32)
    statuses: dict[int, int] = {}

    def answer(i: int) -> None:
        barrier.wait()
        statuses[i] = post_json(replicas[i % 2], {"request_id": request_id, "token": token, "value": 100 + i}).status

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, status in statuses.items() if status == 200]
    assert len(statuses) == 32
    assert len(winners) == 1, statuses
    assert sorted(statuses.values()) == [200] + [409] * 31
    value = 100 + winners[0]
    waiter.expect(rf"^RESULT {value}$", timeout=60)
    blob = container.client.download_blob(container.key(abfs_root, request_id, "response.json")).readall()
    stored = json.loads(blob)  # one complete JSON document: the winner's, not a mix of writers
    assert stored["status"] == "completed" and stored["value"] == value
    for replica in replicas:
        status = request(replica, "GET", f"/status/{request_id}?token={token}").json()
        assert status["response"]["value"] == value


def test_a_waiting_event_sees_an_answer_written_while_it_waits(
    abfs_root: str, container: AzureContainer, procs: list[Proc]
) -> None:
    """The answer comes from another client of the container, not through a form server."""
    waiter, request_id, _ = start_waiter(procs, "http://127.0.0.1:9")
    time.sleep(0.6)  # a few polls that find nothing
    assert container.keys(abfs_root) == [f"{request_id}/request.json"]
    assert Store(abfs_root).create_response(request_id, {"request_id": request_id, "status": "completed", "value": 12})
    waiter.expect(r"^RESULT 12$", timeout=60)
    waiter.finish()
    assert waiter.popen.returncode == 0
    assert container.keys(abfs_root) == [f"{request_id}/request.json", f"{request_id}/response.json"]
