"""HTML pages and text snippets for people: the form, its outcome pages, the index and the Flyte report.

Templates are plain strings and every value passes `esc` on its way in; invisible and bidirectional
characters in a page's text are shown as markers (`_text.mark_html`). Pages load nothing: the one
inline stylesheet and the one inline script (local times, a datetime typed in the person's zone) are
allowed by their hashes in `csp()`, so the policy can forbid everything else (no external sources, no
other script, no framing). Without the script a page still works; its times are in UTC.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import re
import shlex
import string
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from . import _markdown, _policy, _text
from ._schema import describe, example, form_key, wire

# One stylesheet for every page. Light and dark follow the reader's `prefers-color-scheme`.
# Touch targets are at least 48px tall and text fields use 18px text (phones zoom into smaller ones).
_STYLE = """
:root{color-scheme:light dark;--bg:#f3f4f7;--card:#fff;--fg:#171a21;--muted:#5b6270;--line:#dcdfe6;--edge:#767d8c;
--field:#fff;--chip:#eceef3;--accent:#3346c4;--accent-fg:#fff;--accent-soft:#e8ebfb;--ok:#17753a;
--ok-soft:#e4f4e9;--err:#b3261e;--err-soft:#fcebea;--warn:#8a5300;--warn-soft:#fdf1dc;
--shadow:0 1px 2px rgba(16,24,40,.06),0 4px 16px rgba(16,24,40,.06)}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--card:#191c22;--fg:#e8eaef;--muted:#9ea5b2;
--line:#2d323b;--edge:#8a93a3;--field:#0b0d11;--chip:#252a33;--accent:#8fa0ff;--accent-fg:#0b1030;--accent-soft:#222a4d;
--ok:#6fd394;--ok-soft:#15301f;--err:#ff8f86;--err-soft:#3b1714;--warn:#f3c064;--warn-soft:#3a2b0c;
--shadow:none}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Noto Sans","Helvetica Neue",Arial,sans-serif}
main{max-width:35rem;margin:0 auto;padding:1rem 1rem 2.5rem}
.brand{display:flex;align-items:center;gap:.5rem;margin:.25rem 0 1rem;color:var(--muted);font-size:.875rem;
font-weight:600;letter-spacing:.02em}
.brand i{display:inline-block;width:.7rem;height:.7rem;border-radius:3px;background:var(--accent);
transform:rotate(45deg)}
.card{background:var(--card);border:1px solid var(--line);border-radius:16px;padding:1.25rem;
box-shadow:var(--shadow);margin:0 0 1rem}
h1,h2{line-height:1.25;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:0 0 .75rem}
h2{font-size:1.05rem;margin:0 0 .75rem;display:flex;align-items:center;gap:.5rem}
p{margin:0 0 .75rem}
.chips{display:flex;flex-wrap:wrap;gap:.4rem;margin:0 0 1rem;padding:0;list-style:none}
.chip{display:inline-block;padding:.15rem .6rem;border-radius:999px;background:var(--chip);color:var(--fg);
font-size:.8125rem;font-weight:600;white-space:nowrap}
.chip.time{background:var(--accent-soft);color:var(--accent)}
.chip.done{background:var(--ok-soft);color:var(--ok)}
.chip.gone{background:var(--warn-soft);color:var(--warn)}
.prompt{overflow-wrap:anywhere;font-size:1.0625rem;margin:0 0 1.25rem}
.prompt>:last-child{margin-bottom:0}.prompt p,.prompt ul,.prompt ol{margin:0 0 .6rem}
.prompt ul,.prompt ol{padding-left:1.4rem}.prompt h1,.prompt h2,.prompt h3{font-size:1.125rem;margin:0 0 .5rem}
.plain{white-space:pre-wrap}
.cf{direction:ltr;unicode-bidi:isolate;white-space:nowrap;font:600 .75em ui-monospace,SFMono-Regular,Menlo,Consolas,
monospace;color:var(--err);background:var(--err-soft);border-radius:4px;padding:0 .2em;margin:0 .1em}
.prompt code,.prompt pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:.9em;background:var(--chip);border-radius:5px}
.prompt code{padding:.05rem .3rem}.prompt pre{padding:.6rem .8rem;overflow-x:auto}.prompt pre code{padding:0}
.prompt a{color:var(--accent)}
.prompt table,.details{border-collapse:collapse;width:100%;margin:0 0 .75rem;font-size:.95rem}
.prompt th,.prompt td,.details th,.details td{border:1px solid var(--line);padding:.35rem .6rem;text-align:left;
vertical-align:top;overflow-wrap:anywhere}
.details{margin:-.5rem 0 1.25rem}.details th{width:35%;color:var(--muted);font-weight:600}
.details td{white-space:pre-wrap}
.field{margin:0 0 1.1rem}.req{color:var(--err);font-weight:600;font-size:.8125rem}
.desc{color:var(--muted);font-size:.9rem;margin:-.2rem 0 .4rem}
.field-error{color:var(--err);font-size:.9rem;margin:.35rem 0 0;overflow-wrap:anywhere}
.opts{display:flex;flex-wrap:wrap;gap:.25rem 1rem}
.opts label{display:flex;align-items:center;gap:.5rem;font-weight:400;min-height:2.75rem;margin:0}
input[type=radio],input[type=checkbox]{width:1.3rem;height:1.3rem;margin:0;accent-color:var(--accent)}
input[type=date],input[type=datetime-local]{display:block;width:100%;min-height:3rem;font:inherit;
font-size:1.125rem;padding:.6rem .8rem;color:var(--fg);background:var(--field);border:1.5px solid var(--edge);
border-radius:10px}
select[aria-invalid=true],fieldset[aria-invalid=true] .opts{border-color:var(--err)}
.caption{color:var(--muted);font-size:.875rem;margin:0 0 .25rem;overflow-wrap:anywhere}
.optional{color:var(--muted);font-weight:600;font-size:.8125rem}
.utc{color:var(--muted);font-size:.875rem;margin:.35rem 0 0}
.programs{margin:1.25rem 0 0;color:var(--muted);font-size:.875rem}
.programs summary{cursor:pointer;font-weight:600;padding:.6rem 0}.programs code{overflow-wrap:anywhere}
.programs pre{white-space:pre-wrap;word-break:break-all;background:var(--chip);color:var(--fg);padding:.6rem .8rem;
border-radius:8px;font:.8125rem ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:.25rem 0 .75rem}
.answer{border-collapse:collapse;width:100%;font-size:.95rem}
.answer th,.answer td{border-top:1px solid var(--line);padding:.3rem .5rem .3rem 0;text-align:left;vertical-align:top;
overflow-wrap:anywhere}.answer tr:first-child th,.answer tr:first-child td{border-top:0}
.answer th{color:var(--muted);font-weight:600;width:40%}.answer td{font-weight:600}
.tabs{display:flex;gap:.4rem;margin:0 0 1rem}.tabs button{flex:1 1 0;min-width:0;padding:.5rem .4rem;white-space:nowrap}
.tabs button[aria-current]{background:var(--accent);color:var(--accent-fg);border-color:var(--accent)}
label,legend{display:block;font-weight:650;margin:0 0 .4rem;padding:0}
.hint{font-weight:400;color:var(--muted);font-size:.875rem}
fieldset{border:0;margin:0;padding:0;min-width:0}
input[type=text],select,textarea{display:block;width:100%;min-height:3rem;font:inherit;font-size:1.125rem;
padding:.6rem .8rem;color:var(--fg);background:var(--field);border:1.5px solid var(--edge);border-radius:10px}
textarea{min-height:5rem;resize:vertical;font-size:1rem}
input[aria-invalid=true],textarea[aria-invalid=true]{border-color:var(--err)}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
input:focus-visible,select:focus-visible,textarea:focus-visible{outline-offset:0;border-color:var(--accent)}
[aria-invalid=true]:focus-visible{border-color:var(--err);outline-color:var(--err)}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin:1rem 0 0}
.actions.choices{margin-top:0}
button{flex:1 1 8rem;min-height:3rem;font:inherit;font-size:1.0625rem;font-weight:650;padding:.65rem 1.1rem;
border-radius:10px;border:1.5px solid var(--accent);background:var(--accent);color:var(--accent-fg);cursor:pointer;
overflow-wrap:anywhere}
button:hover{filter:brightness(1.08)}
button.second{background:var(--card);color:var(--fg);border-color:var(--edge)}
.yes{background:var(--ok);border-color:var(--ok);color:var(--card)}
.no{background:var(--err);border-color:var(--err);color:var(--card)}
.comment{margin:0 0 1.25rem}
.alert{margin:0 0 1rem;padding:.75rem 1rem;border-radius:10px;background:var(--err-soft);color:var(--err);
overflow-wrap:anywhere}
.alert strong{display:block}
.note{color:var(--muted);font-size:.875rem;margin:1rem 0 0;overflow-wrap:anywhere}
.standing{margin:1rem 0 0;padding:.75rem 1rem;border-radius:10px;background:var(--accent-soft);overflow-wrap:anywhere}
.standing strong{display:block}
.links{display:flex;flex-wrap:wrap;gap:.75rem;margin:1.25rem 0 0}
.links a{display:inline-flex;align-items:center;min-height:3rem;padding:0 1.1rem;border:1.5px solid var(--edge);
border-radius:10px;color:var(--fg);font-weight:650;text-decoration:none}
.votes{list-style:none;margin:0;padding:0;white-space:normal}.votes li{margin:0 0 .4rem}
.said{display:block;white-space:pre-wrap;color:var(--muted)}
.state{display:grid;place-items:center;width:3rem;height:3rem;border-radius:50%;font-size:1.5rem;font-weight:700;
margin:0 0 .75rem;background:var(--chip);color:var(--muted)}
.state.ok{background:var(--ok-soft);color:var(--ok)}
.state.bad{background:var(--err-soft);color:var(--err)}
.state.gone{background:var(--warn-soft);color:var(--warn)}
.lead{font-size:1.0625rem}
dl{margin:1rem 0 0;display:grid;grid-template-columns:minmax(5.5rem,auto) 1fr;gap:.5rem 1rem}
dt{color:var(--muted);font-size:.875rem;padding-top:.1rem}
dd{margin:0;min-width:0;overflow-wrap:anywhere;white-space:pre-wrap}
dd.question{white-space:normal}dd.question>:last-child{margin-bottom:0}dd.question p{margin:0 0 .5rem}
.value{display:inline-block;max-width:100%;font-size:1.05rem;font-weight:600;background:var(--chip);
padding:.05rem .45rem;border-radius:6px}
.count{font-size:.8125rem;background:var(--chip);color:var(--muted);border-radius:999px;padding:0 .55rem}
.events{list-style:none;margin:0;padding:0}
.events>li{padding:.85rem 0;border-top:1px solid var(--line)}
.events>li:first-child{border-top:0;padding-top:0}
.events>li:last-child{padding-bottom:0}
.events .name{font-weight:650;overflow-wrap:anywhere;margin:0 .4rem .25rem 0}
.events .text{white-space:pre-wrap;overflow-wrap:anywhere;margin:.25rem 0}
.events .chips{margin:.4rem 0 .3rem}
.when{color:var(--muted);font-size:.8125rem;margin:0}
.empty{color:var(--muted);margin:0}
@media (min-width:40rem){main{padding-top:2.5rem}.card{padding:1.75rem 2rem}h1{font-size:1.625rem}}
"""

_PAGE = string.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="same-origin">
<meta name="robots" content="noindex,nofollow">
<title>$title</title><style>$style</style></head>
<body><main><div class="brand"><i></i>Flyte · human input</div>
$body</main><script>$script</script></body></html>
"""
)

# The one script, allowed by its hash: every <time> also in the reader's zone, and a datetime field
# typed in that zone (its input loses its name to a hidden one that carries the UTC value posted).
_SCRIPT = """(function () {
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  function pad(n) { return String(n).padStart(2, "0"); }
  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d) || d.getTimezoneOffset() === 0) return;  // UTC is already the reader's time
    var s = document.createElement("span");
    s.className = "local";
    s.textContent = " (" + local(d) + " your time, " + zone + ")";
    t.after(s);
  });
  document.querySelectorAll("input[data-utc]").forEach(function (input) {
    var hidden = document.createElement("input"), out = document.getElementById("u-" + input.id);
    var hint = document.getElementById("h-" + input.id);
    hidden.type = "hidden";
    hidden.name = input.name;
    input.removeAttribute("name");
    input.form.appendChild(hidden);
    if (hint) hint.textContent = hint.textContent.replace("UTC", "your time, " + zone);
    if (input.value) {
      var shown = new Date(input.value + "Z");
      if (!isNaN(shown)) input.value = local(shown).replace(" ", "T");
    }
    function update() {
      var d = new Date(input.value);
      hidden.value = input.value && !isNaN(d) ? d.toISOString().slice(0, 19) + "+00:00" : input.value;
      if (out) out.textContent = hidden.value ? "Sent as " + hidden.value.slice(0, 16).replace("T", " ") +
        " UTC (you are in " + zone + ")" : "Your zone: " + zone;
    }
    input.addEventListener("input", update);
    input.addEventListener("change", update);
    input.form.addEventListener("submit", update);
    update();
  });
})();"""

_FORM = string.Template(
    """<article class="card">
<p class="caption">$name</p>
<h1>$heading</h1>
<ul class="chips"><li class="chip time">$left</li></ul>
$prompt$details$error$votes$answer
<p class="note">$footer</p>
$programs</article>"""
)

# The controls, for a viewer who may answer. The token is carried only for whoever came with it.
_CONTROLS = string.Template(
    """<form method="post" action="/submit" autocomplete="off">
<input type="hidden" name="request_id" value="$request_id">
$token$fields
</form>"""
)

_PROGRAMS = string.Template(
    """<details class="programs"><summary>For programs</summary>
<p>Answer with a JSON POST (replace the value):</p><pre>$curl</pre>
<p>The value's shape: <code>$shape</code></p></details>
"""
)

_OUTCOME = string.Template(
    """<article class="card">
<div class="state $tone" aria-hidden="true">$mark</div>
<h1>$heading</h1>
<p class="lead">$message</p>
$details</article>"""
)

# How a type is described to the person answering, and how its text field behaves on a phone.
_TYPE_HINTS = {"int": "a whole number, e.g. 42", "float": "a number, e.g. 0.5", "str": "any text"}
_INPUT_MODES = {"int": "numeric", "float": "decimal", "str": "text"}
_VIA = {
    "form": "the web form",
    "json": "the JSON API",
    "cli": "the command line",
    "python": "the Python API",
    "batch": "a bulk answer",
}
# Choices are shown as buttons while they fit a phone screen comfortably, else as a select.
_MAX_CHOICE_BUTTONS = 6
_MAX_CHOICE_BUTTON_TEXT = 40


def esc(value: object) -> str:
    """Escape any value for HTML text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


@functools.lru_cache(maxsize=1)
def csp() -> str:
    """The Content-Security-Policy for every page: no external sources, our one stylesheet and script.

    Nothing may load (``default-src 'none'``), the inline stylesheet and script by their hashes only, forms
    post back to this server only, and no other site may frame a page (clickjacking a yes/no answer).
    """
    style, script = (base64.b64encode(hashlib.sha256(x.encode()).digest()).decode() for x in (_STYLE, _SCRIPT))
    return (
        f"default-src 'none'; style-src 'sha256-{style}'; script-src 'sha256-{script}'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already escaped), its invisible characters shown as markers."""
    return _PAGE.substitute(title=esc(_text.visible(title)), style=_STYLE, script=_SCRIPT, body=_text.mark_html(body))


def time_left(seconds: float) -> str:
    """'1h 05m left', '12m 05s left', '45s left', or 'expired'."""
    if seconds <= 0:
        return "expired"
    # Rounded, so a fresh one-hour event reads "1h 00m left" rather than "59m 59s left".
    s = max(1, round(seconds))
    if s >= 3600:
        hours, minutes = divmod(round(s / 60), 60)
        return f"{hours}h {minutes:02d}m left"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s left"
    return f"{s}s left"


def when(timestamp: object) -> str:
    """A stored UTC timestamp as people read it: '2026-11-25 12:06 UTC' (the text itself if unparsable)."""
    try:
        moment = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return str(timestamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def when_html(timestamp: object) -> str:
    """`when(timestamp)` in a ``<time>`` element, which the pages' script follows with the reader's local time."""
    text = esc(when(timestamp))
    try:
        moment = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return f'<time datetime="{esc(moment.isoformat())}">{text}</time>'


#: The longest heading taken from a prompt's first line; a longer line stays in the prompt's text.
MAX_HEADING = 200
_MARKDOWN_BLOCK = re.compile(r"\s*([|>]|[*+-]\s|```|~~~|\d+[.)]\s)|\s{4}")


def heading(request: Mapping[str, Any]) -> tuple[str, str]:
    """The event's heading as plain text and the rest of its prompt (the source text, "" when nothing is left).

    The heading is the request's ``title`` when it has one (then the whole prompt follows), else the
    prompt's first line.

    Example:
        >>> heading({"prompt": "Deploy v3?\nAccuracy 94%"})
        ('Deploy v3?', 'Accuracy 94%')
    """
    title, rest, markdown = _heading(request)
    return (_markdown.plain(title, "markdown").strip() if markdown else title), rest


def heading_html(request: Mapping[str, Any]) -> tuple[str, str]:
    """`heading`, with the heading as HTML: a Markdown first line keeps its emphasis, code and links."""
    title, rest, markdown = _heading(request)
    return (_markdown.inline(title) if markdown else esc(title)), rest


def _heading(request: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(heading, rest of the prompt, whether the heading is a line of Markdown)."""
    prompt, kind = str(request.get("prompt") or ""), request.get("prompt_type")
    title = request.get("title")
    if title:
        return str(title), prompt, False
    first, _, rest = prompt.strip("\n").partition("\n")
    shown = _markdown.plain(first, kind).strip() if kind == "markdown" else first.strip()
    # A Markdown block that goes on past its first line (a table, a list, a quote, code) stays whole.
    if not shown or len(shown) > MAX_HEADING or (kind == "markdown" and _MARKDOWN_BLOCK.match(first)):
        return str(request.get("event_name", "")), prompt, False
    # Blank lines under the heading are not kept.
    return (first.strip() if kind == "markdown" else shown), rest.lstrip("\r\n"), kind == "markdown"


def shown_value(value: object) -> str:
    """An answer as people read it: bools as Yes/No, text as is, numbers as JSON writes them,
    lists comma-separated and a structured answer one ``field: value`` line per field."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(f"{k}: {'—' if v is None else shown_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(shown_value(v) for v in value) or "(none)"
    return json.dumps(value, ensure_ascii=False)


def source(response: Mapping[str, Any]) -> str:
    """How and from whom an answer came, from its audit record: 'the web form by ann@example.com from 10.0.0.7'."""
    via = str(response.get("via") or "")
    parts = [_VIA.get(via, via)] if via else []
    if response.get("identity"):
        parts.append(f"by {response['identity']}")
    if response.get("client"):
        parts.append(f"from {response['client']}")
    return " ".join(parts)


def one_line(text: str, limit: int = 160) -> str:
    """`text` with its whitespace (newlines included) collapsed, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _text_field(type_name: str, value: str, error: str) -> str:
    # type=text, not type=number: a number field silently drops what it cannot parse ("1,5", "12k"),
    # so the person would never see why; inputmode still brings up the numeric keypad on phones.
    described = ' aria-describedby="e-value" aria-invalid="true"' if error else ""
    message = f'<p class="field-error" id="e-value">{esc(error)}</p>' if error else ""
    return (
        f'<label for="value">Your answer <span class="hint">({esc(_TYPE_HINTS[type_name])})</span></label>'
        f'<input id="value" name="value" type="text" inputmode="{_INPUT_MODES[type_name]}" value="{esc(value)}" '
        f'required autofocus autocomplete="off" autocapitalize="off" spellcheck="false" enterkeyhint="send"'
        f"{described}>{message}" + _SUBMIT
    )


def _choice_fields(choices: Sequence[object], value: str, labels: Sequence[str] | None = None) -> str:
    # Buttons get no autofocus, like yes/no: Enter must not pick an answer by accident.
    shown = list(labels) if labels else [shown_value(c) for c in choices]
    if len(choices) <= _MAX_CHOICE_BUTTONS and all(len(s) <= _MAX_CHOICE_BUTTON_TEXT for s in shown):
        buttons = "".join(
            f'<button type="submit" name="value" value="{esc(wire(c))}">{esc(s)}</button>'
            for c, s in zip(choices, shown, strict=True)
        )
        return f'<fieldset><legend>Choose one</legend><div class="actions choices">{buttons}</div></fieldset>'
    options = "".join(
        f'<option value="{esc(wire(c))}"{" selected" if wire(c) == value else ""}>{esc(s)}</option>'
        for c, s in zip(choices, shown, strict=True)
    )
    return (
        '<label for="value">Your answer</label>'
        f'<select id="value" name="value" required autofocus><option value="">Choose one…</option>{options}</select>'
        + _SUBMIT
    )


def _bool_fields(request: Mapping[str, Any], comment: str, error: str) -> str:
    # No autofocus here: Enter on a focused button would answer a yes/no question by accident.
    required = bool(request.get("comment_required_on_reject"))
    hint = "(required to reject)" if required else "(optional, kept with the answer)"
    described = ' aria-describedby="e-comment" aria-invalid="true"' if error else ""
    message = f'<p class="field-error" id="e-comment">{esc(error)}</p>' if error else ""
    # The comment comes first: people write it, then press the button that sends both.
    return (
        f'<div class="comment"><label for="comment">Comment <span class="hint">{esc(hint)}</span></label>'
        f'<textarea id="comment" name="comment" rows="2" maxlength="4000"{described}>{esc(comment)}</textarea>'
        f"{message}</div>"
        '<fieldset><legend>Your answer</legend><div class="actions choices">'
        '<button type="submit" name="value" value="true" class="yes">Approve</button>'
        '<button type="submit" name="value" value="false" class="no">Reject</button></div></fieldset>'
    )


def form_page(
    request: Mapping[str, Any],
    seconds_left: float,
    value: str = "",
    error: str = "",
    *,
    comment: str = "",
    form: Mapping[str, Sequence[str]] | None = None,
    field_errors: Mapping[str, str] | None = None,
    notice: str = "",
    holder: bool = True,
    votes: Sequence[Mapping[str, Any]] | None = None,
    standing: str = "",
) -> str:
    """The answer form for a pending event, optionally re-shown with an error and what was typed before.
    `notice` is shown above the form (why the task refused the last answer).

    The heading is the question (`heading_html`), the event's name a caption above it; the answer's type
    is shown only under "For programs", with a curl command. A refusal is one short banner and, beside
    each field, its message in the words of the field's hint (`fix_message`). `form` (the posted fields, as
    ``parse_qs`` returns them) and `field_errors` re-show a structured answer with each field's value kept.

    Who looks decides the rest: the page carries the token only for a `holder` (who came with it; a
    respondent is known by name instead); `votes` (an approval with a quorum) are listed under the rule
    that decides; a viewer who may not answer gets their `standing` (`standing_html`) instead of the controls.

    Example:
        >>> form_page(request, 600, form={"f.score": ["9"]}, field_errors={"score": "is more than 5"})
    """
    type_name = str(request["data_type"])
    choices = request.get("choices")
    schema = request.get("schema")
    # Where the error is shown: beside the field it is about, else in the banner.
    beside, errors, several = "", {}, False
    banner = fix_message(schema, error) if error else ""
    if schema is not None:
        if schema["kind"] == "object" and field_errors:
            names = {f["name"] for f in schema["fields"]}
            errors = {n: fix_message(_field_schema(schema, n), why) for n, why in field_errors.items() if n in names}
            # What is about no one field (a model's own check of several) stays in the banner.
            banner = " ".join(fix_message(None, why) for n, why in field_errors.items() if n not in names)
        elif error and schema["kind"] not in ("object", "choice"):
            beside = banner = fix_message(schema, error)
        several = schema["kind"] == "object" and len(schema["fields"]) > 1
        fields = _structured_fields(schema, value, form, errors, beside)
    elif type_name == "bool":
        if request.get("comment_required_on_reject") and "comment is required" in error:
            beside = banner = "A comment is required to reject: say why."
        fields = _bool_fields(request, comment, beside)
    elif choices:
        fields = _choice_fields(choices, value)
    else:
        beside = banner = fix_message({"kind": type_name}, error) if error else ""
        fields = _text_field(type_name, value, beside)
    footer = f"Open until {when_html(request['expires_at'])}."
    default = request.get("default")
    if default is not None:
        # In the form's own words: "as if rejected", an Enum's label.
        then = f"with {_answer_text(schema, default)}"
        if _approval(request):
            then = f"as if {esc(_words(request, default).lower())}"
        footer += f" Without an answer by then, the task goes on {then}."
    alert = ""
    if error:
        what = "Fix the answer below."
        if len(errors) > 1:
            what = f"Fix the {len(errors)} fields marked below."
        elif several and errors:
            what = "Fix the field marked below."
        extra = "" if beside or banner == "" else f" {esc(banner)}"
        alert = f'<div class="alert" id="error" role="alert"><strong>{what}</strong>{extra}</div>'
    if notice:
        alert = f'<div class="alert" role="alert">{esc(notice)}</div>' + alert
    title, rest = heading_html(request)
    if standing:
        answer, programs = f'<p class="standing" id="standing">{standing}</p>', ""
    else:
        answer = _CONTROLS.substitute(
            request_id=esc(request["request_id"]),
            token=f'<input type="hidden" name="token" value="{esc(request["token"])}">\n' if holder else "",
            fields=fields,
        )
        # A respondent answers by name, through the sign-in: no command with the token for them.
        curl = curl_command(
            f"{request.get('endpoint') or ''}/submit/json", request["request_id"], request["token"], _example(request)
        )
        programs = _PROGRAMS.substitute(curl=esc(curl), shape=esc(_shape(request))) if holder else ""
    body = _FORM.substitute(
        name=esc(request["event_name"]),
        heading=title,
        left=esc(time_left(seconds_left)),
        prompt=f'<div class="prompt">{_markdown.render(rest, request.get("prompt_type"))}</div>'
        if rest.strip()
        else "",
        details=_markdown.details_table(request.get("details")),
        error=alert,
        votes=_votes_line(votes, _quorum(request)) if votes is not None else "",
        answer=answer,
        footer=footer,
        programs=programs,
    )
    return page(heading(request)[0], body)


_SUBMIT = '<div class="actions"><button type="submit">Submit answer</button></div>'


def _example(request: Mapping[str, Any]) -> object:
    """A value that answers `request`, for its curl command (the first choice when it has choices)."""
    if request.get("choices"):
        return request["choices"][0]
    if request.get("schema") is not None:
        return example(request["schema"])
    return {"int": 42, "float": 0.5, "bool": True}.get(str(request["data_type"]), "text")


def _shape(request: Mapping[str, Any]) -> str:
    """The answer's JSON shape as programmers read it: ``int``, ``"S" | "M"``, ``Review {score: int, …}``."""
    if request.get("schema") is not None:
        return describe(dict(request["schema"]))
    if request.get("choices"):
        return " | ".join(json.dumps(c, ensure_ascii=False) for c in request["choices"])
    return str(request["data_type"])


def _field_schema(schema: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((f["type"] for f in schema["fields"] if f["name"] == name), None)


# Our checks' refusals, and how a person reads them.
_LIMITS = (
    (re.compile(r"is less than the minimum (.+)$"), "Must be at least {}."),
    (re.compile(r"must be greater than (.+)$"), "Must be more than {}."),
    (re.compile(r"is more than the maximum (.+)$"), "Must be at most {}."),
    (re.compile(r"must be less than (.+)$"), "Must be less than {}."),
    (re.compile(r"is shorter than the minimum length (\d+)$"), "Needs at least {} {}."),
    (re.compile(r"is longer than the maximum length (\d+)$"), "Takes at most {} {}."),
    (re.compile(r"does not match the pattern (.+)$"), "Does not have the expected form ({})."),
)
_ENTER = {
    "int": "Enter a whole number, such as 42.",
    "float": "Enter a number, such as 0.5 (with a point, not a comma).",
    "bool": "Choose yes or no.",
    "date": "Enter a date.",
    "datetime": "Enter a date and time.",
    "str": "Enter some text.",
    "choice": "Choose one of the options.",
}


def fix_message(schema: Mapping[str, Any] | None, error: str) -> str:
    """A refused answer's (or field's) `error` in the words of its hint: "Must be at most 10.",
    "Enter a whole number, such as 42."; a message of the task's own (pydantic) without its prefix.

    Example:
        >>> fix_message({"kind": "int", "le": 10}, "'12' is more than the maximum 10")
        'Must be at most 10.'
    """
    kind = schema["kind"] if schema else ""
    for pattern, words in _LIMITS:
        match = pattern.search(error)
        if match:
            return words.format(match.group(1).strip("'\""), "items" if kind == "list" else "characters")
    if kind == "list" and ("required" in error or "at least one" in error or "may not be empty" in error):
        return (
            "Required: choose at least one."
            if schema and schema["items"]["kind"] == "choice"
            else ("Required: enter at least one line.")
        )
    if error in ("a value is required", "may not be empty (null)"):
        return "Required: choose one." if kind in ("choice", "bool") else "Required: enter a value."
    if "is not one of" in error:
        return _ENTER["choice"]
    if kind in _ENTER and kind != "str" and ("expected" in error or error.startswith("invalid")):
        return _ENTER[kind]
    # A check of the task's own type: pydantic's message, without its "Value error, " prefix.
    error = re.sub(r"^(Value error|Assertion failed), ", "", error)
    return error[:1].upper() + error[1:]


def _structured_fields(
    schema: Mapping[str, Any],
    value: str,
    form: Mapping[str, Sequence[str]] | None,
    field_errors: Mapping[str, str],
    error: str,
) -> str:
    """The inputs of an event with a schema: one per field of an object, else one named "value"."""
    kind = schema["kind"]
    if kind == "choice":
        return _choice_fields(schema["choices"], value, _labels(schema))
    if kind != "object":
        entered = list(form.get("value", [])) if form is not None else ([value] if value else [])
        spec = {"name": "value", "type": schema, "required": True}
        return _field(spec, "value", "Your answer", entered, error, autofocus=True) + _SUBMIT
    out = []
    # Focus goes to the first field to fix, else to the first field.
    names = [f["name"] for f in schema["fields"]]
    focus = next((n for n in names if n in field_errors), names[0])
    for f in schema["fields"]:
        key = form_key(f["name"])
        entered = list(form.get(key, [])) if form is not None else _default_inputs(f)
        label = str(f["name"]).replace("_", " ").capitalize()
        error = field_errors.get(f["name"], "")
        out.append(_field(f, key, label, entered, error, autofocus=f["name"] == focus))
    return "".join(out) + _SUBMIT


def _default_inputs(f: Mapping[str, Any]) -> list[str]:
    """A field's default as the texts its inputs show."""
    default = f.get("default")
    if default is None:
        return []
    kind = f["type"]["kind"]
    if kind == "list":
        items = [wire(v) for v in default]
        return items if f["type"]["items"]["kind"] == "choice" else ["\n".join(items)]
    if kind == "datetime":
        return [_utc_input(str(default))]
    if kind == "bool":
        return ["true" if default else "false"]
    return [wire(default)]


def _utc_input(text: str) -> str:
    """A datetime as a datetime-local field shows it: UTC without a zone (the page's script shows it
    in the reader's zone); text that is not a datetime as it is."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _hint(schema: Mapping[str, Any], required: bool = True) -> str:
    kind = schema["kind"]
    base = {
        "int": "whole number",
        "float": "number",
        "str": "text",
        "bool": "yes or no",
        "date": "date",
        "datetime": "date and time, UTC",
        "choice": "choose one",
    }.get(kind, "")
    if kind == "list":
        if schema["items"]["kind"] == "choice":
            base = "choose at least one" if required else "choose any"
        else:
            base = f"one {_hint(schema['items'])} per line" + (", at least one" if required else "")
    limits = [
        f"{word} {schema[key]}"
        for key, word in (
            ("ge", "at least"),
            ("gt", "more than"),
            ("le", "at most"),
            ("lt", "less than"),
            ("min_length", "min. length"),
            ("max_length", "max. length"),
        )
        if key in schema
    ]
    return ", ".join([base, *limits])


def _empty_means(f: Mapping[str, Any]) -> str:
    """What leaving an optional field empty answers."""
    kind = f["type"]["kind"]
    if kind == "list":
        return "none means an empty list"
    if f.get("nullable"):
        return "empty means no value"
    default = f.get("default")
    if kind == "str" and not default:
        return "empty means no text"
    if kind == "choice" and default in f["type"]["choices"]:
        return f"empty means {_labels(f['type'])[f['type']['choices'].index(default)]}"
    if default is not None and kind != "bool":
        return f"empty means {shown_value(default)}"
    return "may be left empty"


def _field(f: Mapping[str, Any], key: str, label: str, entered: list[str], error: str, autofocus: bool) -> str:
    """One labelled input (or group of options) with its description, hint and error."""
    schema = f["type"]
    kind = schema["kind"]
    ident = "value" if key == "value" else "f-" + key.removeprefix(form_key(""))
    required = bool(f.get("required")) and not f.get("nullable")
    if f.get("required"):
        mark = ' <span class="req">required</span>'
        hint = f' <span class="hint" id="h-{esc(ident)}">({esc(_hint(schema))})</span>'
    else:
        mark = ' <span class="optional">optional</span>'
        words = f"{_hint(schema, required=False)}; {_empty_means(f)}"
        hint = f' <span class="hint" id="h-{esc(ident)}">({esc(words)})</span>'
    desc = f'<p class="desc" id="d-{esc(ident)}">{esc(f["description"])}</p>' if f.get("description") else ""
    utc = f'<p class="utc" id="u-{esc(ident)}" aria-live="polite"></p>' if kind == "datetime" else ""
    described = " ".join(
        x for x in (f"d-{ident}" if desc else "", f"u-{ident}" if utc else "", f"e-{ident}" if error else "") if x
    )
    aria = (f' aria-describedby="{esc(described)}"' if described else "") + (' aria-invalid="true"' if error else "")
    message = f'<p class="field-error" id="e-{esc(ident)}">{esc(error)}</p>' if error else ""
    first = entered[0] if entered else ""
    focus = " autofocus" if autofocus else ""
    req = " required" if required else ""
    name = esc(key)
    options = _options(schema, f)
    if options is not None:  # radios or checkboxes, in a fieldset
        multiple = kind == "list"
        chosen = set(entered) if multiple else {first}
        kind_attr = "checkbox" if multiple else "radio"
        boxes = "".join(
            f'<label><input type="{kind_attr}" name="{name}" value="{esc(v)}"'
            f"{' checked' if v in chosen else ''}{req if not multiple else ''}>{esc(text)}</label>"
            for v, text in options
        )
        return (
            f'<fieldset class="field" id="{esc(ident)}"{aria}><legend>{esc(label)}{mark}{hint}</legend>'
            f'{desc}<div class="opts">{boxes}</div>{message}</fieldset>'
        )
    head = f'<div class="field"><label for="{esc(ident)}">{esc(label)}{mark}{hint}</label>{desc}'
    if kind == "choice":  # many choices: a select
        labels = _labels(schema)
        items = "".join(
            f'<option value="{esc(wire(c))}"{" selected" if wire(c) == first else ""}>{esc(t)}</option>'
            for c, t in zip(schema["choices"], labels, strict=True)
        )
        empty = "No answer" if f.get("nullable") else "Choose one…"
        return (
            f'{head}<select id="{esc(ident)}" name="{name}"{req}{focus}{aria}><option value="">{empty}</option>'
            f"{items}</select>{message}</div>"
        )
    if kind == "list":  # one entry per line
        return (
            f'{head}<textarea id="{esc(ident)}" name="{name}" rows="3"{focus}{aria}>{esc(first)}</textarea>'
            f"{message}</div>"
        )
    input_type = {"date": "date", "datetime": "datetime-local"}.get(kind, "text")
    extra = ' step="1" data-utc' if kind == "datetime" else ""
    if kind == "datetime":
        first = _utc_input(first)
    if input_type == "text":
        extra = f' inputmode="{_INPUT_MODES.get(kind, "text")}" autocapitalize="off" spellcheck="false"'
    return (
        f'{head}<input id="{esc(ident)}" name="{name}" type="{input_type}" value="{esc(first)}"'
        f'{extra} autocomplete="off"{req}{focus}{aria}>{utc}{message}</div>'
    )


def _options(schema: Mapping[str, Any], f: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(value, text) pairs when the field is shown as radios or checkboxes, else None."""
    kind = schema["kind"]
    if kind == "bool":
        pairs = [("true", "Yes"), ("false", "No")]
        return [*pairs, ("", "No answer")] if f.get("nullable") else pairs
    if kind == "list" and schema["items"]["kind"] == "choice":
        items = schema["items"]
        return list(zip([wire(c) for c in items["choices"]], _labels(items), strict=True))
    if kind == "choice":
        labels = _labels(schema)
        if len(labels) <= _MAX_CHOICE_BUTTONS and all(len(t) <= _MAX_CHOICE_BUTTON_TEXT for t in labels):
            pairs = list(zip([wire(c) for c in schema["choices"]], labels, strict=True))
            return [*pairs, ("", "No answer")] if f.get("nullable") else pairs
    return None


def _labels(schema: Mapping[str, Any]) -> list[str]:
    return [str(x) for x in schema.get("labels") or [shown_value(c) for c in schema["choices"]]]


def _outcome_page(title: str, heading: str, message: str, tone: str, mark: str, details: str = "") -> str:
    """A page with a state mark, a heading and a `message` (HTML, already escaped)."""
    body = _OUTCOME.substitute(tone=tone, mark=mark, heading=esc(heading), message=message, details=details)
    return page(title, body)


def refusal_page(heading: str, message: str, back: str = "") -> str:
    """A refused request's page: a heading, what is wrong in a person's words (HTML, already escaped), and
    a way back to the question (`back`, its form's address, when known) and to the person's questions."""
    links = (f'<a href="{esc(back)}">Back to the question</a>' if back else "") + '<a href="/inbox">Your questions</a>'
    return _outcome_page(heading, heading, message, "bad", "×", f'<p class="links">{links}</p>')


def _summary(rows: list[tuple[str, str]], request: Mapping[str, Any]) -> str:
    """A definition list of (label, HTML) rows, with the `request`'s question first."""
    title, rest = heading_html(request)
    question = f"<p><strong>{title}</strong></p>" + (
        _markdown.render(rest, request.get("prompt_type")) if rest.strip() else ""
    )
    items = [f'<dt>Question</dt><dd class="question">{question}</dd>']
    items += [f"<dt>{esc(label)}</dt><dd>{html_text}</dd>" for label, html_text in rows]
    return f"<dl>{''.join(items)}</dl>"


def answer_html(request: Mapping[str, Any], value: object) -> str:
    """An answer as the person chose it: a structured one as a small table of its fields, choices by
    the labels the form showed (an Enum's names), lists as "a, b", a yes/no as Approved or Rejected."""
    schema = request.get("schema")
    if schema is not None and schema["kind"] == "object" and isinstance(value, dict):
        rows = "".join(
            f'<tr><th scope="row">{esc(str(f["name"]).replace("_", " ").capitalize())}</th>'
            f"<td>{_answer_text(f['type'], value.get(f['name']))}</td></tr>"
            for f in schema["fields"]
        )
        return f'<table class="answer">{rows}</table>'
    if _approval(request) and isinstance(value, bool):
        text = esc(_words(request, value))
    else:
        text = _answer_text(schema, value)
    return f'<span class="value">{text}</span>'


def _quorum(request: Mapping[str, Any]) -> int:
    return _policy.quorum(dict(request))


def _approval(request: Mapping[str, Any]) -> bool:
    """Whether the event is a plain yes/no question, which the form asks with Approve and Reject."""
    return request.get("schema") is None and request.get("data_type") == "bool"


def _words(request: Mapping[str, Any], value: object) -> str:
    """A value as plain text in the words of its form: an approval's "Approved" or "Rejected"."""
    if _approval(request) and isinstance(value, bool):
        return "Approved" if value else "Rejected"
    return shown_value(value)


def _answer_text(schema: Mapping[str, Any] | None, value: object) -> str:
    """One value as HTML text, in the words of its form: choice labels, "Yes"/"No", local times."""
    kind = schema["kind"] if schema else None
    if value is None:
        return "—"
    if kind == "choice" and value in schema["choices"]:  # type: ignore[index]
        return esc(_labels(schema)[schema["choices"].index(value)])  # type: ignore[arg-type,index]
    if kind == "list" and isinstance(value, list):
        return ", ".join(_answer_text(schema["items"], v) for v in value) or "(none)"  # type: ignore[index]
    if kind == "bool" and isinstance(value, bool):
        return "Yes" if value else "No"
    if kind == "datetime":
        return when_html(value)
    return esc(shown_value(value))


def answered_page(request: Mapping[str, Any], response: Mapping[str, Any], *, just_now: bool) -> str:
    """The page for an event that has its answer (the success page when `just_now`)."""
    rows = [("Answer", answer_html(request, response.get("value")))]
    if response.get("votes"):  # a quorum's decision: every vote it counted, each with its comment
        rows.append(("Votes", _votes_list(request, response["votes"])))
    elif response.get("comment"):
        rows.append(("Comment", esc(response["comment"])))
    rows.append(("Answered", when_html(response.get("answered_at", "?"))))
    rows.append(("Event", esc(request["event_name"])))
    details = _summary(rows, request)
    if just_now:
        return _outcome_page(
            "Answer received",
            "Answer received",
            "Thank you. The waiting task goes on with your answer; you can close this page.",
            "ok",
            "✓",
            details,
        )
    return _outcome_page(
        "Already answered",
        "Already answered",
        "This event already has its answer; the first answer counts and nothing was changed.",
        "info",
        "i",
        details,
    )


def expired_page(request: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> str:
    """The page for an event whose timeout passed (with the default it used, when it had one), or whose
    task stopped waiting before it (the stored outcome says when it was withdrawn)."""
    rows = [("Event", esc(request["event_name"]))]
    if response is not None and response.get("withdrawn_at"):
        message = f"The task stopped waiting at {when_html(response['withdrawn_at'])}; it takes no answers."
        return _outcome_page("Withdrawn", "This question was withdrawn", message, "gone", "!", _summary(rows, request))
    message = f"This event stopped taking answers at {when_html(request['expires_at'])}."
    default = (response or {}).get("value") if (response or {}).get("default_applied") else request.get("default")
    if default is not None:
        rows.insert(0, ("Default used", answer_html(request, default)))
    return _outcome_page("Expired", "This question has expired", message, "gone", "!", _summary(rows, request))


def index_page(
    rows: Sequence[tuple[Mapping[str, Any], str, float]],
    *,
    waiting: int | None = None,
    done: int | None = None,
    page_number: int = 1,
    status: str | None = None,
    more: bool = False,
    approvals: Mapping[str, int] | None = None,
) -> str:
    """One page of the list of events: (request, status, seconds left) per row. No tokens, no event links.
    `approvals` gives the approvals so far of waiting events with a quorum, by request id ("1 of 2").

    A row's status is the stored one (``"pending"``, ``"completed"`` or ``"expired"``), or ``"withdrawn"``
    (its task stopped waiting); the page says *waiting*, *answered*, *expired* or *withdrawn*. `waiting`
    and `done` count all the events (by default, the rows given); `status` is the filter in force
    (``"pending"``, ``"done"`` or None for both) and `more` says whether a next page exists.

    Example:
        >>> "Nothing is waiting" in index_page([])
        True
    """
    open_rows = [row for row in rows if row[1] == "pending"]
    n_waiting = len(open_rows) if waiting is None else waiting
    n_done = len(rows) - len(open_rows) if done is None else done

    def items(selected: Sequence[tuple[Mapping[str, Any], str, float]], empty: str) -> str:
        if not selected:
            return f'<p class="empty">{empty}</p>'
        out = []
        for r, state, left in selected:
            if state == "pending":
                chips = f'<li class="chip">waiting</li><li class="chip time">{esc(time_left(left))}</li>'
                if approvals and r.get("request_id") in approvals:
                    got, needed = approvals[str(r["request_id"])], int(r.get("quorum", 1))
                    chips += f'<li class="chip">{got} of {needed} approvals</li>'
            elif state == "completed":
                chips = '<li class="chip done">answered</li>'
            elif state == "withdrawn":
                chips = '<li class="chip gone">withdrawn</li>'
            else:
                chips = '<li class="chip gone">expired</li>'
                if r.get("default") is not None:
                    chips += f'<li class="chip">default used: {esc(one_line(_words(r, r["default"]), 60))}</li>'
            title, rest = heading(r)
            text = one_line(_markdown.plain(rest, r.get("prompt_type")), 280) if rest.strip() else ""
            out.append(
                f'<li><p class="caption">{esc(r["event_name"])}</p><div class="name">{esc(one_line(title, 280))}</div>'
                + (f'<p class="text">{esc(text)}</p>' if text else "")
                + f'<ul class="chips">{chips}</ul>'
                f'<p class="when">Created {when_html(r.get("created_at", ""))}</p></li>'
            )
        return f'<ul class="events">{"".join(out)}</ul>'

    def section(title: str, count: int, selected: Sequence[tuple[Mapping[str, Any], str, float]], empty: str) -> str:
        heading = f'<h2>{title} <span class="count">{count}</span></h2>'
        return f'<section class="card">{heading}{items(selected, empty)}</section>'

    sections = []
    if status == "pending":
        sections.append(section("Waiting", n_waiting, rows, "Nothing is waiting."))
    elif status == "done":
        sections.append(section("Answered or expired", n_done, rows, "None yet."))
    else:
        if open_rows or page_number == 1:
            sections.append(section("Waiting", n_waiting, open_rows, "Nothing is waiting."))
        finished = [row for row in rows if row[1] != "pending"]
        if finished or not more:
            sections.append(section("Answered or expired", n_done, finished, "None yet."))
    # Navigation is by GET forms, not links: pages hold no href at all. The filter in force is marked
    # as the current one (and stays a button, so it can be pressed to reload).
    current = ' aria-current="page"'
    filters = "".join(
        f'<button type="submit" name="status" value="{key}" class="second"'
        f"{current if key == (status or '') else ''}>{text}</button>"
        for key, text in (("", "All"), ("pending", "Waiting"), ("done", "Done"))
    )
    keep = f'<input type="hidden" name="status" value="{esc(status)}">' if status else ""
    pages = []
    if page_number > 1:
        pages.append(f'<button type="submit" name="page" value="{page_number - 1}" class="second">← Newer</button>')
    if more:
        pages.append(f'<button type="submit" name="page" value="{page_number + 1}" class="second">Older →</button>')
    nav = f'<form method="get" action="/" class="tabs" aria-label="Show">{filters}</form>'
    nav_pages = f'<form method="get" action="/" class="actions">{keep}{"".join(pages)}</form>' if pages else ""
    body = (
        "<h1>Waiting for people</h1>"
        + nav
        + "".join(sections)
        + nav_pages
        + '<p class="note">To answer, open the link you were given: each link carries its event\'s secret token,\n'
        "so this page lists events without links.</p>"
    )
    return page("Human input", body)


def curl_command(api_url: str, request_id: str, token: str, example: object) -> str:
    """A one-line curl command answering an event; `example` (plain JSON, `TypeSpec.example`) is the
    value to replace."""
    body = json.dumps({"request_id": request_id, "token": token, "value": example})
    return f"curl -sS -X POST {shlex.quote(api_url)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


# The report is shown inside Flyte's report page, which has no policy of ours: inline styles are fine,
# and class names are prefixed so they cannot clash with other tabs.
_REPORT_STYLE = (
    "<style>.hitl{font:15px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,sans-serif;max-width:48rem}"
    ".hitl h2{font-size:1.25rem;margin:0 0 .5rem}.hitl-chip{display:inline-block;padding:.1rem .55rem;"
    "border-radius:999px;background:#eceef3;font-size:.8rem;font-weight:600;margin-right:.35rem}"
    ".hitl-wait{background:#e8ebfb;color:#3346c4}.hitl-ok{background:#e4f4e9;color:#17753a}"
    ".hitl-gone{background:#fdf1dc;color:#8a5300}.hitl-prompt{border-left:4px solid #3346c4;"
    "padding:.5rem .9rem;background:#f3f4f7;margin:.75rem 0}.hitl-prompt>:last-child{margin-bottom:0}"
    ".hitl .plain{white-space:pre-wrap}.hitl .cf{direction:ltr;unicode-bidi:isolate;white-space:nowrap;"
    "font:600 .75em ui-monospace,monospace;color:#b3261e;background:#fcebea;border-radius:4px;padding:0 .2em}"
    ".hitl-details{border-collapse:collapse;margin:.5rem 0}"
    ".hitl-details th,.hitl-details td{border:1px solid #dcdfe6;padding:.25rem .5rem;"
    "text-align:left;vertical-align:top}.hitl-details pre{margin:0;background:none;color:inherit;padding:0}"
    ".hitl-answer{font-size:1.1rem}"
    ".hitl-answer code{background:#eceef3;padding:.1rem .4rem;border-radius:5px;font-weight:600}"
    ".hitl-button{display:inline-block;padding:.5rem 1rem;border-radius:8px;background:#3346c4;color:#fff;"
    "text-decoration:none;font-weight:600}.hitl pre{white-space:pre-wrap;word-break:break-all;background:#171a21;"
    "color:#e8eaef;padding:.75rem 1rem;border-radius:8px;font-size:.85rem}.hitl-meta{color:#5b6270;font-size:.85rem}"
    ".hitl summary{cursor:pointer;color:#5b6270;margin:.5rem 0}"
    "</style>"
)


def report_section(event: Any, response: Mapping[str, Any] | None) -> str:
    """The event's section in a Flyte report: prompt (as plain text), link, curl and, once answered, the value."""
    request = getattr(event, "_request", {})
    type_name = esc(request.get("data_type") or getattr(event.data_type, "__name__", event.data_type))
    if response is None:
        chip = '<span class="hitl-chip hitl-wait">waiting</span>'
        state = f"<p>Waiting for an answer until {esc(when(event.expires_at))}.</p>"
    elif response.get("status") == "completed":
        chip = '<span class="hitl-chip hitl-ok">answered</span>'
        by = source(response)
        state = (
            f'<p class="hitl-answer">Answer: <code>{esc(_words(request, response.get("value")))}</code></p>'
            f'<p class="hitl-meta">Answered at {esc(when(response.get("answered_at", "")))}'
            + (f" via {esc(by)}" if by else "")
            + ".</p>"
            + (f"<p>Comment: {esc(response['comment'])}</p>" if response.get("comment") else "")
        )
    elif response.get("default_applied"):
        chip = '<span class="hitl-chip hitl-gone">expired · default used</span>'
        state = (
            '<p class="hitl-answer">No answer in time; the default was used: '
            f"<code>{esc(_words(request, response.get('value')))}</code></p>"
        )
    else:
        chip = '<span class="hitl-chip hitl-gone">expired</span>'
        state = "<p><b>Expired</b> without an answer.</p>"
    link = f'<a class="hitl-button" href="{esc(event.form_url)}" target="_blank" rel="noopener noreferrer">'
    curl = f"<pre>{esc(event.curl_command)}</pre>"
    if response is None:
        how = f"<p>{link}Open the form</a></p><p>Or answer from a terminal:</p>{curl}"
    else:  # the outcome is settled: the link shows it, and the command is kept for the record only
        how = f"<p>{link}Open its page</a></p><details><summary>Its curl command</summary>{curl}</details>"
    prompt = _markdown.plain(event.prompt, request.get("prompt_type"))
    return _REPORT_STYLE + _text.mark_html(
        f'<div class="hitl"><h2>{esc(event.name)}</h2>'
        f'<p><span class="hitl-chip">{type_name}</span>{chip}</p>'
        f'<div class="hitl-prompt">{_markdown.render(prompt)}</div>'
        f"{_markdown.details_table(request.get('details'), 'hitl-details')}{state}{how}"
        f'<p class="hitl-meta">Request id {esc(event.request_id)}</p></div>'
    )


def _tally(votes: Sequence[Mapping[str, Any]], quorum: int) -> str:
    """ "1 of 2 approvals: alice@example.com" (who approved so far), and any rejection."""
    approvals = [str(v.get("identity")) for v in votes if v.get("value") is True]
    line = f"{len(approvals)} of {quorum} approvals" + (f": {', '.join(approvals)}" if approvals else "")
    rejections = [str(v.get("identity")) for v in votes if v.get("value") is False]
    return line + (f"; rejected by {', '.join(rejections)}" if rejections else "")


def _votes_line(votes: Sequence[Mapping[str, Any]], quorum: int) -> str:
    """The rule that decides an approval with a quorum, stated before anyone votes, and the votes so far."""
    so_far = _tally(votes, quorum) if votes else "No votes yet"
    return f'<p class="note" id="votes">{quorum} approvals needed; one rejection decides. {esc(so_far)}.</p>'


def _votes_list(request: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> str:
    """Every vote of a decided quorum: who, what, when and their comment."""
    items = "".join(
        f"<li><strong>{esc(v.get('identity', ''))}</strong> {esc(_words(request, v.get('value')).lower())} at "
        f"{when_html(v.get('voted_at', ''))}"
        + (f'<span class="said">{esc(v["comment"])}</span>' if v.get("comment") else "")
        + "</li>"
        for v in votes
    )
    return f'<ul class="votes">{items}</ul>'


def _your_vote(vote: Mapping[str, Any], votes: Sequence[Mapping[str, Any]], quorum: int) -> str:
    """ "You approved at 18:03 · 1 of 2 approvals" (HTML)."""
    approvals = sum(v.get("value") is True for v in votes)
    said = "approved" if vote.get("value") is True else "rejected"
    return f"You {said} at {when_html(vote.get('voted_at', ''))} · {approvals} of {quorum} approvals"


def standing_html(
    standing: str,
    request: Mapping[str, Any],
    *,
    vote: Mapping[str, Any] | None = None,
    votes: Sequence[Mapping[str, Any]] = (),
    sign_in: str | None = None,
) -> str:
    """What a viewer who may not answer reads in place of a form's controls, by their `standing`:
    ``"sign-in"`` (unknown: `sign_in` is the header the server learns people's names from, if any),
    ``"requester"``, ``"not-asked"``, or ``"voted"`` (their `vote`, among `votes`).

    Example:
        >>> standing_html("not-asked", {"data_type": "bool"})
        'You are not among the people asked to answer this.'
    """
    if standing == "voted" and vote is not None:
        return _your_vote(vote, votes, _quorum(request))
    if standing == "requester":
        if _approval(request):
            return "You asked for this approval; someone else must approve it."
        return "You asked this question; someone else must answer it."
    if standing == "sign-in":
        return sign_in_html(sign_in, str(request.get("request_id", "")))
    return "You are not among the people asked to answer this."


def sign_in_html(header: str | None, request_id: str = "") -> str:
    """How to be known to this server: through the sign-in in front of it, when it trusts one's `header`."""
    if header:
        return (
            "<strong>Sign in to answer.</strong> This question takes answers only from people this server knows, "
            "and it knows you only when you sign in through the proxy in front of it (which sends your name as "
            f"{esc(header)}). Open this page through that proxy."
        )
    command = f"hitl submit {request_id or 'REQUEST_ID'} VALUE --as YOUR-NAME"
    return (
        "<strong>Sign in to answer.</strong> This question takes answers only from people this server knows, "
        "and this server has no sign in set up (FLYTE_HITL_IDENTITY_HEADER), so it cannot tell who you are. Someone "
        f"with access to its storage can answer from a terminal: <code>{esc(command)}</code>."
    )


def voted_page(request: Mapping[str, Any], vote: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> str:
    """The page after a vote that did not decide the event yet."""
    quorum = _quorum(request)
    rows = [("Your vote", answer_html(request, vote.get("value"))), ("Event", esc(request["event_name"]))]
    details = _summary(rows, request) + f'<p class="note" id="votes">{_your_vote(vote, votes, quorum)}</p>'
    message = f"Your vote is recorded. {quorum} approvals are needed, and one rejection decides."
    return _outcome_page("Vote received", "Vote received", message, "ok", "✓", details)


# j/k move between the questions of the inbox, Enter opens the one in focus (a link's own behaviour).
_INBOX_SCRIPT = (
    "const items=[...document.querySelectorAll('#inbox a')];let at=0;"
    "function go(n){if(!items.length)return;at=Math.max(0,Math.min(items.length-1,n));items[at].focus();}"
    "document.addEventListener('keydown',e=>{if(e.altKey||e.ctrlKey||e.metaKey)return;"
    "if(e.key==='j'){go(at+1);e.preventDefault();}else if(e.key==='k'){go(at-1);e.preventDefault();}});go(0);"
)


@functools.lru_cache(maxsize=1)
def inbox_csp() -> str:
    """`csp`, with the inbox's own script allowed by its hash beside the pages' one (in the same
    directive: a browser takes only the first ``script-src`` of a policy)."""
    digest = base64.b64encode(hashlib.sha256(_INBOX_SCRIPT.encode()).digest()).decode()
    return csp().replace("script-src ", f"script-src 'sha256-{digest}' ", 1)


def inbox_page(rows: Sequence[tuple[Mapping[str, Any], float, Sequence[Mapping[str, Any]] | None]], viewer: str) -> str:
    """The questions waiting for `viewer`: (request, seconds left, votes or None) per row, soonest first.
    Without a viewer, how to sign in, and nothing listed.

    Example:
        >>> "sign in" in inbox_page([], "")
        True
    """
    if not viewer:
        body = (
            '<section class="card"><h1>Your questions</h1><p class="lead">This server does not know who you are, '
            "so it lists nothing. Open it through the sign-in proxy in front of it (for example "
            "oauth2-proxy), which tells it who you are; a direct link from a message still opens its own question.</p>"
            "</section>"
        )
        return page("Your questions · human input", body)
    items = []
    for request, left, votes in rows:
        tally = f'<p class="note">{esc(_tally(votes, _quorum(request)))}</p>' if votes is not None else ""
        text = one_line(_markdown.plain(str(request["prompt"]), request.get("prompt_type")), 280)
        items.append(
            f'<li><a class="name" href="/form/{esc(request["request_id"])}">{esc(request["event_name"])}</a>'
            f'<p class="text">{esc(text)}</p>'
            f'<ul class="chips"><li class="chip time">{esc(time_left(left))}</li></ul>{tally}</li>'
        )
    listed = (
        f'<ul class="events" id="inbox">{"".join(items)}</ul>'
        if items
        else '<p class="empty">Nothing is waiting for you.</p>'
    )
    body = (
        f'<section class="card"><h1>Your questions <span class="count">{len(rows)}</span></h1>'
        f'<p class="note">Signed in as {esc(viewer)}. Soonest deadline first; j and k move, Enter opens.</p>'
        f"{listed}</section><script>{_INBOX_SCRIPT}</script>"
    )
    return page("Your questions · human input", body)


def with_more(document: str, waiting: int) -> str:
    """`document` (the page after an answer) with how many more questions wait, linking to the inbox."""
    text = f"{waiting} more waiting for you" if waiting else "Nothing more is waiting for you"
    line = f'<p class="note" id="more"><a href="/inbox">{esc(text)}</a></p>'
    head, sep, tail = document.rpartition("</article>")
    return f"{head}{line}{sep}{tail}" if sep else document
