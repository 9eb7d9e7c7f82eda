"""Groups (`_groups`): every event has one, shown in ``/events``, ``/status`` and ``hitl list --json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import create, event_record, request

import flyteplugins.hitl as hitl
from flyteplugins.hitl.__main__ import main
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer


def test_an_event_outside_a_run_is_in_the_group_of_its_name(mode: str, root: Path) -> None:
    event = create(mode, "label-ok", data_type=bool)
    assert event.group == "label-ok"
    assert Store(str(root)).read_request(event.request_id)["group"] == "label-ok"  # type: ignore[index]


def test_group_names_the_group(mode: str, root: Path) -> None:
    event = create(mode, "label-ok", data_type=bool, group="batch 7 · images")
    assert event.group == "batch 7 · images"


@pytest.mark.parametrize("group", ["", "   ", "a\nb", "x" * 201, 7, "\u202eevil"])
def test_a_bad_group_is_refused_and_nothing_is_written(root: Path, group: object) -> None:
    with pytest.raises(hitl.InvalidEventError, match="group of event 'label-ok' must be printable text") as caught:
        hitl.new_event("label-ok", data_type=bool, group=group)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert not root.exists() or not any(root.iterdir())


def test_approve_takes_a_group(root: Path) -> None:
    with pytest.raises(hitl.InvalidEventError, match="group"):
        hitl.approve("label-ok", group="")


def test_the_group_shows_in_events_status_and_list(
    server: HitlServer, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    event = hitl.new_event("label-ok", data_type=bool, group="review-7")
    old = event_record("old-0123456789abcdef01234567", name="from-2.12.1")  # stored before groups existed
    store.create_request(old)

    rows = {r["request_id"]: r for r in request(server.url, "GET", "/events").json()["events"]}
    assert rows[event.request_id]["group"] == "review-7"
    assert rows[old["request_id"]]["group"] == old["request_id"]  # a group of its own

    status = request(server.url, "GET", f"/status/{event.request_id}?token={event.token}").json()
    assert status["request"]["group"] == "review-7"

    assert main(["list", "--json", "--root", store.root]) == 0
    listed = {r["request_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[event.request_id]["group"] == "review-7"
    assert listed[old["request_id"]]["group"] == old["request_id"]
