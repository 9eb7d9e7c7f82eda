"""The person's side in a real browser: the form, its outcome pages and the index, in headless Chromium.

The first test follows the whole path: a Flyte local run in a subprocess prints a form link for each
type, the browser answers (after a refused bad value for the numbers), and the run returns the typed
values. The others open forms served by a real server on a free port, for events made with the
public API, and check what a person sees: labels, focus, Enter, buttons, phone width, light and dark,
security headers and the policy's effect, answered and expired states, and the index.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import post_json, request
from flyte_run import FlyteRun

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _html
from flyteplugins.hitl._answers import seconds_left
from flyteplugins.hitl.server import HitlServer

from .conftest import DESKTOP, PHONE, Tab

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]
MakeEvent = Callable[..., hitl.Event[Any]]

# Background colours of the page in each scheme (from the stylesheet): if the policy blocked the
# inline stylesheet, the page would be the browser's default white (or black) instead.
BACKGROUND = {"light": "rgb(243, 244, 247)", "dark": "rgb(15, 17, 21)"}
ERROR_COLOUR = {"light": "rgb(179, 38, 30)", "dark": "rgb(255, 143, 134)"}
TIME_LEFT = re.compile(r"^(\d+h \d\dm|\d+m \d\ds|\d+s) left$")
ANSWERED_LINE = r"\[hitl\] '{name}' answered: {value} \(via the web form from 127\.0\.0\.1\)$"

FLOW = """
import json
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-browser-flow")

QUESTIONS = [
    ("replicas", int, "How many replicas should serve model v7?\\nProduction runs 3 today."),
    ("learning_rate", float, "Learning rate for the next training run?"),
    ("release_note", str, "One line for the release notes:"),
    ("ship_it", bool, "Deploy model v7 to production?\\n\\nAccuracy 94.1% (+1.3 pts), p99 latency 41 ms."),
]


@env.task(report=True)
async def ask() -> str:
    answers = {}
    for name, data_type, prompt in QUESTIONS:
        event = await hitl.new_event.aio(name, data_type=data_type, prompt=prompt, timeout_seconds=3600)
        value = await event.wait.aio()
        answers[name] = [type(value).__name__, value]
    return json.dumps(answers)


if __name__ == "__main__":
    flyte.init()
    run = flyte.with_runcontext(mode="local", name=sys.argv[1], raw_data_path=sys.argv[2]).run(ask)
    print("RESULT " + run.outputs()[0], flush=True)
"""


@pytest.fixture
def flow(tmp_path: Path, root: Path) -> Iterator[FlyteRun]:
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    run = FlyteRun(script, tmp_path)
    yield run
    run.close()


def assert_security_headers(headers: dict[str, str]) -> None:
    csp = headers["content-security-policy"]
    assert csp == _html.csp()
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp and "http" not in csp
    assert "script-src 'sha256-" in csp, "the pages' one script, allowed by its hash only"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"


def assert_outcome(tab: Tab, status: int, response_status: int, heading: str) -> None:
    assert response_status == status
    assert tab.page.locator("h1").inner_text() == heading
    assert tab.page.locator("form").count() == 0
    assert tab.horizontal_overflow() == 0
    assert tab.csp_violations() == []


# -- the whole path: a Flyte run waits, a person answers in the browser ---------------------------


@pytest.mark.flyte_run
def test_flyte_run_gets_each_type_answered_in_the_browser(flow: FlyteRun, open_tab: OpenTab) -> None:
    light = open_tab("light", PHONE, scale=2)
    dark = open_tab("dark", PHONE, scale=2)

    # int: a bad value is refused and shown again with the error, then a good one goes through (Enter).
    url = flow.expect(r"\[hitl\] form: (http://\S+)$").group(1)
    assert_security_headers(light.goto(url).all_headers())
    page = light.page
    assert page.locator("h1").inner_text() == "How many replicas should serve model v7?"
    assert page.locator(".caption").inner_text() == "replicas"
    assert page.locator(".prompt").inner_text() == "Production runs 3 today."
    page.get_by_label("Your answer").fill("twelve")
    refused = light.submit(lambda: page.keyboard.press("Enter"))
    assert refused.status == 400
    assert page.get_by_role("alert").inner_text() == "Fix the answer below."
    assert page.locator("#e-value").inner_text() == "Enter a whole number, such as 42."
    field = page.get_by_label("Your answer")
    assert field.input_value() == "twelve", "the typed value is kept"
    assert field.get_attribute("aria-invalid") == "true"
    light.shot("flow-form-error")
    light.goto(url)  # opening the link again gives a fresh form (the README's picture)
    assert page.get_by_role("alert").count() == 0
    page.get_by_label("Your answer").fill("12")
    light.shot("flow-form-int")
    done = light.submit(lambda: page.keyboard.press("Enter"))
    assert_outcome(light, 200, done.status, "Answer received")
    assert page.locator(".value").inner_text() == "12"
    light.shot("flow-success")
    flow.expect(ANSWERED_LINE.format(name="replicas", value="12"))

    # float: "1,5" is refused (a number field would have dropped it silently), "2.5" is taken (click).
    url = flow.expect(r"\[hitl\] form: (http://\S+)$").group(1)
    dark.goto(url)
    page = dark.page
    page.get_by_label("Your answer").fill("1,5")
    assert dark.submit(lambda: page.get_by_role("button", name="Submit answer").click()).status == 400
    assert page.locator("#e-value").inner_text().startswith("Enter a number")
    assert page.get_by_label("Your answer").input_value() == "1,5"
    dark.shot("flow-form-error")
    page.get_by_label("Your answer").fill("2.5")
    assert_outcome(dark, 200, dark.submit(lambda: page.keyboard.press("Enter")).status, "Answer received")
    dark.shot("flow-success")
    flow.expect(ANSWERED_LINE.format(name="learning_rate", value="2.5"))

    # str: any text, kept exactly (Unicode, inner spaces).
    note = "Faster p99  — déjà vu ✓"
    light.goto(flow.expect(r"\[hitl\] form: (http://\S+)$").group(1))
    light.page.get_by_label("Your answer").fill(note)
    assert_outcome(light, 200, light.submit(lambda: light.page.keyboard.press("Enter")).status, "Answer received")
    assert light.page.locator(".value").inner_text() == note
    flow.expect(ANSWERED_LINE.format(name="release_note", value=re.escape(repr(note))))

    # bool: two buttons; "No" answers False.
    dark.goto(flow.expect(r"\[hitl\] form: (http://\S+)$").group(1))
    page = dark.page
    assert page.locator("h1").inner_text() == "Deploy model v7 to production?"
    assert page.locator(".prompt").inner_text().startswith("Accuracy")
    dark.shot("flow-form-bool")
    assert_outcome(
        dark, 200, dark.submit(lambda: page.get_by_role("button", name="Reject").click()).status, "Answer received"
    )
    assert page.locator(".value").inner_text() == "Rejected"
    flow.expect(ANSWERED_LINE.format(name="ship_it", value="False"))

    result = json.loads(flow.expect(r"^RESULT (.*)$").group(1))
    assert flow.finish() == 0, flow.output
    assert result == {
        "replicas": ["int", 12],
        "learning_rate": ["float", 2.5],
        "release_note": ["str", note],
        "ship_it": ["bool", False],
    }


# -- the form, type by type -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(
    ("data_type", "inputmode", "typed", "expected"),
    [(int, "numeric", "-7", -7), (float, "decimal", "0.25", 0.25), (str, "text", "  spaced out  ", "  spaced out  ")],
    ids=["int", "float", "str"],
)
def test_text_form_is_labelled_focused_styled_and_answers_on_enter(
    make_event: MakeEvent, open_tab: OpenTab, scheme: str, data_type: type, inputmode: str, typed: str, expected: Any
) -> None:
    prompt = "First line of the question\n  second line, indented\n\nfourth line"
    event = make_event("the_question", data_type, prompt=prompt, timeout_seconds=5400)
    tab = open_tab(scheme, PHONE)
    response = tab.goto(event.form_url)
    assert response.status == 200
    assert_security_headers(response.all_headers())
    page = tab.page

    assert page.locator("h1").inner_text() == "First line of the question", "the question is the heading"
    assert page.locator(".caption").inner_text() == "the_question"
    assert page.locator(".prompt").inner_text() == prompt.split("\n", 1)[1], "shown as written: indents kept"
    chips = page.locator(".chips li").all_inner_texts()
    assert len(chips) == 1 and TIME_LEFT.match(chips[0]) and chips[0].startswith("1h 30m"), chips
    assert "Type" not in page.locator("main").inner_text(), "no type signature for the person"
    field = page.get_by_label("Your answer")
    assert field.get_attribute("id") == "value"
    assert page.evaluate("document.activeElement.id") == "value", "the answer field has the focus"
    # A text field (with the right phone keypad) rather than type=number, which would hide bad values.
    assert field.get_attribute("type") == "text"
    assert field.get_attribute("inputmode") == inputmode
    assert tab.style("body", "background-color") == BACKGROUND[scheme], "the hashed inline stylesheet applies"
    assert tab.style("button", "min-height") == "48px", "touch-sized button"
    assert tab.horizontal_overflow() == 0
    assert tab.csp_violations() == []
    tab.shot(f"form-{data_type.__name__}")

    page.keyboard.type(typed)  # into the focused field, as a person would
    done = tab.submit(lambda: page.keyboard.press("Enter"))
    assert_outcome(tab, 200, done.status, "Answer received")
    assert_security_headers(done.all_headers())
    assert tab.style("body", "background-color") == BACKGROUND[scheme]
    value = event.wait()
    assert value == expected and type(value) is data_type


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("button", "expected"), [("Approve", True), ("Reject", False)])
def test_bool_form_is_two_clear_buttons(
    make_event: MakeEvent, open_tab: OpenTab, scheme: str, button: str, expected: bool
) -> None:
    event = make_event("approve", bool, prompt="Ship it?")
    tab = open_tab(scheme, PHONE)
    tab.goto(event.form_url)
    page = tab.page
    yes, no = page.get_by_role("button", name="Approve"), page.get_by_role("button", name="Reject")
    assert yes.is_visible() and no.is_visible()
    for b in (yes, no):
        box = b.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 120, box
    assert tab.style(".yes", "background-color") != tab.style(".no", "background-color")
    assert page.evaluate("document.activeElement.tagName") == "BODY", "no button is pre-selected for Enter"
    assert page.get_by_label("Comment").is_visible()
    assert tab.horizontal_overflow() == 0
    assert tab.csp_violations() == []
    done = tab.submit(lambda: page.get_by_role("button", name=button).click())
    assert_outcome(tab, 200, done.status, "Answer received")
    assert page.locator(".value").inner_text() == ("Approved" if expected else "Rejected")
    assert event.wait() is expected


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_form_on_a_desktop_is_a_centred_readable_column(make_event: MakeEvent, open_tab: OpenTab, scheme: str) -> None:
    event = make_event(
        "approve_release", bool, prompt="Release v2.4 to all customers?\nChangelog: 14 fixes, 2 features."
    )
    tab = open_tab(scheme, DESKTOP)
    tab.goto(event.form_url)
    box = tab.page.locator("main").bounding_box()
    assert box is not None
    assert box["width"] <= 35 * 16, "lines stay short enough to read"
    assert abs(box["x"] - (DESKTOP[0] - box["x"] - box["width"])) <= 1, "centred"
    assert tab.style("body", "background-color") == BACKGROUND[scheme]
    assert tab.horizontal_overflow() == 0
    assert tab.csp_violations() == []
    tab.shot("form-bool")


def test_reject_comment_is_asked_for_and_kept(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event("deploy", bool, prompt="Deploy?", comment_required_on_reject=True)
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)
    page = tab.page
    assert "required to reject" in page.locator("label[for=comment]").inner_text()
    refused = tab.submit(lambda: page.get_by_role("button", name="Reject").click())
    assert refused.status == 400
    assert page.get_by_role("alert").inner_text() == "Fix the answer below."
    assert page.locator("#e-comment").inner_text() == "A comment is required to reject: say why."
    assert page.get_by_label("Comment").get_attribute("aria-invalid") == "true"
    page.get_by_label("Comment").fill("Latency regressed on the canary.")
    done = tab.submit(lambda: page.get_by_role("button", name="Reject").click())
    assert_outcome(tab, 200, done.status, "Answer received")
    assert "Latency regressed on the canary." in page.locator("dl").inner_text()
    assert event.wait() is False
    assert event.response is not None and event.response["comment"] == "Latency regressed on the canary."


def test_choices_are_buttons_when_few_and_a_select_when_many(make_event: MakeEvent, open_tab: OpenTab) -> None:
    few = make_event("region", str, prompt="Where?", choices=["us-east-1", "eu-west-1", "ap-south-1"])
    many = make_event("shards", int, prompt="How many shards?", choices=list(range(1, 13)))
    tab = open_tab("light", PHONE)

    tab.goto(few.form_url)
    assert tab.page.get_by_role("button").all_inner_texts() == ["us-east-1", "eu-west-1", "ap-south-1"]
    assert tab.horizontal_overflow() == 0
    tab.shot("form-choices")
    assert tab.submit(lambda: tab.page.get_by_role("button", name="eu-west-1").click()).status == 200
    assert few.wait() == "eu-west-1"

    tab.goto(many.form_url)
    select = tab.page.get_by_label("Your answer")
    assert select.evaluate("el => el.tagName") == "SELECT"
    assert tab.page.evaluate("document.activeElement.id") == "value"
    select.select_option("7")
    assert tab.submit(lambda: tab.page.get_by_role("button", name="Submit answer").click()).status == 200
    assert many.wait() == 7


def test_long_names_prompts_and_answers_fit_a_phone(make_event: MakeEvent, open_tab: OpenTab) -> None:
    name = "n" * 200  # the longest name allowed, with nowhere to break
    prompt = "See https://example.com/" + "very-long-path-segment/" * 20 + "\n" + "word " * 200
    event = make_event(name, str, prompt=prompt)
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)
    assert tab.horizontal_overflow() == 0
    answer = "x" * 3000
    tab.page.get_by_label("Your answer").fill(answer)
    assert tab.submit(lambda: tab.page.keyboard.press("Enter")).status == 200
    assert tab.horizontal_overflow() == 0
    assert tab.page.locator(".value").inner_text() == answer

    numbers = make_event("count", int, prompt=prompt)
    tab.goto(numbers.form_url)
    tab.page.get_by_label("Your answer").fill("z" * 500)
    assert tab.submit(lambda: tab.page.keyboard.press("Enter")).status == 400
    assert tab.horizontal_overflow() == 0
    assert tab.page.get_by_label("Your answer").input_value() == "z" * 500


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_bidi_and_invisible_characters_show_as_visible_markers(
    make_event: MakeEvent, open_tab: OpenTab, scheme: str
) -> None:
    """``invoice_2026_\\u202efdp.exe`` must not read as ``invoice_2026_exe.pdf``: the override shows
    as a marker, and the text after it keeps its order. A text prompt shows its asterisks as typed."""
    tricky = "invoice_2026_\u202efdp.exe"
    event = make_event(
        "open_file", bool, prompt=f"Run rm -rf /data/*/old/* and open {tricky}?", details={"file": tricky}
    )
    tab = open_tab(scheme, DESKTOP)
    tab.goto(event.form_url)
    page = tab.page
    assert page.locator("h1").inner_text() == "Run rm -rf /data/*/old/* and open invoice_2026_<U+202E>fdp.exe?"
    cell = page.locator(".details td")
    assert cell.inner_text() == "invoice_2026_<U+202E>fdp.exe"
    marker = cell.locator(".cf")
    assert marker.is_visible() and marker.inner_text() == "<U+202E>"
    assert tab.style(".details td .cf", "color") == ERROR_COLOUR[scheme], "styled as a warning"
    # Laid out left to right as stored: "invoice_2026_", the marker, then "fdp.exe" (not "exe.pdf").
    lefts = page.evaluate(
        """cell => {
            const range = document.createRange(), boxes = [];
            for (const node of cell.childNodes) {
                range.selectNodeContents(node);
                boxes.push([node.textContent, range.getBoundingClientRect().left]);
            }
            return boxes;
        }""",
        cell.element_handle(),
    )
    assert [text for text, _ in lefts] == ["invoice_2026_", "<U+202E>", "fdp.exe"]
    assert [left for _, left in lefts] == sorted(left for _, left in lefts)
    assert tab.csp_violations() == []
    tab.shot("form-invisible")

    done = tab.submit(lambda: page.get_by_role("button", name="Approve").click())
    assert done.status == 200
    assert "invoice_2026_<U+202E>fdp.exe" in page.locator("dd.question").inner_text()
    assert event.wait() is True


# -- answered and expired events show their state, not a form ---------------------------------------


def test_answer_given_elsewhere_wins_and_the_form_shows_it(
    make_event: MakeEvent, open_tab: OpenTab, server: HitlServer
) -> None:
    event = make_event("count", int)
    tab = open_tab("light", PHONE)
    tab.goto(event.form_url)  # a person opens the form...
    reply = post_json(server.url, {"request_id": event.request_id, "token": event.token, "value": 7})
    assert reply.status == 200  # ...while a program answers first
    tab.page.get_by_label("Your answer").fill("8")
    late = tab.submit(lambda: tab.page.keyboard.press("Enter"))
    assert_outcome(tab, 409, late.status, "Already answered")
    assert tab.page.locator(".value").inner_text() == "7"
    tab.shot("answered")

    again = tab.goto(event.form_url)
    assert_outcome(tab, 200, again.status, "Already answered")
    assert tab.page.locator(".value").inner_text() == "7"
    assert event.wait() == 7


def test_expired_event_shows_its_state(make_event: MakeEvent, open_tab: OpenTab) -> None:
    # Long enough for a busy machine to open the page and fill it in before the deadline.
    event = make_event("late", int, prompt="Too slow?", timeout_seconds=5.0)
    with_default = make_event("late_default", str, prompt="Region?", timeout_seconds=5.0, default="us-east-1")
    tab = open_tab("dark", PHONE)
    tab.goto(event.form_url)
    tab.page.get_by_label("Your answer").fill("5")
    for expiring in (event, with_default):
        while seconds_left({"expires_at": expiring.expires_at}) > 0:
            time.sleep(0.05)
    refused = tab.submit(lambda: tab.page.keyboard.press("Enter"))
    assert_outcome(tab, 410, refused.status, "This question has expired")
    tab.shot("expired")

    assert_outcome(tab, 200, tab.goto(event.form_url).status, "This question has expired")
    assert_outcome(tab, 200, tab.goto(with_default.form_url).status, "This question has expired")
    assert "us-east-1" in tab.page.locator("main").inner_text(), "the expired page names the default it used"
    with pytest.raises(hitl.EventTimeoutError):
        event.wait()
    assert_outcome(tab, 200, tab.goto(with_default.form_url).status, "This question has expired")
    assert "us-east-1" in tab.page.locator("dl").inner_text()


# -- the index ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_index_lists_waiting_and_done_events_without_tokens(
    make_event: MakeEvent, open_tab: OpenTab, server: HitlServer, scheme: str
) -> None:
    waiting = [
        make_event("pick_version", int, prompt="Which version?\nv7 is the candidate."),
        make_event("approve_deploy", bool, prompt="Deploy v7?", timeout_seconds=600),
    ]
    answered = make_event("release_note", str, prompt="Release note?")
    expired = make_event("too_late", float, prompt="Rate?", timeout_seconds=0.5)
    assert post_json(server.url, {"request_id": answered.request_id, "token": answered.token, "value": "ok"}).status
    time.sleep(0.6)

    tab = open_tab(scheme, PHONE)
    response = tab.goto(server.url + "/")
    assert response.status == 200
    assert_security_headers(response.all_headers())
    sections = tab.page.locator("section")
    pending_text, done_text = sections.nth(0).inner_text(), sections.nth(1).inner_text()
    assert pending_text.startswith("Waiting\n2")
    for event in waiting:
        assert event.name in pending_text and event.prompt.split("\n")[0] in pending_text
    assert pending_text.count("\nwaiting\n") == 2 and "Created " in pending_text
    assert "int" not in pending_text and "bool" not in pending_text, "no type names for people"
    assert re.search(r"\b(1h 00m|59m \d\ds) left\b", pending_text) and re.search(
        r"\b(10m 00s|9m \d\ds) left", pending_text
    )
    assert "release_note" in done_text and "answered" in done_text
    assert "too_late" in done_text and "expired" in done_text
    assert "release_note" not in pending_text and "too_late" not in pending_text

    html = tab.page.content()
    for event in (*waiting, answered, expired):
        assert event.token not in html
    assert tab.page.locator("a").count() == 0, "no links: links would need tokens"
    assert tab.horizontal_overflow() == 0
    assert tab.csp_violations() == []
    tab.shot("index")


# -- the policy holds in the browser --------------------------------------------------------------


def test_policy_blocks_anything_but_our_stylesheet(make_event: MakeEvent, open_tab: OpenTab) -> None:
    event = make_event()
    tab = open_tab("light", DESKTOP)
    tab.goto(event.form_url)
    assert tab.csp_violations() == []
    # What an injection would try: a style attribute, a new stylesheet, an external image.
    tab.page.evaluate("document.body.setAttribute('style', 'background: rgb(255, 0, 0)')")
    tab.page.evaluate(
        "s => { const e = document.createElement('style'); e.textContent = s; document.head.append(e) }",
        "body{color:red}",
    )
    tab.page.evaluate("() => { const i = new Image(); i.src = 'http://127.0.0.1:9/x.png'; document.body.append(i) }")
    tab.until(lambda: len(tab.csp_violations()) >= 3, "three policy violations are reported")
    assert tab.style("body", "background-color") == BACKGROUND["light"]


def test_pages_refuse_to_be_framed(make_event: MakeEvent, open_tab: OpenTab, server: HitlServer) -> None:
    event = make_event()
    tab = open_tab("light", DESKTOP)
    tab.goto(server.url + "/health")  # any page of ours, so only the policy can refuse the frame
    tab.page.set_content(f'<iframe src="{event.form_url}" width="600" height="400"></iframe>')
    tab.until(lambda: any("frame-ancestors" in m for m in tab.console), "the refused frame is reported")
    frame = tab.page.frames[1]
    assert not frame.url.startswith(server.url), frame.url


def test_error_pages_are_styled_and_leak_nothing(make_event: MakeEvent, open_tab: OpenTab, server: HitlServer) -> None:
    event = make_event()
    tab = open_tab("light", PHONE)
    wrong = tab.goto(f"{server.url}/form/{event.request_id}?token=wrong")
    assert_outcome(tab, 403, wrong.status, "Cannot open this event")
    assert_security_headers(wrong.all_headers())
    assert tab.style("body", "background-color") == BACKGROUND["light"]
    assert event.token not in tab.page.content()
    assert request(server.url, "GET", f"/form/{event.request_id}?token={event.token}").status == 200
