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
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote_plus, urlencode, urlsplit

from . import _answers, _html, _policy, _schema
from ._answers import seconds_left
from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    BadHeaderError,
    ConfigurationError,
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
from ._store import Listed, Record, Store, check_request_id
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
TRUSTED_PROXIES_ENV = "FLYTE_HITL_TRUSTED_PROXIES"
#: Loopback only: a proxy in the same pod, or on the same machine.
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8, ::1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(text: str | None = None) -> tuple[Network, ...]:
    """The peers whose proxy headers a server believes: `text`, else ``$FLYTE_HITL_TRUSTED_PROXIES``, else
    loopback; comma-separated addresses and CIDR ranges. An entry that is neither is a `ConfigurationError`.

    Example:
        >>> trusted_proxies("10.0.0.0/8, fd00::7")
        (IPv4Network('10.0.0.0/8'), IPv6Network('fd00::7/128'))
    """
    if text is None:
        text = os.environ.get(TRUSTED_PROXIES_ENV, "").strip() or DEFAULT_TRUSTED_PROXIES
    networks: list[Network] = []
    for entry in (e.strip() for e in text.split(",")):
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"{TRUSTED_PROXIES_ENV} holds {entry!r}, which is not an IP address or CIDR range "
                "(expected e.g. '10.0.0.0/8, fd00::/8, 127.0.0.1')"
            ) from None
        networks.append(network)
    return tuple(networks)


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


class Row(NamedTuple):
    """A listed event as the index, the inbox and ``/events`` show it: its request, status ("pending",
    "completed", "expired" or "withdrawn"), seconds left, the refusal it waits again after, and the votes
    so far of a waiting approval with a quorum (None for any other event)."""

    request: Record
    status: str
    left: float
    refusal: Record | None
    votes: list[Record] | None


class _Seen:
    """What the index, the inbox and ``/events`` keep of the events they show: only what never changes.

    A request never changes once written, nor does the outcome or refusal stored in an answer slot, nor
    a vote: each is read once (the `capacity` most recently used are kept). Whether an event has an
    outcome, and in which slot, comes from the listing (`_Listing`, begun after the visit arrived), and
    which votes a waiting approval has from a listing of its votes at most a second old: a refusal that
    reopens an event shows at the next visit on every server, a vote within a second.
    """

    capacity = 10_000
    #: Seconds a listing of a waiting approval's votes is used for.
    votes_seconds = 1.0

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, int, bool], Record] = OrderedDict()  # requests and outcomes
        self._votes: dict[str, tuple[float, dict[str, Record]]] = {}  # listed when (monotonic), the votes
        self._deadlines: dict[str, float] = {}  # seconds since the epoch, by request id
        self._lock = threading.Lock()
        self._damaged: set[str] = set()  # events whose records cannot be read, logged once each

    def _read(self, key: tuple[str, int, bool], read: Callable[[], Record | None]) -> Record | None:
        with self._lock:
            record = self._kept.get(key)
            if record is not None:
                self._kept.move_to_end(key)
                return record
        record = read()
        if record is not None:
            with self._lock:
                self._kept[key] = record
                while len(self._kept) > self.capacity:
                    self._kept.popitem(last=False)
        return record

    def request(self, store: Store, event: Listed) -> Record | None:
        """The event's request; None if it is gone or damaged (logged once: one damaged record leaves
        its event out, not the whole view)."""
        try:
            return self._read((event.request_id, -1, False), lambda: store.read_request(event.request_id))
        except StorageError as e:
            self._left_out(event, e)
            return None

    def waiting(self, store: Store, event: Listed) -> bool:
        """Whether a listed event takes answers: no outcome in its slot, and its deadline ahead."""
        deadline = self._deadlines.get(event.request_id)
        if deadline is None and not event.answered and (request := self.request(store, event)) is not None:
            if len(self._deadlines) >= self.capacity:
                self._deadlines.clear()
            deadline = self._deadlines[event.request_id] = time.time() + seconds_left(request)
        return not event.answered and deadline is not None and deadline > time.time()

    def row(self, store: Store, event: Listed, request: Record | None = None) -> Row | None:
        """The event as shown now, or None if its records are gone or damaged."""
        request = request or self.request(store, event)
        if request is None:
            return None
        left = seconds_left(request)
        key = (event.request_id, event.slot, event.answered)
        try:  # the outcome in the listed slot, or the refusal that opened it
            found = (
                self._read(key, lambda: (o := store.read_listed(event)).response or o.refusal)
                if key[1:] != (0, False)
                else None
            )
        except StorageError as e:
            self._left_out(event, e)
            return None
        response, refusal = (found, None) if event.answered else (None, found)
        votes = None
        if response is None and left > 0 and _policy.quorum(request) > 1:
            votes = self.votes(store, request)
            if _answers.decide(request, votes) is not None:  # stranded: settled here, as any reader does
                response = _answers.outcome(store, request).response
        withdrawn = response is not None and response.get("withdrawn_at")  # its task stopped waiting
        return Row(request, "withdrawn" if withdrawn else _answers.status_of(request, response), left, refusal, votes)

    def votes(self, store: Store, request: Record) -> list[Record]:
        """The votes on `request` in the order cast: a listing at most once a second, and a read of each
        vote not read before."""
        request_id = str(request["request_id"])
        with self._lock:
            listed_at, known = self._votes.get(request_id, (-math.inf, None))
        if known is None or time.monotonic() - listed_at >= self.votes_seconds:
            listed_at, known = time.monotonic(), store.read_votes(request_id, known)
            with self._lock:
                if len(self._votes) >= self.capacity:  # decided events' votes go with the rest
                    self._votes.clear()
                self._votes[request_id] = (listed_at, known)
        return sorted(known.values(), key=lambda v: str(v.get("voted_at")))

    def forget_votes(self, request_id: str) -> None:
        """A vote on `request_id` was stored here: list its votes again at the next view."""
        with self._lock:
            self._votes.pop(request_id, None)

    def _left_out(self, event: Listed, e: StorageError) -> None:
        if e.transient:
            raise e  # storage is down: the whole page says so
        with self._lock:
            first = event.request_id not in self._damaged
            self._damaged.add(event.request_id)
        if first:
            logger.warning("the index leaves out %s: %s", event.request_id, e)


class _Listing:
    """The listing of the root that views read: one per visit, except that the visits that arrive while
    a listing runs share the next one (begun after they arrived), so under load a few visits cost one
    listing and no view misses what was stored before it arrived. `seconds` lets a listing that
    recent serve too."""

    seconds = 0.0

    def __init__(self) -> None:
        self._events: list[Listed] = []
        self._at = -math.inf  # when the kept listing began (monotonic)
        self._lock = threading.Lock()

    def get(self, store: Store) -> list[Listed]:
        arrived = time.monotonic()
        with self._lock:  # one visit lists while the others wait for its result
            if self._at < arrived - self.seconds:
                began = time.monotonic()
                self._events, self._at = store.list_events(), began
            return self._events


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
    #: The peers whose proxy headers are believed (``$FLYTE_HITL_TRUSTED_PROXIES``, see `trusted_proxies`).
    trusted_proxies: tuple[Network, ...] = field(default_factory=lambda: trusted_proxies())
    replies: Replies = field(default_factory=Replies)
    listing: _Listing = field(default_factory=_Listing)
    seen: _Seen = field(default_factory=_Seen)
    #: Serve only ``/slack/interactions`` and ``/health`` (``FLYTE_HITL_SLACK_ONLY=1``): for a server that
    #: Slack reaches without the platform's login, while every other path stays behind it.
    slack_only: bool = field(default_factory=lambda: os.environ.get(SLACK_ONLY_ENV, "") == "1")
    #: Long-polls of ``GET /status/<id>?wait=N``.
    watch: Watch = field(init=False)
    #: When proxy headers from an untrusted peer were last logged (`time.monotonic`).
    ignored_at: float = field(default=-math.inf, init=False)

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
        return _Refusal(html_reply(status, _html.refusal_page(page, _html.esc(detail)), close=close))
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


def _refusal(e: HitlError) -> _Refusal | None:
    """The reply for an error caused by the request, or None for our own failures."""
    for kind, status in _STATUS:
        if isinstance(e, kind):
            return _refuse(status, str(e), field_errors=getattr(e, "field_errors", None))
    return None


def _refused(
    site: Site, request: Request, e: HitlError, title: str, request_id: object = None, token: object = None
) -> _Refusal | None:
    """`_refusal` as a page a person reads: what stands in their way in their words, a way back to the
    question (after an answer to a known event, `request_id`, with the `token` it came with) and to their
    inbox; None for our own failures."""
    refusal = _refusal(e)
    if refusal is None:
        return None
    back = _form_url(request_id, token) if request_id is not None else ""
    if isinstance(e, NotIdentifiedError):
        title, words = "Sign in to answer", _html.sign_in_html(site.identity_header, e.request_id)
    elif isinstance(e, (NotAllowedError, AlreadyVotedError)):
        event = _answers.load(site.store, e.request_id)
        votes = _answers.votes_of(site.store, event, None) or []
        standing, vote = _standing(event, _who(site, request), votes)
        words = _html.standing_html(standing, event, vote=vote, votes=votes)
    elif isinstance(e, (InvalidTokenError, EventNotFoundError)):  # unknown or not yours: the same words
        words, back = "This link does not open a question: open the link you were given, whole, as it was given.", ""
    else:
        words, back = _html.esc(e), ""
    return _Refusal(html_reply(refusal.response.status, _html.refusal_page(title, words, back)))


def _form_url(request_id: object, token: object) -> str:
    """Where the event's form is, with the token it was opened with (a respondent's comes without one)."""
    return f"/form/{quote(str(request_id))}" + (f"?{urlencode({'token': token})}" if token else "")


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


def route_of(target: str) -> str:
    """The route `target` takes, as metrics name it (bounded: never an id): ``/form/{id}``, ``/health``;
    ``other`` for a path no endpoint serves."""
    path = target.split("?", 1)[0]
    if path in _EXACT:
        return path
    prefix = next((p for p in _PREFIXED if path.startswith(p)), None)
    return "other" if prefix is None else prefix + "{id}"


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
    from ._slack import SECRET_ENV

    # Whether this server can tell who answers, and take Slack's clicks: a task using it warns if not.
    body = {"status": "healthy", "identifies": bool(site.identity_header), "slack": bool(os.environ.get(SECRET_ENV))}
    return json_reply(200, body)


def index(site: Site, request: Request, _: str) -> Response:
    """``GET /[?status=pending|done][&page=N]``: events newest first, those still waiting first, a page at a time.

    One listing of the root (`_Listing`, shared by visits that arrive together), plus the records of the
    shown events not read before (`_Seen`) and those of events without an outcome (whose deadlines tell
    waiting from expired).
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
    waiting = [e for e in events if site.seen.waiting(site.store, e)]
    still = {e.request_id for e in waiting}
    done = [e for e in events if e.request_id not in still]
    chosen = waiting if status == "pending" else done if status == "done" else waiting + done
    start = (page - 1) * PAGE_SIZE
    rows = [row for e in chosen[start : start + PAGE_SIZE] if (row := site.seen.row(site.store, e)) is not None]
    document = _html.index_page(
        [(row.request, row.status, row.left) for row in rows],
        waiting=len(waiting),
        done=len(done),
        page_number=page,
        status=status,
        more=len(chosen) > start + PAGE_SIZE,
        approvals={
            str(row.request["request_id"]): sum(v.get("value") is True for v in row.votes)
            for row in rows
            if row.status == "pending" and row.votes is not None
        },
    )
    return html_reply(200, document)


#: The most events ``GET /events`` returns.
MAX_LISTED = 1000


_STATUS_2_12 = {state: status for status, state in _answers.STATES.items()}


def events(site: Site, request: Request, _: str) -> Response:
    """``GET /events[?status=waiting|answered|expired]``: the events the index shows, as JSON, newest
    first (at most `MAX_LISTED`), never their tokens: what ``hitl list --endpoint`` prints.

    The listing is walked newest first until the reply is full: a reply reads at most the records of the
    events it lists (`_Seen`), whatever the root holds.
    """
    wanted = _query(request).get("status") or "all"
    if wanted not in ("all", *_answers.STATES.values()):
        raise _refuse(400, f"status must be waiting, answered or expired, got {wanted[:40]!r}")
    listed: list[Record] = []
    for e in site.listing.get(site.store):
        if len(listed) >= MAX_LISTED:
            break
        row = site.seen.row(site.store, e)
        state = _answers.STATES.get(row.status, row.status) if row is not None else ""
        if row is None or wanted not in ("all", state):
            continue
        # `status` in 2.12.1's words, as ``GET /status`` answers it; `state` in today's.
        item = _answers.public_request(row.request) | {"status": _STATUS_2_12.get(state, "expired"), "state": state}
        if row.refusal is not None and state == "waiting":  # why it waits again
            item["refused"] = {k: row.refusal[k] for k in ("refused_at", "error") if k in row.refusal}
        listed.append(item)
    listed.sort(key=lambda r: str(r.get("created_at", "")), reverse=True)  # to the millisecond, as `hitl list`
    return json_reply(200, {"events": listed})


def form(site: Site, request: Request, request_id: str) -> Response:
    """``GET /form/<request_id>?token=…``: the form, or the event's state once answered or expired."""
    token = _query(request).get("token")
    try:
        event, who = _viewable(site, request, request_id, token)
    except StorageError:
        raise
    except HitlError as e:
        raise _refused(site, request, e, "Cannot open this event") or e from None
    return _page_for(site, event, who, _holds(event, token))


def inbox(site: Site, request: Request, _: str) -> Response:
    """``GET /inbox``: the questions waiting for the identified person, soonest deadline first, each
    opening its form without a token (the identity authorizes it)."""
    who = _who(site, request)
    if not who.identity:
        return html_reply(200, _html.inbox_page([], ""), csp=_html.inbox_csp())
    return html_reply(200, _html.inbox_page(_waiting_for(site, who), who.identity), csp=_html.inbox_csp())


def _waiting_for(site: Site, who: _policy.Who, answered: str = "") -> list[tuple[Record, float, list[Record] | None]]:
    """(request, seconds left, votes) of each waiting event that names `who` among its respondents,
    that they may answer and have not voted on (nor just `answered`), soonest deadline first."""
    mine = []
    for listed in site.listing.get(site.store):
        request = None if listed.answered or listed.request_id == answered else site.seen.request(site.store, listed)
        if request is None or not _policy.is_respondent(request, who) or _policy.refusal(request, who) is not None:
            continue
        row = site.seen.row(site.store, listed, request)
        voted = row is not None and any(
            _policy.canonical_or_none(v.get("identity")) == who.identity for v in row.votes or ()
        )
        if row is not None and row.status == "pending" and not voted:
            mine.append((row.request, row.left, row.votes))
    mine.sort(key=lambda item: item[1])
    return mine


def _with_next(site: Site, who: _policy.Who, document: str, answered: str) -> str:
    """An answered (or voted) page with how many more questions wait for `who`, if identified."""
    if not who.identity:
        return document
    return _html.with_more(document, len(_waiting_for(site, who, answered)))


def _page_for(
    site: Site,
    event: Record,
    who: _policy.Who,
    holder: bool,
    *,
    value: str = "",
    error: str = "",
    comment: str = "",
    form: Mapping[str, Sequence[str]] | None = None,
    field_errors: Mapping[str, str] | None = None,
) -> Response:
    """The form for a pending event as `who` may use it (400 when re-shown with an error), else the
    event's state. The token stays off the page unless its viewer is the `holder`. When the waiting task
    refused the last answer, the form says why, beside the fields it named."""
    response, _, refusal = _answers.outcome(site.store, event)
    if response is not None and response.get("status") == "completed":
        return html_reply(200, _html.answered_page(event, response, just_now=False))
    if response is not None or seconds_left(event) <= 0:
        return html_reply(200, _html.expired_page(event, response))
    notice = ""
    if refusal is not None and not error:
        notice = f"The task refused the last answer: {refusal.get('error')}. Please answer again."
        field_errors = refusal.get("field_errors") or None
    votes = _answers.votes_of(site.store, event, response)
    standing, vote = _standing(event, who, votes)
    if standing:
        standing = _html.standing_html(standing, event, vote=vote, votes=votes or (), sign_in=site.identity_header)
    page = _html.form_page(
        event,
        seconds_left(event),
        value,
        error,
        comment=comment,
        form=form,
        field_errors=field_errors,
        notice=notice,
        holder=holder,
        votes=votes,
        standing=standing,
    )
    return html_reply(400 if error else 200, page)


def _standing(event: Record, who: _policy.Who, votes: Sequence[Record] | None) -> tuple[str, Record | None]:
    """Why `who` may not answer the event, as `_html.standing_html` words it ("" when they may), and
    their vote among `votes` when that is why."""
    error = _policy.refusal(event, who)
    if isinstance(error, NotIdentifiedError):
        return "sign-in", None
    if error is not None:
        return ("requester" if _policy.is_requester(event, who) else "not-asked"), None
    mine = who.identity and _policy.vote_key(who.identity)
    vote = next((v for v in votes or () if mine and _policy.vote_key(str(v.get("identity"))) == mine), None)
    return ("voted", vote) if vote is not None else ("", None)


def _holds(event: Record, token: object) -> bool:
    """Whether `token` is the event's own."""
    return _policy.token_matches(event, token)


def status(site: Site, request: Request, request_id: str) -> Response:
    """``GET /status/<request_id>?token=…[&wait=N]``: the event (never its token) and its outcome.

    With ``wait`` (0 to `MAX_STATUS_WAIT` seconds), a pending event's reply waits until it is
    answered or expires, or N seconds pass (`Watch`: past its share of the connections, at once).
    """
    query = _query(request)
    wait = _wait_seconds(query.get("wait"))
    event, _ = _viewable(site, request, request_id, query.get("token"))
    response, _, refusal = site.watch.outcome(event, wait)
    votes = _answers.votes_of(site.store, event, response)
    # While it waits for another answer: why the task refused the last one.
    refusal = refusal if response is None else None
    return json_reply(200, _answers.status_record(event, response, refusal, votes=votes))


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
    if site.trust_forwarded or _believed(site, request, ("X-Forwarded-Host", "X-Forwarded-Proto")):
        # A proxy that appends to these headers puts its own value last.
        forwarded = [v.split(",")[-1].strip() for v in request.headers.get_all("X-Forwarded-Host") or []]
        proto = [v.split(",")[-1].strip() for v in request.headers.get_all("X-Forwarded-Proto") or []]
        host = forwarded[-1] if forwarded else host
        scheme = proto[-1] if proto else scheme
    return _origin(f"{scheme}://{host}")


def _who(site: Site, request: Request) -> _policy.Who:
    """Who sent `request`, from the proxy headers this server trusts (`_policy.identify`), sent by a
    trusted proxy; anyone else is anonymous."""
    if not site.identity_header or not _believed(site, request, (site.identity_header, site.groups_header)):
        return _policy.Who()
    return _policy.identify(request.headers, site.identity_header, site.groups_header)


_ignored_lock = threading.Lock()


def _believed(site: Site, request: Request, names: Iterable[str | None]) -> bool:
    """Whether the proxy headers `names` of `request` are believed: only from a peer in
    ``FLYTE_HITL_TRUSTED_PROXIES``. From any other peer they are ignored, logged at most once a minute."""
    try:
        peer = ipaddress.ip_address(request.client.partition("%")[0])
    except ValueError:  # no peer address (a request made without a socket)
        peer = None
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:  # ::ffff:127.0.0.1
        peer = peer.ipv4_mapped
    if peer is not None and any(peer in network for network in site.trusted_proxies):
        return True
    sent = [name for name in names if name and name in request.headers]
    now = time.monotonic()
    with _ignored_lock:
        log, site.ignored_at = (True, now) if sent and now - site.ignored_at >= 60 else (False, site.ignored_at)
    if log:
        logger.warning(
            "ignored %s from %s: not a trusted proxy (%s)", ", ".join(sent), request.client or "?", TRUSTED_PROXIES_ENV
        )
    return False


def _viewable(site: Site, request: Request, request_id: object, token: object) -> tuple[Record, _policy.Who]:
    """The stored event for its form or status, and who asks: the token, or an identified respondent.

    An unknown id, and an event the person may not see, are refused alike, so a client cannot tell which
    events exist or whom they ask: with neither a token nor a name, on a server that identifies people, as
    a request to sign in; otherwise as a wrong token.
    """
    who = _who(site, request)
    if site.identity_header and not who.identity and not token and check_request_id(request_id):
        raise NotIdentifiedError(str(request_id), "no token and no identity came with this request; sign in")
    try:
        event = _answers.load(site.store, request_id)
    except EventNotFoundError:
        raise InvalidTokenError(str(request_id)) from None
    _policy.check_viewer(event, who, token)
    return event, who


def _answerable(site: Site, request: Request, request_id: object, token: object) -> tuple[Record, _policy.Who]:
    """The stored event for an answer and who sends it, once `_policy` lets them answer: the one gate
    of the form and JSON submissions."""
    event, who = _viewable(site, request, request_id, token)
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
    credentials: tuple[str | None, str | None] = (None, None)
    try:
        _check_same_origin(site, request, title)
        if _media_type(request) != FORM:
            raise _refuse(415, f"expected a form ({FORM}), got {_media_type(request) or 'nothing'!r}", page=title)
        body = _body(request, title)
        # The token is checked before the rest of the form is decoded: a client without it costs a split.
        credentials = _form_credentials(body)
        event, who = _answerable(site, request, *credentials)
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
        raise _refused(site, request, e, title, *credentials) or e from None
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
            site,
            event,
            who,
            _holds(event, credentials[1]),
            value=one.get("value", ""),
            error=str(e),
            comment=comment or "",
            form=fields,
            field_errors=e.field_errors,
        )
    except AlreadyVotedError as e:
        raise _refused(site, request, e, "Already voted", *credentials) or e from None
    except AlreadyAnsweredError as e:
        return html_reply(409, _html.answered_page(event, e.response, just_now=False))
    except EventExpiredError:
        return html_reply(410, _html.expired_page(event))
    if response.get("status") == "voted":  # a vote that did not decide: nothing to hand on yet
        _answered(site, event, response)  # but Slack shows the tally
        votes = _answers.votes_of(site.store, event, None) or []
        page = _html.voted_page(event, response, votes)
        return html_reply(200, _with_next(site, who, page, event["request_id"]))
    _answered(site, event, response)
    page = _html.answered_page(event, response, just_now=True)
    reply = html_reply(200, _with_next(site, who, page, event["request_id"]))
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
        _answered(site, event, response)  # but Slack shows the tally
        return json_reply(200, _vote_reply(event, response))
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
    """An answer or vote was stored here: this server's views list the event's votes again at their next
    visit, and its Slack messages, if it has any, are brought up to date (in the background)."""
    site.seen.forget_votes(str(event["request_id"]))
    if event.get("slack"):
        from . import _slack

        _slack.refresh(site.store, event)


def slack_interactions(site: Site, request: Request, _: str) -> Response:
    """``POST /slack/interactions``: a click or a submitted modal in Slack, signed by Slack (see `_slack`)."""
    from . import _slack, _wake

    def stored_late(event: Record, response: Record) -> None:  # the acknowledgement went first
        site.watch.stored(event["request_id"])
        _wake.poke(site.store, event, response)

    outcome = _slack.interaction(site.store, request.headers, _body(request), request.client, stored_late)
    if outcome.body is not None:
        reply = json_reply(outcome.status, outcome.body)
    else:
        reply = Response(outcome.status, b"", [("Cache-Control", "no-store")])
    if outcome.answered is not None:
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
