"""Notices about an event: a signed CloudEvent POSTed to a webhook, or a Slack message, in the background.

A webhook notice is a CloudEvents 1.0 event in structured JSON (``type`` ``org.flyte.hitl.waiting``,
``.answered``, ``.expired``, …; ``data`` holds the event's facts), signed as a Standard Webhook when
``FLYTE_HITL_WEBHOOK_SECRET`` is set (``whsec_`` + base64): headers ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
``FLYTE_HITL_WEBHOOK_FORMAT=legacy`` sends the JSON shape of earlier releases instead.

A notice never holds up a wait, another wait or the end of the program: it is sent from a daemon
thread. Each attempt (connect, send, the reply's status and headers) has one deadline,
`TIMEOUT_SECONDS`, however slowly the receiver trickles its reply; a 5xx, a 429 or a failure to
connect or read is retried after `RETRY_DELAYS`, with the same id so that receivers deduplicate. A
failure is logged once and never fails the task. Redirects are not followed (a redirect is a failure
naming where it pointed), and logged URLs never show the credentials or the path of the webhook,
which often hold its secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit, urlunsplit

from . import _markdown
from ._errors import ConfigurationError, InvalidEventError

if TYPE_CHECKING:
    from ._slack import Slack

#: A `notify` target: a webhook URL or a Slack channel.
Target = Union[str, "Slack"]

logger = logging.getLogger("flyteplugins.hitl.notify")

NOTIFY_ENV = "FLYTE_HITL_NOTIFY_URL"
SECRET_ENV = "FLYTE_HITL_WEBHOOK_SECRET"
FORMAT_ENV = "FLYTE_HITL_WEBHOOK_FORMAT"
#: Seconds one exchange with the receiver may take before it is given up (the wait goes on regardless).
TIMEOUT_SECONDS = 10.0
#: Seconds between attempts at a notice the receiver could not take: 5 attempts within about a minute.
RETRY_DELAYS = (1.0, 4.0, 15.0, 30.0)
#: The CloudEvents ``type`` of each notice, by its kind.
TYPES = {kind: f"org.flyte.hitl.{kind}" for kind in ("waiting", "reminded", "escalated", "answered", "expired")}
#: The CloudEvents ``source`` of every notice.
SOURCE = "urn:flyteplugins-hitl"


def webhook_secret() -> bytes | None:
    """The key that signs webhook notices, from ``$FLYTE_HITL_WEBHOOK_SECRET`` (``whsec_`` + base64 of
    24 to 64 bytes, the Standard Webhooks format), or None when unset. Raises `ConfigurationError`."""
    text = os.environ.get(SECRET_ENV, "").strip()
    if not text:
        return None
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True) if text.startswith("whsec_") else b""
    except binascii.Error:
        key = b""
    if not 24 <= len(key) <= 64:
        raise ConfigurationError(
            f"{SECRET_ENV} must be 'whsec_' followed by the base64 of 24 to 64 random bytes "
            f"(e.g. python -c \"import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"), "
            f"got {len(text)} characters"
        )
    return key


def legacy_format() -> bool:
    """Whether notices keep the JSON shape of earlier releases (``FLYTE_HITL_WEBHOOK_FORMAT=legacy``)."""
    text = os.environ.get(FORMAT_ENV, "").strip().lower()
    if text not in ("", "cloudevents", "legacy"):
        raise ConfigurationError(f"{FORMAT_ENV} must be 'cloudevents' (the default) or 'legacy', got {text!r}")
    return text == "legacy"


def cloudevent(kind: str, data: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """The CloudEvent for a notice of `kind` about the event `data` describes (its ``request_id`` is the
    ``subject``). `event_id` defaults to a new UUID; notices that may be sent by more than one writer
    pass one derived from the outcome, so receivers see one id.

    Example:
        >>> cloudevent("waiting", {"request_id": "approve-1f2e", "event_name": "approve"})["type"]
        'org.flyte.hitl.waiting'
    """
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": SOURCE,
        "type": TYPES[kind],
        "subject": str(data.get("request_id", "")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "datacontenttype": "application/json",
        "data": data,
    }


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header's value for `body`: ``v1,<base64 HMAC-SHA256>`` of
    ``"{message_id}.{timestamp}.{body}"``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def check_url(url: str | None, source: str = "notify") -> str | None:
    """Return `url` if it is an http(s) URL (or None), else raise `InvalidEventError` naming `source`
    (the argument or the variable it came from). A webhook URL's path and query are its secret, so
    the message shows at most its scheme and host."""
    if url is None:
        return None
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        _ = parts and parts.port  # a port that is not a number raises here, not when the notice is sent
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        if not isinstance(url, str):
            got = repr(url)
        elif "://" in url:
            got = repr(shown_url(url))
        else:
            got = f"{len(url)} characters without a scheme"
        raise InvalidEventError(f"{source} must be an http:// or https:// URL, got {got}")
    return url


def targets(notify: object) -> list[Target]:
    """`notify` as a list of checked targets: webhook URLs and `Slack` channels (settings filled in).
    None means the defaults, ``$FLYTE_HITL_NOTIFY_URL`` and ``$FLYTE_HITL_SLACK_CHANNEL``.

    Raises `InvalidEventError` for a target that is neither, and `ConfigurationError` for a Slack
    target without the settings to post it, or webhooks with a bad secret or format setting.
    """
    checked: list[Target] = []
    if notify is None:
        url = check_url(os.environ.get(NOTIFY_ENV) or None, NOTIFY_ENV)
        if url is not None:
            checked.append(url)
        if os.environ.get("FLYTE_HITL_SLACK_CHANNEL"):
            from . import _slack

            checked.append(_slack.resolve(_slack.Slack()))
    else:
        items = list(notify) if isinstance(notify, Sequence) and not isinstance(notify, str) else [notify]
        for item in items:
            if isinstance(item, str):
                checked.append(check_url(item) or "")
            elif (slack := sys.modules.get("flyteplugins.hitl._slack")) is not None and isinstance(item, slack.Slack):
                checked.append(slack.resolve(item))
            else:
                raise InvalidEventError(
                    f"notify must be a webhook URL, a hitl.Slack(...) or a list of those, got {item!r}"
                )
    if any(isinstance(t, str) for t in checked):  # the settings every notice will read: refused now, not then
        webhook_secret()
        legacy_format()
    return checked


def announce(notify: Sequence[Target], event: Any, store: Any, request: dict[str, Any]) -> None:
    """Send the notices for `event`, which starts waiting: a POST to each webhook, a message to each
    Slack channel; all in daemon threads."""
    slack = [t for t in notify if not isinstance(t, str)]
    for url in notify:
        if isinstance(url, str):
            send(url, notice("waiting", payload(event)))
    if slack:
        from . import _slack

        _slack.announce(store, request, slack)


#: The notice threads still sending, for `flush`.
_sending: set[threading.Thread] = set()


def outcome(request: dict[str, Any], response: dict[str, Any], slot: int | None = None) -> None:
    """Send the notices of an outcome just stored for `request` (an answer, a decision, an expiry) to its
    webhooks, in daemon threads: ``answered`` or ``expired``, with the outcome's facts. Called by the one
    writer whose create-only write stored it; the CloudEvent's id is the outcome's own, so a receiver
    that sees one twice (a retry) takes it once."""
    kind = "answered" if response.get("status") == "completed" else "expired"
    at = response.get("answered_at") or response.get("expired_at") or response.get("withdrawn_at") or ""
    data = {
        "request_id": request.get("request_id"),
        "event_name": request.get("event_name"),
        "state": "withdrawn" if "withdrawn_at" in response else kind,
        **{k: response[k] for k in _OUTCOME_FIELDS if k in response},
    }
    data["text"] = f"{request.get('event_name')!r} {data['state']}" + (
        f": {json.dumps(response['value'])[:200]}" if "value" in response else ""
    )
    event_id = f"{request.get('request_id')}/{slot or 0}/{kind}/{at}"
    for url in request.get("webhooks") or ():
        if isinstance(url, str):
            send(url, notice(kind, data, event_id=event_id))


_OUTCOME_FIELDS = (
    "value",
    "answered_at",
    "expired_at",
    "withdrawn_at",
    "default_applied",
    "via",
    "identity",
    "comment",
    "votes",
)


def flush(seconds: float) -> None:
    """Give the notices still being sent up to `seconds` in all (a command about to exit)."""
    deadline = time.monotonic() + seconds
    for thread in list(_sending):
        thread.join(max(0.0, deadline - time.monotonic()))


def shown_url(url: object, *, path: bool = False) -> str:
    """`url` as logs may show it: scheme, host and port (and `path` if asked), never credentials or a query.

    Example:
        >>> shown_url("https://bot:s3cret@hooks.example.com/services/T0/B0/XYZ?x=1")
        'https://hooks.example.com'
    """
    if not isinstance(url, str):
        return repr(url)
    from . import _http

    parts = urlsplit(_http.redact_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path if path else "", "", ""))


def payload(event: Any) -> dict[str, Any]:
    """The notice for `event`: its facts, and a `text` line that chat webhooks show as is (with a
    Markdown prompt as its plain text)."""
    from ._task_types import type_name

    prompt = _markdown.plain(event.prompt, event.prompt_type)
    return {
        "text": f"Human input needed for {event.name!r}: {prompt}\nAnswer: {event.form_url}",
        "event_name": event.name,
        "request_id": event.request_id,
        "prompt": event.prompt,
        "prompt_type": event.prompt_type,
        "data_type": type_name(event.data_type),
        "form_url": event.form_url,
        "api_url": event.api_url,
        "curl": event.curl_command,
        "expires_at": event.expires_at,
    }


def notice(kind: str, data: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """The body of a notice of `kind`: a CloudEvent (see `cloudevent`), or in the legacy format `data`
    itself with ``"kind"`` added."""
    return {**data, "kind": kind} if legacy_format() else cloudevent(kind, data, event_id=event_id)


def send(url: str, body: dict[str, Any], delays: Sequence[float] | None = None) -> threading.Thread:
    """Start POSTing `body` as JSON to `url` in a daemon thread, retried after each of `delays` (default
    `RETRY_DELAYS`) while the receiver cannot take it, and return that thread at once.

    Example:
        >>> send("https://hooks.example.com/services/T0/B0/XYZ", notice("waiting", {"request_id": "a-1"}))
    """

    def run() -> None:
        try:
            post(url, body, delays=RETRY_DELAYS if delays is None else delays)
        finally:
            _sending.discard(thread)

    thread = threading.Thread(target=run, name="hitl-notify", daemon=True)
    _sending.add(thread)
    thread.start()
    return thread


def post(url: str, body: dict[str, Any], seconds: float = TIMEOUT_SECONDS, *, delays: Sequence[float] = ()) -> bool:
    """POST `body` as JSON to `url`, each attempt within `seconds`, again after each of `delays` on a
    5xx, a 429 or a failed exchange; signed when ``$FLYTE_HITL_WEBHOOK_SECRET`` is set. Log and
    return False when it never got through."""
    inner = body.get("data")
    data: dict[str, Any] = inner if isinstance(inner, dict) else body
    what = f"notifying {shown_url(url)} about {data.get('event_name', data.get('request_id'))!r}"
    encoded = json.dumps(body).encode()
    cloud = "specversion" in body
    headers = {"Content-Type": "application/cloudevents+json" if cloud else "application/json"}
    key = webhook_secret()
    message_id = str(body["id"]) if cloud else f"msg_{uuid.uuid4().hex}"
    for attempt, delay in enumerate((0.0, *delays)):
        time.sleep(delay)
        if key is not None:  # the same id on every attempt; each is signed at its own time
            timestamp = int(time.time())
            headers.update({"webhook-id": message_id, "webhook-timestamp": str(timestamp)})
            headers["webhook-signature"] = signature(key, message_id, timestamp, encoded)
        failure = _attempt(url, encoded, headers, seconds)
        if failure is None:
            return True
        why, again = failure
        if not again or attempt == len(delays):
            logger.warning("%s failed%s: %s", what, f" after {attempt + 1} attempts" if attempt else "", why)
            return False
    return False


def _attempt(url: str, body: bytes, headers: dict[str, str], seconds: float) -> tuple[str, bool] | None:
    """One POST: None when the receiver took it, else why not and whether to try again."""
    from . import _http

    try:
        reply = _http.exchange("POST", url, seconds=seconds, body=body, headers=headers)
    except _http.ExchangeError as e:
        return str(e), True
    if 300 <= reply.status < 400:
        location = reply.headers.get("Location")
        to = shown_url(location, path=True) if location else "nowhere (no Location)"
        return f"redirected ({reply.status}) to {to}, not followed", False
    if reply.status >= 400:
        return f"HTTP {reply.status} {reply.reason}", reply.status >= 500 or reply.status == 429
    return None
