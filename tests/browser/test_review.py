"""The review page in headless Chromium: keyboard answers, a bulk approval, its policy and its accessibility."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _review
from flyteplugins.hitl.server import HitlServer

from .conftest import ARTIFACTS, DESKTOP, NARROW, Tab
from .test_a11y import AXE, audit

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]


@pytest.fixture
def served(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> HitlServer:
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", server.url)
    return server


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.exists():
        pytest.skip(f"{AXE} not found: `make emulators` installs axe-core from npm")
    return AXE.read_text()


def stored(root: Path, event: hitl.Event[Any]) -> Any:
    path = root / event.request_id / "response.json"
    return json.loads(path.read_text())["value"] if path.exists() else None


def count_rows(tab: Tab) -> int:
    return int(tab.page.evaluate("document.querySelectorAll('#review tbody tr').length"))


def test_keyboard_answers_ten_then_approves_the_rest_in_bulk(served: HitlServer, open_tab: OpenTab, root: Path) -> None:
    items = [{"image": f"img-{n}.png", "label": "cat" if n % 2 else "dog"} for n in range(30)]
    events = hitl.new_events("label-ok", items, data_type=bool, group="labels")
    tab = open_tab("light", DESKTOP)
    response = tab.goto(served.url + _review.link("labels", events[0].token))
    assert response.status == 200
    assert count_rows(tab) == 30 and "0 of 30 answered" in tab.page.inner_text("#progress")

    for n in range(10):
        tab.page.keyboard.press("r" if n == 3 else "a")
        tab.until(lambda n=n: count_rows(tab) == 29 - n, f"row {n} answered from the keyboard")
    values = [stored(root, e) for e in events]
    assert values.count(True) == 9 and values.count(False) == 1 and values.count(None) == 20

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "review-light-desktop.png"))  # the README's picture: the first screen
    tab.page.once("dialog", lambda dialog: (dialog.message == "Approve 20 selected?") and dialog.accept())
    for _ in range(20):
        tab.page.keyboard.press("x")
        tab.page.keyboard.press("j")
    assert tab.page.evaluate("document.querySelectorAll('#review input:checked').length") == 20
    requests: list[str] = []
    tab.page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    tab.page.keyboard.press("Shift+A")
    tab.until(lambda: count_rows(tab) == 0, "every selected row answered")
    assert [u for u in requests if u.endswith("/submit/batch")] == [served.url + "/submit/batch"]  # one for twenty
    assert [stored(root, e) for e in events].count(None) == 0
    assert tab.page.inner_text("#progress") == "30 of 30 answered, 30 by you in the last minute"
    assert tab.csp_violations() == [] and not [m for m in tab.console if "error" in m.lower()]


def test_buttons_do_what_the_keys_do_and_the_filter_narrows(served: HitlServer, open_tab: OpenTab, root: Path) -> None:
    events = hitl.new_events("size", [{"n": n, "tag": f"t{n}"} for n in range(4)], data_type=str, choices=["S", "M"])
    counts = hitl.new_events("count", [{"n": 0}], data_type=int, group=events[0].group)
    tab = open_tab("light", DESKTOP)
    tab.goto(served.url + _review.link(events[0].group, events[0].token))
    tab.page.get_by_role("button", name="Filter").click()
    assert tab.page.evaluate("document.activeElement.id") == "filter"
    tab.page.keyboard.type("t2")
    tab.page.keyboard.press("Enter")
    assert tab.page.evaluate("[...document.querySelectorAll('#review tbody tr')].filter(r => !r.hidden).length") == 1
    tab.page.keyboard.press("2")
    tab.until(lambda: count_rows(tab) == 4, "the filtered row answered with its second choice")
    assert [stored(root, e) for e in events] == [None, None, "M", None]
    tab.page.fill("#filter", "")
    tab.page.get_by_role("button", name="Answer item 1 with S").click()
    tab.until(lambda: count_rows(tab) == 3, "a choice button answered its row")
    # A number typed in its row; a wrong one is refused in the row, and stays.
    tab.goto(served.url + _review.link(events[0].group, counts[0].token))
    box = tab.page.locator("#review input[type=text]")
    box.fill("many")
    tab.page.locator("#review button[data-send]").click()
    tab.until(
        lambda: "many" in tab.page.inner_text("#review .row-error:not(:empty)") if count_rows(tab) else False,
        "the refusal shown in its row",
    )
    box.fill("7")
    tab.page.locator("#review button[data-send]").click()
    tab.until(lambda: stored(root, counts[0]) == 7, "the number stored")


@pytest.mark.parametrize("size", [DESKTOP, NARROW], ids=["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_review_page_passes_an_accessibility_audit(
    served: HitlServer, open_tab: OpenTab, axe: str, scheme: str, size: tuple[int, int]
) -> None:
    details = [{"image": f"img-{n}.png", "model": "v3", "confidence": 0.9} for n in range(3)]
    oks = hitl.new_events("label-ok", details, data_type=bool, group="mixed", comment_required_on_reject=True)
    hitl.new_events("size", details[:1], data_type=str, choices=["S", "M", "L"], group="mixed")
    hitl.new_events("count", details[:1], data_type=int, group="mixed")
    hitl.new_events("label", details[:1], data_type=Label, group="mixed")
    tab = open_tab(scheme, size, bypass_csp=True)
    tab.goto(served.url + _review.link("mixed", oks[0].token))
    assert tab.horizontal_overflow() == 0
    assert audit(tab, axe) == []
    tab.goto(served.url + "/")
    assert audit(tab, axe) == []


def test_a_reviewer_sees_the_item_another_one_is_on(served: HitlServer, open_tab: OpenTab) -> None:
    events = hitl.new_events("label-ok", [{"n": n} for n in range(3)], data_type=bool, group="split")
    url = served.url + _review.link("split", events[0].token)
    first, second = open_tab("light", DESKTOP), open_tab("light", DESKTOP)
    first.goto(url)
    first.page.keyboard.press("j")  # the first reviewer is on the second row
    second.goto(url)
    second.until(
        lambda: "someone is on this item" in second.page.inner_text("#review tbody tr:nth-child(2) .claim"),
        "the other reviewer's claim shown",
    )
    assert second.page.inner_text("#review tbody tr:nth-child(1) .claim") == ""


@dataclasses.dataclass
class Label:
    name: str
    score: int


def test_a_structured_item_is_answered_inline(served: HitlServer, open_tab: OpenTab, root: Path) -> None:
    events = hitl.new_events("label", [{"image": "a.png"}, {"image": "b.png"}], data_type=Label, group="labels")
    tab = open_tab("light", DESKTOP)
    tab.goto(served.url + _review.link("labels", events[0].token))
    tab.page.keyboard.press("Enter")
    form = tab.page.locator("#review tbody tr").first.locator(".inline form")
    form.get_by_label("Name").fill("cat")
    form.get_by_label("Score").fill("many")
    form.get_by_role("button", name="Submit answer").click()
    tab.until(lambda: tab.page.locator("#review .inline .field-error").count() > 0, "the refusal shown in the row")
    assert count_rows(tab) == 2 and stored(root, events[0]) is None and stored(root, events[1]) is None
    form = tab.page.locator("#review tbody tr").first.locator(".inline form")
    form.get_by_label("Score").fill("4")
    form.get_by_role("button", name="Submit answer").click()
    tab.until(lambda: count_rows(tab) == 1, "the row answered inline left")
    assert {json.dumps(stored(root, e)) for e in events} == {"null", json.dumps({"name": "cat", "score": 4})}
    assert tab.csp_violations() == []
