"""`_markdown`: prompts as text or Markdown, their plain text, the size limit and the render cache."""

from __future__ import annotations

import pytest

from flyteplugins.hitl import InvalidEventError, _markdown


@pytest.mark.parametrize(
    "prompt",
    ["Run: rm -rf /data/*/old/* ?", "Rename __init__ to main?", "2*3*4", "# of retries?", "<b>x</b> &amp; [a](b)"],
)
def test_a_text_prompt_is_escaped_verbatim(prompt: str) -> None:
    rendered = _markdown.render(prompt)
    escaped = prompt.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert rendered == f'<p class="plain">{escaped}</p>'


@pytest.mark.parametrize(
    ("prompt", "plain"),
    [
        ("**Deploy** _v3_ to `prod`?", "Deploy v3 to prod?"),
        ("# Title\nline one\nline two\n\nnext paragraph", "Title\nline one\nline two\nnext paragraph"),
        ("- one\n- two\n\n1. three", "one\ntwo\nthree"),
        ("See [the docs](https://example.com/x) and <https://example.com/y>", "See the docs and https://example.com/y"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a\tb\n1\t2"),
        ("```sh\nrm -rf /tmp/x\n```", "rm -rf /tmp/x"),
        ("> quoted **bold**\n\n---\n\nafter", "quoted bold\n\nafter"),
        ("\\*not emphasis\\* &amp; <b>raw</b>", "*not emphasis* & <b>raw</b>"),
        ("![logo](https://example.com/x.png)", "logo"),
    ],
)
def test_the_plain_text_of_a_markdown_prompt_has_no_markdown_syntax(prompt: str, plain: str) -> None:
    assert _markdown.plain(prompt, "markdown") == plain


def test_a_text_prompt_is_its_own_plain_text() -> None:
    assert _markdown.plain("**2*3*4** # x", "text") == "**2*3*4** # x"
    assert _markdown.plain("**2*3*4** # x", None) == "**2*3*4** # x", "a record without prompt_type holds text"


def test_prompt_type_must_be_text_or_markdown() -> None:
    _markdown.check_prompt("q", "x", "text")
    _markdown.check_prompt("q", "x", "markdown")
    for bad in ("html", "Markdown", None, 1):
        with pytest.raises(InvalidEventError, match="prompt_type of event 'q' must be 'text' or 'markdown'"):
            _markdown.check_prompt("q", "x", bad)


def test_a_prompt_may_hold_64_kib_as_utf_8_and_no_more() -> None:
    _markdown.check_prompt("q", "é" * 32768, "text")  # 65,536 bytes
    with pytest.raises(InvalidEventError) as info:
        _markdown.check_prompt("q", "é" * 32768 + "x", "markdown")
    assert str(info.value) == "prompt of event 'q' is 65,537 bytes as UTF-8; the limit is 65,536 (64 KiB)"
    with pytest.raises(InvalidEventError, match="is 65,538 bytes"):
        _markdown.check_prompt("q", "\ud800" * 21846, "text")  # a lone surrogate is counted, not fatal


def test_a_markdown_prompt_is_rendered_once_for_many_page_views() -> None:
    _markdown._rendered.cache_clear()
    prompt = "Ship **v3**?\n\n" + "- item\n" * 500
    first = _markdown.render(prompt, "markdown")
    for _ in range(20):
        assert _markdown.render(prompt, "markdown") == first
    info = _markdown._rendered.cache_info()
    assert (info.misses, info.hits) == (1, 20)
    assert info.maxsize == _markdown._CACHED_PROMPTS, "the cache is bounded"


@pytest.mark.parametrize(
    ("line", "html"),
    [
        ("Deploy **model v7**?", "Deploy <strong>model v7</strong>?"),
        ("# Deploy `v7` to _prod_?", "Deploy <code>v7</code> to <em>prod</em>?"),
        (
            "See [notes](https://example.com/n) <b>x</b> & ![logo](https://evil.example/x.png)",
            'See <a href="https://example.com/n" rel="noopener noreferrer" target="_blank">notes</a> '
            "&lt;b&gt;x&lt;/b&gt; &amp; logo",
        ),
        ("[js](javascript:alert(1))", "[js](javascript:alert(1))"),
    ],
)
def test_a_markdown_line_keeps_its_inline_formatting_and_nothing_else(line: str, html: str) -> None:
    assert _markdown.inline(line) == html
