"""The review page, ``GET /review/<group>``: a group's waiting items in one table, answered from the
keyboard or in bulk through ``POST /submit/batch``.

Who may answer an item is decided as for its form: an identified respondent, or whoever holds its token
(the page's ``?token=``; `new_events` gives a fan-out's items one token). Items the viewer may not answer
are listed without controls. The page's script and stylesheet are allowed by their hashes (`csp`), and
it may only fetch from this server.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from . import _html, _markdown, _policy
from ._answers import seconds_left
from ._endpoints import (
    JSON,
    Request,
    Response,
    Site,
    _check_same_origin,
    _media_type,
    _query,
    _refuse,
    _who,
    html_reply,
    json_reply,
)
from ._endpoints import _body as _request_body
from ._errors import HitlError
from ._groups import MAX_GROUP, Summary, group_of, summarize
from ._html import esc
from ._store import Listed, Record

#: Items per page of the review table.
PAGE_SIZE = 100
#: Most detail columns shown; the other details are in each item's form.
MAX_COLUMNS = 6

_STYLE = """
main{max-width:80rem}
.scroll{overflow-x:auto}
.review{border-collapse:collapse;width:100%;font-size:.95rem}
.review th,.review td{border-top:1px solid var(--line);padding:.4rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
.review thead th{color:var(--muted);font-weight:600;border-top:0}
.review tr.current{outline:3px solid var(--accent);outline-offset:-3px}
.review tr.picked{background:var(--accent-soft)}
.review td.act{white-space:nowrap}
.review .inline{white-space:normal;min-width:16rem;max-width:32rem}
.review button,.bar button{flex:none;min-height:2.75rem;font-size:.95rem;padding:.35rem .8rem;margin:.1rem}
.review input[type=text]{display:inline-block;width:9rem;min-height:2.75rem;font-size:1rem;padding:.3rem .5rem}
.review input[type=checkbox]{width:1.3rem;height:1.3rem}
.bar{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem;margin:0 0 1rem}
.bar input[type=search]{min-height:2.75rem;font:inherit;padding:.3rem .6rem;flex:1 1 12rem;color:var(--fg);
background:var(--field);border:1.5px solid var(--edge);border-radius:10px}
.row-error{color:var(--err);font-size:.875rem;margin:.25rem 0 0}
kbd{font:600 .8em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;border:1px solid currentColor;
border-radius:4px;padding:0 .3em}
"""

# Rows are the table's <tr data-id>; the one in focus is "current". Every key has a button twin
# (data-key on the button): the key handler and the buttons run the same function.
_SCRIPT = """(function () {
var table = document.getElementById('review'); if (!table) return;
var token = table.getAttribute('data-token') || '';
var status = document.getElementById('status'), progress = document.getElementById('progress');
var done = Number(progress.getAttribute('data-answered')), total = Number(progress.getAttribute('data-total'));
var mine = [], at = 0;
function rows() { return Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; }); }
function say(text) { status.textContent = text; }
function show() {
  var recent = mine.filter(function (t) { return Date.now() - t < 60000; }).length;
  progress.textContent = done + ' of ' + total + ' answered, ' + recent + ' by you in the last minute';
}
function go(n, stay) {
  var all = rows(); if (!all.length) return;
  at = Math.max(0, Math.min(all.length - 1, n));
  all.forEach(function (r) { r.classList.remove('current'); r.removeAttribute('aria-current'); });
  all[at].classList.add('current'); all[at].setAttribute('aria-current', 'true');
  if (!stay) all[at].focus();
  if (typeof claim === 'function' && all[at].getAttribute('data-id') !== claimed) setTimeout(claim, 0);
}
function current() { return rows()[at]; }
var viewer = Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2), claimed = null;
function claim() {
  var r = current(), ids = rows().map(function (x) { return x.getAttribute('data-id'); });
  claimed = r ? r.getAttribute('data-id') : null;
  fetch(location.pathname, {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({viewer: viewer, claim: claimed, ids: ids.slice(0, 100)})})
    .then(function (r) { return r.ok ? r.json() : {claims: {}}; })
    .then(function (j) {
      rows().forEach(function (x) {
        var who = j.claims[x.getAttribute('data-id')], note = x.querySelector('.claim');
        note.textContent = who ? who + ' is on this item' : '';
      });
    })
    .catch(function () {});
}
setInterval(claim, 10000);
function send(items) {
  if (!items.length) return;
  say('Sending ' + items.length + ' answer(s)...');
  var body = items.map(function (i) {
    var a = {request_id: i.row.getAttribute('data-id'), value: i.value};
    if (token) a.token = token;
    if (i.comment) a.comment = i.comment;
    return a;
  });
  fetch('/submit/batch', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})
    .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
    .then(function (got) {
      if (got[0] !== 200) { say('Not sent: ' + (got[1].detail || got[0])); return; }
      var ok = 0;
      got[1].results.forEach(function (res, n) {
        var row = items[n].row, note = row.querySelector('.row-error');
        if (res.status === 200 || res.status === 409 || res.status === 410) {
          if (res.status === 200) { ok++; done++; mine.push(Date.now()); }
          row.remove();
        } else { note.textContent = res.detail; }
      });
      say(ok + ' of ' + items.length + ' answered.'); show(); go(at);
      if (!rows().length) say('Nothing left on this page: reload for more.');
    })
    .catch(function () { say('The server could not be reached; nothing was lost: try again.'); });
}
function value(row, kind) {
  if (kind === 'a' || kind === 'r') {
    if (row.getAttribute('data-type') !== 'bool') return null;
    var comment = '';
    if (kind === 'r' && row.hasAttribute('data-comment-on-reject')) {
      comment = window.prompt('Why reject? (required)') || ''; if (!comment) return null;
    }
    return {row: row, value: kind === 'a', comment: comment};
  }
  return null;
}
var actions = {
  j: function () { go(at + 1); }, k: function () { go(at - 1); },
  a: function () { var r = current(); var v = r && value(r, 'a'); if (v) send([v]); },
  r: function () { var r = current(); var v = r && value(r, 'r'); if (v) send([v]); },
  x: function () { var r = current(); if (!r) return; var box = r.querySelector('input[type=checkbox]');
    if (box) { box.checked = !box.checked; r.classList.toggle('picked', box.checked); } },
  A: function () {
    var picked = rows().filter(function (r) {
      var b = r.querySelector('input[type=checkbox]'); return b && b.checked;
    });
    var items = picked.map(function (r) { return value(r, 'a'); }).filter(Boolean);
    if (!items.length) { say('Select approvals first (x).'); return; }
    if (window.confirm('Approve ' + items.length + ' selected?')) send(items);
  },
  '/': function () { document.getElementById('filter').focus(); },
  Enter: function () {
    var r = current(); if (!r) return;
    if (r.querySelector('button[data-inline]')) { inline(r); return; }
    var a = r.querySelector('a.open'); if (a) a.click();
  }
};
// A structured item: its form, taken from its own page, answered in the row; a refusal shows the form
// again with the server's messages.
function inline(row) {
  var panel = row.querySelector('.inline');
  if (panel.firstChild) { panel.textContent = ''; return; }
  fetch(row.querySelector('a.open').getAttribute('href'))
    .then(function (r) { return r.text(); }).then(function (html) { place(row, html); })
    .catch(function () { say('The server could not be reached; try again.'); });
}
function place(row, html) {
  var doc = new DOMParser().parseFromString(html, 'text/html'), panel = row.querySelector('.inline');
  var form = doc.querySelector('form[action="/submit"]'), alert = doc.getElementById('error');
  panel.textContent = '';
  if (!form) { row.remove(); say('That item is answered already.'); go(at); return; }
  if (alert) panel.appendChild(document.adoptNode(alert));
  panel.appendChild(document.adoptNode(form));
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    var data = new URLSearchParams(new FormData(form, e.submitter));
    fetch('/submit', {method: 'POST', body: data}).then(function (r) {
      if (r.status === 200) { row.remove(); done++; mine.push(Date.now()); show(); say('1 of 1 answered.'); go(at); }
      else if (r.status === 409 || r.status === 410) { row.remove(); go(at); }
      else { r.text().then(function (h) { place(row, h); }); }
    });
  });
  var first = form.querySelector('input:not([type=hidden]),select,textarea'); if (first) first.focus();
}
function pick(n) {
  var r = current(); if (!r) return;
  var b = r.querySelectorAll('button[data-value]')[n - 1]; if (b) b.click();
}
document.addEventListener('keydown', function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  var t = e.target.tagName;
  if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') {
    if (e.key === 'Escape') { e.target.blur(); go(at); }
    return;
  }
  if (t === 'BUTTON' && e.key === 'Enter') return;
  if (actions[e.key]) { actions[e.key](); e.preventDefault(); }
  else if (/^[1-9]$/.test(e.key)) { pick(Number(e.key)); e.preventDefault(); }
});
document.addEventListener('click', function (e) {
  var b = e.target.closest('button'); if (!b || b.closest('.inline')) return;
  if (b.hasAttribute('data-key')) { actions[b.getAttribute('data-key')](); return; }
  var row = b.closest('tr[data-id]'); if (!row) return;
  at = rows().indexOf(row); go(at);
  if (b.hasAttribute('data-value')) { send([{row: row, value: JSON.parse(b.getAttribute('data-value'))}]); }
  else if (b.hasAttribute('data-inline')) { inline(row); }
  else if (b.hasAttribute('data-answer')) { var v = value(row, b.getAttribute('data-answer')); if (v) send([v]); }
  else if (b.hasAttribute('data-send')) {
    var input = row.querySelector('input[type=text]'), text = input.value, kind = row.getAttribute('data-type');
    var sent = (kind === 'int' || kind === 'float') && text.trim() !== '' && !isNaN(Number(text)) ? Number(text) : text;
    send([{row: row, value: sent}]);
  }
});
document.addEventListener('change', function (e) {
  if (e.target.type === 'checkbox') { var r = e.target.closest('tr'); r.classList.toggle('picked', e.target.checked); }
});
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
    r.hidden = q !== '' && r.textContent.toLowerCase().indexOf(q) < 0;
  });
  go(0, true);
});
document.getElementById('filter').addEventListener('keydown', function (e) {
  if (e.key === 'Enter') { e.preventDefault(); e.target.blur(); go(0); }
});
show(); go(0);
})();"""


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@functools.lru_cache(maxsize=1)
def csp() -> str:
    """The pages' policy, with this page's stylesheet and script allowed by their hashes, and fetches
    to this server only (the batch answers)."""
    policy = _html.csp().replace("style-src ", f"style-src 'sha256-{_digest(_STYLE)}' ", 1)
    policy = policy.replace("script-src ", f"script-src 'sha256-{_digest(_SCRIPT)}' ", 1)
    return policy + "; connect-src 'self'"


def link(group: str, token: str | None = None) -> str:
    """The path of `group`'s review page, with a token when one is given."""
    path = f"/review/{quote(group, safe='')}"
    return f"{path}?token={quote(token, safe='')}" if token else path


def _request(site: Site, listed: Listed) -> Record | None:
    """The event's request (cached by the server, as the index's are), without reading its outcome."""
    return site.seen.request(site.store, listed)


def members(site: Site, group: str) -> list[tuple[Listed, Record, str, float]]:
    """(listed, request, status, seconds left) of every event of `group`, oldest first: one read of
    each request not cached yet, and of the outcomes of this group's answered events only (a waiting
    event's votes are not read: its row takes a vote as any other answer)."""
    found = []
    for listed in site.listing.get(site.store):
        request = _request(site, listed)
        if request is None or group_of(request) != group:
            continue
        if not listed.answered:
            status = "pending" if site.seen.waiting(site.store, listed) else "expired"
            found.append((listed, request, status, seconds_left(request)))
        elif (row := site.seen.row(site.store, listed, request)) is not None:
            found.append((listed, row.request, row.status, row.left))
    found.sort(key=lambda m: (str(m[1].get("created_at", "")), m[0].request_id))
    return found


def review(site: Site, request: Request, param: str) -> Response:
    """``GET /review/<group>[?token=…][&page=N]``: the group's waiting items, a page at a time."""
    try:
        group = unquote(param, errors="strict") if param.isascii() else ""
    except UnicodeDecodeError:
        group = ""
    if not group or len(group) > MAX_GROUP or not group.isprintable():
        raise _refuse(404, f"no such group: {param[:200]!r}", page="No such group")
    query = _query(request)
    token = query.get("token") or None
    page_text = query.get("page", "1")
    if not (page_text.isascii() and page_text.isdigit() and 1 <= len(page_text) <= 6 and int(page_text) >= 1):
        raise _refuse(400, f"page must be a whole number from 1, got {page_text[:40]!r}", page="Bad page")
    page_number = int(page_text)
    who = _who(site, request)
    everything = members(site, group)
    waiting = [(r, left) for _, r, status, left in everything if status == "pending"]
    answered = sum(status == "completed" for _, _, status, _ in everything)
    start = (page_number - 1) * PAGE_SIZE
    shown = waiting[start : start + PAGE_SIZE]
    rows = [(r, left, _may_answer(r, who, token)) for r, left in shown]
    body = _body(group, rows, len(waiting), answered, len(everything), page_number, token, who.identity)
    return html_reply(200, _html.page(f"{group} · review", body), csp=csp())


def _may_answer(request: Record, who: _policy.Who, token: str | None) -> bool:
    try:
        _policy.check_credentials(request, who, token)
    except HitlError:
        return False
    return True


def _columns(requests: Sequence[Mapping[str, Any]]) -> list[str]:
    """The details keys every item on the page has, in the first item's order."""
    if not requests:
        return []
    keys = [k for k in (requests[0].get("details") or {})]
    return [k for k in keys if all(k in (r.get("details") or {}) for r in requests)][:MAX_COLUMNS]


def _control(request: Mapping[str, Any], n: int) -> str:
    """The compact answer control of one row for its type."""
    name = esc(request["event_name"])
    kind = request.get("data_type")
    choices = request.get("choices")
    if kind == "bool":
        return (
            f'<button type="button" data-answer="a" aria-label="Approve item {n}: {name}">Approve <kbd>a</kbd></button>'
            f'<button type="button" data-answer="r" class="second" aria-label="Reject item {n}: {name}">'
            "Reject <kbd>r</kbd></button>"
        )
    if choices and len(choices) <= 9:
        return "".join(
            f'<button type="button" class="second" data-value="{esc(json.dumps(c))}" '
            f'aria-label="Answer item {n} with {esc(c)}">{esc(_html.one_line(str(c), 40))} <kbd>{i}</kbd></button>'
            for i, c in enumerate(choices, 1)
        )
    if kind in ("int", "float", "str") and not choices:
        return (
            f'<input type="text" aria-label="Answer to item {n} ({esc(kind)})" '
            f'inputmode="{"text" if kind == "str" else "decimal"}">'
            f'<button type="button" data-send="1" aria-label="Send the answer to item {n}">Send</button>'
        )
    # A structured answer: its own form, fetched into the row (Enter).
    return f'<button type="button" data-inline="1" aria-label="Answer item {n} here: {name}">Answer here</button>'


def _body(
    group: str,
    rows: Sequence[tuple[Record, float, bool]],
    waiting: int,
    answered: int,
    total: int,
    page_number: int,
    token: str | None,
    viewer: str,
) -> str:
    requests = [r for r, _, _ in rows]
    columns = _columns(requests)
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    body = []
    for n, (r, left, allowed) in enumerate(rows, 1):
        title, _ = _html.heading(r)
        details = r.get("details") or {}
        cells = "".join(f"<td>{esc(_html.one_line(_markdown.shown(details[c]), 120))}</td>" for c in columns)
        rid = esc(r["request_id"])
        form = f"/form/{quote(str(r['request_id']), safe='')}" + (f"?token={quote(token, safe='')}" if token else "")
        control = _control(r, n) if allowed else '<span class="hint">open its own link to answer</span>'
        pick = (
            f'<input type="checkbox" aria-label="Select item {n}">' if allowed and r.get("data_type") == "bool" else ""
        )
        extra = ' data-comment-on-reject="1"' if r.get("comment_required_on_reject") else ""
        body.append(
            f'<tr data-id="{rid}" data-type="{esc(r.get("data_type"))}"{extra} tabindex="-1">'
            f"<td>{pick}</td>"
            f'<td><a class="open" href="{esc(form)}">{esc(_html.one_line(title, 200))}</a>'
            f'<p class="hint">{esc(_html.time_left(left))}</p><p class="hint claim" aria-live="polite"></p></td>{cells}'
            f'<td class="act">{control}<p class="row-error" role="alert"></p><div class="inline"></div></td></tr>'
        )
    if body:
        table = (
            '<div class="scroll" tabindex="0" role="region" aria-label="Waiting items">'
            f'<table class="review" id="review" data-token="{esc(token or "")}"><caption class="hint">'
            f"Items {(page_number - 1) * PAGE_SIZE + 1} to {(page_number - 1) * PAGE_SIZE + len(rows)} of {waiting} "
            f'waiting</caption><thead><tr><th scope="col">Select</th><th scope="col">Question</th>{head}'
            f'<th scope="col">Answer</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        )
    else:
        table = '<p class="empty">Nothing of this group is waiting.</p>'
    keys = (
        ("j", "Next", "j"),
        ("k", "Previous", "k"),
        ("x", "Select", "x"),
        ("A", "Approve selected", "Shift+A"),
        ("/", "Filter", "/"),
        ("Enter", "Open", "Enter"),
    )
    bar = "".join(
        f'<button type="button" class="second" data-key="{k}">{t} <kbd>{c}</kbd></button>' for k, t, c in keys
    )
    pages = []
    if page_number > 1:
        pages.append(f'<a href="{esc(_page_link(group, token, page_number - 1))}">Previous page</a>')
    if page_number * PAGE_SIZE < waiting:
        pages.append(f'<a href="{esc(_page_link(group, token, page_number + 1))}">Next page</a>')
    signed = f"Signed in as {esc(viewer)}. " if viewer else ""
    return (
        f'<section class="card"><p class="caption">Review</p><h1>{esc(group)}</h1>'
        f'<p id="progress" data-answered="{answered}" data-total="{total}">{answered} of {total} answered</p>'
        f'<p class="note">{signed}Keys: j/k move, a/r approve or reject, 1-9 pick a choice, x select, '
        "Shift+A approve the selected, / filter, Enter open.</p>"
        f'<div class="bar" role="toolbar" aria-label="Review actions">{bar}'
        '<label for="filter" class="hint">Filter</label>'
        '<input type="search" id="filter" placeholder="Filter by any detail"></div>'
        f'<p id="status" role="status" aria-live="polite"></p>{table}'
        f'<p class="actions">{" ".join(pages)}</p></section>'
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script>"
    )


def _page_link(group: str, token: str | None, number: int) -> str:
    base = link(group, token)
    return f"{base}{'&' if '?' in base else '?'}page={number}"


# -- groups in the index -------------------------------------------------------------------------------


def collapse(site: Site, waiting: list[Listed], done: list[Listed]) -> tuple[list[Summary], list[Listed]]:
    """Groups with more than one event among `waiting` (each one summary row), and the waiting events
    that are in no such group: a group of one is listed as before. Reads requests only (kept once read),
    no outcome and no vote: a finished event counts as answered when it has an outcome stored, and as
    expired otherwise."""
    rows = []
    for listed in waiting:
        request = _request(site, listed)
        if request is not None:
            rows.append((listed, request, "pending", seconds_left(request)))
    for listed in done:
        request = _request(site, listed)
        if request is not None:
            rows.append((listed, request, "completed" if listed.answered else "expired", 0.0))
    summaries = {s.group: s for s in summarize((r, status, left) for _, r, status, left in rows)}
    grouped = {g for g, s in summaries.items() if s.waiting > 1}
    by_id = {listed.request_id: group_of(r) for listed, r, _, _ in rows}
    rest = [e for e in waiting if by_id.get(e.request_id) not in grouped]
    return [s for s in summaries.values() if s.group in grouped], rest


def groups_section(summaries: Sequence[Summary], *, yours: bool = False) -> str:
    """The rows of groups for the index (or, `yours`, the inbox), each opening its review page."""
    if not summaries:
        return ""
    counts = [
        f"{s.waiting} waiting for you" if yours else f"{s.waiting} waiting · {s.answered} answered" for s in summaries
    ]
    items = "".join(
        f'<li><a class="name" href="{esc(link(s.group))}">{esc(s.group)}</a>'
        f'<p class="text">{esc(s.group)} · {c} · soonest deadline {esc(_html.time_left(s.soonest))}</p></li>'
        for s, c in zip(summaries, counts, strict=True)
    )
    heading = f'<h2>Groups <span class="count">{len(summaries)}</span></h2>'
    return f'<section class="card">{heading}<ul class="events">{items}</ul></section>'


def collapse_inbox(
    rows: list[tuple[Record, float, list[Record] | None]],
) -> tuple[list[Summary], list[tuple[Record, float, list[Record] | None]]]:
    """The inbox's groups of more than one question (each one summary row), and the other questions."""
    summaries = {s.group: s for s in summarize((r, "pending", left) for r, left, _ in rows)}
    grouped = {g for g, s in summaries.items() if s.waiting > 1}
    rest = [row for row in rows if group_of(row[0]) not in grouped]
    return [s for s in summaries.values() if s.group in grouped], rest


def with_groups(document: str, summaries: Sequence[Summary], *, yours: bool = False) -> str:
    """The index (or inbox) `document` with its groups above the events."""
    section = groups_section(summaries, yours=yours)
    head, sep, tail = document.partition('<section class="card">')
    return f"{head}{section}{sep}{tail}" if sep and section else document


def form_link(request: Mapping[str, Any]) -> str:
    """A line for an item's form: the review page of its group (with the item's token, which the
    form's visitor holds, unless the event is answered by identity)."""
    token = None if request.get("respondents") else str(request.get("token") or "") or None
    return (
        f'<nav id="group" class="events" aria-label="Group"><p class="text">'
        f'<a href="{esc(link(group_of(request), token))}">Review all of {esc(group_of(request))}</a></p></nav>'
    )


def with_form_link(document: str, request: Mapping[str, Any]) -> str:
    """An item's form `document` with the link to its group's review page."""
    head, sep, tail = document.rpartition("</article>")
    return f"{head}{form_link(request)}{sep}{tail}" if sep else document


# -- who is on which item ---------------------------------------------------------------------------------

#: Seconds a claim lasts unless the page renews it; the page renews the claim on its current row every 10 s.
CLAIM_SECONDS = 30.0
#: Most items one claims request asks about (a page's rows).
MAX_CLAIMED = PAGE_SIZE


class Claims:
    """Short-lived, best-effort claims of one server: which reviewer has which item in front of them, so
    that two people splitting a group rarely pick the same one. Kept in memory: another replica does not
    see them, and a collision is still only a 409 on one row, never a lost answer."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._held: dict[str, tuple[str, str, float]] = {}  # request id -> (viewer key, shown name, expiry)
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, request_id: str, key: str, name: str) -> None:
        with self._lock:
            now = self._clock()
            self._held = {rid: held for rid, held in self._held.items() if held[2] > now and held[0] != key}
            self._held[request_id] = (key, name, now + CLAIM_SECONDS)

    def others(self, request_ids: Sequence[str], key: str) -> dict[str, str]:
        """The live claims by others on `request_ids`: request id -> who."""
        with self._lock:
            now = self._clock()
            held = [(rid, self._held.get(rid)) for rid in request_ids]
        return {rid: h[1] for rid, h in held if h is not None and h[2] > now and h[0] != key}


_claims_lock = threading.Lock()


def claims_of(site: Site) -> Claims:
    """The claims of `site`'s server, kept on the site itself (they live and go with it)."""
    with _claims_lock:
        held = site.__dict__.get("_review_claims")
        if held is None:
            held = site.__dict__["_review_claims"] = Claims()
        return held  # type: ignore[no-any-return]


def claim(site: Site, request: Request, _: str) -> Response:
    """``POST /review/<group>`` ``{"viewer", "claim": request_id | null, "ids": [...]}``: claim the item
    in front of this reviewer and hear who is on the others (``{"claims": {request_id: who}}``). The name
    shown is the identity the proxy vouches for; a visitor known by nothing else is "someone"."""
    _check_same_origin(site, request)
    if _media_type(request) != JSON:
        raise _refuse(415, f"expected {JSON}, got {_media_type(request) or 'nothing'!r}")
    try:
        payload = json.loads(_request_body(request))
    except (ValueError, RecursionError) as e:
        raise _refuse(400, f"malformed JSON body: {e}") from None
    if not isinstance(payload, dict):
        raise _refuse(400, f"expected a JSON object, got {type(payload).__name__}")
    viewer, claimed, ids = payload.get("viewer"), payload.get("claim"), payload.get("ids")
    if not isinstance(viewer, str) or not 8 <= len(viewer) <= 64 or not viewer.isascii():
        raise _refuse(400, "viewer must be the page's random id, 8 to 64 ASCII characters")
    if (
        not isinstance(ids, list)
        or len(ids) > MAX_CLAIMED
        or not all(isinstance(i, str) and len(i) <= 200 for i in ids)
    ):
        raise _refuse(400, f"ids must be a list of at most {MAX_CLAIMED} request ids")
    if claimed is not None and (not isinstance(claimed, str) or claimed not in ids):
        raise _refuse(400, "claim must be one of ids, or null")
    who = _who(site, request)
    key = f"id:{who.identity}" if who.identity else f"page:{viewer}"
    held = claims_of(site)
    if claimed is not None:
        held.claim(claimed, key, who.identity or "someone")
    return json_reply(200, {"claims": held.others(ids, key)})
