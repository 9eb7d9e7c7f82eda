"""What a person reads on the pages, in headless Chromium: the question as the heading, errors in
the words of the hint, answers as they were chosen, required lists, times in the reader's zone, the
index's filters on a narrow phone, and details, images and buttons in plain words.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import annotated_types
import pytest
from conftest import post_json

import flyteplugins.hitl as hitl
from flyteplugins.hitl._answers import seconds_left
from flyteplugins.hitl.server import HitlServer

from .conftest import DESKTOP, NARROW, PHONE, Tab

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]
MakeEvent = Callable[..., hitl.Event[Any]]
ERROR_COLOUR = {"light": "rgb(179, 38, 30)", "dark": "rgb(255, 143, 134)"}


class Size(enum.Enum):
    S = "small"
    M = "medium"
    L = "large"


@dataclasses.dataclass
class Review:
    score: Annotated[int, annotated_types.Interval(ge=1, le=5)]
    size: Size
    tags: list[Literal["bug", "docs", "perf"]]
    note: str = ""
    due: datetime.date | None = None


# -- 1. the question is the heading --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "extra"),
    [(int, {}), (bool, {}), (str, {"choices": ["a", "b"]}), (Review, {}), (list[Size], {})],
    ids=["int", "bool", "choices", "dataclass", "list"],
)
def test_the_question_is_the_heading_and_the_type_is_for_programs_only(
    make_event: MakeEvent, open_tab: OpenTab, data_type: type, extra: dict[str, Any]
) -> None:
    event = make_event("integer_input_event", data_type, prompt="How many replicas?\nProduction runs 3.", **extra)
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)
    page = tab.page
    assert page.locator("h1").inner_text() == "How many replicas?"
    assert page.locator(".caption").inner_text() == "integer_input_event"
    assert page.title() == "How many replicas?"
    assert page.locator(".prompt").inner_text() == "Production runs 3."
    shown = page.locator("main").inner_text()
    assert "Type:" not in shown and "Answer format" not in shown and "curl" not in shown, shown
    # The same collapsed section on every type: the curl command and the JSON shape.
    programs = page.locator("details.programs")
    assert programs.get_attribute("open") is None
    assert not page.locator("details.programs pre").is_visible()
    page.get_by_text("For programs").click()
    curl = page.locator("details.programs pre").inner_text()
    assert curl.startswith("curl -sS -X POST ") and event.request_id in curl and "/submit/json" in curl
    assert page.locator("details.programs code").inner_text()
    assert tab.horizontal_overflow() == 0 and tab.csp_violations() == []


def test_an_explicit_title_is_the_heading_and_the_whole_prompt_follows(
    make_event: MakeEvent, open_tab: OpenTab
) -> None:
    event = make_event(
        "ship", bool, prompt="Accuracy **94%**.\nLatency 41 ms.", prompt_type="markdown", title="Ship v3?"
    )
    tab = open_tab("dark", PHONE)
    tab.goto(event.form_url)
    assert tab.page.locator("h1").inner_text() == "Ship v3?"
    assert tab.page.locator(".prompt").inner_text() == "Accuracy 94%.\nLatency 41 ms."
    assert event._request["title"] == "Ship v3?"


# -- 2. errors in the person's words, next to the field ---------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_errors_are_one_banner_and_each_fields_message_in_the_words_of_its_hint(
    make_event: MakeEvent, open_tab: OpenTab, scheme: str
) -> None:
    event = make_event("review", Review, prompt="Review img-42")
    tab = open_tab(scheme, PHONE)
    tab.goto(event.form_url)
    page = tab.page
    page.get_by_label("Score").fill("9")
    page.get_by_label("M", exact=True).check()
    page.get_by_label("docs").check()
    page.get_by_label("Due").fill("2026-12-24")
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 400
    assert page.get_by_role("alert").inner_text() == "Fix the field marked below."
    assert page.locator("#e-f-score").inner_text() == "Must be at most 5.", "no quoted '9', no API wording"
    page.get_by_label("Score").fill("many")
    page.get_by_label("docs").uncheck()
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 400
    assert page.get_by_role("alert").inner_text() == "Fix the 2 fields marked below."
    assert page.locator("#e-f-score").inner_text() == "Enter a whole number, such as 42."
    assert page.locator("#e-f-tags").inner_text() == "Required: choose at least one."
    # The field to fix has the focus and stays visibly invalid (red) while focused.
    score = page.get_by_label("Score")
    assert score.evaluate("el => el === document.activeElement")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus by keyboard, so :focus-visible applies
    assert score.evaluate("el => el === document.activeElement && el.matches(':focus-visible')")
    assert tab.style("#f-score", "border-top-color") == ERROR_COLOUR[scheme]
    assert tab.csp_violations() == []


# -- 3. the answer as it was chosen --------------------------------------------------------------


def test_a_structured_answer_is_a_table_in_the_words_the_person_chose(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event("review", Review, prompt="Review img-42")
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)
    page = tab.page
    page.get_by_label("Score").fill("4")
    page.get_by_label("L", exact=True).check()
    page.get_by_label("bug").check()
    page.get_by_label("perf").check()
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 200
    rows = page.locator("table.answer tr")
    assert rows.all_inner_texts() == ["Score\t4", "Size\tL", "Tags\tbug, perf", "Note\t", "Due\t—"]
    assert page.locator("code").count() == 0
    assert event.wait() == Review(score=4, size=Size.L, tags=["bug", "perf"])


# -- 4. required means required ------------------------------------------------------------------


def test_a_required_list_needs_an_item_and_optional_fields_say_what_empty_means(
    make_event: MakeEvent, open_tab: OpenTab
) -> None:
    event = make_event("review", Review, prompt="Review img-42")
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)
    page = tab.page
    assert page.locator("#f-tags legend").inner_text() == "Tags required (choose at least one)"
    assert page.locator("label[for=f-note]").inner_text() == "Note optional (text; empty means no text)"
    assert page.locator("label[for=f-due]").inner_text() == "Due optional (date; empty means no value)"
    page.get_by_label("Score").fill("3")
    page.get_by_label("S", exact=True).check()
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 400
    assert page.locator("#e-f-tags").inner_text() == "Required: choose at least one."
    page.get_by_label("bug").check()  # the refused empty list was not stored: this answer is the first
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 200
    assert event.wait() == Review(score=3, size=Size.S, tags=["bug"])


# -- 5. time in the person's zone ----------------------------------------------------------------


def test_a_datetime_is_typed_in_local_time_and_posted_as_utc(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event("when", datetime.datetime, prompt="When should the rollout start?")
    tab = open_tab("light", PHONE, zone="Asia/Tokyo")  # UTC+09:00, no summer time
    tab.goto(event.form_url)
    page = tab.page
    assert "your time, Asia/Tokyo" in page.locator("#h-value").inner_text()
    page.get_by_label("Your answer").fill("2026-12-01T14:30")
    assert page.locator("#u-value").inner_text() == "Sent as 2026-12-01 05:30 UTC (you are in Asia/Tokyo)"
    assert tab.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 200
    assert event.wait() == datetime.datetime(2026, 12, 1, 5, 30, tzinfo=datetime.timezone.utc)


def test_every_date_also_shows_local_time(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event("size", str, prompt="Size?", choices=["S", "M"], timeout_seconds=3600)
    tab = open_tab("dark", PHONE, zone="America/New_York")
    tab.goto(event.form_url)
    note = tab.page.locator(".note").inner_text()
    assert re.search(r"Open until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(.* your time, America/New_York\)\.", note), note
    expires = datetime.datetime.fromisoformat(event.expires_at.replace("Z", "+00:00"))
    assert expires.astimezone(ZoneInfo("America/New_York")).strftime("(%Y-%m-%d %H:%M:%S your time") in note
    assert tab.submit(lambda: tab.page.get_by_role("button", name="M").click()).status == 200
    assert "your time, America/New_York" in tab.page.locator("dl").inner_text(), "the answered time too"


# -- 7. the index ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_index_marks_its_filter_fits_a_narrow_phone_and_names_the_default_used(
    make_event: MakeEvent, open_tab: OpenTab, server: HitlServer, scheme: str
) -> None:
    make_event("waits", int, prompt="How many?")
    late = make_event("size", str, prompt="Size?", choices=["S", "M"], default="M", timeout_seconds=0.5)
    while seconds_left({"expires_at": late.expires_at}) > 0:
        time.sleep(0.05)
    assert late.wait() == "M"
    tab = open_tab(scheme, NARROW)
    for query, current in (("", "All"), ("?status=pending", "Waiting"), ("?status=done", "Done")):
        tab.goto(server.url + "/" + query)
        tabs = tab.page.locator(".tabs button")
        assert tabs.all_inner_texts() == ["All", "Waiting", "Done"]
        assert tab.page.locator(".tabs [aria-current=page]").inner_text() == current
        chosen = tab.page.locator(".tabs [aria-current=page]")
        other = tab.page.locator(".tabs button:not([aria-current])").first
        assert chosen.evaluate("el => getComputedStyle(el).backgroundColor") != other.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        ), "the current filter looks selected"
        boxes = [tabs.nth(i).bounding_box() for i in range(3)]
        assert all(b is not None for b in boxes)
        assert len({round(b["y"]) for b in boxes if b}) == 1, "one row"
        assert all(b["height"] < 60 for b in boxes if b), "no label wraps"
        assert tab.horizontal_overflow() == 0
    tab.goto(server.url + "/")
    done = tab.page.locator("section").nth(1).inner_text()
    assert "expired" in done and "default used: M" in done


# -- 8. details, images and buttons in plain words ---------------------------------------------


def test_details_read_as_text_and_an_image_as_its_alt_text(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event(
        "deploy",
        bool,
        prompt="Deploy?\n![the latency chart](https://example.com/p99.png)",
        prompt_type="markdown",
        details={"teams": ["data-eng", "sre"], "limits": {"cpu": 2, "memory": "4Gi"}},
    )
    tab = open_tab("light", DESKTOP)
    tab.goto(event.form_url)
    page = tab.page
    assert page.locator(".prompt").inner_text() == "the latency chart"
    assert page.locator(".details td").all_inner_texts() == ["data-eng, sre", "cpu: 2\nmemory: 4Gi"]
    assert page.get_by_role("button").all_inner_texts()[-2:] == ["Approve", "Reject"]
    assert page.locator("img").count() == 0 and tab.csp_violations() == []


def test_the_json_api_keeps_its_detail_and_adds_field_errors(make_event: MakeEvent, server: HitlServer) -> None:
    event = make_event("review", Review, prompt="Review")
    reply = post_json(
        server.url,
        {"request_id": event.request_id, "token": event.token, "value": {"score": 9, "size": "small", "tags": []}},
    )
    assert reply.status == 400
    body = reply.json()
    assert "score" in body["detail"] and "maximum 5" in body["detail"]
    assert set(body["field_errors"]) == {"score", "tags"}


@pytest.mark.parametrize("title", ["", "   ", "x" * 201, 42])
def test_a_title_must_be_short_text(make_event: MakeEvent, title: object) -> None:
    with pytest.raises(hitl.InvalidEventError, match="title of event 'ship'"):
        make_event("ship", bool, prompt="Ship?", title=title)
