"""Text from others, shown as it is: invisible and reordering characters made visible.

A person must read the text that the code acts on. A bidirectional override makes
``invoice_2026_\\u202efdp.exe`` read as ``invoice_2026_exe.pdf``; zero-width and tag characters hide
text; a line separator starts a line where the text has none. Pages show each such character as a
marker (``<U+202E>``); terminals show it as an escape (``\\u202e``), as they do the C0 and C1 controls
(ESC, CR, ...) that would move the cursor or erase a line.
"""

from __future__ import annotations

import json
import re

# Unicode's format characters (category Cf, up to Unicode 15.1) and the line and paragraph separators.
# Left out: ZWNJ and ZWJ (U+200C, U+200D), which join or part letters in Persian and Indic scripts and
# in emoji sequences, and reorder nothing.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f\u2028\u2029"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
_TERMINAL_RE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
# json.dumps escapes the C0 controls in strings already; ensure_ascii=False leaves the others raw.
_JSON_RE = re.compile(f"[\\x7f-\\x9f{_INVISIBLE}]")
# In HTML: a textarea with its contents (what the person typed, edited and sent back as it is) or a tag
# (with its attribute values), both left as they are, or a character of text to mark. Escaped text and
# markdown-it's output hold "<" only where a tag starts, and ">" only where it ends.
_HTML_RE = re.compile(f"<textarea\\b.*?</textarea>|<[^>]*>|[{_INVISIBLE}]", re.S)


def printable(text: str) -> str:
    """`text` fit for one terminal line: controls and invisible characters shown as Python escapes.

    Example:
        >>> printable("ok\\x1b[2K\\nfake \\u202eline")
        'ok\\\\x1b[2K\\\\nfake \\\\u202eline'
    """
    return _TERMINAL_RE.sub(lambda m: ascii(m.group())[1:-1], text)


def printable_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with C1 controls and invisible characters
    as JSON escapes, which read back as the same value."""
    return _JSON_RE.sub(lambda m: json.dumps(m.group())[1:-1], text)


def _marker(char: str) -> str:
    return f"<U+{ord(char):04X}>"


def visible(text: str) -> str:
    """`text` with each invisible character replaced by its marker, for plain text (a page's title).

    Example:
        >>> visible("invoice_2026_\\u202efdp.exe")
        'invoice_2026_<U+202E>fdp.exe'
    """
    return INVISIBLE_RE.sub(lambda m: _marker(m.group()), text)


def mark_html(markup: str) -> str:
    """HTML `markup` with each invisible character of its text shown as a marker in a
    ``<span class="cf">``; tags and the contents of textareas are left as they are.

    Example:
        >>> mark_html("<p>invoice_2026_\\u202efdp.exe</p>")
        '<p>invoice_2026_<span class="cf">&lt;U+202E&gt;</span>fdp.exe</p>'
    """
    return _HTML_RE.sub(lambda m: m.group() if len(m.group()) > 1 else _span(m.group()), markup)


def _span(char: str) -> str:
    import html  # for pages only: not imported with the package

    return f'<span class="cf">{html.escape(_marker(char))}</span>'
