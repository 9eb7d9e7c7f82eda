"""HTML pages and text snippets. Templates are plain strings; every value passes `esc` on its way in."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import shlex
import string
from collections.abc import Mapping
from typing import Any

_STYLE = """
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#f5f5f7;--card:#fff;--muted:#6e6e73;--accent:#3b5bdb;
--ok:#2b8a3e;--err:#c92a2a;--line:#d2d2d7}
@media (prefers-color-scheme:dark){:root{--fg:#f5f5f7;--bg:#1c1c1e;--card:#2c2c2e;--muted:#a1a1a6;
--accent:#748ffc;--ok:#69db7c;--err:#ff8787;--line:#48484a}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:36rem;margin:0 auto;padding:1.25rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1.25rem;margin:1rem 0}
h1{font-size:1.35rem;margin:0 0 .5rem}
.meta{color:var(--muted);font-size:.9rem;margin:0 0 1rem}
.prompt{white-space:pre-wrap;font-size:1.1rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin-bottom:.35rem}
input[type=text],input[type=number]{width:100%;font-size:1.1rem;padding:.7rem;border:1px solid var(--line);
border-radius:8px;background:var(--bg);color:var(--fg)}
.row{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1rem}
button{flex:1;min-width:8rem;font-size:1.05rem;padding:.75rem 1rem;border:0;border-radius:8px;
background:var(--accent);color:#fff;cursor:pointer}
button.no{background:var(--muted)}
.error{color:var(--err);font-weight:600}
.ok{color:var(--ok);font-weight:600}
.value{font-family:ui-monospace,monospace;font-size:1.1rem;word-break:break-all}
table{width:100%;border-collapse:collapse;font-size:.95rem}
td,th{text-align:left;padding:.4rem;border-bottom:1px solid var(--line);vertical-align:top}
"""

_PAGE = string.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>$title</title><style>$style</style></head>
<body><main>$body</main></body></html>
"""
)

_FORM = string.Template(
    """<div class="card"><h1>$name</h1>
<p class="meta">Type: $type · $left</p>
<p class="prompt">$prompt</p>
$error<form method="post" action="/submit">
<input type="hidden" name="request_id" value="$request_id">
<input type="hidden" name="token" value="$token">
$input
</form></div>"""
)

_SIMPLE = string.Template('<div class="card"><h1>$heading</h1><p class="$cls">$message</p>$details</div>')

_INDEX = string.Template(
    """<h1>Human input</h1><div class="card"><h2>Waiting ($n_pending)</h2>$pending</div>
<div class="card"><h2>Done ($n_done)</h2>$done</div>
<p class="meta">Open an event from the link you were given: links carry the event's token
and are not listed here.</p>"""
)


def esc(value: object) -> str:
    """Escape any value for HTML text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


@functools.lru_cache(maxsize=1)
def csp() -> str:
    """The Content-Security-Policy for every page: no scripts, no external sources, our one stylesheet."""
    digest = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already escaped)."""
    return _PAGE.substitute(title=esc(title), style=_STYLE, body=body)


def time_left(seconds: float) -> str:
    """'12m 05s left', or 'expired'."""
    if seconds <= 0:
        return "expired"
    s = int(seconds)
    hours, rest = divmod(s, 3600)
    return (f"{hours}h " if hours else "") + f"{rest // 60}m {rest % 60:02d}s left"


def _input(type_name: str, value: str) -> str:
    if type_name == "bool":
        return (
            '<p class="meta">Choose one:</p><div class="row">'
            '<button type="submit" name="value" value="true" autofocus>Yes (true)</button>'
            '<button type="submit" name="value" value="false" class="no">No (false)</button></div>'
        )
    attrs = {
        "int": 'type="number" step="1" inputmode="numeric"',
        "float": 'type="number" step="any" inputmode="decimal"',
        "str": 'type="text"',
    }[type_name]
    return (
        f'<label for="value">Your answer ({esc(type_name)})</label>'
        f'<input id="value" name="value" {attrs} value="{esc(value)}" required autofocus autocomplete="off">'
        '<div class="row"><button type="submit">Submit</button></div>'
    )


def form_page(request: Mapping[str, Any], seconds_left: float, value: str = "", error: str = "") -> str:
    """The answer form for a pending event, optionally with an error and the value typed before."""
    body = _FORM.substitute(
        name=esc(request["event_name"]),
        type=esc(request["data_type"]),
        left=esc(time_left(seconds_left)),
        prompt=esc(request["prompt"]),
        error=f'<p class="error" role="alert">{esc(error)}</p>' if error else "",
        request_id=esc(request["request_id"]),
        token=esc(request["token"]),
        input=_input(request["data_type"], value),
    )
    return page(f"{request['event_name']} · human input", body)


def message_page(heading: str, message: str, *, ok: bool = False, details: str = "") -> str:
    """A simple page: a heading, one message line, and optional escaped detail HTML."""
    body = _SIMPLE.substitute(heading=esc(heading), cls="ok" if ok else "error", message=esc(message), details=details)
    return page(heading, body)


def answered_page(request: Mapping[str, Any], response: Mapping[str, Any], *, just_now: bool) -> str:
    """The page for an event that has its answer (the success page when `just_now`)."""
    value = json.dumps(response.get("value"), ensure_ascii=False)
    details = (
        f'<p class="meta">{esc(request["event_name"])}: {esc(request["prompt"])}</p>'
        f'<p>Answer: <span class="value">{esc(value)}</span></p>'
        f'<p class="meta">Answered at {esc(response.get("answered_at", "?"))}</p>'
    )
    if just_now:
        return message_page("Thank you", "Your answer was received.", ok=True, details=details)
    return message_page("Already answered", "This event already has its answer; nothing was changed.", details=details)


def expired_page(request: Mapping[str, Any]) -> str:
    """The page for an event whose timeout passed."""
    details = f'<p class="meta">{esc(request["event_name"])}: {esc(request["prompt"])}</p>'
    return message_page("Expired", f"This event stopped taking answers at {request['expires_at']}.", details=details)


def index_page(rows: list[tuple[Mapping[str, Any], str, float]]) -> str:
    """The list of events: (request, status, seconds left) per row. No tokens, no links."""

    def table(items: list[tuple[Mapping[str, Any], str, float]], last: str) -> str:
        if not items:
            return '<p class="meta">None.</p>'
        head = f"<tr><th>Name</th><th>Prompt</th><th>Type</th><th>Created</th><th>{esc(last)}</th></tr>"
        body = "".join(
            f"<tr><td>{esc(r['event_name'])}</td><td>{esc(r['prompt'])}</td><td>{esc(r['data_type'])}</td>"
            f"<td>{esc(r.get('created_at', ''))}</td>"
            f"<td>{esc(time_left(left) if status == 'pending' else status)}</td></tr>"
            for r, status, left in items
        )
        return f"<table>{head}{body}</table>"

    pending = [row for row in rows if row[1] == "pending"]
    done = [row for row in rows if row[1] != "pending"]
    body = _INDEX.substitute(
        n_pending=len(pending), pending=table(pending, "Time left"), n_done=len(done), done=table(done, "Status")
    )
    return page("Human input", body)


def curl_command(api_url: str, request_id: str, token: str, type_name: str) -> str:
    """A one-line curl command answering an event; the value is a placeholder to replace."""
    placeholder = {"int": 42, "float": 0.5, "bool": True, "str": "your answer"}[type_name]
    body = json.dumps({"request_id": request_id, "token": token, "value": placeholder})
    return f"curl -sS -X POST {shlex.quote(api_url)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def report_section(event: Any, response: Mapping[str, Any] | None) -> str:
    """The event's section in a Flyte report: prompt, link, curl and, once answered, the value."""
    if response is None:
        state = f"<p>Waiting for an answer until {esc(event.expires_at)}.</p>"
    elif response.get("status") == "completed":
        value = json.dumps(response.get("value"), ensure_ascii=False)
        state = f"<p><b>Answered</b>: <code>{esc(value)}</code> at {esc(response.get('answered_at', ''))}</p>"
    else:
        state = "<p><b>Expired</b> without an answer.</p>"
    return (
        f"<h2>{esc(event.name)} ({esc(event.data_type.__name__)})</h2>"
        f'<p style="white-space:pre-wrap">{esc(event.prompt)}</p>{state}'
        f'<p><a href="{esc(event.form_url)}" target="_blank" rel="noopener noreferrer">Open the form</a></p>'
        f"<pre>{esc(event.curl_command)}</pre>"
    )
