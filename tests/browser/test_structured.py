"""A structured answer in a real browser: a dataclass form with a select, checkboxes, a date and a number.

The person fills it in, gets a field-level error with everything they entered kept, fixes the one
field, and the waiting task receives the dataclass instance.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import annotated_types
import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl.server import HitlServer

from .conftest import PHONE, Tab

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]


class Region(enum.Enum):
    US_EAST = "us-east-1"
    US_WEST = "us-west-2"
    EU_WEST = "eu-west-1"
    EU_CENTRAL = "eu-central-1"
    AP_SOUTH = "ap-south-1"
    AP_NORTHEAST = "ap-northeast-1"
    SA_EAST = "sa-east-1"


@dataclasses.dataclass
class Release:
    version: Annotated[str, "The tag to ship, as in git"]
    replicas: Annotated[int, annotated_types.Interval(ge=1, le=10), "Pods to run after the rollout"]
    region: Region
    checks: list[Literal["unit", "integration", "load"]] = dataclasses.field(default_factory=lambda: ["unit"])
    ship_on: datetime.date | None = None
    note: str = ""


PROMPT = """Release **v2.4** to production?

| metric | before | after |
|---|---|---|
| p99 latency | 48 ms | 41 ms |
| error rate | 0.12% | 0.09% |

See the [changelog](https://example.com/changelog)."""

DETAILS = {"commit": "9f2c1e4", "tests passed": 1412, "changed files": ["api/server.py", "ui/form.tsx"]}


def release_event(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> hitl.Event[Release]:
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", server.url)
    return hitl.new_event(
        "release", data_type=Release, prompt=PROMPT, prompt_type="markdown", details=DETAILS, timeout_seconds=3600
    )


def fill(tab: Tab, replicas: str) -> None:
    page = tab.page
    page.get_by_label("Version").fill("v2.4.0")
    page.get_by_label("Replicas").fill(replicas)
    page.get_by_label("Region").select_option("eu-west-1")
    page.get_by_label("unit").check()
    page.get_by_label("integration").check()
    page.get_by_label("Ship on").fill("2026-12-24")


def test_dataclass_form_shows_a_field_error_keeps_every_value_and_delivers_the_instance(
    server: HitlServer, monkeypatch: pytest.MonkeyPatch, open_tab: OpenTab
) -> None:
    event = release_event(server, monkeypatch)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(event.wait()), daemon=True)
    waiter.start()

    tab = open_tab("light", PHONE)
    assert tab.goto(event.form_url).status == 200
    page = tab.page
    assert page.locator(".prompt table td").first.inner_text() == "p99 latency", "the Markdown table is rendered"
    assert page.locator(".prompt a").get_attribute("rel") == "noopener noreferrer"
    assert page.locator(".details th").all_inner_texts() == ["commit", "tests passed", "changed files"]
    assert page.locator(".details td").nth(1).inner_text() == "1,412"
    assert page.get_by_label("Version").evaluate("el => el === document.activeElement"), "the first field has focus"
    assert not page.get_by_label("unit").is_checked(), "a factory default runs when built: it is not shown"
    assert page.locator("label[for=f-replicas] .req").inner_text() == "required"
    assert page.get_by_text("Pods to run after the rollout").is_visible()

    fill(tab, "12")
    refused = tab.submit(lambda: page.get_by_role("button", name="Submit answer").click())
    assert refused.status == 400
    error = page.locator("#e-f-replicas")
    assert error.inner_text() == "Must be at most 10." and error.is_visible(), "in the words of the hint"
    assert page.get_by_label("Replicas").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Replicas").evaluate("el => el === document.activeElement"), "focus on the field to fix"
    assert page.locator("#e-f-version").count() == 0, "only the offending field has an error"
    # Everything entered is kept.
    assert page.get_by_label("Version").input_value() == "v2.4.0"
    assert page.get_by_label("Replicas").input_value() == "12"
    assert page.get_by_label("Region").input_value() == "eu-west-1"
    assert page.get_by_label("unit").is_checked() and page.get_by_label("integration").is_checked()
    assert not page.get_by_label("load").is_checked()
    assert page.get_by_label("Ship on").input_value() == "2026-12-24"
    assert tab.horizontal_overflow() == 0 and tab.csp_violations() == []
    tab.shot("structured-error")

    page.get_by_label("Replicas").fill("3")
    accepted = tab.submit(lambda: page.get_by_role("button", name="Submit answer").click())
    assert accepted.status == 200
    assert page.locator("h1").inner_text() == "Answer received"
    waiter.join(60)
    assert not waiter.is_alive(), "the wait returned"
    assert got == [
        Release(
            version="v2.4.0",
            replicas=3,
            region=Region.EU_WEST,
            checks=["unit", "integration"],
            ship_on=datetime.date(2026, 12, 24),
        )
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_structured_form_screenshots(
    server: HitlServer, monkeypatch: pytest.MonkeyPatch, open_tab: OpenTab, scheme: str
) -> None:
    # The README's pictures: tests/artifacts/structured-form-<scheme>-phone.png, copied to docs/img.
    event = release_event(server, monkeypatch)
    tab = open_tab(scheme, PHONE, scale=2)
    tab.goto(event.form_url)
    fill(tab, "3")
    tab.page.evaluate("document.activeElement.blur()")
    assert tab.horizontal_overflow() == 0 and tab.csp_violations() == []
    assert tab.shot("structured-form").stat().st_size > 0
