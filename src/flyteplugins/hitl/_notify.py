"""Notices sent when an event starts waiting: a JSON POST to a webhook. Failures never fail the task."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from ._errors import InvalidEventError

logger = logging.getLogger("flyteplugins.hitl.notify")

NOTIFY_ENV = "FLYTE_HITL_NOTIFY_URL"
#: Seconds to wait for the receiver before giving up (the wait goes on regardless).
TIMEOUT_SECONDS = 5.0


def check_url(url: str | None) -> str | None:
    """Return `url` if it is an http(s) URL (or None), else raise `InvalidEventError`."""
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidEventError(f"notify must be an http:// or https:// URL, got {url!r}")
    return url


def payload(event: Any) -> dict[str, Any]:
    """The notice for `event`: its facts, and a `text` line that chat webhooks show as is."""
    return {
        "text": f"Human input needed for {event.name!r}: {event.prompt}\nAnswer: {event.form_url}",
        "event_name": event.name,
        "request_id": event.request_id,
        "prompt": event.prompt,
        "data_type": event.data_type.__name__,
        "form_url": event.form_url,
        "api_url": event.api_url,
        "curl": event.curl_command,
        "expires_at": event.expires_at,
    }


def send(url: str, body: dict[str, Any]) -> bool:
    """POST `body` as JSON to `url`; log and return False on any failure."""
    import urllib.error  # on first use: urllib.request is heavy to import and most events send nothing
    import urllib.request

    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as reply:
            reply.read()
        return True
    except (OSError, ValueError) as e:  # HTTPError and URLError are OSErrors
        if isinstance(e, urllib.error.HTTPError):
            e.close()  # an error reply still holds its connection open until closed
        logger.warning("notifying %s about %r failed: %s", urlsplit(url).netloc, body.get("event_name"), e)
        return False
