"""The pages and snippets of `_html`: escaping, the policy's hash, each form variant, outcome pages,
the index, the curl command and the Flyte report section. (How they look and behave in a browser is
in tests/browser.)"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import hashlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import pytest
from conftest import Reply, request
from hypothesis import example, given, settings
from hypothesis import strategies as st

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _html, _markdown, _text
from flyteplugins.hitl._store import Store
from flyteplugins.hitl._task_types import declare, spec_for
from flyteplugins.hitl.server import start_server, stop_server

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
        _html.refusal_page("Cannot open this event", "wrong token", "/form/q-1"),
        _html.index_page([(record(), "pending", 60.0), (record(), "completed", -1.0)]),
    ]


# -- the document and its policy ------------------------------------------------------------------


def test_csp_allows_exactly_the_stylesheet_and_script_that_pages_carry() -> None:
    for document in all_pages():
        for tag in ("style", "script"):
            found = re.findall(rf"<{tag}>(.*?)</{tag}>", document, re.S)
            assert len(found) == 1
            digest = base64.b64encode(hashlib.sha256(found[0].encode()).digest()).decode()
            assert f"{tag}-src 'sha256-{digest}'" in _html.csp()


def test_csp_forbids_everything_else() -> None:
    directives = dict(d.strip().split(" ", 1) for d in _html.csp().split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["base-uri"] == "'none'"
    assert set(directives) == {"default-src", "style-src", "script-src", "form-action", "base-uri", "frame-ancestors"}
    assert directives["script-src"].startswith("'sha256-") and " " not in directives["script-src"]
    assert "unsafe" not in _html.csp()


def test_pages_load_nothing_and_run_only_their_own_script() -> None:
    for document in all_pages():
        assert document.startswith("<!doctype html>")
        assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in document
        assert document.lower().count("<script") == 1 and f"<script>{_html._SCRIPT}</script>" in document
        assert not re.search(r"\bsrc=", document), "no assets"
        assert re.findall(r'\bhref="([^"]*)"', document) in ([], ["/form/q-1", "/inbox"]), "links stay on this server"
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
        _html.refusal_page(XSS, _html.esc(XSS), XSS),
        _html.index_page([(req, "pending", 5.0), (req, "expired", -1.0)]),
    ]
    for document in docs:
        document = document.replace(f"<script>{_html._SCRIPT}</script>", "")
        assert "<script>" not in document and "<img" not in document and 't"><x' not in document
        assert "&lt;script&gt;" in document


RLO = "invoice_2026_\u202efdp.exe"  # reads "invoice_2026_exe.pdf" where the override is obeyed
RLO_MARKED = 'invoice_2026_<span class="cf">&lt;U+202E&gt;</span>fdp.exe'


def outside_tags_and_textareas(document: str) -> str:
    return re.sub(r"<textarea\b.*?</textarea>|<[^>]*>", "", document, flags=re.S)


def test_invisible_characters_are_shown_as_markers_on_every_page() -> None:
    """Prompts, details, names, comments, answers, choices and errors: a bidi override or any other
    invisible character in what a page shows becomes a visible marker."""
    req = record(
        "str",
        event_name=f"name {RLO}",
        prompt=f"Send {RLO}?\u2028\u2066x\u2069\u200b",
        details={RLO: RLO},
        default=RLO,
    )
    markdown = {**req, "prompt_type": "markdown"}
    docs = [
        _html.form_page(req, 60, value=RLO, error=f"refused {RLO}"),
        _html.form_page(markdown, 60),
        _html.form_page({**req, "data_type": "bool"}, 60, comment=RLO),
        _html.form_page({**req, "choices": [RLO, "b"]}, 60),
        _html.form_page({**req, "choices": [RLO, *"bcdefgh"]}, 60),
        _html.answered_page(req, answer(RLO, comment=RLO), just_now=True),
        _html.answered_page(markdown, answer(RLO), just_now=False),
        _html.expired_page(req),
        _html.refusal_page(f"Cannot open {RLO}", RLO),
        _html.index_page([(req, "pending", 5.0), (markdown, "expired", -1.0)]),
    ]
    for document in docs:
        shown = outside_tags_and_textareas(document)
        assert not _text.INVISIBLE_RE.search(shown), [hex(ord(c)) for c in _text.INVISIBLE_RE.findall(shown)]
        assert RLO_MARKED in document
    form = docs[0]
    title = "Send invoice_2026_&lt;U+202E&gt;fdp.exe?&lt;U+2028&gt;&lt;U+2066&gt;x&lt;U+2069&gt;&lt;U+200B&gt;"
    assert f"<title>{title}</title>" in form
    assert '<span class="cf">&lt;U+2028&gt;</span><span class="cf">&lt;U+2066&gt;</span>x' in form
    assert f'<tr><th scope="row">{RLO_MARKED}</th><td>{RLO_MARKED}</td></tr>' in form
    # What is sent back stays exactly what it was: attribute values and the comment being typed.
    assert f'value="{RLO}"' in form and f'value="{RLO}"' in docs[3]
    assert f">{RLO}</textarea>" in docs[2]


@pytest.mark.parametrize(
    "prompt", ["Run: rm -rf /data/*/old/* ?", "Rename __init__?", "2*3*4", "# of retries?", "[x](y) <b>"]
)
def test_a_text_prompt_is_shown_as_written(prompt: str) -> None:
    """The default: the person reads the code's text, not what Markdown makes of it."""
    req = record("bool", prompt=f"{prompt}\nsecond line")
    escaped = _html.esc(prompt)
    form = _html.form_page(req, 60)
    assert f"<h1>{escaped}</h1>" in form and '<p class="plain">second line</p>' in form
    for document in (_html.answered_page(req, answer(True), just_now=True), _html.expired_page(req)):
        assert f'<p><strong>{escaped}</strong></p><p class="plain">second line</p>' in document
    for document in (form, _html.answered_page(req, answer(True), just_now=True)):
        document = document.replace(f"<p><strong>{escaped}</strong></p>", "")
        assert "<em>" not in document and "<strong>" not in document and "<h1>of retries" not in document
    index = _html.index_page([(req, "pending", 5.0)])
    assert f'<div class="name">{escaped}</div><p class="text">second line</p>' in index


def test_a_markdown_prompt_is_rendered_on_the_form_and_plain_text_on_the_index() -> None:
    req = record(
        "bool", prompt="# Deploy?\n**v3** to `prod`, see [notes](https://example.com/n)", prompt_type="markdown"
    )
    form = _html.form_page(req, 60)
    assert "<h1>Deploy?</h1>" in form and "<strong>v3</strong>" in form and "<code>prod</code>" in form
    assert "<title>Deploy?</title>" in form and "# Deploy" not in form
    assert "<strong>v3</strong>" in _html.answered_page(req, answer(True), just_now=True)
    index = _html.index_page([(req, "pending", 5.0)])
    assert '<div class="name">Deploy?</div><p class="text">v3 to prod, see notes</p>' in index
    assert "**" not in index and "`" not in index and "https://" not in index


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
    assert '<p class="caption">question</p>\n<h1>How many?</h1>' in document, "the question is the heading"
    assert f"Type: {data_type}" not in document and "12m 34s left" in document
    # The type is for programs only: under a collapsed "For programs", with the curl command.
    programs = document.split('<details class="programs"><summary>For programs</summary>', 1)[1]
    assert f"<code>{data_type}</code>" in programs and "curl -sS -X POST" in programs
    assert "/submit/json" in programs and "</details>" in programs
    assert '<div class="prompt"><p class="plain">Second line</p></div>' in document
    assert 'name="token" value="tok_SECRET-token"' in document and 'name="request_id"' in document
    body = document.split("</style>", 1)[1]
    assert 'role="alert"' not in body and "aria-invalid" not in body
    assert 'Open until <time datetime="2026-11-25T13:00:00+00:00">2026-11-25 13:00:00 UTC</time>.' in document


def test_refused_value_is_shown_again_with_the_error() -> None:
    document = _html.form_page(record("int"), 60, value="1,5 apples", error="invalid value '1,5 apples': expected int")
    assert 'value="1,5 apples"' in document
    assert 'aria-invalid="true"' in document and 'aria-describedby="e-value"' in document
    assert '<div class="alert" id="error" role="alert"><strong>Fix the answer below.</strong></div>' in document
    # Beside the field, in the words of its hint ("a whole number"): not the API's "expected int".
    assert '<p class="field-error" id="e-value">Enter a whole number, such as 42.</p>' in document
    assert "expected int" not in document


def test_bool_form_is_two_buttons_and_a_comment() -> None:
    document = _html.form_page(record("bool"), 60)
    assert '<button type="submit" name="value" value="true" class="yes">Approve</button>' in document
    assert '<button type="submit" name="value" value="false" class="no">Reject</button>' in document
    assert "autofocus" not in document, "Enter must not answer a yes/no question by accident"
    assert '<textarea id="comment" name="comment"' in document and "(optional" in document
    assert document.index('id="comment"') < document.index('value="true"'), "comment first, then the button"


def test_bool_form_says_when_a_comment_is_required_and_keeps_it() -> None:
    document = _html.form_page(
        record("bool", comment_required_on_reject=True),
        60,
        error="a comment is required to reject 'question'",
        comment="Too <risky>",
    )
    assert "(required to reject)" in document
    assert '<p class="field-error" id="e-comment">A comment is required to reject: say why.</p>' in document
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
    assert "Without an answer by then, the task goes on as if rejected." in document
    document = _html.form_page(record("int", default=3), 60)
    assert "Without an answer by then, the task goes on with 3." in document
    assert "the task goes on with &lt;b&gt;." in _html.form_page(record("str", default="<b>"), 60)


# -- outcome pages --------------------------------------------------------------------------------


def test_success_page_shows_the_answer() -> None:
    document = _html.answered_page(record(), answer(12, comment="looks right"), just_now=True)
    assert "<h1>Answer received</h1>" in document and "you can close this page" in document
    assert '<span class="value">12</span>' in document
    assert "<dd>looks right</dd>" in document
    assert '<dd><time datetime="2026-11-25T12:05:00+00:00">2026-11-25 12:05:00 UTC</time></dd>' in document
    assert "<form" not in document and "tok_SECRET" not in document


def test_already_answered_page() -> None:
    document = _html.answered_page(record("bool"), answer(False), just_now=False)
    assert "<h1>Already answered</h1>" in document and "nothing was changed" in document
    assert '<span class="value">Rejected</span>' in document, "in the words of the buttons"
    assert "<form" not in document


def test_expired_page_names_the_default_it_used() -> None:
    plain = _html.expired_page(record())
    assert "<h1>This question has expired</h1>" in plain and "2026-11-25 13:00:00 UTC" in plain
    assert "Default used" not in plain and "<form" not in plain
    with_default = _html.expired_page(
        record("str", default="eu"), {"status": "expired", "default_applied": True, "value": "eu"}
    )
    assert '<dt>Default used</dt><dd><span class="value">eu</span></dd>' in with_default


def test_a_refusal_page_leads_back_to_the_question_and_the_inbox() -> None:
    document = _html.refusal_page(
        "Answer not accepted", "You are not among the people asked to answer this.", "/form/q?token=a&b"
    )
    assert "<h1>Answer not accepted</h1>" in document and "not among the people asked" in document
    assert (
        '<p class="links"><a href="/form/q?token=a&amp;b">Back to the question</a>'
        '<a href="/inbox">Your questions</a></p>' in document
    )
    assert 'href="/form' not in _html.refusal_page("Cannot open this event", "x"), (
        "no way back where there is no question"
    )


# -- the index ------------------------------------------------------------------------------------


def test_index_separates_waiting_from_done_and_shows_no_tokens() -> None:
    rows = [
        (record(event_name="waits", token="TOKEN-A", prompt="p1\np2"), "pending", 3700.0),
        (record(event_name="answered_one", token="TOKEN-B", data_type="bool"), "completed", -1.0),
        (record(event_name="late_one", token="TOKEN-C"), "expired", -5.0),
    ]
    document = _html.index_page(rows)
    waiting, done = document.split("Answered or expired", 1)
    assert '<p class="caption">waits</p><div class="name">p1</div><p class="text">p2</p>' in waiting
    assert ">waiting<" in waiting and "1h 02m left" in waiting and "Created <time" in waiting
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
    ("value", "shown"),
    [
        (True, "Yes"),
        (False, "No"),
        ("  a b ", "  a b "),
        (2.5, "2.5"),
        (-7, "-7"),
        (["a", 2], "a, 2"),
        ([], "(none)"),
        ({"score": 4, "tags": ["x", "y"], "due": None, "ok": True}, "score: 4\ntags: x, y\ndue: —\nok: Yes"),
    ],
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
    command = _html.curl_command("http://h:1/submit/json", "r-1", "to'k\"en", spec_for(str).example())
    assert "\n" not in command
    argv = shlex.split(command)
    assert argv[:5] == ["curl", "-sS", "-X", "POST", "http://h:1/submit/json"]
    body = json.loads(argv[argv.index("-d") + 1])
    assert body == {"request_id": "r-1", "token": "to'k\"en", "value": "your answer"}
    for data_type, placeholder in ((int, 42), (float, 0.5), (bool, True)):
        argv = shlex.split(_html.curl_command("http://h:1/submit/json", "r-1", "t", spec_for(data_type).example()))
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
    assert '<p class="plain">Ship it?\n&lt;script&gt;' in section and "<script>" not in section
    assert f'href="{event.form_url}"' in section and "Open the form" in section
    assert f"<pre>{_html.esc(event.curl_command)}</pre>" in section
    assert "Answer:" not in section


def test_report_once_answered_has_the_value_and_source(event: hitl.Event[Any]) -> None:
    response = answer(False, via="form", client="10.1.2.3", identity="ann@example.com", comment="Not <today>")
    section = _html.report_section(event, response)
    assert ">answered<" in section and "Answer: <code>Rejected</code>" in section
    assert "via the web form by ann@example.com from 10.1.2.3" in section
    assert "Comment: Not &lt;today&gt;" in section
    assert f'href="{event.form_url}"' in section and "Open its page" in section and "Ship it?" in section
    assert f"<details><summary>Its curl command</summary><pre>{_html.esc(event.curl_command)}</pre>" in section


def test_report_after_timeout(event: hitl.Event[Any]) -> None:
    expired = _html.report_section(event, {"status": "expired"})
    assert ">expired<" in expired and "without an answer" in expired
    defaulted = _html.report_section(event, {"status": "expired", "default_applied": True, "value": True})
    assert ">expired · default used<" in defaulted and "<code>Approved</code>" in defaulted


# -- Markdown prompts and details -----------------------------------------------------------------


def test_prompt_markdown_keeps_raw_html_as_text_and_loads_nothing() -> None:
    prompt = (
        "# Deploy?\n**bold** _it_ `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "[docs](https://example.com/x) ![logo](https://evil.example/x.png) [js](javascript:alert(1)) " + XSS
    )
    document = _html.form_page(record("int", prompt=prompt, prompt_type="markdown"), 60)
    body = document.split("</style>", 1)[1]
    assert "<h1>Deploy?</h1>" in body and "<strong>bold</strong>" in body and "<code>code</code>" in body
    assert "<li>one</li>" in body and "<table>" in body and "<td>2</td>" in body
    assert '<a href="https://example.com/x" rel="noopener noreferrer" target="_blank">docs</a>' in body
    body = body.replace(f"<script>{_html._SCRIPT}</script>", "")
    assert "<img" not in body and "<script" not in body and "&lt;script&gt;" in body
    assert 'href="javascript:' not in body
    assert " logo " in body and "evil.example" not in body and "!logo" not in body, "an image is its alt text"


def test_prompt_is_escaped_text_when_markdown_it_is_missing() -> None:
    code = (
        "import sys; sys.modules['markdown_it'] = None\n"  # as if the package were not installed
        "from flyteplugins.hitl import _markdown\n"
        "print(_markdown.render('**a** <b>\\nline', 'markdown'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == '<p class="plain">**a** &lt;b&gt;\nline</p>\n', done.stderr


def test_details_are_a_two_column_table_with_numbers_formatted_and_json_indented() -> None:
    details = {"tool": "delete_rows", "<key>": "<v>", "rows": 1234567, "share": 0.125, "ok": True, "args": {"t": [1]}}
    table = _html.form_page(record("bool", details=details), 60).split("</style>", 1)[1]
    assert '<tr><th scope="row">tool</th><td>delete_rows</td></tr>' in table
    assert '<th scope="row">&lt;key&gt;</th><td>&lt;v&gt;</td>' in table
    assert "<td>1,234,567</td>" in table and "<td>0.125</td>" in table and "<td>true</td>" in table
    assert "<td>t: 1</td>" in table and "<td><pre>" not in table, "a dict reads as text, a key a line"
    teams = _html.form_page(record("bool", details={"teams": ["data-eng", "sre"]}), 60)
    assert "<td>data-eng, sre</td>" in teams, "a list reads as text"


# -- structured forms -----------------------------------------------------------------------------


class Size(enum.Enum):
    S = "small"
    M = "medium"


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
    count: Annotated[int, "How many boxes"]
    size: Size
    colour: Colour = Colour.BLUE
    extras: list[Literal["gift", "express"]] = dataclasses.field(default_factory=lambda: ["gift"])
    notes: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
    ship_on: datetime.date | None = None
    at: datetime.datetime = datetime.datetime(
        2026, 12, 1, 15, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    fragile: bool | None = None


def structured(tp: object, **extra: Any) -> dict[str, Any]:
    return record(**{**declare(tp), **extra})


def test_structured_form_has_one_labelled_input_per_field_with_defaults() -> None:
    document = _html.form_page(structured(Order), 60).split("</style>", 1)[1]
    names = re.findall(r'(?:<label for="f-|<fieldset class="field" id="f-)(\w+)', document)
    assert names == ["count", "size", "colour", "extras", "notes", "ship_on", "at", "fragile"], "declaration order"
    assert (
        '<label for="f-count">Count <span class="req">required</span> <span class="hint" id="h-f-count">'
        "(whole number)</span>" in document
    )
    colour = '<span class="optional">optional</span> <span class="hint" id="h-f-colour">(choose one; empty means BLUE)'
    assert colour in document
    assert "(choose any; none means an empty list)" in document and "(date; empty means no value)" in document
    assert '<p class="desc" id="d-f-count">How many boxes</p>' in document
    assert 'name="f.count" type="text" value="" inputmode="numeric"' in document and "required autofocus" in document
    assert '<input type="radio" name="f.size" value="small" required>S</label>' in document, "few choices: radios"
    assert '<select id="f-colour" name="f.colour"' in document, "many choices: a select"
    assert '<option value="blue" selected>BLUE</option>' in document
    # A factory default is not stored (it runs when the answer is built), so the form cannot show it.
    assert '<input type="checkbox" name="f.extras" value="gift">gift</label>' in document
    assert '<input type="checkbox" name="f.extras" value="express">express</label>' in document
    assert '<textarea id="f-notes" name="f.notes" rows="3"></textarea>' in document
    assert 'name="f.ship_on" type="date" value=""' in document
    assert 'name="f.at" type="datetime-local" value="2026-12-01T14:30:00" step="1" data-utc' in document, "in UTC"
    assert '<p class="utc" id="u-f-at" aria-live="polite"></p>' in document, "where the script shows the UTC sent"
    assert "date and time, UTC" in document
    assert '<input type="radio" name="f.fragile" value="" checked>No answer</label>' in document, "bool | None"
    assert "Type: Order" not in document and "Answer format" not in document
    programs = document.split("<summary>For programs</summary>", 1)[1]
    assert "<code>Order {count: int, size: Size" in programs


def test_a_fixed_list_default_is_prefilled() -> None:
    import pydantic

    class Picks(pydantic.BaseModel):
        extras: list[Literal["gift", "express"]] = ["gift"]
        notes: list[str] = ["a", "b"]

    document = _html.form_page(structured(Picks), 60).split("</style>", 1)[1]
    assert '<input type="checkbox" name="f.extras" value="gift" checked>gift</label>' in document
    assert '<input type="checkbox" name="f.extras" value="express">express</label>' in document
    assert '<textarea id="f-notes" name="f.notes" rows="3">a\nb</textarea>' in document


def test_structured_form_reshows_entered_values_and_each_fields_error() -> None:
    form = {
        "f.count": ["many"],
        "f.size": ["medium"],
        "f.extras": ["express"],
        "f.notes": ["x\ny"],
        "f.ship_on": ["2026-12-24"],
    }
    errors = {"count": "invalid value 'many': expected int", "ship_on": "<too late>"}
    document = _html.form_page(structured(Order), 60, "", "invalid answer: ...", form=form, field_errors=errors)
    assert 'name="f.count" type="text" value="many"' in document
    assert 'aria-describedby="d-f-count e-f-count" aria-invalid="true"' in document
    assert '<p class="field-error" id="e-f-count">Enter a whole number, such as 42.</p>' in document
    assert '<p class="field-error" id="e-f-ship_on">&lt;too late&gt;</p>' in document
    assert 'value="medium" required checked' not in document and 'value="medium" checked required>' in document
    assert 'value="express" checked>' in document and 'value="gift">' in document, "what was ticked, not the default"
    assert ">x\ny</textarea>" in document and 'value="2026-12-24"' in document
    assert (
        '<div class="alert" id="error" role="alert"><strong>Fix the 2 fields marked below.</strong></div>' in document
    )


def test_top_level_enum_list_and_date_forms() -> None:
    enum_form = _html.form_page(structured(Size), 60)
    assert '<button type="submit" name="value" value="small">S</button>' in enum_form
    many = _html.form_page(structured(Colour), 60)
    assert '<option value="cyan">CYAN</option>' in many
    checks = _html.form_page(structured(list[Size]), 60)
    assert '<input type="checkbox" name="value" value="medium">M</label>' in checks
    lines = _html.form_page(structured(list[int]), 60)
    assert (
        '<textarea id="value" name="value" rows="3" autofocus></textarea>' in lines
        and "one whole number per line" in lines
    )
    day = _html.form_page(structured(datetime.date), 60, "2026-01-02", "bad")
    assert 'name="value" type="date" value="2026-01-02"' in day


def test_report_shows_a_markdown_prompt_as_plain_text_and_details(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", "http://hitl.example:8080")
    event = hitl.new_event(
        "pick", data_type=Size, prompt="Pick a **size**", prompt_type="markdown", details={"stock": 1200}
    )
    section = _html.report_section(event, None)
    assert ">Size<" in section and '<p class="plain">Pick a size</p>' in section and "**" not in section
    assert '<table class="hitl-details"><tr><th scope="row">stock</th><td>1,200</td></tr></table>' in section
    assert json.loads(shlex.split(event.curl_command)[-1])["value"] == "small"


_MARKDOWN_TAGS = {"p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote", "hr", "a", "s"}
_MARKDOWN_TAGS |= {"h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
_MARKDOWN_ATTRS = {("a", "href"), ("a", "rel"), ("a", "target"), ("ol", "start"), ("code", "class")}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple[str, ...]]] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, tuple(name for name, _ in attrs)))
        self.hrefs += [value or "" for name, value in attrs if name == "href"]


_PIECES = [*"<>&\"'`*_#-|[]()!:=/ \n\tabcjJsSvVx1.", "javascript:", "<script>", "<img ", "|:-|", "](", "\n\n"]
MARKDOWNISH = st.lists(st.sampled_from(_PIECES), max_size=60).map("".join)


@settings(deadline=None, max_examples=300)
@given(MARKDOWNISH)
@example("| a | b |\n|:-|-:|\n| 1 | 2 |")
@example("[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) <javascript:alert(1)> ![i](data:image/png;base64,AA)")
@example("```js\n<script>\n```")
def test_rendered_markdown_holds_only_plain_elements_safe_links_and_no_style(text: str) -> None:
    parser = _Tags()
    parser.feed(_markdown.render(text, "markdown"))
    for tag, attrs in parser.seen:
        assert tag in _MARKDOWN_TAGS, tag
        assert all((tag, a) in _MARKDOWN_ATTRS for a in attrs), (tag, attrs)
    for href in parser.hrefs:
        assert not href.lower().lstrip().startswith(("javascript:", "vbscript:", "data:", "file:")), href


def test_a_validators_message_loses_pydantics_prefix_and_a_models_own_check_stays_in_the_banner() -> None:
    errors = {"count": "Value error, must be even", "": "Value error, the order is too large to ship"}
    document = _html.form_page(structured(Order), 60, "", "invalid answer: ...", field_errors=errors)
    assert '<p class="field-error" id="e-f-count">Must be even</p>' in document
    assert "<strong>Fix the field marked below.</strong> The order is too large to ship</div>" in document
    assert "Value error" not in document


@pytest.mark.parametrize(
    ("schema", "error", "message"),
    [
        ({"kind": "int", "ge": 1}, "'0' is less than the minimum 1", "Must be at least 1."),
        ({"kind": "float", "gt": 0}, "'0' must be greater than 0", "Must be more than 0."),
        ({"kind": "str", "max_length": 3}, "'abcd' is longer than the maximum length 3", "Takes at most 3 characters."),
        (
            {"kind": "list", "items": {"kind": "int"}, "min_length": 2},
            "[1] is shorter than the minimum length 2",
            "Needs at least 2 items.",
        ),
        (
            {"kind": "str", "pattern": "^v"},
            "'x' does not match the pattern '^v'",
            "Does not have the expected form (^v).",
        ),
        (
            {"kind": "float"},
            "invalid value '1,5': expected float (for example 0.5)",
            "Enter a number, such as 0.5 (with a point, not a comma).",
        ),
        ({"kind": "date"}, "invalid date 'x': expected YYYY-MM-DD (ISO 8601)", "Enter a date."),
        ({"kind": "choice", "choices": ["a"]}, "'b' is not one of 'a'", "Choose one of the options."),
        ({"kind": "str"}, "a value is required", "Required: enter a value."),
    ],
)
def test_a_refusal_reads_in_the_words_of_the_fields_hint(schema: dict[str, Any], error: str, message: str) -> None:
    assert _html.fix_message(schema, error) == message


@pytest.mark.parametrize(
    ("prompt", "prompt_type", "title", "expected"),
    [
        ("Deploy v3?\n  indented", "text", None, ("Deploy v3?", "  indented")),
        ("Deploy v3?\n\n\nAccuracy 94%", "text", None, ("Deploy v3?", "Accuracy 94%")),
        ("# Deploy **v3**?\nmore", "markdown", None, ("Deploy v3?", "more")),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "markdown", None, ("ev", "| a | b |\n|---|---|\n| 1 | 2 |")),
        ("- one\n- two", "markdown", None, ("ev", "- one\n- two")),
        ("word " * 50, "text", None, ("ev", "word " * 50)),
        ("Deploy v3?\nmore", "text", "Ship it?", ("Ship it?", "Deploy v3?\nmore")),
    ],
)
def test_the_heading_is_the_title_or_the_prompts_first_line(
    prompt: str, prompt_type: str, title: str | None, expected: tuple[str, str]
) -> None:
    request = {"prompt": prompt, "prompt_type": prompt_type, "event_name": "ev", "title": title}
    assert _html.heading(request) == expected


# -- who looks: each viewer through a real server, behind a proxy that names them -------------------

ALICE, BOB, CAROL, DAVE = (f"{n}@example.com" for n in ("alice", "bob", "carol", "dave"))
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def proxied(store: Store) -> Iterator[str]:
    """A server on port 0 that trusts ``X-Forwarded-Email`` (set by the test, as the proxy in front of
    it would, from loopback); its base URL."""
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop_server(httpd, thread)


def look(base: str, event: hitl.Event[Any], who: str | None = None, *, token: bool = False) -> Reply:
    headers = {"X-Forwarded-Email": who} if who else {}
    return request(base, "GET", f"/form/{event.request_id}" + (f"?token={event.token}" if token else ""), None, headers)


def vote(base: str, event: hitl.Event[Any], who: str | None, value: str, comment: str = "", token: str = "") -> Reply:
    fields = {"request_id": event.request_id, "value": value, "comment": comment} | ({"token": token} if token else {})
    headers = {"Content-Type": FORM} | ({"X-Forwarded-Email": who} if who else {})
    return request(base, "POST", "/submit", urlencode(fields).encode(), headers)


def release() -> hitl.Event[bool]:
    return hitl.Event.create(
        "release",
        bool,
        prompt="Release **v7**?",
        prompt_type="markdown",
        respondents=[ALICE, BOB, CAROL],
        requester=CAROL,
        quorum=2,
        timeout_seconds=60,
    )


def controls(page: str) -> list[str]:
    return re.findall(r"<(?:form|button|input|textarea|select)\b", page.split("</style>", 1)[1])


def test_a_token_holder_sees_the_form_as_before(root: Path, proxied: str) -> None:
    event = hitl.new_event("ship", data_type=bool, prompt="Ship it?", timeout_seconds=60)
    page = look(proxied, event, token=True)
    assert page.status == 200
    assert f'<input type="hidden" name="token" value="{event.token}">' in page.text
    assert "curl -sS -X POST" in page.text and event.token in page.text.split("<pre>", 1)[1]
    assert 'class="yes">Approve</button>' in page.text and 'id="standing"' not in page.text
    reply = vote(proxied, event, None, "false", token=event.token)
    assert reply.status == 200 and '<span class="value">Rejected</span>' in reply.text
    assert event.wait() is False


def test_a_respondent_without_the_token_answers_by_name_and_the_page_carries_no_token(root: Path, proxied: str) -> None:
    event = release()
    page = look(proxied, event, BOB)
    assert page.status == 200 and 'class="yes">Approve</button>' in page.text
    assert event.token not in page.text and 'name="token"' not in page.text and "curl" not in page.text
    assert "2 approvals needed; one rejection decides. No votes yet." in page.text, "the rule, before any vote"
    assert "<h1>Release <strong>v7</strong>?</h1>" in page.text and "<title>Release v7?</title>" in page.text
    with_token = look(proxied, event, BOB, token=True)
    assert f'name="token" value="{event.token}"' in with_token.text, "the token holder's page is unchanged"
    count = hitl.new_event("count", data_type=int, respondents=[BOB], timeout_seconds=60)
    again = vote(proxied, count, BOB, "many")
    assert again.status == 400 and "Fix the answer below." in again.text and 'name="value"' in again.text
    assert count.token not in again.text, "nor when shown again with an error"
    inbox = request(proxied, "GET", "/inbox", None, {"X-Forwarded-Email": BOB}).text
    assert '<a class="name" href="/form/' in inbox and "Release v7?" in inbox and "**" not in inbox
    assert '<li class="chip">bool</li>' not in inbox, "no type chips for approvers"


def test_the_requester_is_told_someone_else_must_approve(root: Path, proxied: str) -> None:
    event = release()
    for page in (look(proxied, event, CAROL), look(proxied, event, CAROL, token=True)):
        assert page.status == 200
        assert '<p class="standing" id="standing">You asked for this approval; someone else must approve it.</p>' in (
            page.text
        )
        assert controls(page.text) == [] and event.token not in page.text
        assert "2 approvals needed; one rejection decides." in page.text
    refused = vote(proxied, event, CAROL, "true")  # a form kept open from before, or typed by hand
    assert refused.status == 403 and "You asked for this approval" in refused.text
    assert f'<a href="/form/{event.request_id}">Back to the question</a><a href="/inbox">Your questions</a>' in (
        refused.text
    )
    assert "may not answer" not in refused.text and "request_id" not in refused.text, "no machine text"
    assert not (root / event.request_id / "response.json").exists()


def test_someone_not_asked_is_told_so(root: Path, proxied: str) -> None:
    event = release()
    assert look(proxied, event, DAVE).status == 403, "without the token, no page"
    page = look(proxied, event, DAVE, token=True)
    assert page.status == 200 and "You are not among the people asked to answer this." in page.text
    assert controls(page.text) == [] and event.token not in page.text
    assert ALICE not in page.text and BOB not in page.text, "who may answer is not shown"
    refused = vote(proxied, event, DAVE, "true", token=event.token)
    assert refused.status == 403 and "You are not among the people asked to answer this." in refused.text
    assert f'href="/form/{event.request_id}?token={event.token}">Back to the question</a>' in refused.text


def test_an_anonymous_visitor_is_asked_to_sign_in(root: Path, proxied: str) -> None:
    event = release()
    page = look(proxied, event, token=True)
    assert page.status == 200 and controls(page.text) == []
    assert "<strong>Sign in to answer.</strong>" in page.text and "sends your name as X-Forwarded-Email" in page.text
    refused = look(proxied, event)  # no token, no name: nothing to show but how to sign in
    assert refused.status == 401 and "<h1>Sign in to answer</h1>" in refused.text
    assert "X-Forwarded-Email" in refused.text and '<a href="/inbox">Your questions</a>' in refused.text
    assert "Release" not in refused.text


def test_a_server_without_a_sign_in_says_where_the_question_can_be_answered(root: Path, store: Store) -> None:
    event = release()
    httpd, thread = start_server(store, identity_header="")
    try:
        page = request(
            f"http://127.0.0.1:{httpd.server_address[1]}", "GET", f"/form/{event.request_id}?token={event.token}"
        )
    finally:
        stop_server(httpd, thread)
    assert "has no sign in set up (FLYTE_HITL_IDENTITY_HEADER)" in page.text and controls(page.text) == []
    assert f"<code>hitl submit {event.request_id} VALUE --as YOUR-NAME</code>" in page.text


def test_a_voter_sees_their_vote_then_every_vote_once_decided(root: Path, proxied: str) -> None:
    event = release()
    assert vote(proxied, event, ALICE, "true", comment="tests <green>").status == 200
    page = look(proxied, event, ALICE)
    standing = re.search(r'<p class="standing" id="standing">(.*?)</p>', page.text)
    assert standing is not None and standing.group(1).startswith("You approved at <time datetime=")
    assert standing.group(1).endswith("</time> · 1 of 2 approvals") and controls(page.text) == []
    assert "1 of 2 approvals: alice@example.com" in page.text
    again = vote(proxied, event, ALICE, "false")  # the form from before the vote, in another tab
    assert again.status == 409 and "<h1>Already voted</h1>" in again.text and "You approved at" in again.text
    assert f'<a href="/form/{event.request_id}">Back to the question</a>' in again.text
    assert vote(proxied, event, BOB, "true", comment="ok\nship it").status == 200
    assert event.wait() is True
    decided = look(proxied, event, ALICE).text
    votes = re.search(r'<ul class="votes">(.*?)</ul>', decided, re.S)
    assert votes is not None
    assert re.findall(r"<li><strong>([^<]*)</strong> (\w+) at <time", votes.group(1)) == [
        (ALICE, "approved"),
        (BOB, "approved"),
    ]
    assert '<span class="said">tests &lt;green&gt;</span>' in votes.group(1)
    assert '<span class="said">ok\nship it</span>' in votes.group(1)
    assert '<span class="value">Approved</span>' in decided


def test_a_withdrawn_question_says_so_on_its_page_and_the_index(root: Path, store: Store, proxied: str) -> None:
    event = hitl.new_event("ship", data_type=bool, prompt="Ship it?", timeout_seconds=60)
    withdrawn = {"request_id": event.request_id, "status": "expired", "withdrawn_at": "2026-12-07T18:03:00.000Z"}
    assert store.create_response(event.request_id, withdrawn)
    page = look(proxied, event, token=True).text
    assert "<h1>This question was withdrawn</h1>" in page and "stopped waiting at <time" in page
    assert "expired" not in page.split("</style>", 1)[1]
    index = request(proxied, "GET", "/").text
    assert '<li class="chip gone">withdrawn</li>' in index and ">waiting<" not in index and ">expired<" not in index


def test_a_vetoed_quorum_lists_each_vote_in_the_words_of_the_buttons() -> None:
    votes = [
        {"identity": ALICE, "value": True, "voted_at": "2026-11-25T12:01:00.000Z"},
        {"identity": BOB, "value": False, "voted_at": "2026-11-25T12:03:00.000Z", "comment": "Not <today>"},
    ]
    decision = answer(False, votes=votes, comment="Not <today>")
    document = _html.answered_page(record("bool", quorum=2), decision, just_now=False)
    assert '<span class="value">Rejected</span>' in document
    items = re.findall(r"<li><strong>([^<]*)</strong> (\w+) at <time", document)
    assert items == [(ALICE, "approved"), (BOB, "rejected")]
    assert document.count("Not &lt;today&gt;") == 1, "the decider's comment once, with their vote"
