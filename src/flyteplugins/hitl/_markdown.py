"""Prompts and an event's details in safe HTML, and prompts as plain text.

A prompt is text (``prompt_type="text"``, the default), shown verbatim with its line breaks, or
Markdown (``prompt_type="markdown"``), rendered with markdown-it-py (CommonMark plus tables; a single
newline is a line break), which every flyte install has (flyte needs rich, rich needs it); it is
imported on the first prompt shown, and when it is missing the prompt is shown as escaped text. Raw
HTML in a prompt is shown as text, links open with ``rel="noopener noreferrer"``, and an image shows
its alt text (a page loads nothing, and the pages' Content-Security-Policy forbids it anyway). Summaries
(the index, the console, the report, notices) show a Markdown prompt as its plain text.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidEventError

#: The largest details mapping, as JSON.
MAX_DETAILS_BYTES = 64 * 1024
#: The largest prompt, in bytes as UTF-8.
MAX_PROMPT_BYTES = 64 * 1024
PROMPT_TYPES = ("text", "markdown")
# Rendered and plain-text Markdown prompts, kept so that a page view does not parse its prompt again.
# Keyed by the prompt's text: at most this many prompts of at most MAX_PROMPT_BYTES each.
_CACHED_PROMPTS = 64


def check_prompt(name: str, prompt: str, prompt_type: object) -> None:
    """Raise `InvalidEventError` unless `prompt_type` is "text" or "markdown" and `prompt` fits the size limit.

    Example:
        >>> check_prompt("approve", "Ship **v3**?", "markdown")
    """
    if prompt_type not in PROMPT_TYPES:
        raise InvalidEventError(f"prompt_type of event {name!r} must be 'text' or 'markdown', got {prompt_type!r}")
    size = len(prompt.encode("utf-8", "surrogatepass"))
    if size > MAX_PROMPT_BYTES:
        raise InvalidEventError(
            f"prompt of event {name!r} is {size:,} bytes as UTF-8; the limit is {MAX_PROMPT_BYTES:,} (64 KiB)"
        )


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable("table")
    # The default refuses javascript:, vbscript: and file: links but lets data:image/... through (for
    # images, which are off here): refuse every data: link too.
    allowed = md.validateLink
    md.validateLink = lambda url: allowed(url) and not url.strip().lower().startswith("data:")  # type: ignore[method-assign]

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer")
        tokens[idx].attrSet("target", "_blank")
        return str(renderer.renderToken(tokens, idx, options, env))

    def cell_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        # Column alignment comes as a style attribute, which the pages' policy forbids: drop it.
        if tokens[idx].attrs:
            tokens[idx].attrs.pop("style", None)
        return str(renderer.renderToken(tokens, idx, options, env))

    def image(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        # Nothing loads: ![alt](url) is its alt text.
        import html

        return html.escape(renderer.renderInlineAsText(tokens[idx].children or [], options, env), quote=True)

    md.add_render_rule("image", image)
    md.add_render_rule("link_open", link_open)
    md.add_render_rule("th_open", cell_open)
    md.add_render_rule("td_open", cell_open)
    return md


def render(text: str, prompt_type: object = "text") -> str:
    """A prompt as HTML: rendered Markdown for `prompt_type` "markdown", else (and without
    markdown-it-py) escaped text in a ``<p class="plain">``, which keeps its line breaks.

    Example:
        >>> render("**Ship** <script>x</script>?", "markdown")
        '<p><strong>Ship</strong> &lt;script&gt;x&lt;/script&gt;?</p>\\n'
        >>> render("2*3*4")
        '<p class="plain">2*3*4</p>'
    """
    if prompt_type == "markdown":
        try:
            return _rendered(text)
        except ImportError:
            pass
    import html  # for pages only: not imported with the package

    return f'<p class="plain">{html.escape(text, quote=True)}</p>'


def inline(text: str) -> str:
    """One line of Markdown as inline HTML, for a heading: its emphasis, code and links kept, a heading's
    ``#`` and any other block syntax dropped, everything else escaped (escaped text without markdown-it-py).

    Example:
        >>> inline("# Deploy **model v7** <b>?</b>")
        'Deploy <strong>model v7</strong> &lt;b&gt;?&lt;/b&gt;'
    """
    try:
        return _inline(text)
    except ImportError:
        import html

        return html.escape(text, quote=True)


def plain(text: str, prompt_type: object = "text") -> str:
    """A prompt as plain text: a Markdown prompt without its syntax (the words of its text, code and
    links, a line per paragraph, heading or table row); a text prompt as it is.

    Example:
        >>> plain("# Deploy?\\nRun **`make`** on [prod](https://example.com)", "markdown")
        'Deploy?\\nRun make on prod'
    """
    if prompt_type == "markdown":
        try:
            return _plain(text)
        except ImportError:
            pass
    return text


@functools.lru_cache(maxsize=_CACHED_PROMPTS)
def _rendered(text: str) -> str:
    return str(_parser().render(text))


@functools.lru_cache(maxsize=_CACHED_PROMPTS)
def _inline(text: str) -> str:
    md = _parser()
    found = next((t for t in md.parse(text) if t.type == "inline"), None)
    return str(md.renderer.renderInline(found.children or [], md.options, {})).strip() if found else ""


@functools.lru_cache(maxsize=_CACHED_PROMPTS)
def _plain(text: str) -> str:
    parts: list[str] = []
    for token in _parser().parse(text):
        if token.type == "inline":
            for child in token.children or ():
                if child.type in ("text", "code_inline", "image"):
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append("\n")
        elif token.type in ("fence", "code_block"):
            parts.append(token.content)
        elif token.type in ("paragraph_close", "heading_close", "tr_close", "hr"):
            parts.append("\n")
        elif token.type in ("th_open", "td_open") and parts and not parts[-1].endswith("\n"):
            parts.append("\t")  # between the cells of a row
    return "".join(parts).strip()


def check_details(details: object) -> dict[str, Any] | None:
    """`details` as a JSON-ready dict of str keys, or `InvalidEventError` naming what does not fit.

    Example:
        >>> check_details({"tool": "delete_rows", "rows": 1200})
        {'tool': 'delete_rows', 'rows': 1200}
    """
    if details is None:
        return None
    if not isinstance(details, Mapping):
        raise InvalidEventError(f"details must be a mapping of names to values, got {details!r}")
    from ._schema import encode

    checked: dict[str, Any] = {}
    for key, value in details.items():
        if not isinstance(key, str):
            raise InvalidEventError(f"details keys must be strings, got {key!r}")
        try:
            checked[key] = json.loads(json.dumps(encode(value), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise InvalidEventError(f"details[{key!r}] is not JSON data ({e}): {value!r}") from None
    size = len(json.dumps(checked))
    if size > MAX_DETAILS_BYTES:
        raise InvalidEventError(f"details are {size} bytes as JSON; the limit is {MAX_DETAILS_BYTES}")
    return checked


def shown(value: object) -> str:
    """A details value as text: numbers with thousands separators, a list as "a, b", a dict as one
    ``key: value`` line per key."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isfinite(value) and (value == 0 or 1e-4 <= abs(value) < 1e15):
            return f"{value:,.10f}".rstrip("0").rstrip(".")
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {shown(v)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


def details_table(details: Mapping[str, Any] | None, css_class: str = "details") -> str:
    """A two-column table of `details` (everything escaped), or "" when there are none."""
    if not details:
        return ""
    import html

    rows = []
    for key, value in details.items():
        cell = html.escape(shown(value), quote=True)
        rows.append(f'<tr><th scope="row">{html.escape(str(key), quote=True)}</th><td>{cell}</td></tr>')
    return f'<table class="{css_class}">{"".join(rows)}</table>'
