"""The pages and snippets of `_html`: escaping, the policy's hash, each form variant, outcome pages,
the index, the curl command and the Flyte report section. (How they look and behave in a browser is
in tests/browser.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _html

XSS = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"


def record(data_type: str = "int", **extra: Any) -> dict[str, Any]:
    """A stored request as `Event.create` writes it."""
    return {
        "request_id": "q-0123456789abcdef01234567",
        "event_name": "question",
        "scope": "run",
        "prompt": "How many?\nSecond line",
        "data_type": data_type,
        "token": "tok_SECRET-token",
        "created_at": "2026-11-25T12:00:00.000Z",
        "expires_at": "2026-11-25T13:00:00.000Z",
        "timeout_seconds": 3600,
        **extra,
    }


def answer(value: Any, **extra: Any) -> dict[str, Any]:
    return {"status": "completed", "value": value, "answered_at": "2026-11-25T12:05:00.000Z", **extra}


def all_pages() -> list[str]:
    return [
        _html.form_page(record("int"), 600),
        _html.form_page(record("bool"), 600),
        _html.form_page(record("str", choices=["a", "b"]), 600),
        _html.answered_page(record(), answer(3), just_now=True),
        _html.expired_page(record()),
        _html.message_page("Cannot open this event", "wrong token"),
        _html.index_page([(record(), "pending", 60.0), (record(), "completed", -1.0)]),
    ]


# -- the document and its policy ------------------------------------------------------------------


def test_csp_allows_exactly_the_stylesheet_that_pages_carry() -> None:
    for document in all_pages():
        styles = re.findall(r"<style>(.*?)</style>", document, re.S)
        assert len(styles) == 1
        digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in _html.csp()


def test_csp_forbids_everything_else() -> None:
    directives = dict(d.strip().split(" ", 1) for d in _html.csp().split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["base-uri"] == "'none'"
    assert set(directives) == {"default-src", "style-src", "form-action", "base-uri", "frame-ancestors"}
    assert "unsafe" not in _html.csp()


def test_pages_load_nothing_and_run_no_script() -> None:
    for document in all_pages():
        assert document.startswith("<!doctype html>")
        assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in document
        assert "<script" not in document.lower()
        assert not re.search(r"\b(src|href)=", document), "no external (or any) assets"
        assert " style=" not in document, "style attributes would be blocked by the policy"
        assert not re.search(r"\bon[a-z]+=", document), "no inline event handlers"


def test_everything_shown_is_escaped() -> None:
    req = record("int", event_name=XSS, prompt=XSS, token='t"><x', request_id="r-1")
    docs = [
        _html.form_page(req, 60, value=XSS, error=XSS),
        _html.form_page({**req, "data_type": "bool"}, 60, error=XSS, comment=XSS),
        _html.form_page({**req, "data_type": "str", "choices": [XSS, "b"]}, 60),
        _html.form_page({**req, "data_type": "str", "choices": [XSS * 3, *"bcdefgh"]}, 60, value=XSS),
        _html.answered_page(req, answer(XSS, comment=XSS), just_now=True),
        _html.answered_page(req, answer(XSS), just_now=False),
        _html.expired_page({**req, "default": XSS}),
        _html.message_page(XSS, XSS),
        _html.index_page([(req, "pending", 5.0), (req, "expired", -1.0)]),
    ]
    for document in docs:
        assert "<script>" not in document and "<img" not in document and 't"><x' not in document
        assert "&lt;script&gt;" in document


# -- the form -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data_type", "mode"), [("int", "numeric"), ("float", "decimal"), ("str", "text")])
def test_text_form_field(data_type: str, mode: str) -> None:
    document = _html.form_page(record(data_type), 754.4)
    field = re.search(r"<input id=\"value\"[^>]*>", document)
    assert field is not None
    # A text field: a number field would drop "1,5" before the server could say what is wrong with it.
    for attribute in ('type="text"', f'inputmode="{mode}"', 'name="value"', "required", "autofocus", 'value=""'):
        assert attribute in field.group(0)
    assert '<label for="value">Your answer' in document
    assert "<h1>question</h1>" in document
    assert f"Type: {data_type}" in document and "12m 34s left" in document
    assert '<div class="prompt"><p>How many?<br />\nSecond line</p>\n</div>' in document
    assert 'name="token" value="tok_SECRET-token"' in document and 'name="request_id"' in document
    body = document.split("</style>", 1)[1]
    assert 'role="alert"' not in body and "aria-invalid" not in body
    assert "Open until 2026-11-25 13:00:00 UTC." in document


def test_refused_value_is_shown_again_with_the_error() -> None:
    document = _html.form_page(record("int"), 60, value="1,5 apples", error="invalid value '1,5 apples': expected int")
    assert 'value="1,5 apples"' in document
    assert 'aria-invalid="true"' in document and 'aria-describedby="error"' in document
    assert re.search(r'<div class="alert" id="error" role="alert">.*expected int</div>', document)


def test_bool_form_is_two_buttons_and_a_comment() -> None:
    document = _html.form_page(record("bool"), 60)
    assert '<button type="submit" name="value" value="true" class="yes">Yes</button>' in document
    assert '<button type="submit" name="value" value="false" class="no">No</button>' in document
    assert "autofocus" not in document, "Enter must not answer a yes/no question by accident"
    assert '<textarea id="comment" name="comment"' in document and "(optional" in document
    assert document.index('id="comment"') < document.index('value="true"'), "comment first, then the button"


def test_bool_form_says_when_a_comment_is_required_and_keeps_it() -> None:
    document = _html.form_page(
        record("bool", comment_required_on_reject=True), 60, error="a comment is required", comment="Too <risky>"
    )
    assert "(required to answer No)" in document
    assert re.search(r'<textarea id="comment"[^>]*aria-invalid="true"[^>]*>Too &lt;risky&gt;</textarea>', document)


def test_few_short_choices_are_buttons() -> None:
    document = _html.form_page(record("float", choices=[0.5, 1.0, 2.5]), 60)
    buttons = re.findall(r'<button type="submit" name="value" value="([^"]*)">([^<]*)</button>', document)
    assert buttons == [("0.5", "0.5"), ("1.0", "1.0"), ("2.5", "2.5")]
    assert '<input id="value"' not in document and "autofocus" not in document


def test_many_choices_are_a_select_keeping_the_choice() -> None:
    document = _html.form_page(record("int", choices=list(range(10))), 60, value="7")
    assert '<select id="value" name="value" required autofocus>' in document
    assert '<option value="">Choose one…</option>' in document
    assert '<option value="7" selected>7</option>' in document
    assert document.count("selected") == 1


def test_long_choices_are_a_select() -> None:
    document = _html.form_page(record("str", choices=["x" * 41, "y"]), 60)
    assert "<select" in document


def test_default_is_announced() -> None:
    document = _html.form_page(record("bool", default=False), 60)
    assert "Without an answer by then, the task goes on with No (false)." in document


# -- outcome pages --------------------------------------------------------------------------------


def test_success_page_shows_the_answer() -> None:
    document = _html.answered_page(record(), answer(12, comment="looks right"), just_now=True)
    assert "<h1>Answer received</h1>" in document and "you can close this page" in document
    assert '<span class="value">12</span>' in document
    assert "<dd>looks right</dd>" in document and "<dd>2026-11-25 12:05:00 UTC</dd>" in document
    assert "<form" not in document and "tok_SECRET" not in document


def test_already_answered_page() -> None:
    document = _html.answered_page(record("bool"), answer(False), just_now=False)
    assert "<h1>Already answered</h1>" in document and "nothing was changed" in document
    assert '<span class="value">No (false)</span>' in document
    assert "<form" not in document


def test_expired_page_names_the_default_it_used() -> None:
    plain = _html.expired_page(record())
    assert "<h1>This question has expired</h1>" in plain and "2026-11-25 13:00:00 UTC" in plain
    assert "Default used" not in plain and "<form" not in plain
    with_default = _html.expired_page(
        record("str", default="eu"), {"status": "expired", "default_applied": True, "value": "eu"}
    )
    assert '<dt>Default used</dt><dd><span class="value">eu</span></dd>' in with_default


def test_message_page() -> None:
    document = _html.message_page("Cannot open this event", "missing or wrong token")
    assert "<h1>Cannot open this event</h1>" in document and "missing or wrong token" in document


# -- the index ------------------------------------------------------------------------------------


def test_index_separates_waiting_from_done_and_shows_no_tokens() -> None:
    rows = [
        (record(event_name="waits", token="TOKEN-A", prompt="p1\np2"), "pending", 3700.0),
        (record(event_name="answered_one", token="TOKEN-B", data_type="bool"), "completed", -1.0),
        (record(event_name="late_one", token="TOKEN-C"), "expired", -5.0),
    ]
    document = _html.index_page(rows)
    waiting, done = document.split("Answered or expired", 1)
    assert "waits" in waiting and "p1 p2" in waiting and "1h 02m left" in waiting and "Created 2026-11-25" in waiting
    assert '<span class="count">1</span>' in waiting
    assert "answered_one" in done and ">answered<" in done and "late_one" in done and ">expired<" in done
    assert '<span class="count">2</span>' in done
    assert "TOKEN" not in document and "<a" not in document and "request_id" not in document


def test_index_when_empty_and_long_prompts_cut() -> None:
    assert "Nothing is waiting." in _html.index_page([])
    document = _html.index_page([(record(prompt="word " * 200), "pending", 60.0)])
    assert "word " * 50 in document and "word " * 60 not in document and "…" in document


# -- words and numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "expired"),
        (0, "expired"),
        (0.2, "1s left"),
        (45, "45s left"),
        (59.6, "1m 00s left"),
        (125, "2m 05s left"),
        (3599.6, "1h 00m left"),
        (5399, "1h 30m left"),
        (86400 * 2, "48h 00m left"),
    ],
)
def test_time_left(seconds: float, text: str) -> None:
    assert _html.time_left(seconds) == text


def test_when() -> None:
    assert _html.when("2026-11-25T12:06:26.024Z") == "2026-11-25 12:06:26 UTC"
    assert _html.when("2026-11-25T14:06:26+02:00") == "2026-11-25 12:06:26 UTC"
    assert _html.when("not a time") == "not a time"


@pytest.mark.parametrize(
    ("value", "shown"), [(True, "Yes (true)"), (False, "No (false)"), ("  a b ", "  a b "), (2.5, "2.5"), (-7, "-7")]
)
def test_shown_value(value: object, shown: str) -> None:
    assert _html.shown_value(value) == shown


def test_source_names_the_channel_person_and_address() -> None:
    assert _html.source({"via": "form", "client": "10.0.0.7"}) == "the web form from 10.0.0.7"
    assert _html.source({"via": "json", "client": "::1", "identity": "ann@example.com"}) == (
        "the JSON API by ann@example.com from ::1"
    )
    assert _html.source({"via": "cli"}) == "the command line"
    assert _html.source({"via": "python", "client": "local"}) == "the Python API from local"
    assert _html.source({}) == ""


def test_one_line() -> None:
    assert _html.one_line("Ship it?\n\n  Accuracy: 94%\tok") == "Ship it? Accuracy: 94% ok"
    assert _html.one_line("x" * 500, 20) == "x" * 19 + "…"


def test_curl_command_is_one_line_that_a_shell_reads_back() -> None:
    command = _html.curl_command("http://h:1/submit/json", "r-1", "to'k\"en", "str")
    assert "\n" not in command
    argv = shlex.split(command)
    assert argv[:5] == ["curl", "-sS", "-X", "POST", "http://h:1/submit/json"]
    body = json.loads(argv[argv.index("-d") + 1])
    assert body == {"request_id": "r-1", "token": "to'k\"en", "value": "your answer"}
    for type_name, placeholder in (("int", 42), ("float", 0.5), ("bool", True)):
        argv = shlex.split(_html.curl_command("http://h:1/submit/json", "r-1", "t", type_name))
        assert json.loads(argv[-1])["value"] == placeholder


# -- the Flyte report section ---------------------------------------------------------------------


@pytest.fixture
def event(root: Path, monkeypatch: pytest.MonkeyPatch) -> hitl.Event[Any]:
    # An endpoint of its own keeps the embedded server out: the report only shows the URLs.
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", "http://hitl.example:8080")
    return hitl.new_event("ship_it", data_type=bool, prompt=f"Ship it?\n{XSS}")


def test_report_while_waiting_has_prompt_link_and_curl(event: hitl.Event[Any]) -> None:
    section = _html.report_section(event, None)
    assert "<h2>ship_it</h2>" in section and ">bool<" in section and ">waiting<" in section
    assert "Ship it?<br />\n&lt;script&gt;" in section and "<script>" not in section
    assert f'href="{event.form_url}"' in section and "Open the form" in section
    assert f"<pre>{_html.esc(event.curl_command)}</pre>" in section
    assert "Answer:" not in section


def test_report_once_answered_has_the_value_and_source(event: hitl.Event[Any]) -> None:
    response = answer(False, via="form", client="10.1.2.3", identity="ann@example.com", comment="Not <today>")
    section = _html.report_section(event, response)
    assert ">answered<" in section and "Answer: <code>No (false)</code>" in section
    assert "via the web form by ann@example.com from 10.1.2.3" in section
    assert "Comment: Not &lt;today&gt;" in section
    assert f'href="{event.form_url}"' in section and "Open its page" in section and "Ship it?" in section
    assert f"<details><summary>Its curl command</summary><pre>{_html.esc(event.curl_command)}</pre>" in section


def test_report_after_timeout(event: hitl.Event[Any]) -> None:
    expired = _html.report_section(event, {"status": "expired"})
    assert ">expired<" in expired and "without an answer" in expired
    defaulted = _html.report_section(event, {"status": "expired", "default_applied": True, "value": True})
    assert ">timed out<" in defaulted and "<code>Yes (true)</code>" in defaulted
