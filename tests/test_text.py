"""`_text`: which characters are invisible, and how terminals and pages show them."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from flyteplugins.hitl import _text

# Format characters that join or part letters (Persian, Indic scripts, emoji sequences) and stay as they are.
JOINERS = {"\u200c", "\u200d"}


def test_every_format_character_and_the_separators_are_invisible_but_the_joiners() -> None:
    """The list covers Unicode's format characters (category Cf) as this Python knows them."""
    format_chars = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}
    missed = sorted(f"U+{ord(c):04X}" for c in format_chars - JOINERS if not _text.INVISIBLE_RE.fullmatch(c))
    assert missed == []
    assert _text.INVISIBLE_RE.fullmatch("\u2028") and _text.INVISIBLE_RE.fullmatch("\u2029")
    assert not any(_text.INVISIBLE_RE.fullmatch(c) for c in JOINERS)
    assert not _text.INVISIBLE_RE.search("plain text, émojis 👩‍💻, فارسی‌ها and हिन्दी")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ok\x1b[2K\r\n\tx\x7f\x9b", "ok\\x1b[2K\\r\\n\\tx\\x7f\\x9b"),
        ("invoice_2026_\u202efdp.exe", "invoice_2026_\\u202efdp.exe"),
        ("\u200e\u200f\u2028\u2029\u2066\u2069", "\\u200e\\u200f\\u2028\\u2029\\u2066\\u2069"),
        ("pay\u200bpal\ufeff\u00ad", "pay\\u200bpal\\ufeff\\xad"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("plain é 👩‍💻", "plain é 👩‍💻"),
    ],
)
def test_printable_shows_controls_and_invisible_characters_as_python_escapes(text: str, shown: str) -> None:
    assert _text.printable(text) == shown


def test_printable_json_escapes_what_a_terminal_would_obey_and_reads_back_the_same() -> None:
    value = {"name": "a\x85\u202eb\u2028\U000e0041c\x1b", "plain": "é 👩‍💻"}
    text = _text.printable_json(json.dumps(value, ensure_ascii=False))
    assert _text.printable(text) == text, "nothing left for a terminal to obey"
    assert "é 👩‍💻" in text
    assert json.loads(text) == value


def test_visible_replaces_each_invisible_character_with_its_marker() -> None:
    assert _text.visible("invoice_2026_\u202efdp.exe") == "invoice_2026_<U+202E>fdp.exe"
    assert _text.visible("x\U000e0041") == "x<U+E0041>"


def test_mark_html_marks_text_only_never_inside_tags_or_textareas() -> None:
    markup = (
        '<p title="a\u202eb">x\u202ey</p><button value="v\u2066">v\u2066</button>'
        '<textarea name="comment">typed\u202e</textarea><p>\u2028</p>'
    )
    assert _text.mark_html(markup) == (
        '<p title="a\u202eb">x<span class="cf">&lt;U+202E&gt;</span>y</p>'
        '<button value="v\u2066">v<span class="cf">&lt;U+2066&gt;</span></button>'
        '<textarea name="comment">typed\u202e</textarea><p><span class="cf">&lt;U+2028&gt;</span></p>'
    )
