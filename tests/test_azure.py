"""Object storage (`_store`'s object backend) on ``abfs://`` against Azurite, Azure's Blob emulator.

As in test_s3.py, the waiting process, the form servers and the test reach the container through
separate processes and sockets; nothing of obstore or of this package is mocked. Unlike moto,
Azurite gets no lock around conditional writes: its ``If-None-Match: *`` check held in every race.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure_helpers import AzureContainer, Azurite, azurite_server
from conftest import Proc, question
from s3_helpers import check_race_over_two_replicas, check_round_trip, start_waiter, use_root

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


# -- the store on Azure Blob ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["abfs", "abfss"])
def test_store_layout_create_only_and_listing_on_azure(
    scheme: str, container: AzureContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_root(container, monkeypatch)
    root = container.new_root(scheme=scheme)
    store = Store(root)
    assert store.read_request("ev-1") is None
    assert store.create_request(question("ev-1", prompt="Größe? <b>")) is True
    assert store.create_request(question("ev-1", prompt="second")) is False
    assert store.create_response("ev-1", {"status": "completed", "value": 3}) is True
    assert store.create_response("ev-1", {"status": "completed", "value": 4}) is False
    assert store.create_request(question("ev-2")) is True
    assert store.read_request("ev-1") == question("ev-1", prompt="Größe? <b>")
    assert store.read_response("ev-1") == {"status": "completed", "value": 3}
    assert store.read_response("ev-2") is None
    assert sorted([e.request_id for e in store.list_events()]) == ["ev-1", "ev-2"]
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
    check_round_trip(procs, abfs_root, container, timeout=60)


def test_32_racing_answers_over_two_replicas_exactly_one_wins(
    abfs_root: str, container: AzureContainer, procs: list[Proc]
) -> None:
    check_race_over_two_replicas(procs, abfs_root, container, timeout=60)


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
    assert waiter.proc.returncode == 0
    assert container.keys(abfs_root) == [f"{request_id}/request.json", f"{request_id}/response.json"]
