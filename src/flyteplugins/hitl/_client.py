"""Answering from Python and the command line: through a server's JSON endpoint, or straight to a root.

Requests to a server carry the headers the caller gives, after those of ``FLYTE_HITL_HEADERS`` (one
``Name: value`` a line): credentials for a login in front of the server, such as the platform's
``Authorization: Bearer ...``. Their values never appear in an error or a log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from . import _answers, _http, _wait, _wake
from ._aio import blocking
from ._errors import (
    AlreadyAnsweredError,
    ConfigurationError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidTokenError,
    InvalidValueError,
    ServerReplyError,
    ServerUnavailableError,
)
from ._http import redact_url
from ._schema import encode
from ._store import Record, Store, check_request_id, default_root

#: Extra request headers for every request to a server, one ``Name: value`` a line.
HEADERS_ENV = "FLYTE_HITL_HEADERS"

#: Seconds a server may take to accept the connection, and then between any two parts of its reply;
#: the whole exchange ends within twice this (plus the seconds a long-poll asks the server to wait).
TIMEOUT_SECONDS = 30.0


def parse_form_url(url: str) -> tuple[str, str, str | None]:
    """Split a form URL into (endpoint, request_id, token).

    Example:
        >>> parse_form_url("https://forms.example/form/approve-1a2b?token=abc")
        ('https://forms.example', 'approve-1a2b', 'abc')
    """
    parts = urlsplit(url)
    prefix, sep, request_id = parts.path.rpartition("/form/")
    if not sep or parts.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"not a form URL (expected http(s)://HOST/form/<request_id>?token=...): {redact_url(url)!r}"
        )
    token = parse_qs(parts.query).get("token", [None])[0]
    endpoint = check_endpoint(f"{parts.scheme}://{parts.netloc}{prefix}", "the form URL")
    return endpoint, check_request_id(request_id), token


def check_endpoint(endpoint: str, source: str = "FLYTE_HITL_ENDPOINT (or --endpoint)") -> str:
    """`endpoint` without a trailing slash, if it is an http(s) URL of a server; else `ConfigurationError`.

    Example:
        >>> check_endpoint("http://127.0.0.1:8080/")
        'http://127.0.0.1:8080'
    """
    try:
        parts = urlsplit(endpoint)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    else:
        if parts.scheme in ("http", "https") and parts.hostname and port_ok:
            if "@" in parts.netloc:
                raise ConfigurationError(f"{source} carries a user name or password; leave them out")
            if parts.query or parts.fragment:
                raise ConfigurationError(f"{source} is {redact_url(endpoint)!r} plus a query; give the server's URL")
            return endpoint.rstrip("/")
    raise ConfigurationError(
        f"{source} is {redact_url(endpoint)!r}: expected the server's http(s)://HOST[:PORT][/PATH] URL"
    )


def answer(
    target: str,
    value: Any,
    *,
    via: str,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    comment: str | None = None,
    headers: Mapping[str, str] | None = None,
    identity: str | None = None,
    groups: frozenset[str] = frozenset(),
) -> Record:
    """Answer the event `target` (a form URL or a request id); see `hitl.submit`. `groups`: those
    `identity` is in, on a write straight to the root."""
    if (identity is not None or groups) and (endpoint or target.startswith(("http://", "https://"))):
        raise ConfigurationError(
            "an identity is named only on a write straight to the storage root (--root); a server takes "
            "identities from the proxy in front of it, never from the request"
        )
    if target.startswith(("http://", "https://")):
        endpoint, request_id, url_token = parse_form_url(target)
        return _post(endpoint, request_id, value, token or url_token, comment, via, request_headers(headers))
    if endpoint:
        sent = request_headers(headers)
        return _post(check_endpoint(endpoint), check_request_id(target), value, token, comment, via, sent)
    store = Store(root or default_root())
    request = _answers.load(store, target)
    import getpass

    client = f"{getpass.getuser()}@{socket.gethostname()}"
    response = _answers.submit(
        store, request, value, via=via, client=client, comment=comment, identity=identity, groups=groups
    )
    if response.get("status") == "voted":  # a vote that did not decide: the wait goes on
        return response
    _wait.hand_over(store.root, request["request_id"], response)  # a wait in this very process wakes at once
    _wake.poke(store, request, response)  # and one in another process (a task pod) soon after
    return response


def status(
    request_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    wait: float = 0,
    headers: Mapping[str, str] | None = None,
) -> Record:
    """The event's status record (as ``GET /status`` returns it), without its token.

    With `wait`, block up to that many seconds for the event to be answered or expire: through
    the server's long-poll (60 s at a time), or by reading its outcome in the root once a second.
    `headers` go with each request to the server, after those of ``FLYTE_HITL_HEADERS``.
    """
    deadline = time.monotonic() + wait
    if endpoint:
        base = check_endpoint(endpoint)
        url = f"{base}/status/{check_request_id(request_id)}"
        if token:  # without one, a server behind a login may still know the caller as a respondent
            url += f"?token={quote(token, safe='')}"
        sent = request_headers(headers)
        while True:
            asked = time.monotonic()
            step = min(max(0.0, deadline - asked), 60.0)
            query = f"{url}{'&' if token else '?'}wait={step:.3f}" if step else url
            record = _call("GET", query, request_id, token or "", wait=step, headers=sent)
            if state(record) != "waiting" or time.monotonic() >= deadline:
                return record
            # Answered before the step was over (a server at its share of long-polls, or one that does
            # not long-poll): ask again within a second.
            time.sleep(min(1.0, max(0.0, asked + step - time.monotonic())))
    store = Store(root or default_root())
    request = _answers.load(store, request_id)
    while True:
        found = _answers.outcome(store, request)
        step = min(1.0, deadline - time.monotonic(), _answers.seconds_left(request))
        if found.response is not None or step <= 0:
            break
        time.sleep(step)
    votes = _answers.votes_of(store, request, found.response)
    refusal = found.refusal if found.response is None else None  # while it waits for another answer
    return _answers.status_record(request, found.response, refusal, votes=votes)


def state(record: Mapping[str, Any]) -> str:
    """An event's state from its status record: waiting, answered, expired or withdrawn. Its ``state``, or from
    servers that have none its ``status`` (``pending``/``completed`` as 2.12.1 wrote them, or the
    state words); another value is returned as it is.

    Example:
        >>> state({"status": "pending"}), state({"status": "pending", "state": "waiting"})
        ('waiting', 'waiting')
    """
    given = record.get("state")
    if given in (*_answers.STATES.values(), "withdrawn"):
        return str(given)
    status = str(record.get("status"))
    return _answers.STATES.get(status, status)


@blocking()
def submit(
    target: str,
    value: Any,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    comment: str | None = None,
    headers: Mapping[str, str] | None = None,
    identity: str | None = None,
) -> Record:
    """Answer an event from Python, with the same checks and first-answer-wins rule as the form.

    Args:
        target: The event's form URL (it carries the token), or its request id.
        value: The answer; checked against the event's type and choices.
        token: The event's token, when `target` is a request id and the answer goes through a server;
            not needed where the login in front of the server (`headers`) identifies a respondent.
        endpoint: A server to answer through; without it (and without a form URL) the answer is
            written straight to the storage root.
        root: The storage root (default: ``$FLYTE_HITL_ROOT``).
        comment: An optional comment for the audit trail.
        headers: Extra request headers for the server, after those of ``FLYTE_HITL_HEADERS``: the
            credentials of a login in front of it (``{"Authorization": "Bearer ..."}``). Their
            values never appear in an error.
        identity: Who answers, on a write straight to the storage root (trusted as access to the
            root is); needed where the event names respondents, a requester or a quorum.

    Returns:
        The server's reply, or the stored answer record when written to the root.

    Raises:
        InvalidValueError, InvalidTokenError, EventNotFoundError, AlreadyAnsweredError, EventExpiredError:
            the event refused the answer (from a server, with the server's reason).
        ServerUnavailableError: the server could not be reached, did not reply within
            `TIMEOUT_SECONDS`, or answered 429 or 5xx.
        ServerReplyError: the reply was not this API's JSON: a redirect (never followed), an HTML
            page (a login proxy?), or a status the API does not use.
        ConfigurationError: the form URL or endpoint is not an http(s) URL of a server, a header is
            not a valid ``Name: value``, or the root is not a storage root.
        StorageError: the root could not be read or written.

    Example:
        >>> hitl.submit("http://127.0.0.1:8080/form/approve-1a2b?token=abc", True)
        >>> hitl.submit("approve-1a2b", True, root="s3://bucket/hitl", comment="LGTM")
        >>> hitl.submit(form_url, True, headers={"Authorization": f"Bearer {platform_token}"})
    """
    return answer(
        target,
        value,
        via="python",
        token=token,
        endpoint=endpoint,
        root=root,
        comment=comment,
        headers=headers,
        identity=identity,
    )


# RFC 9110's token characters; a value is visible ASCII or Latin-1, spaces and tabs inside.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Set by the request itself: a caller's value would break its framing or send it elsewhere.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type"})


def request_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of ``FLYTE_HITL_HEADERS``, then `headers` (a name given in both takes the value
    in `headers`), each checked; a bad one is a `ConfigurationError` that names it but never shows
    its value.

    Example:
        >>> os.environ["FLYTE_HITL_HEADERS"] = "Authorization: Bearer abc\\nX-Team: sre"
        >>> request_headers({"x-team": "data"})
        {'Authorization': 'Bearer abc', 'x-team': 'data'}
    """
    pairs = [
        parse_header(line, f"{HEADERS_ENV} line {n}")
        for n, line in enumerate((os.environ.get(HEADERS_ENV) or "").splitlines(), 1)
        if line.strip()
    ]
    pairs += [_check_header(name, value, "headers") for name, value in (headers or {}).items()]
    return dict({name.lower(): (name, value) for name, value in pairs}.values())


def parse_header(line: str, source: str = "--header") -> tuple[str, str]:
    """``Name: value`` as (name, value), or a `ConfigurationError` that does not show the value.

    Example:
        >>> parse_header("Authorization: Bearer abc")
        ('Authorization', 'Bearer abc')
    """
    name, sep, value = line.partition(":")
    if not sep or not name.strip():
        raise ConfigurationError(f"{source} takes 'Name: value' (a header name, a colon, then its value)")
    return _check_header(name.strip(), value.strip(), source)


def _check_header(name: object, value: object, source: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise ConfigurationError(f"{source}: {shown} is not a header name")
    if name.lower() in _OWN_HEADERS:
        raise ConfigurationError(f"{source}: {name} is set by the request itself; leave it out")
    if not isinstance(value, str) or not _HEADER_VALUE_RE.fullmatch(value):
        raise ConfigurationError(f"{source}: the value of {name} is not a text on one line")
    return name, value


def _post(
    endpoint: str,
    request_id: str,
    value: Any,
    token: str | None,
    comment: str | None,
    via: str,
    headers: Mapping[str, str],
) -> Record:
    if not token and not headers:  # nothing that could say who answers
        raise InvalidTokenError(request_id)
    body: dict[str, Any] = {"request_id": request_id, "value": encode(value), "via": via}
    if token:  # without one, a server behind a login may still know the caller as a respondent
        body["token"] = token
    if comment is not None:
        body["comment"] = comment
    try:
        data = json.dumps(body).encode()
    except (TypeError, ValueError) as e:
        raise InvalidValueError(f"cannot send {value!r} as JSON: {e}", value) from None
    return _call("POST", f"{endpoint}/submit/json", request_id, token or "", body=data, value=value, headers=headers)


#: Largest reply read from a server; the API's replies are a few KiB.
MAX_REPLY_BYTES = 1 << 20


def list_events(endpoint: str, *, status: str = "all", headers: Mapping[str, str] | None = None) -> list[Record]:
    """The events a server's index shows (``GET /events``), newest first, without their tokens."""
    url = f"{check_endpoint(endpoint)}/events" + ("" if status == "all" else f"?status={quote(status)}")
    events = _call("GET", url, "", "", headers=request_headers(headers)).get("events")
    if not isinstance(events, list):
        raise ServerReplyError(f"{redact_url(url)} did not list events", 200)
    return [e for e in events if isinstance(e, dict)]


def _call(
    method: str,
    url: str,
    request_id: str,
    token: str,
    *,
    body: bytes | None = None,
    value: Any = None,
    wait: float = 0,
    headers: Mapping[str, str] | None = None,
) -> Record:
    """Send one request without following redirects; return the JSON object of a 2xx reply, or raise
    the `HitlError` that matches the reply (see `_error_for`). `wait`: seconds the server may hold
    a long-poll before it replies, added to the timeouts. `headers` (checked by `request_headers`)
    go with it; neither they nor the token appear in the error."""
    try:
        return _exchange(method, url, request_id, token, body=body, value=value, wait=wait, headers=headers or {})
    except HitlError as e:
        secrets = [token, *(headers or {}).values()]
        e.args = tuple(_redact(a, secrets) if isinstance(a, str) else a for a in e.args)
        raise


def _exchange(
    method: str,
    url: str,
    request_id: str,
    token: str,
    *,
    body: bytes | None,
    value: Any,
    wait: float,
    headers: Mapping[str, str],
) -> Record:
    where = redact_url(url)
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    try:
        reply = _http.exchange(
            method,
            url,
            seconds=2 * TIMEOUT_SECONDS + wait,
            read_seconds=TIMEOUT_SECONDS + wait,
            body=body,
            headers=headers,
            max_body=MAX_REPLY_BYTES,
        )
    except _http.ExchangeError as e:
        what = "no usable reply from" if e.connected else "cannot reach"
        raise ServerUnavailableError(f"{what} {where}: {_reason(e)}") from None
    status, headers_in, data = reply.status, reply.headers, reply.body
    if len(data) > MAX_REPLY_BYTES:
        raise ServerReplyError(f"{where} sent a reply larger than {MAX_REPLY_BYTES} bytes", status)
    if 300 <= status < 400:
        location = redact_url(headers_in.get("Location") or "(no Location header)")
        raise ServerReplyError(
            f"{where} redirects ({status}) to {location}; redirects are not followed, so that the answer and its "
            "token go only where you sent them: use the server's own URL",
            status,
        )
    record = _json_object(data)
    if 200 <= status < 300:
        if record is None:
            raise ServerReplyError(
                f"{where} answered {status} with {_kind(headers_in, data)}, not this API's JSON: is it a hitl form "
                "server (or a login page in front of one)?",
                status,
            )
        return record
    detail = record.get("detail") if record is not None else None
    raise _error_for(status, str(detail) if detail is not None else None, request_id, where, value, headers_in, data)


def _json_object(body: bytes) -> Record | None:
    try:
        record = json.loads(body)
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        return None
    return record if isinstance(record, dict) else None


def _kind(headers: Any, body: bytes) -> str:
    content_type = headers.get("Content-Type") if headers is not None else None
    return f"{content_type.split(';')[0].strip()!r} content" if content_type else f"{len(body)} bytes of no stated type"


def _reason(reason: object) -> str:
    text = str(reason) or type(reason).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _error_for(
    status: int, detail: str | None, request_id: str, where: str, value: Any, headers: Any, body: bytes
) -> HitlError:
    """The error for a reply with `status`: our server always says why in a JSON ``detail``; a reply
    without one comes from something else (a proxy, a load balancer, another program)."""
    from http import HTTPStatus

    try:
        phrase = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        phrase = str(status)
    if status == 429 or status >= 500:
        why = detail if detail is not None else f"{_kind(headers, body)} instead of this API's JSON"
        return ServerUnavailableError(f"{where} answered {phrase}: {why}; try again later")
    if status == 401:  # the platform's login (or another) in front of the server
        why = f": {detail}" if detail is not None else f" with {_kind(headers, body)}"
        return ServerReplyError(
            f"{where} asks for a login ({phrase}){why}; send its credentials with --header or FLYTE_HITL_HEADERS "
            "(headers= in Python)",
            status,
        )
    if detail is None:
        return ServerReplyError(
            f"{where} answered {phrase} with {_kind(headers, body)}, not this API's JSON: is it a hitl form "
            "server (or a proxy in front of one)?",
            status,
        )
    error: HitlError
    if status == 400:
        # The request was built here (well-formed JSON, a checked id), so what the server refuses is its
        # content: the value, its type, or the comment.
        return InvalidValueError(detail, value)
    if status == 403:
        error = InvalidTokenError(request_id)
    elif status == 404:
        error = EventNotFoundError(request_id, where)
    elif status == 409:
        error = AlreadyAnsweredError(request_id, {})
    elif status == 410:
        error = EventExpiredError(request_id, "its deadline")
    else:  # 405, 411, 413, 415, 431...: the request's form was refused, not its content
        return ServerReplyError(f"{where} refused the request ({phrase}): {detail}", status)
    error.args = (detail,)
    return error


def _redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (the token, a header's value, and the credential after a value's
    scheme, as in ``Bearer <credential>``) shown as ``<token>``/``<secret>``.

    A server or proxy may echo the request in its reply: a redirect's path, an error's detail.
    Secrets of a few characters are not ours (tokens have 32) and would match inside other words:
    "t" turned "http" into "h<token><token>p".
    """
    for n, secret in enumerate(secrets):
        shown = "<token>" if n == 0 else "<secret>"
        for part in {secret, secret.rpartition(" ")[2]}:
            if len(part) >= 8:
                text = text.replace(part, shown).replace(quote(part, safe=""), shown)
    return text
