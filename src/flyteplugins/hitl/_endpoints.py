"""The endpoints, apart from the socket: each takes the site and a parsed request and returns a reply.

`handle` routes a `Request` to its endpoint and turns every refusal into its reply, so the HTTP
handler in `server.py` only parses, frames and writes. Tests call `handle` without a socket:

    >>> site = Site(Store("/tmp/flyte/hitl"))
    >>> handle(site, Request("GET", "/health")).status
    200
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from . import _answers, _html, _policy, _schema
from ._answers import seconds_left
from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    BadHeaderError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
    NotAllowedError,
    NotIdentifiedError,
    StorageError,
)
from ._store import Listed, Record, Store
from ._watch import Watch

logger = logging.getLogger("flyteplugins.hitl.server")

JSON = "application/json"
HTML = "text/html; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
#: Events per index page.
PAGE_SIZE = 50
#: Most fields accepted in a submitted form (a structured answer takes one field per part).
MAX_FORM_FIELDS = 1000
#: Most query parameters accepted in a request target.
MAX_QUERY_FIELDS = 20
#: Longest ``wait`` a status request may ask for, in seconds.
MAX_STATUS_WAIT = 60.0
SLACK_ONLY_ENV = "FLYTE_HITL_SLACK_ONLY"


def _headers(pairs: Iterable[tuple[str, str]] = ()) -> Message:
    message = Message()
    for name, value in pairs:
        message[name] = value
    return message


@dataclass
class Request:
    """A request as the handler parsed it.

    `body` is None when the request had no Content-Length (no body); `client` is the peer's address.
    """

    method: str
    target: str
    headers: Message = field(default_factory=_headers)
    body: bytes | None = None
    client: str = ""
    #: Request ids of the answers this request is submitting; the handler calls `Replies.end` for each
    #: once the reply is written.
    replying: list[str] = field(default_factory=list)


@dataclass
class Response:
    """Status, headers (without Date, Server, Content-Length and Connection) and body of a reply."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    #: Whether the connection must close after this reply.
    close: bool = False
    #: (request, stored outcome) of the answer this reply acknowledges, for the server to hand on once
    #: the reply is written.
    answered: tuple[Record, Record] | None = None


class Replies:
    """Request ids with an answer being handled whose reply is not yet written, or the answer not yet
    handed on (see `server.await_replies`)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._changed = threading.Condition()

    def begin(self, request_id: str) -> None:
        with self._changed:
            self._open[request_id] += 1

    def end(self, request_id: str) -> None:
        with self._changed:
            self._open[request_id] -= 1
            if self._open[request_id] <= 0:
                del self._open[request_id]
                self._changed.notify_all()

    def wait(self, request_id: str, timeout: float) -> bool:
        """Wait until no reply for `request_id` is being written; False if `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: request_id not in self._open, timeout)


class _Records:
    """Records the index shows: requests (never change) and outcomes of finished events (never change)."""

    #: Events whose records are kept; the index reads the others again when it needs them.
    capacity = 10_000

    def __init__(self) -> None:
        # request id -> (request, its outcome's status if read, its deadline in seconds since the epoch)
        self._rows: OrderedDict[str, tuple[Record, str | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._damaged: set[str] = set()  # events whose records cannot be read, logged once each

    def _get(self, store: Store, event: Listed, outcome: bool) -> tuple[Record, str | None, float] | None:
        """The event's request and, if `outcome` and it has one, its outcome's status."""
        with self._lock:
            cached = self._rows.get(event.request_id)
        if cached is not None and not (outcome and event.answered and cached[1] is None):
            return cached
        try:
            request = cached[0] if cached else store.read_request(event.request_id)
            if request is None:
                return None
            status = None
            if outcome and event.answered:
                response = store.read_response(event.request_id)
                status = _answers.status_of(request, response) if response is not None else None
        except StorageError as e:
            if e.transient:
                raise  # storage is down: the whole page says so
            # One damaged record (not JSON, say) leaves its event out, not the whole index.
            with self._lock:
                first = event.request_id not in self._damaged
                self._damaged.add(event.request_id)
            if first:
                logger.warning("the index leaves out %s: %s", event.request_id, e)
            return None
        entry = (request, status, time.time() + seconds_left(request))
        with self._lock:
            self._rows[event.request_id] = entry
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        return entry

    def waiting(self, store: Store, event: Listed) -> bool:
        """Whether a listed event still waits: no outcome stored, and its deadline not passed."""
        if event.answered:
            return False
        cached = self._get(store, event, outcome=False)
        return cached is not None and cached[2] > time.time()

    def row(self, store: Store, event: Listed) -> tuple[Record, str, float] | None:
        """(request, status, seconds left) for a listed event, or None if its request is gone."""
        cached = self._get(store, event, outcome=True)
        if cached is None:
            return None
        request, status, deadline = cached
        left = deadline - time.time()
        return request, status or ("pending" if left > 0 else "expired"), left


class _Listing:
    """The last listing of the root, shared by index visits for `seconds`.

    Under load, visits share one listing a second instead of one each; this server's own answers
    drop it at once, so only answers stored elsewhere can take that long to show.
    """

    seconds = 1.0

    def __init__(self) -> None:
        self._events: list[Listed] | None = None
        self._at = -math.inf
        self._lock = threading.Lock()

    def get(self, store: Store) -> list[Listed]:
        with self._lock:  # one visit lists while the others wait for its result
            if self._events is None or time.monotonic() - self._at >= self.seconds:
                self._events, self._at = store.list_events(), time.monotonic()
            return self._events

    def forget(self) -> None:
        with self._lock:
            self._events = None


@dataclass
class Site:
    """What every endpoint of one server shares."""

    store: Store
    #: The header an authenticating proxy in front of us sets to the user's identity; trusted only
    #: when configured, since any client can send any header.
    identity_header: str | None = None
    #: The header the same proxy sets to the user's groups, comma-separated (``$FLYTE_HITL_GROUPS_HEADER``).
    groups_header: str | None = field(default_factory=_policy.groups_header)
    #: Answer only requests whose Host is a loopback name or address (a server bound to loopback).
    loopback_only: bool = False
    #: Take this server's own origin from ``X-Forwarded-Host`` and ``X-Forwarded-Proto``: only behind
    #: a proxy that sets both, since any client can send any header.
    trust_forwarded: bool = False
    replies: Replies = field(default_factory=Replies)
    records: _Records = field(default_factory=_Records)
    listing: _Listing = field(default_factory=_Listing)
    #: Serve only ``/slack/interactions`` and ``/health`` (``FLYTE_HITL_SLACK_ONLY=1``): for a server that
    #: Slack reaches without the platform's login, while every other path stays behind it.
    slack_only: bool = field(default_factory=lambda: os.environ.get(SLACK_ONLY_ENV, "") == "1")
    #: Long-polls of ``GET /status/<id>?wait=N``.
    watch: Watch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = Watch(self.store)


class _Refusal(Exception):
    """Raised inside an endpoint to answer the client at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_reply(
    status: int, payload: object, headers: Iterable[tuple[str, str]] = (), *, close: bool = False
) -> Response:
    """A JSON reply with the headers every reply carries."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Response(status, body, [*_common(JSON), *headers], close)


def html_reply(status: int, document: str, *, close: bool = False, csp: str | None = None) -> Response:
    """An HTML reply with the headers every page carries (CSP, no framing)."""
    # The form's post then carries its true Origin (`_check_same_origin`), yet no link sends a Referer,
    # and with it the token in a form's URL, to another origin.
    headers = [
        *_common(HTML, "same-origin"),
        ("Content-Security-Policy", csp or _html.csp()),
        ("X-Frame-Options", "DENY"),
    ]
    return Response(status, document.encode(), headers, close)


def _common(content_type: str, referrer_policy: str = "no-referrer") -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", referrer_policy),
    ]


def _refuse(
    status: int,
    detail: str,
    *,
    page: str | None = None,
    close: bool = False,
    field_errors: Mapping[str, str] | None = None,
) -> _Refusal:
    """A JSON refusal (with each offending field's message, if any), or an HTML page titled `page` for
    the endpoints people use in a browser."""
    if page is not None:
        return _Refusal(html_reply(status, _html.message_page(page, detail), close=close))
    body: dict[str, Any] = {"detail": detail}
    if field_errors:
        body["field_errors"] = dict(field_errors)
    return _Refusal(json_reply(status, body, close=close))


# How each client-side mistake or refusal is answered; anything else is a server error.
_STATUS: tuple[tuple[type[HitlError], int], ...] = (
    (InvalidRequestIdError, 400),
    (InvalidValueError, 400),
    (InvalidTokenError, 403),
    (NotIdentifiedError, 401),
    (NotAllowedError, 403),
    (BadHeaderError, 400),
    (AlreadyAnsweredError, 409),
    (EventExpiredError, 410),
)


def _refusal(e: HitlError, page: str | None = None) -> _Refusal | None:
    """The reply for an error caused by the request, or None for our own failures."""
    for kind, status in _STATUS:
        if isinstance(e, kind):
            if isinstance(e, EventNotFoundError):  # do not show clients where the root is
                return _refuse(status, f"not_found: no event with request_id {e.request_id!r}", page=page)
            return _refuse(status, str(e), page=page, field_errors=getattr(e, "field_errors", None))
    return None


# -- routing ---------------------------------------------------------------------------------------

Endpoint = Callable[[Site, Request, str], Response]


def handle(site: Site, request: Request) -> Response:
    """The reply to `request`: routed by method and path, every refusal a 4xx with a clear detail."""
    try:
        _check_host(site, request)
        try:
            path = urlsplit(request.target).path
        except ValueError:  # an absolute URL with a malformed host, e.g. "http://["
            raise _refuse(400, f"malformed request target {request.target[:200]!r}") from None
        if site.slack_only and path not in ("/slack/interactions", "/health"):
            raise _refuse(404, f"no such path: {path[:200]!r} (this server takes Slack interactions only)")
        endpoint, param = _route(request.method, path)
        return endpoint(site, request, param)
    except _Refusal as r:
        return r.response
    except StorageError as e:
        # Before HitlError (its base class).
        logger.error("storage error: %s", e)
        if e.transient:
            return json_reply(503, {"detail": "storage is unavailable; try again later"}, [("Retry-After", "5")])
        # Denied access, a damaged record: retrying will not help, and the log says what to fix.
        return json_reply(500, {"detail": "storage refused this request; the server's log says why"})
    except HitlError as e:
        refusal = _refusal(e)
        if refusal is not None:
            return refusal.response
        logger.exception("internal error on %s %s", request.method, _path(request))
    except Exception:
        # A bug of ours, not the client's: log it with context, answer 500 without details.
        logger.exception("internal error on %s %s", request.method, _path(request))
    return json_reply(500, {"detail": "internal server error"}, close=True)


def _path(request: Request) -> str:
    """The request's target without its query string, which may hold a token: what a log may show."""
    return request.target.split("?", 1)[0][:200]


def _route(method: str, path: str) -> tuple[Endpoint, str]:
    """The endpoint for `method` and `path`, and the path's request id if it has one."""
    param = ""
    if path in _EXACT:
        methods = _EXACT[path]
    else:
        prefix = next((p for p in _PREFIXED if path.startswith(p)), None)
        if prefix is None:
            raise _refuse(404, f"no such path: {path[:200]!r}")
        methods, param = _PREFIXED[prefix], path[len(prefix) :]
    endpoint = methods.get("GET" if method == "HEAD" else method)
    if endpoint is None:
        allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
        refusal = _refuse(405, f"method {method[:40]} not allowed here; allowed: {allow}")
        refusal.response.headers.append(("Allow", allow))
        raise refusal
    return endpoint, param


def _check_host(site: Site, request: Request) -> None:
    hosts = request.headers.get_all("Host") or []
    if len(hosts) > 1:
        raise _refuse(400, "more than one Host header", close=True)
    # A page on another site can resolve its own name to our address (DNS rebinding); the browser then
    # sends that name as Host.
    if site.loopback_only and hosts and not _is_loopback(_host_name(hosts[0])):
        raise _refuse(421, f"this server answers only to 127.0.0.1 or localhost, not Host {hosts[0][:100]!r}")


def _host_name(host: str) -> str:
    """The name or address in a Host value (``[::1]:8080`` → ``::1``), lower case; "" if malformed."""
    try:
        return urlsplit(f"//{host.strip()}").hostname or ""
    except ValueError:
        return ""


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _query(request: Request) -> dict[str, str]:
    try:
        fields = parse_qs(urlsplit(request.target).query, max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise _refuse(400, "the query string is not valid UTF-8") from None
    except ValueError as e:
        raise _refuse(400, f"malformed query string: {e}") from None
    return {k: v[0] for k, v in fields.items()}


# -- GET ---------------------------------------------------------------------------------------------


def health(site: Site, request: Request, _: str) -> Response:
    """``GET /health``."""
    return json_reply(200, {"status": "healthy"})


def index(site: Site, request: Request, _: str) -> Response:
    """``GET /[?status=pending|done][&page=N]``: events newest first, those still waiting first, a page at a time.

    At most one listing of the root per visit (see `_Listing`), plus the records not cached yet of the
    events shown and of those without an outcome (whose deadlines tell waiting from expired).
    """
    query = _query(request)
    status = query.get("status") or None
    if status not in (None, "pending", "done"):
        raise _refuse(400, f"status must be 'pending' or 'done', got {status[:40]!r}")
    page_text = query.get("page", "1")
    if not (page_text.isascii() and page_text.isdigit() and 1 <= len(page_text) <= 6 and int(page_text) >= 1):
        raise _refuse(400, f"page must be a whole number from 1, got {page_text[:40]!r}")
    page = int(page_text)
    events = site.listing.get(site.store)
    # An event without an outcome whose deadline passed (its waiter is gone) is shown as expired.
    waiting = [e for e in events if site.records.waiting(site.store, e)]
    still = {e.request_id for e in waiting}
    done = [e for e in events if e.request_id not in still]
    chosen = waiting if status == "pending" else done if status == "done" else waiting + done
    start = (page - 1) * PAGE_SIZE
    rows = [row for e in chosen[start : start + PAGE_SIZE] if (row := site.records.row(site.store, e)) is not None]
    # One listing of its votes per waiting approval with a quorum on this page.
    approvals = {
        str(request["request_id"]): sum(v.get("value") is True for v in votes)
        for request, state, _ in rows
        if state == "pending" and (votes := _answers.votes_of(site.store, request, None)) is not None
    }
    document = _html.index_page(
        rows,
        waiting=len(waiting),
        done=len(done),
        page_number=page,
        status=status,
        more=len(chosen) > start + PAGE_SIZE,
        approvals=approvals,
    )
    return html_reply(200, document)


#: The most events ``GET /events`` returns.
MAX_LISTED = 1000


def events(site: Site, request: Request, _: str) -> Response:
    """``GET /events[?status=waiting|answered|expired]``: the events the index shows, as JSON, newest
    first (at most `MAX_LISTED`), never their tokens: what ``hitl list --endpoint`` prints."""
    wanted = _query(request).get("status") or "all"
    if wanted not in ("all", *_answers.STATES.values()):
        raise _refuse(400, f"status must be waiting, answered or expired, got {wanted[:40]!r}")
    listed = []
    for e in site.listing.get(site.store):
        row = site.records.row(site.store, e)
        if row is None:
            continue
        request_record, status, _left = row
        state = _answers.STATES.get(status, status)
        if wanted in ("all", state):
            listed.append(_answers.public_request(request_record) | {"status": state})
    listed.sort(key=lambda r: str(r.get("created_at", "")), reverse=True)  # to the millisecond, as `hitl list`
    return json_reply(200, {"events": listed[:MAX_LISTED]})


def form(site: Site, request: Request, request_id: str) -> Response:
    """``GET /form/<request_id>?token=…``: the form, or the event's state once answered or expired."""
    title = "Cannot open this event"
    token = _query(request).get("token")
    try:
        event, who = _viewable(site, request, request_id, token)
    except StorageError:
        raise
    except HitlError as e:
        raise _refusal(e, title) or e from None
    return _page_for(site.store, event, who=who)


def inbox(site: Site, request: Request, _: str) -> Response:
    """``GET /inbox``: the questions waiting for the identified person, soonest deadline first, each
    opening its form without a token (the identity authorizes it)."""
    who = _who(site, request)
    if not who.identity:
        return html_reply(200, _html.inbox_page([], ""), csp=_html.inbox_csp())
    return html_reply(200, _html.inbox_page(_waiting_for(site, who), who.identity), csp=_html.inbox_csp())


def _waiting_for(site: Site, who: _policy.Who) -> list[tuple[Record, float, list[Record] | None]]:
    """(request, seconds left, votes) of each waiting event that names `who` among its respondents,
    that they may answer and have not voted on, soonest deadline first."""
    mine = []
    for listed in site.listing.get(site.store):
        if not site.records.waiting(site.store, listed):
            continue
        row = site.records.row(site.store, listed)
        if row is None:
            continue
        event, _, left = row
        if not _policy.is_respondent(event, who) or _policy.refusal(event, who) is not None:
            continue
        votes = None
        if _policy.quorum(event) > 1:
            if site.store.read_vote(event["request_id"], _policy.vote_key(who.identity)) is not None:
                continue
            votes = _answers.votes_of(site.store, event, None)
        mine.append((event, left, votes))
    mine.sort(key=lambda item: item[1])
    return mine


def _with_next(site: Site, who: _policy.Who, document: str) -> str:
    """An answered (or voted) page with how many more questions wait for `who`, if identified."""
    if not who.identity:
        return document
    return _html.with_more(document, len(_waiting_for(site, who)))


def _page_for(
    store: Store,
    event: Record,
    *,
    value: str = "",
    error: str = "",
    comment: str = "",
    form: Mapping[str, Sequence[str]] | None = None,
    field_errors: Mapping[str, str] | None = None,
    who: _policy.Who | None = None,
) -> Response:
    """The form for a pending event (400 when re-shown with an error), else the event's state. When the
    waiting task refused the last answer, the form says why, beside the fields it named."""
    response, _, refusal = _answers.outcome(store, event)
    status = _answers.status_of(event, response)
    if status == "completed" and response is not None:
        return html_reply(200, _html.answered_page(event, response, just_now=False))
    if status == "expired":
        return html_reply(200, _html.expired_page(event))
    notice = ""
    if refusal is not None and not error:
        notice = f"The task refused the last answer: {refusal.get('error')}. Please answer again."
        field_errors = refusal.get("field_errors") or None
    page = _html.form_page(
        event, seconds_left(event), value, error, comment=comment, form=form, field_errors=field_errors, notice=notice
    )
    votes = _answers.votes_of(store, event, response)
    if votes is not None:
        page = _html.with_votes(page, votes, _policy.quorum(event), (who or _policy.Who()).identity)
    return html_reply(400 if error else 200, page)


def status(site: Site, request: Request, request_id: str) -> Response:
    """``GET /status/<request_id>?token=…[&wait=N]``: the event (never its token) and its outcome.

    With ``wait`` (0 to `MAX_STATUS_WAIT` seconds), a pending event's reply waits until it is
    answered or expires, or N seconds pass; the long-poll itself reads no storage (`Watch`).
    """
    query = _query(request)
    wait = _wait_seconds(query.get("wait"))
    event, _ = _viewable(site, request, request_id, query.get("token"))
    outcome = site.watch.outcome(event, wait)
    votes = _answers.votes_of(site.store, event, outcome)
    # Why the task refused the last answer, while it waits for another (one more read, only then).
    refusal = _answers.outcome(site.store, event).refusal if outcome is None else None
    return json_reply(200, _answers.status_record(event, outcome, refusal, votes=votes))


def _wait_seconds(text: str | None) -> float:
    """The ``wait`` of a status request: 0 to `MAX_STATUS_WAIT` seconds; anything else is a 400."""
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_STATUS_WAIT:  # also refuses nan
        raise _refuse(400, f"wait must be a number of seconds from 0 to {MAX_STATUS_WAIT:g}, got {text[:40]!r}")
    return seconds


# -- POST --------------------------------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _body(request: Request, page: str | None = None) -> bytes:
    if request.body is None:
        raise _refuse(411, "Content-Length is required", page=page, close=True)
    return request.body


def _check_same_origin(site: Site, request: Request, page: str | None = None) -> None:
    """Refuse an answer a browser posts from any page but this server's own.

    A browser says where a post comes from (``Sec-Fetch-Site``, ``Origin``) and a page cannot remove
    either; programs send neither, so a request without them is not a browser's post from elsewhere.
    Another page on the same site (another port, a sibling subdomain, one that hides its origin as
    ``Origin: null``) carries the site's cookies, so only this server's own origin is taken.
    """
    fetch_site = (request.headers.get("Sec-Fetch-Site") or "").strip().lower()
    origins = request.headers.get_all("Origin") or []
    if fetch_site == "same-origin" or (not fetch_site and not origins):
        return
    if fetch_site in ("", "none") and len(origins) == 1:
        origin = _origin(origins[0])
        if origin is not None and origin == _own_origin(site, request):
            return
    shown = f"Origin {origins[0][:100]!r}" if origins else f"Sec-Fetch-Site {fetch_site[:40]!r}"
    raise _refuse(403, f"cross-origin request refused ({shown}): answer from this server's own page", page=page)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as ``https://hitl.example.com``; None if it is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _own_origin(site: Site, request: Request) -> tuple[str, str, int] | None:
    """This server's origin as the client reached it: ``http://`` and the Host, or what a trusted proxy
    says it was asked for."""
    scheme, host = "http", request.headers.get("Host") or ""
    if site.trust_forwarded:
        # A proxy that appends to these headers puts its own value last.
        forwarded = [v.split(",")[-1].strip() for v in request.headers.get_all("X-Forwarded-Host") or []]
        proto = [v.split(",")[-1].strip() for v in request.headers.get_all("X-Forwarded-Proto") or []]
        host = forwarded[-1] if forwarded else host
        scheme = proto[-1] if proto else scheme
    return _origin(f"{scheme}://{host}")


def _who(site: Site, request: Request) -> _policy.Who:
    """Who sent `request`, from the proxy headers this server trusts (`_policy.identify`)."""
    return _policy.identify(request.headers, site.identity_header, site.groups_header)


def _load(site: Site, request_id: object) -> Record:
    """The stored event for `request_id`. An unknown id is refused like a wrong token, so a client
    without the token cannot tell which events exist."""
    try:
        return _answers.load(site.store, request_id)
    except EventNotFoundError:
        raise InvalidTokenError(str(request_id)) from None


def _viewable(site: Site, request: Request, request_id: object, token: object) -> tuple[Record, _policy.Who]:
    """The stored event for its form or status, and who asks: the token, or an identified respondent."""
    event = _load(site, request_id)
    who = _who(site, request)
    _policy.check_viewer(event, who, token)
    return event, who


def _answerable(site: Site, request: Request, request_id: object, token: object) -> tuple[Record, _policy.Who]:
    """The stored event for an answer and who sends it, once `_policy` lets them answer: the one gate
    of the form and JSON submissions."""
    event = _load(site, request_id)
    who = _who(site, request)
    _policy.check_credentials(event, who, token)
    return event, who


def _track(site: Site, request: Request, request_id: str) -> None:
    """From here until the handler wrote the reply and handed the answer on, `await_replies(request_id)`
    waits for it."""
    site.replies.begin(request_id)
    request.replying.append(request_id)


def submit_form(site: Site, request: Request, _: str) -> Response:
    """``POST /submit``: a form-encoded answer (``request_id``, ``token``, the value's fields, ``comment``)."""
    title = "Answer not accepted"
    try:
        _check_same_origin(site, request, title)
        if _media_type(request) != FORM:
            raise _refuse(415, f"expected a form ({FORM}), got {_media_type(request) or 'nothing'!r}", page=title)
        body = _body(request, title)
        # The token is checked before the rest of the form is decoded: a client without it costs a split.
        event, who = _answerable(site, request, *_form_credentials(body))
        # Strict: a percent-encoded byte that is not UTF-8 (%E9) is refused like a raw one, not
        # stored as U+FFFD in place of what was sent.
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
        for name in ("request_id", "token", "comment"):
            if len(fields.get(name, [])) > 1:
                raise _refuse(400, f"the form has more than one {name!r} field", page=title)
        one = {name: values[0] for name, values in fields.items()}
    except UnicodeDecodeError:
        raise _refuse(400, "the form is not valid UTF-8", page=title) from None
    except StorageError:
        raise
    except HitlError as e:
        raise _refusal(e, title) or e from None
    except ValueError as e:  # parse_qs: too many fields
        raise _refuse(400, f"malformed form: {e}", page=title) from None
    comment = one.get("comment")
    _track(site, request, event["request_id"])
    try:
        raw = _schema.value_from_form(event, fields)
        response = _answers.submit(
            site.store,
            event,
            raw,
            via="form",
            client=request.client,
            comment=comment,
            identity=who.identity,
            groups=who.groups,
            transport="form",
        )
    except InvalidValueError as e:
        # Shown again with the error and what was typed.
        return _page_for(
            site.store,
            event,
            value=one.get("value", ""),
            error=str(e),
            comment=comment or "",
            form=fields,
            field_errors=e.field_errors,
        )
    except AlreadyVotedError as e:
        return html_reply(409, _html.message_page("Already voted", str(e)))
    except AlreadyAnsweredError as e:
        return html_reply(409, _html.answered_page(event, e.response, just_now=False))
    except EventExpiredError:
        return html_reply(410, _html.expired_page(event))
    site.listing.forget()
    if response.get("status") == "voted":  # a vote that did not decide: nothing to hand on yet
        votes = _answers.votes_of(site.store, event, None) or []
        return html_reply(200, _with_next(site, who, _html.voted_page(event, response, votes, who.identity)))
    _answered(site, event, response)
    reply = html_reply(200, _with_next(site, who, _html.answered_page(event, response, just_now=True)))
    reply.answered = (event, response)
    return reply


def _form_credentials(body: bytes) -> tuple[str | None, str | None]:
    """The ``request_id`` and ``token`` fields of a form-encoded body, without decoding the rest.

    Names are compared as sent: a form that spells them percent-encoded has them twice once decoded,
    which the full parse refuses.
    """
    found: dict[bytes, str] = {}
    for part in body.split(b"&"):
        name, _, value = part.partition(b"=")
        if name in (b"request_id", b"token"):
            found.setdefault(name, unquote_plus(value.decode("utf-8"), errors="strict"))
    return found.get(b"request_id"), found.get(b"token")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `json` keeps the last of repeated keys; which one a check saw and which one was stored must not differ.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, object_pairs_hook=_unique_keys)
        # JSON can spell unpaired surrogates ("\ud800"), which are not text: comparing a token holding
        # one, or storing an answer holding one as UTF-8, would fail deep inside. ASCII without a \u
        # escape cannot spell one in any encoding json accepts: most bodies skip the check.
        if not body.isascii() or b"\\u" in body:
            json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _refuse(400, "malformed JSON body: it holds an unpaired surrogate (\\ud800-\\udfff)") from None
    except (ValueError, RecursionError) as e:
        raise _refuse(400, f"malformed JSON body: {e}") from None
    if not isinstance(payload, dict):
        raise _refuse(400, f"expected a JSON object, got {type(payload).__name__}")
    return payload


def submit_json(site: Site, request: Request, _: str) -> Response:
    """``POST /submit/json``: ``{"request_id", "token", "value"[, "data_type", "comment", "via"]}``."""
    _check_same_origin(site, request)
    if _media_type(request) != JSON:
        raise _refuse(415, f"expected {JSON}, got {_media_type(request) or 'nothing'!r}")
    body = _body(request)
    # The token is checked before the value is: a client without it costs one decoding of the body,
    # in C, and none of the checks below.
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise _refuse(400, f"malformed JSON body: {e}") from None
    if not isinstance(envelope, dict):
        raise _refuse(400, f"expected a JSON object, got {type(envelope).__name__}")
    event, who = _answerable(site, request, envelope.get("request_id"), envelope.get("token"))
    payload = _json_object(body)
    if "value" not in payload:
        raise _refuse(400, "missing field 'value'")
    claimed = payload.get("data_type")
    if claimed is not None and claimed != event["data_type"]:
        raise _refuse(400, f"data_type {claimed!r} does not match the event's type {event['data_type']!r}")
    # What the client says it is (the CLI, the Python API); anything else is recorded as "json".
    via = payload.get("via") if payload.get("via") in ("cli", "python") else "json"
    request_id = event["request_id"]
    _track(site, request, request_id)
    response = _answers.submit(
        site.store,
        event,
        payload["value"],
        via=str(via),
        transport="json",
        client=request.client,
        comment=payload.get("comment"),
        identity=who.identity,
        groups=who.groups,
    )
    if response.get("status") == "voted":  # a vote that did not decide: nothing to hand on yet
        return json_reply(200, _vote_reply(event, response))
    site.listing.forget()
    _answered(site, event, response)
    accepted = {
        "status": "submitted",
        "request_id": request_id,
        "value": response["value"],
        "data_type": event["data_type"],
        "message": f"answer for {event['event_name']!r} accepted",
    }
    if "refused_before" in response:  # the task refused the answer before this one, and said why
        accepted["refused_before"] = response["refused_before"]
    reply = json_reply(200, accepted)
    reply.answered = (event, response)
    return reply


def _vote_reply(event: Record, vote: Record) -> Record:
    return {
        "status": "voted",
        "request_id": event["request_id"],
        "value": vote["value"],
        "approvals": vote["approvals"],
        "quorum": vote["quorum"],
        "message": f"vote on {event['event_name']!r} recorded: {vote['approvals']} of {vote['quorum']} approvals",
    }


def _answered(site: Site, event: Record, response: Record) -> None:
    """An answer was stored: bring the event's Slack messages up to date, if it has any (in the background)."""
    if event.get("slack"):
        from . import _slack

        _slack.answer_stored(site.store, event, response)


def slack_interactions(site: Site, request: Request, _: str) -> Response:
    """``POST /slack/interactions``: a click or a submitted modal in Slack, signed by Slack (see `_slack`)."""
    from . import _slack, _wake

    def stored_late(event: Record, response: Record) -> None:  # the acknowledgement went first
        site.listing.forget()
        site.watch.stored(event["request_id"], response)
        _wake.poke(site.store, event, response)

    outcome = _slack.interaction(site.store, request.headers, _body(request), request.client, stored_late)
    if outcome.body is not None:
        reply = json_reply(outcome.status, outcome.body)
    else:
        reply = Response(outcome.status, b"", [("Cache-Control", "no-store")])
    if outcome.answered is not None:
        site.listing.forget()
        reply.answered = outcome.answered
    return reply


_EXACT: dict[str, dict[str, Endpoint]] = {
    "/health": {"GET": health},
    "/": {"GET": index},
    "/submit": {"POST": submit_form},
    "/submit/json": {"POST": submit_json},
    "/inbox": {"GET": inbox},
    "/events": {"GET": events},
    "/slack/interactions": {"POST": slack_interactions},
}
_PREFIXED: dict[str, dict[str, Endpoint]] = {"/form/": {"GET": form}, "/status/": {"GET": status}}


def phrase(status: int) -> str:
    """The reason phrase of `status`."""
    return HTTPStatus(status).phrase
