"""Many events in one process (`_fanout`): `new_events` and `as_completed`, outside and inside a Flyte run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import request
from flyte_run import FlyteRun

import flyteplugins.hitl as hitl
from flyteplugins.hitl.server import HitlServer


def answer(base: str, events: list[hitl.Event[Any]], values: list[Any]) -> list[int]:
    items = [{"request_id": e.request_id, "token": e.token, "value": v} for e, v in zip(events, values, strict=True)]
    reply = request(base, "POST", "/submit/batch", json.dumps(items).encode(), {"Content-Type": "application/json"})
    assert reply.status == 200, reply.text
    return [r["status"] for r in reply.json()["results"]]


def make(mode: str, *args: Any, **kwargs: Any) -> list[hitl.Event[Any]]:
    if mode == "sync":
        return hitl.new_events(*args, **kwargs)
    return asyncio.run(hitl.new_events.aio(*args, **kwargs))


def test_new_events_makes_one_event_per_item_in_order(mode: str, root: Path) -> None:
    items = [{"image": f"img-{n}.png", "label": "cat"} for n in range(20)]
    items[3] = ("Is **img-3** a dog?", {"image": "img-3.png", "label": "dog"})  # type: ignore[call-overload]
    events = make(mode, "label-ok", items, data_type=bool, prompt="Is the label right?", group="labels", quorum=1)
    assert len({e.request_id for e in events}) == 20
    stored = [json.loads((root / e.request_id / "request.json").read_text()) for e in events]
    assert [s["details"]["image"] for s in stored] == [f"img-{n}.png" for n in range(20)]
    assert stored[0]["prompt"] == "Is the label right?" and stored[3]["prompt"] == "Is **img-3** a dog?"
    assert {s["group"] for s in stored} == {"labels"} and {e.group for e in events} == {"labels"}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"a": 1}, 7], "item 1 of event 'label-ok' must be its details"),
        ([{"a": object()}], "details"),
        ([], "needs at least one item"),
    ],
)
def test_a_bad_item_is_refused_before_anything_is_written(root: Path, items: list[Any], message: str) -> None:
    with pytest.raises(hitl.InvalidEventError, match=message):
        hitl.new_events("label-ok", items, data_type=bool)
    assert not root.exists() or not any(root.iterdir())


def test_as_completed_yields_each_answer_as_it_comes(root: Path, server: HitlServer) -> None:
    events = hitl.new_events("label-ok", [{"n": n} for n in range(5)], data_type=int)
    answers = hitl.as_completed(events)
    assert answer(server.url, [events[3]], [30]) == [200]
    assert next(answers) == (events[3], 30)
    assert answer(server.url, [events[1], events[0]], [10, 0]) == [200, 200]
    got = {next(answers), next(answers)}
    assert got == {(events[1], 10), (events[0], 0)}
    assert answer(server.url, [events[4], events[2]], [40, 20]) == [200, 200]
    assert {e.request_id: v for e, v in answers} == {events[4].request_id: 40, events[2].request_id: 20}


def test_as_completed_works_inside_a_running_event_loop(root: Path, server: HitlServer) -> None:
    async def blocking_in_async() -> list[tuple[str, Any]]:
        events = hitl.new_events("label-ok", [{"n": n} for n in range(3)], data_type=int)
        answer(server.url, events, [0, 1, 2])
        return sorted((e.request_id, v) for e, v in hitl.as_completed(events))

    got = asyncio.run(blocking_in_async())
    assert sorted(v for _, v in got) == [0, 1, 2]


def test_as_completed_aio_yields_each_answer_and_ends_the_other_waits(root: Path, server: HitlServer) -> None:
    from flyteplugins.hitl import _wait

    async def main() -> list[tuple[str, Any]]:
        events = await hitl.new_events.aio("label-ok", [{"n": n} for n in range(4)], data_type=bool)
        await asyncio.to_thread(answer, server.url, [events[1]], [True])  # before the waits begin
        got = []
        async for event, value in hitl.as_completed.aio(events):
            got.append((event.request_id, value))
            if len(got) == 1:
                await asyncio.to_thread(answer, server.url, [events[2]], [False])
            if len(got) == 2:
                break  # the two waits left end, and release what they registered
        return [(e.request_id, v) for e, v in zip(events, [None, True, False, None], strict=True)] + got

    got = asyncio.run(main())
    assert got[4:] == [got[1], got[2]]
    assert not any(_wait._waits.values())


FANOUT = """
import asyncio
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-fanout")


@env.task
async def label(n: int) -> str:
    prompt = f"Is item {n} labelled right?"
    ok = await hitl.approve.aio("label-ok", prompt=prompt, details={"n": n}, poll_interval_seconds=60)
    return f"{n}:{ok}"


@env.task
async def review(count: int) -> str:
    return " ".join(await asyncio.gather(*(label(n) for n in range(count))))


if __name__ == "__main__":
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(review, 24)
    print("RESULT " + run.outputs()[0], flush=True)
"""
FORM_LINE = r"^\[hitl\] form: (?P<base>http://[\d.]+:\d+)/form/(?P<id>[\w-]+)\?token=(?P<token>\S+)$"


@pytest.fixture
def fanout(tmp_path: Path, root: Path) -> Iterator[FlyteRun]:
    script = tmp_path / "fanout.py"
    script.write_text(FANOUT)
    run = FlyteRun(script, tmp_path, env={"FLYTE_HITL_ROOT": str(root)})
    yield run
    run.close()


@pytest.mark.flyte_run
def test_a_flyte_fan_out_of_24_tasks_is_answered_by_one_batch(fanout: FlyteRun, root: Path) -> None:
    forms = [fanout.expect(FORM_LINE) for _ in range(24)]
    base = forms[0]["base"]
    records = {f["id"]: json.loads((root / f["id"] / "request.json").read_text()) for f in forms}
    assert {r["group"] for r in records.values()} == {f"{fanout.name}/label-ok"}
    items = [
        {"request_id": f["id"], "token": f["token"], "value": records[f["id"]]["details"]["n"] % 3 == 0} for f in forms
    ]
    reply = request(base, "POST", "/submit/batch", json.dumps(items).encode(), {"Content-Type": "application/json"})
    assert reply.status == 200 and [r["status"] for r in reply.json()["results"]] == [200] * 24
    result = fanout.expect(r"^RESULT (.*)$", timeout=120)[1]
    assert result == " ".join(f"{n}:{n % 3 == 0}" for n in range(24))
    assert fanout.finish() == 0, fanout.output
