"""Notices sent when an event starts waiting: a JSON POST to a webhook, in the background.

A notice never holds up a wait, another wait or the end of the program: it is sent from a daemon
thread, and the whole exchange (connect, send, the reply's status and headers) has one deadline,
`TIMEOUT_SECONDS`, however slowly the receiver trickles its reply. A failure is logged once and
never fails the task. Redirects are not followed (a redirect is a failure naming where it pointed),
and logged URLs never show the credentials or the path of the webhook, which often hold its secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

if TYPE_CHECKING:
    import http.client

from ._errors import InvalidEventError
from ._values import type_name

logger = logging.getLogger("flyteplugins.hitl.notify")

NOTIFY_ENV = "FLYTE_HITL_NOTIFY_URL"
#: Seconds the whole exchange with the receiver may take before it is given up (the wait goes on regardless).
TIMEOUT_SECONDS = 10.0


def check_url(url: str | None) -> str | None:
    """Return `url` if it is an http(s) URL (or None), else raise `InvalidEventError`."""
    if url is None:
        return None
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        _ = parts and parts.port  # a port that is not a number raises here, not when the notice is sent
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidEventError(f"notify must be an http:// or https:// URL, got {shown_url(url)!r}")
    return url


def shown_url(url: object, *, path: bool = False) -> str:
    """`url` as logs may show it: scheme, host and port (and `path` if asked), never credentials or a query.

    Example:
        >>> shown_url("https://bot:s3cret@hooks.example.com/services/T0/B0/XYZ?x=1")
        'https://hooks.example.com'
    """
    if not isinstance(url, str):
        return repr(url)
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}" + (parts.path if path else "")


def payload(event: Any) -> dict[str, Any]:
    """The notice for `event`: its facts, and a `text` line that chat webhooks show as is."""
    return {
        "text": f"Human input needed for {event.name!r}: {event.prompt}\nAnswer: {event.form_url}",
        "event_name": event.name,
        "request_id": event.request_id,
        "prompt": event.prompt,
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
    import http.client  # on first use: most events send nothing

    parts = urlsplit(url)
    conn, path = _connection(parts, seconds)
    headers = {"Content-Type": "application/json"}
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
    # The socket's timeout bounds each read; this bounds the whole exchange, trickled replies included.
    timed_out = threading.Event()
    cut = threading.Timer(seconds, _cut, (conn, timed_out))
    cut.daemon = True
    cut.start()
    what = f"notifying {shown_url(url)} about {body.get('event_name')!r}"
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        reply = conn.getresponse()
        if 300 <= reply.status < 400:
            location = reply.getheader("Location")
            to = shown_url(location, path=True) if location else "nowhere (no Location)"
            logger.warning("%s failed: redirected (%d) to %s, not followed", what, reply.status, to)
            return False
        if reply.status >= 400:
            logger.warning("%s failed: HTTP %d %s", what, reply.status, reply.reason)
            return False
        return True
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = f"no complete reply within {seconds:g} s" if timed_out.is_set() else str(e) or type(e).__name__
        logger.warning("%s failed: %s", what, reason)
        return False
    finally:
        cut.cancel()
        conn.close()


def _connection(parts: SplitResult, seconds: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for the webhook at `parts`, through the proxy the environment names for it
    (``https_proxy``, ``http_proxy``, ``no_proxy``), and the target to put in the request line."""
    import http.client
    import urllib.request

    host, port = parts.hostname or "", parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass(host):
        proxy = None
    via = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else None
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        if via is None:
            return http.client.HTTPSConnection(host, port, timeout=seconds, context=context), path
        conn = http.client.HTTPSConnection(via.hostname or "", via.port or 80, timeout=seconds, context=context)
        conn.set_tunnel(host, port)  # CONNECT: the proxy sees the host, never the request
        return conn, path
    if via is None:
        return http.client.HTTPConnection(host, port, timeout=seconds), path
    target = f"http://{host}{f':{port}' if port else ''}{path}"  # a plain-HTTP proxy takes the whole URL
    return http.client.HTTPConnection(via.hostname or "", via.port or 80, timeout=seconds), target


def _cut(conn: Any, timed_out: threading.Event) -> None:
    """Shut the connection's socket, which ends a read blocked on it in another thread."""
    timed_out.set()  # first: the read that ends may fail in any way, and its thread then looks here
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
