"""One HTTP exchange with a deadline for the whole of it: answers and status calls to a form server
(`_client`), and webhook notices (`_notify`).

The socket's timeout bounds the connect and each read; a timer that shuts the socket bounds the whole
exchange, so a peer that trickles its reply a byte at a time cannot hold the caller. Redirects are not
followed: a 3xx comes back like any other reply. A proxy named by the environment (``https_proxy``,
``http_proxy``, ``no_proxy``) is used. http.client and urllib.request are imported on the first call:
waits never make one.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import http.client


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    #: At most the `max_body` bytes asked for, plus one (so a caller can tell a longer body).
    body: bytes


class ExchangeError(Exception):
    """The exchange failed; the message says why (the deadline, when that passed first)."""

    def __init__(self, reason: str, *, connected: bool) -> None:
        super().__init__(reason)
        #: False when the failure came before a connection was made (nothing was sent).
        self.connected = connected


def exchange(
    method: str,
    url: str,
    *,
    seconds: float,
    read_seconds: float | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_body: int = 0,
) -> Reply:
    """Send one request to `url` and read the reply's status, headers and up to `max_body` bytes of
    its body, all within `seconds`; each read within `read_seconds` (default: `seconds`).

    Raises `ExchangeError` on any failure to connect, send or read.

    Example:
        >>> exchange("GET", "http://127.0.0.1:8080/health", seconds=5, max_body=1024).status
        200
    """
    import http.client

    timed_out = threading.Event()
    conn: http.client.HTTPConnection | None = None
    cut: threading.Timer | None = None
    connected = False
    try:
        parts = urlsplit(url)
        conn, target, proxy_headers = _connection(parts, read_seconds or seconds)
        cut = threading.Timer(seconds, _cut, (conn, timed_out))
        cut.daemon = True
        cut.start()
        conn.connect()
        connected = True
        if timed_out.is_set():  # the timer fired while connecting, before there was a socket to shut
            raise TimeoutError
        conn.request(method, target, body=body, headers={**_auth(parts), **proxy_headers, **(headers or {})})
        reply = conn.getresponse()
        data = reply.read(max_body + 1) if max_body else b""
        return Reply(reply.status, reply.reason, reply.headers, data)
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = f"no complete reply within {seconds:g} s" if timed_out.is_set() else str(e) or type(e).__name__
        raise ExchangeError(reason, connected=connected) from None
    finally:
        if cut is not None:
            cut.cancel()
        if conn is not None:
            conn.close()


def redact_url(url: str) -> str:
    """`url` without its user name, password, query or fragment: what may be shown in a message or a log.

    Example:
        >>> redact_url("https://user:secret@hooks.example/x?token=abc")
        'https://hooks.example/x'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:  # a port that is not a number, an unclosed bracket
        parts = urlsplit(url.split("?", 1)[0].split("#", 1)[0])
        host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _auth(parts: SplitResult) -> dict[str, str]:
    """A Basic ``Authorization`` header for credentials in the URL, if it has any."""
    if parts.username is None:
        return {}
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return {"Authorization": "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")}


def _connection(parts: SplitResult, seconds: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection for the URL `parts`, through the proxy the environment names for it, the target
    to put in the request line, and the headers a plain-HTTP proxy needs with each request."""
    import http.client
    import urllib.request

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {redact_url(urlunsplit(parts))!r}")
    host, port = parts.hostname, parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass(host):
        proxy = None
    via = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else None
    proxy_auth = {"Proxy-" + k: v for k, v in _auth(via).items()} if via is not None else {}
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        if via is None:
            return http.client.HTTPSConnection(host, port, timeout=seconds, context=context), path, {}
        conn = http.client.HTTPSConnection(via.hostname or "", via.port or 80, timeout=seconds, context=context)
        conn.set_tunnel(host, port, headers=proxy_auth)  # CONNECT: the proxy sees the host, never the request
        return conn, path, {}
    if via is None:
        return http.client.HTTPConnection(host, port, timeout=seconds), path, {}
    target = f"http://{host}{f':{port}' if port else ''}{path}"  # a plain-HTTP proxy takes the whole URL
    return http.client.HTTPConnection(via.hostname or "", via.port or 80, timeout=seconds), target, proxy_auth


def _cut(conn: Any, timed_out: threading.Event) -> None:
    """Shut the connection's socket, which ends a read blocked on it in another thread."""
    timed_out.set()  # first: the read that ends may fail in any way, and its thread then looks here
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
