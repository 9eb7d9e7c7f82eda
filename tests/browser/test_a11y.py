"""An automated accessibility audit of every page: axe-core in headless Chromium, light and dark,
desktop and a 360 px phone, with no serious or critical violation allowed, plus the non-text contrast
of form controls' borders (WCAG 1.4.11), which axe-core does not check.

axe-core comes from npm, pinned (``make emulators`` installs it under ``.emulators/axe``); the test
skips with the reason when it is missing. It is injected with Playwright's ``add_script_tag``, which
the pages' Content-Security-Policy would refuse, so these tabs bypass the policy (the policy itself
is tested in test_form.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from conftest import post_json

import flyteplugins.hitl as hitl
from flyteplugins.hitl._answers import seconds_left
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer, make_server, stop_server

from .conftest import DESKTOP, NARROW, Tab

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]
MakeEvent = Callable[..., hitl.Event[Any]]

#: Keep in step with AXE_VERSION in the Makefile.
AXE_VERSION = "4.10.3"
AXE = Path(__file__).resolve().parents[2] / ".emulators" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    CYAN = "cyan"
    MAGENTA = "magenta"
    YELLOW = "yellow"
    BLACK = "black"


@dataclasses.dataclass
class Order:
    count: Annotated[int, annotated_types.Interval(ge=1, le=9), "How many boxes"]
    colour: Colour
    extras: list[Literal["gift", "express"]]
    note: str = ""
    ship_on: datetime.date | None = None
    at: datetime.datetime | None = None
    fragile: bool | None = None


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.skip(f"{AXE} not found: `make emulators` installs axe-core {AXE_VERSION} from npm")
    version = json.loads((AXE.parent / "package.json").read_text())["version"]
    assert version == AXE_VERSION, f"axe-core {version} installed, {AXE_VERSION} expected: run `make emulators`"
    return AXE.read_text()


# WCAG 1.4.11 (non-text contrast), which axe-core does not check: the border that shows where a text
# field, a select or a secondary button is must stand out 3:1 from what is around it.
_CONTROL_CONTRAST = """() => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const lum = c => {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const around = el => {
    for (let e = el.parentElement; e; e = e.parentElement) {
      const bg = getComputedStyle(e).backgroundColor;
      if (rgb(bg).length < 4 || rgb(bg)[3] > 0) return bg;
    }
    return "rgb(255, 255, 255)";
  };
  const bad = [];
  const controls = "input:not([type=hidden]):not([type=radio]):not([type=checkbox]), select, textarea, button.second";
  for (const el of document.querySelectorAll(controls)) {
    const r = ratio(getComputedStyle(el).borderTopColor, around(el));
    const name = el.id || el.name || el.textContent.trim();
    if (r < 3) bad.push(`${el.tagName.toLowerCase()} ${name}: border ${r.toFixed(2)}:1`);
  }
  return bad;
}"""


def audit(tab: Tab, axe: str) -> list[str]:
    """The serious and critical violations on the tab's page, one line each, and every form control
    whose border stands out less than 3:1 from its surroundings."""
    tab.page.add_script_tag(content=axe)
    result = tab.page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ] + tab.page.evaluate(_CONTROL_CONTRAST)


@pytest.mark.parametrize("size", [DESKTOP, NARROW], ids=["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_an_accessibility_audit(
    make_event: MakeEvent, open_tab: OpenTab, server: HitlServer, axe_source: str, scheme: str, size: tuple[int, int]
) -> None:
    expired = make_event("late", str, prompt="Region?", choices=["us", "eu"], default="eu", timeout_seconds=0.5)
    answered = make_event("order", Order, prompt="Order **boxes**?\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    reply = post_json(
        server.url,
        {
            "request_id": answered.request_id,
            "token": answered.token,
            "value": {"count": 2, "colour": "red", "extras": ["gift"]},
        },
    )
    assert reply.status == 200
    forms = {
        "int": make_event("replicas", int, prompt="How many replicas?\nProduction runs 3.", details={"team": ["a"]}),
        "bool": make_event("ship", bool, prompt="Ship v3?", comment_required_on_reject=True),
        "buttons": make_event("size", str, prompt="Size?", choices=["S", "M", "L"]),
        "select": make_event("shards", int, prompt="Shards?", choices=list(range(1, 13))),
        "dataclass": make_event("order2", Order, prompt="Order?", prompt_type="markdown"),
        "datetime": make_event("when", datetime.datetime, prompt="When?"),
        "list": make_event("tags", list[Literal["a", "b", "c"]], prompt="Tags?"),
    }
    while seconds_left({"expires_at": expired.expires_at}) > 0:
        time.sleep(0.05)

    tab = open_tab(scheme, size, bypass_csp=True)
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        assert tab.horizontal_overflow() == 0, name
        found[name] = audit(tab, axe_source)

    for name, event in forms.items():
        tab.goto(event.form_url)
        check(f"form {name}")
    # Forms shown again with errors.
    tab.goto(forms["int"].form_url)
    tab.page.get_by_label("Your answer").fill("many")
    tab.submit(lambda: tab.page.keyboard.press("Enter"))
    check("form int, refused")
    tab.goto(forms["dataclass"].form_url)
    tab.page.get_by_label("Count").fill("12")
    tab.page.get_by_label("Colour").select_option("red")
    tab.submit(lambda: tab.page.get_by_role("button", name="Submit answer").click())
    check("form dataclass, refused")
    tab.goto(forms["bool"].form_url)
    tab.page.get_by_label("Comment").focus()
    tab.submit(lambda: tab.page.get_by_role("button", name="Reject").click())
    check("form bool, refused")
    # The outcome pages, the index and an error page.
    tab.goto(answered.form_url)
    check("answered")
    tab.goto(forms["buttons"].form_url)
    tab.submit(lambda: tab.page.get_by_role("button", name="M").click())
    check("answer received")
    tab.goto(expired.form_url)
    check("expired")
    for query in ("", "?status=pending", "?status=done"):
        tab.goto(server.url + "/" + query)
        check(f"index {query}")
    tab.goto(f"{server.url}/form/{answered.request_id}?token=wrong")
    check("wrong token")
    assert {name: v for name, v in found.items() if v} == {}


ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def proxied(store: Store) -> Iterator[str]:
    """A server that trusts ``X-Forwarded-Email``, which each tab sends as the proxy in front would."""
    httpd = make_server(store, identity_header="X-Forwarded-Email")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop_server(httpd, thread)


@pytest.mark.parametrize("size", [DESKTOP, NARROW], ids=["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_each_viewers_page_passes_an_accessibility_audit(
    root: Path, store: Store, proxied: str, open_tab: OpenTab, axe_source: str, scheme: str, size: tuple[int, int]
) -> None:
    event = hitl.Event.create(
        "release",
        bool,
        prompt="Release **v7**?",
        prompt_type="markdown",
        respondents=[ALICE, BOB, CAROL],
        requester=CAROL,
        quorum=2,
        timeout_seconds=600,
    )
    gone = hitl.new_event("ship", data_type=bool, prompt="Ship it?", timeout_seconds=600)
    withdrawn = {"request_id": gone.request_id, "status": "expired", "withdrawn_at": "2026-12-07T18:03:00.000Z"}
    assert store.create_response(gone.request_id, withdrawn)
    form = f"{proxied}/form/{event.request_id}"

    def tab(who: str | None = None) -> Tab:
        headers = {"X-Forwarded-Email": who} if who else {}
        return open_tab(scheme, size, bypass_csp=True, extra_http_headers=headers)

    found: dict[str, list[str]] = {}

    def check(name: str, viewer: Tab) -> None:
        assert viewer.horizontal_overflow() == 0, name
        found[name] = audit(viewer, axe_source)

    carol, alice, stale, bob, anonymous = tab(CAROL), tab(ALICE), tab(ALICE), tab(BOB), tab()
    carol.goto(form)
    check("requester", carol)
    anonymous.goto(f"{form}?token={event.token}")
    check("sign in, with the link", anonymous)
    anonymous.goto(form)
    check("sign in, without the link", anonymous)
    alice.goto(form)
    stale.goto(form)
    check("respondent's form", alice)
    alice.page.get_by_label("Comment").fill("Tests are green.\nShip it.")
    alice.submit(lambda: alice.page.get_by_role("button", name="Approve").click())
    check("vote received", alice)
    alice.goto(form)
    check("voted", alice)
    stale.submit(lambda: stale.page.get_by_role("button", name="Approve").click())
    check("refused: already voted", stale)
    bob.goto(form)
    bob.submit(lambda: bob.page.get_by_role("button", name="Approve").click())
    check("decided: every vote", bob)
    anonymous.goto(f"{proxied}/form/{gone.request_id}?token={gone.token}")
    check("withdrawn", anonymous)
    anonymous.goto(proxied + "/")
    check("index with a withdrawn question", anonymous)
    assert {name: v for name, v in found.items() if v} == {}
