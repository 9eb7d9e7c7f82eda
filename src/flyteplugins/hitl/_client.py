"""Answering from Python and the command line: through a server's JSON endpoint, or straight to a root."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from . import _answers, _wake
from ._aio import blocking
from ._errors import (
    AlreadyAnsweredError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidTokenError,
    InvalidValueError,
)
from ._store import Record, Store, check_request_id, default_root

if TYPE_CHECKING:
    import urllib.request

# urllib.request (with http.client, email and tempfile) is imported on the first HTTP call, not with
# the package: it was over half of the package's import time, and waits never use it.

#: Seconds to wait for a server's reply.
TIMEOUT_SECONDS = 30.0


def parse_form_url(url: str) -> tuple[str, str, str | None]:
    """Split a form URL into (endpoint, request_id, token)."""
    parts = urlsplit(url)
    prefix, sep, request_id = parts.path.rpartition("/form/")
    if not sep or parts.scheme not in ("http", "https"):
        raise HitlError(f"not a form URL (expected http(s)://HOST/form/<request_id>?token=...): {url!r}")
    token = parse_qs(parts.query).get("token", [None])[0]
    return f"{parts.scheme}://{parts.netloc}{prefix}", check_request_id(request_id), token


def answer(
    target: str,
    value: Any,
    *,
    via: str,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    comment: str | None = None,
) -> Record:
    """Answer the event `target` (a form URL or a request id); see `hitl.submit`."""
    if target.startswith(("http://", "https://")):
        endpoint, request_id, url_token = parse_form_url(target)
        return _post(endpoint, request_id, value, token or url_token, comment, via)
    if endpoint:
        return _post(endpoint.rstrip("/"), check_request_id(target), value, token, comment, via)
    store = Store(root or default_root())
    request = _answers.load(store, target)
    import getpass

    client = f"{getpass.getuser()}@{socket.gethostname()}"
    response = _answers.submit(store, request, value, via=via, client=client, comment=comment)
    from .hitl import _waiters  # a waiter in this very process wakes at once

    _waiters.notify(store.root, request["request_id"], response)
    _wake.poke(store, request)  # and one in another process (a task pod) soon after
    return response


def status(
    request_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    wait: float = 0,
) -> Record:
    """The event's status record (as ``GET /status`` returns it), without its token.

    With `wait`, block up to that many seconds for the event to be answered or expire: through
    the server's long-poll (60 s at a time), or by watching the root once a second.
    """
    import time

    deadline = time.monotonic() + wait
    if endpoint:
        import urllib.request

        url = f"{endpoint.rstrip('/')}/status/{check_request_id(request_id)}?token={quote(token or '', safe='')}"
        while True:
            asked = time.monotonic()
            left = max(0.0, deadline - asked)
            step = min(left, 60.0)
            record = _call(urllib.request.Request(f"{url}&wait={step:.3f}" if step else url), request_id, step)
            if record.get("status") != "pending" or left <= 60.0:
                return record
            if time.monotonic() - asked < step - 1:  # a server that does not long-poll: ask once a second
                time.sleep(1.0)
    store = Store(root or default_root())
    request = _answers.load(store, request_id)
    response = store.read_response(request_id)
    if response is None and wait > 0:
        from ._answers import seconds_left
        from ._watch import Watch

        watch = Watch(store)
        try:
            response = watch.wait(request_id, min(wait, max(0.0, seconds_left(request))))
        finally:
            watch.close()
        if response is None and seconds_left(request) <= 0:
            response = store.read_response(request_id)
    return _answers.status_record(request, response)


@blocking()
def submit(
    target: str,
    value: Any,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    root: str | None = None,
    comment: str | None = None,
) -> Record:
    """Answer an event from Python, with the same checks and first-answer-wins rule as the form.

    Args:
        target: The event's form URL (it carries the token), or its request id.
        value: The answer; checked against the event's type and choices.
        token: The event's token, when `target` is a request id and the answer goes through a server.
        endpoint: A server to answer through; without it (and without a form URL) the answer is
            written straight to the storage root.
        root: The storage root (default: ``$FLYTE_HITL_ROOT``).
        comment: An optional comment for the audit trail.

    Returns:
        The server's reply, or the stored answer record when written to the root.

    Raises:
        InvalidValueError, InvalidTokenError, EventNotFoundError, AlreadyAnsweredError, EventExpiredError.

    Example:
        >>> hitl.submit("http://127.0.0.1:8080/form/approve-1a2b?token=abc", True)
        >>> hitl.submit("approve-1a2b", True, root="s3://bucket/hitl", comment="LGTM")
    """
    return answer(target, value, via="python", token=token, endpoint=endpoint, root=root, comment=comment)


def _post(endpoint: str, request_id: str, value: Any, token: str | None, comment: str | None, via: str) -> Record:
    if not token:
        raise InvalidTokenError(request_id)
    import urllib.request

    body = {"request_id": request_id, "token": token, "value": value, "via": via}
    if comment is not None:
        body["comment"] = comment
    request = urllib.request.Request(
        f"{endpoint}/submit/json", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return _call(request, request_id)


def _call(request: urllib.request.Request, request_id: str, wait: float = 0) -> Record:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS + wait) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as e:
        try:
            detail = str(json.loads(e.read()).get("detail", e.reason))
        except ValueError:
            detail = str(e.reason)
        raise _error_for(e.code, detail, request_id) from None
    except urllib.error.URLError as e:
        raise HitlError(f"cannot reach {request.full_url.split('?')[0]}: {e.reason}") from e


def _error_for(status: int, detail: str, request_id: str) -> HitlError:
    if status == 400:
        return InvalidValueError(detail)
    if status in (401, 403):
        return InvalidTokenError(request_id)
    if status == 404:
        error: HitlError = EventNotFoundError(request_id, "the server's root")
    elif status == 409:
        error = AlreadyAnsweredError(request_id, {})
    elif status == 410:
        error = EventExpiredError(request_id, "its deadline")
    else:
        error = HitlError(f"server answered {status}: {detail}")
    error.args = (detail,)
    return error
