"""Notices sent when an event starts waiting: a JSON POST to a webhook, in the background.

A notice never holds up a wait, another wait or the end of the program: it is sent from a daemon
thread, and the whole exchange (connect, send, the reply's status and headers) has one deadline,
`TIMEOUT_SECONDS`, however slowly the receiver trickles its reply. A failure is logged once and
never fails the task. Redirects are not followed (a redirect is a failure naming where it pointed),
and logged URLs never show the credentials or the path of the webhook, which often hold its secret.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit, urlunsplit

from . import _markdown
from ._errors import InvalidEventError

if TYPE_CHECKING:
    from ._slack import Slack

#: A `notify` target: a webhook URL or a Slack channel.
Target = Union[str, "Slack"]

logger = logging.getLogger("flyteplugins.hitl.notify")

NOTIFY_ENV = "FLYTE_HITL_NOTIFY_URL"
#: Seconds the whole exchange with the receiver may take before it is given up (the wait goes on regardless).
TIMEOUT_SECONDS = 10.0


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
    target without the settings to post it.
    """
    if notify is None:
        found: list[Target] = []
        url = check_url(os.environ.get(NOTIFY_ENV) or None, NOTIFY_ENV)
        if url is not None:
            found.append(url)
        if os.environ.get("FLYTE_HITL_SLACK_CHANNEL"):
            from . import _slack

            found.append(_slack.resolve(_slack.Slack()))
        return found
    items = list(notify) if isinstance(notify, Sequence) and not isinstance(notify, str) else [notify]
    checked: list[Target] = []
    for item in items:
        if isinstance(item, str):
            checked.append(check_url(item) or "")
        elif (slack := sys.modules.get("flyteplugins.hitl._slack")) is not None and isinstance(item, slack.Slack):
            checked.append(slack.resolve(item))
        else:
            raise InvalidEventError(f"notify must be a webhook URL, a hitl.Slack(...) or a list of those, got {item!r}")
    return checked


def announce(notify: Sequence[Target], event: Any, store: Any, request: dict[str, Any]) -> None:
    """Send the notices for `event`, which starts waiting: a POST to each webhook, a message to each
    Slack channel; all in daemon threads."""
    slack = [t for t in notify if not isinstance(t, str)]
    for url in notify:
        if isinstance(url, str):
            send(url, payload(event))
    if slack:
        from . import _slack

        _slack.announce(store, request, slack)


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


def send(url: str, body: dict[str, Any]) -> threading.Thread:
    """Start POSTing `body` as JSON to `url` in a daemon thread and return that thread at once.

    Example:
        >>> send("https://hooks.example.com/services/T0/B0/XYZ", {"text": "Ship it?"})
    """
    thread = threading.Thread(target=post, args=(url, body), name="hitl-notify", daemon=True)
    thread.start()
    return thread


def post(url: str, body: dict[str, Any], seconds: float = TIMEOUT_SECONDS) -> bool:
    """POST `body` as JSON to `url` within `seconds` in all; log and return False on any failure."""
    from . import _http

    what = f"notifying {shown_url(url)} about {body.get('event_name')!r}"
    try:
        reply = _http.exchange(
            "POST", url, seconds=seconds, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
    except _http.ExchangeError as e:
        logger.warning("%s failed: %s", what, e)
        return False
    if 300 <= reply.status < 400:
        location = reply.headers.get("Location")
        to = shown_url(location, path=True) if location else "nowhere (no Location)"
        logger.warning("%s failed: redirected (%d) to %s, not followed", what, reply.status, to)
        return False
    if reply.status >= 400:
        logger.warning("%s failed: HTTP %d %s", what, reply.status, reply.reason)
        return False
    return True
