"""The form server: an HTTP handler, a `ThreadingHTTPServer` around it, and starting and stopping it.

Endpoints (every one answers a client's mistake with a clear 4xx and writes nothing):

- ``GET /health``: ``{"status": "healthy"}``
- ``GET /``: an HTML index of events, without tokens or links
- ``GET /form/<request_id>?token=…``: the answer form (or the event's state once answered/expired)
- ``POST /submit``: a form-encoded answer (``request_id``, ``token``, ``value``) → an HTML page
- ``POST /submit/json``: a JSON answer ``{"request_id", "token", "value"[, "data_type"]}`` → JSON
- ``GET /status/<request_id>?token=…[&wait=N]``: the event and its outcome as JSON (never the token);
  with ``wait`` (0 to 60 s), once the event is answered or expired, or after N seconds
"""

from __future__ import annotations

import _thread
import http.client
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import _answers, _html, _wake
from ._answers import seconds_left
from ._errors import (
    AlreadyAnsweredError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
    StorageError,
)
from ._store import Record, Store
from ._watch import Watch

logger = logging.getLogger("flyteplugins.hitl.server")

HOST_ENV = "FLYTE_HITL_HOST"
PORT_ENV = "FLYTE_HITL_PORT"
IDENTITY_HEADER_ENV = "FLYTE_HITL_IDENTITY_HEADER"

JSON = "application/json"
HTML = "text/html; charset=utf-8"

# A header name is an RFC 9110 token; anything else (a space, a folded line, no name) is a 400.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY_RE = re.compile(r"\?\S*")
_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once a second (formatting it cost as much as routing a request)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


class _Reply(Exception):
    """Raised inside a handler to answer the client at once (used for 4xx outcomes)."""

    def __init__(self, status: int, detail: str, *, html: str | None = None, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.html = html
        self.headers = tuple(headers)


# How each client-side mistake or refusal is answered; anything else is a server error.
_STATUS: tuple[tuple[type[HitlError], int], ...] = (
    (InvalidRequestIdError, 400),
    (InvalidValueError, 400),
    (InvalidTokenError, 403),
    (EventNotFoundError, 404),
    (AlreadyAnsweredError, 409),
    (EventExpiredError, 410),
)


def _refusal(e: HitlError) -> tuple[int, str] | None:
    """(status, detail) for an error caused by the request, or None for our own failures."""
    for kind, status in _STATUS:
        if isinstance(e, kind):
            if isinstance(e, EventNotFoundError):  # do not show clients where the root is
                return status, f"not_found: no event with request_id {e.request_id!r}"
            return status, str(e)
    return None


# The client went away, or stalled past the handler timeout (a kernel-side timeout surfaces as
# BlockingIOError): routine, logged in one line, never answered.
_CLIENT_GONE = (ConnectionError, TimeoutError, BlockingIOError)


def _declares_body(headers: Any) -> bool:
    """Whether a request's headers announce a body (a non-zero or unreadable length, or any transfer coding)."""
    if headers is None:
        return False
    return headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in headers


class HitlServer(ThreadingHTTPServer):
    """Serves every event under one storage root.

    Example:
        >>> httpd = make_server(Store("/tmp/flyte/hitl"), port=0)
        >>> port = httpd.server_address[1]
    """

    # Handler threads are daemons so that one slow or idle client never keeps a finished
    # program alive; answers are stored before they are acknowledged, so none is lost.
    daemon_threads = True
    # The default backlog of 5 resets bursts of simultaneous connections.
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        on_answer: Callable[[str, Record], None] | None = None,
        identity_header: str | None = None,
    ) -> None:
        self.store = store
        self.on_answer = on_answer
        #: The header an authenticating proxy in front of us sets to the user's identity; trusted only
        #: when configured, since any client can send any header.
        self.identity_header = identity_header
        #: Long-polls of ``GET /status/<id>?wait=N``.
        self.watch = Watch(store)
        super().__init__(address, HitlHandler)

    def server_close(self) -> None:
        super().server_close()
        self.watch.close()

    @property
    def url(self) -> str:
        """The base URL clients should use (the wildcard address shown as 127.0.0.1)."""
        host, port = self.server_address[:2]
        host = str(host)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        # A daemon thread per connection, started without waiting for it to run (threading's
        # Thread.start waits): under load that wait cost the accepting thread a GIL hand-off per
        # connection, and a burst of 256 new connections waited up to 3 s to be accepted.
        _thread.start_new_thread(self.process_request_thread, (request, client_address))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-reply is routine; anything else is our bug and deserves a traceback.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _CLIENT_GONE):
            logger.info("%s: connection ended: %s", client_address[0], exc)
        else:
            logger.exception("internal error while serving %s", client_address[0])


class HitlHandler(BaseHTTPRequestHandler):
    """Routes requests to the endpoints above; one instance per connection."""

    server: HitlServer
    protocol_version = "HTTP/1.1"
    server_version = "flyteplugins-hitl"
    sys_version = ""
    #: Seconds an idle or slow connection may hold a thread before it is closed.
    timeout = 30
    #: Largest accepted request body, in bytes; larger ones get 413.
    max_body_bytes = 1 << 20
    # Replies are written in one send; without NODELAY, a small reply can still sit in Nagle's buffer.
    disable_nagle_algorithm = True

    #: Most header lines accepted in one request; more is a 431.
    max_headers = 100

    # -- parsing -------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # The timeout is kept by the kernel (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket: a
        # timeout set in Python makes every recv and send wait in poll() first, two more system
        # calls per request, each a point where another thread takes the GIL. A read that times out
        # then ends like end-of-input, and `_line` treats a cut-off line as the connection ending.
        if self.timeout is None:
            return
        seconds, fraction = divmod(float(self.timeout), 1.0)
        try:
            timeval = struct.pack("ll", int(seconds), int(fraction * 1e6))
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                self.connection.setsockopt(socket.SOL_SOCKET, option, timeval)
        except (OSError, AttributeError, struct.error):  # a platform without them: keep Python's timeout
            return
        self.connection.settimeout(None)

    def _line(self) -> bytes | None:
        """The next line (with its newline), or None when the connection ended or timed out mid-line."""
        line = self.rfile.readline(65537)
        if len(line) > 65536 or line.endswith(b"\n"):
            return line
        return None

    def parse_request(self) -> bool:
        """Read the request line and the headers; answer a malformed request and return False.

        In place of the standard library's version, which parses headers with the email package:
        that took a third of the CPU time of a small request. Stricter too: only HTTP/1.0 and 1.1,
        and a header line must be ``token: value`` (no folded lines), else 400.
        """
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words or not self.raw_requestline.endswith(b"\n"):
            # A blank line, or a line cut off by the client leaving or by the timeout: close without
            # a reply, as the standard library does.
            return False
        if len(words) != 3:
            self.send_error(400, f"bad request line {requestline[:100]!r}: expected 'METHOD TARGET HTTP/1.1'")
            return False
        command, path, version = words
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, f"unsupported HTTP version in {requestline[:100]!r}: use HTTP/1.0 or 1.1")
            return False
        self.command, self.request_version = command, version
        # A path starting with // reads as another host to a browser; keep it a path.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers = http.client.HTTPMessage()
        for _ in range(self.max_headers + 1):
            line = self._line()
            if line is None:
                return False  # the headers never ended: the client left or stalled past the timeout
            if len(line) > 65536:
                self.send_error(431, "a header line is longer than 65536 bytes")
                return False
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or not _HEADER_NAME_RE.fullmatch(name):
                self.send_error(400, f"malformed header line {line[:100]!r}")
                return False
            headers[name] = value.strip(" \t\r\n")
        else:
            self.send_error(431, f"more than {self.max_headers} header lines")
            return False
        self.headers = headers
        connection = headers.get("Connection", "").strip().lower()
        if version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if version == "HTTP/1.1" and headers.get("Expect", "").strip().lower() == "100-continue":
            return self.handle_expect_100()
        return True

    # -- dispatch ------------------------------------------------------------------------------

    def _routes(self, path: str) -> tuple[dict[str, Callable[[str], None]], str] | None:
        """The handlers by method for `path`, and the path parameter (a request id) if any."""
        if path == "/health":
            return {"GET": self._get_health}, ""
        if path == "/":
            return {"GET": self._get_index}, ""
        if path == "/submit":
            return {"POST": self._post_form}, ""
        if path == "/submit/json":
            return {"POST": self._post_json}, ""
        for prefix, handler in (("/form/", self._get_form), ("/status/", self._get_status)):
            if path.startswith(prefix):
                return {"GET": handler}, path[len(prefix) :]
        return None

    def _dispatch(self) -> None:
        method = self.command
        head = method == "HEAD"
        # Set on every request, refusals included: a keep-alive connection reuses this handler, and a
        # stale value would drop a GET's body after a HEAD (or send one after a HEAD), desyncing the client.
        self._head_only = head
        self._body_read = False
        try:
            try:
                path = urlsplit(self.path).path
            except ValueError:  # an absolute URL with a malformed host, e.g. "http://["
                raise _Reply(400, f"malformed request target {self.path[:200]!r}") from None
            routes = self._routes(path)
            if routes is None:
                raise _Reply(404, f"no such path: {path[:200]!r}")
            handlers, param = routes
            handler = handlers.get("GET" if head else method)
            if handler is None:
                allow = ", ".join(sorted({*handlers, *(["HEAD"] if "GET" in handlers else [])}))
                raise _Reply(405, f"method {method} not allowed here; allowed: {allow}", headers=[("Allow", allow)])
            handler(param)
        except _Reply as r:
            if r.html is not None:
                self._send(r.status, r.html.encode(), HTML, r.headers)
            else:
                self._send_json(r.status, {"detail": r.detail}, r.headers)
        except StorageError as e:
            # Before HitlError (its base class): a re-raise from that clause would skip this one and
            # drop the connection without a reply.
            logger.error("storage error: %s", e)
            self._send_json(503, {"detail": "storage is unavailable; try again later"}, [("Retry-After", "5")])
        except HitlError as e:
            refusal = _refusal(e)
            if refusal is None:
                raise
            self._send_json(refusal[0], {"detail": refusal[1]})
        except _CLIENT_GONE:
            raise  # the client went away; handle_error logs one line
        except Exception:
            # A bug of ours, not the client's: log it with context, answer 500 without details.
            logger.exception("internal error on %s %s", method, self.path[:200])
            self.close_connection = True
            self._send_json(500, {"detail": "internal server error"})

    def __getattr__(self, name: str) -> Any:
        # Every method, known or not, goes through _dispatch, which answers 405 with Allow.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    # -- responses -----------------------------------------------------------------------------

    _head_only = False
    _body_read = False

    def _send(self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Write status line, headers and body in one send."""
        self.log_request(status)
        phrase = HTTPStatus(status).phrase
        lines = [
            f"{self.protocol_version} {status} {phrase}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
        ]
        if content_type == HTML:
            lines += [f"Content-Security-Policy: {_html.csp()}", "X-Frame-Options: DENY"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not self._body_read and _declares_body(getattr(self, "headers", None)):
            # A body left unread would be parsed as the next request on this connection: a request
            # smuggled past a proxy that shares the connection among users. Close instead.
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self._head_only else head + body)

    def _send_json(self, status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode(), JSON, headers)

    def _send_html(self, status: int, document: str) -> None:
        self._send(status, document.encode(), HTML)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib calls this for malformed requests (bad request line, 414, 431, ...): answer in JSON.
        # Its 505 for an unknown HTTP version is a client's mistake too, so it is a 400 here: 5xx
        # always means the server failed.
        self.close_connection = True
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = 400, f"unsupported HTTP version in {self.requestline[:100]!r}: use HTTP/1.0 or 1.1"
        self._send_json(code, {"detail": message or HTTPStatus(code).phrase})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Form and status links carry the event's token in the query string: the access log
        # shows that a query was there, never what it said.
        line = _QUERY_RE.sub("?...", self.requestline)
        self.log_message('"%s" %s %s', line, code, size)

    def log_message(self, format: str, *args: Any) -> None:
        # Client-controlled text is escaped so a request line cannot forge log lines.
        text = (format % args).encode("unicode_escape").decode("ascii")
        logger.info("%s %s", self.address_string(), text)

    # -- request helpers -----------------------------------------------------------------------

    def _query(self) -> dict[str, str]:
        try:
            return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, max_num_fields=20).items()}
        except ValueError as e:
            raise _Reply(400, f"malformed query string: {e}") from None

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _Reply(411, "chunked bodies are not supported; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _Reply(411, "Content-Length is required")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise _Reply(400, f"invalid Content-Length {length_text[:40]!r}") from None
        if length > self.max_body_bytes:
            self.close_connection = True
            raise _Reply(413, f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes")
        body = self.rfile.read(length) or b""  # None: the timeout passed before any of it came
        self._body_read = True
        if len(body) != length:
            self.close_connection = True
            raise _Reply(400, f"request body ended after {len(body)} of {length} bytes")
        return body

    def _event(self, request_id: object, token: object) -> Record:
        """The stored request for `request_id`, after checking the id's shape and the token."""
        request = _answers.load(self.server.store, request_id)
        _answers.check_token(request, token)
        return request

    def _submit(self, request: Record, raw: object, via: str, comment: object) -> Record:
        header = self.server.identity_header
        identity = (self.headers.get(header) or "").strip()[:320] if header else ""
        return _answers.submit(
            self.server.store, request, raw, via=via, client=self.client_address[0], comment=comment, identity=identity
        )

    def _answered(self, request: Record, response: Record) -> None:
        """Hand the stored outcome to an in-process waiter, this server's long-polls and (by a
        wake-up) a waiting process elsewhere, after the reply is on its way, so none can outrun it."""
        request_id = request["request_id"]
        self.wfile.flush()
        self.server.watch.stored(request_id, response)
        if self.server.on_answer is not None:
            self.server.on_answer(request_id, response)
        _wake.poke(self.server.store, request)

    # -- endpoints -----------------------------------------------------------------------------

    def _get_health(self, _: str) -> None:
        self._send_json(200, {"status": "healthy"})

    def _get_index(self, _: str) -> None:
        store, rows = self.server.store, []
        for request_id in sorted(store.list_ids())[:500]:
            request = store.read_request(request_id)
            if request is None:
                continue
            status = _answers.status_of(request, store.read_response(request_id))
            rows.append((request, status, seconds_left(request)))
        rows.sort(key=lambda row: str(row[0].get("created_at", "")), reverse=True)
        self._send_html(200, _html.index_page(rows))

    def _page_for(self, request: Record, *, value: str = "", error: str = "", comment: str = "") -> tuple[int, str]:
        """The form for a pending event (400 when re-shown with an error), else the event's state."""
        response = self.server.store.read_response(request["request_id"])
        status = _answers.status_of(request, response)
        if status == "completed" and response is not None:
            return 200, _html.answered_page(request, response, just_now=False)
        if status == "expired":
            return 200, _html.expired_page(request)
        left = seconds_left(request)
        return (400 if error else 200), _html.form_page(request, left, value, error, comment=comment)

    def _get_form(self, request_id: str) -> None:
        try:
            request = self._event(request_id, self._query().get("token"))
        except (HitlError, _Reply) as e:
            status, detail = (e.status, e.detail) if isinstance(e, _Reply) else (_refusal(e) or (500, ""))
            if status == 500:
                raise
            raise _Reply(status, detail, html=_html.message_page("Cannot open this event", detail)) from None
        self._send_html(*self._page_for(request))

    #: Longest ``wait`` a status request may ask for, in seconds.
    max_status_wait = 60.0

    def _get_status(self, request_id: str) -> None:
        query = self._query()
        wait = _wait_seconds(query.get("wait"), self.max_status_wait)
        request = self._event(request_id, query.get("token"))
        store = self.server.store
        response = store.read_response(request_id)
        if response is None and wait > 0:
            left = seconds_left(request)
            response = self.server.watch.wait(request_id, min(wait, max(0.0, left)))
            if response is None and left <= wait:  # the deadline passed meanwhile: show its expiry mark if any
                response = store.read_response(request_id)
        self._send_json(200, _answers.status_record(request, response))

    def _post_form(self, _: str) -> None:
        def fail(status: int, detail: str) -> _Reply:
            return _Reply(status, detail, html=_html.message_page("Answer not accepted", detail))

        try:
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise fail(415, f"expected a form (application/x-www-form-urlencoded), got {ctype or 'nothing'!r}")
            fields = parse_qs(self._body().decode("utf-8"), keep_blank_values=True, max_num_fields=20)
            form = {k: v[0] for k, v in fields.items()}
            request = self._event(form.get("request_id"), form.get("token"))
        except UnicodeDecodeError:
            raise fail(400, "the form is not valid UTF-8") from None
        except _Reply as r:
            raise fail(r.status, r.detail) from None
        except HitlError as e:
            refusal = _refusal(e)
            if refusal is None:
                raise
            raise fail(*refusal) from None
        except ValueError as e:  # parse_qs: too many fields
            raise fail(400, f"malformed form: {e}") from None
        value, comment = form.get("value", ""), form.get("comment")
        try:
            response = self._submit(request, value, "form", comment)
        except InvalidValueError as e:
            self._send_html(*self._page_for(request, value=value, error=str(e), comment=comment or ""))
            return
        except AlreadyAnsweredError as e:
            self._send_html(409, _html.answered_page(request, e.response, just_now=False))
            return
        except EventExpiredError:
            self._send_html(410, _html.expired_page(request))
            return
        self._send_html(200, _html.answered_page(request, response, just_now=True))
        self._answered(request, response)

    def _post_json(self, _: str) -> None:
        body = self._body()
        try:
            payload = json.loads(body)
            # JSON can spell unpaired surrogates ("\ud800"), which are not text: comparing a token holding
            # one, or storing an answer holding one as UTF-8, would fail deep inside with a 500. ASCII
            # without a \u escape cannot spell one in any encoding json accepts: most bodies skip the check.
            if not body.isascii() or b"\\u" in body:
                json.dumps(payload, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise _Reply(400, "malformed JSON body: it holds an unpaired surrogate (\\ud800-\\udfff)") from None
        except (ValueError, RecursionError) as e:
            raise _Reply(400, f"malformed JSON body: {e}") from None
        if not isinstance(payload, dict):
            raise _Reply(400, f"expected a JSON object, got {type(payload).__name__}")
        if "value" not in payload:
            raise _Reply(400, "missing field 'value'")
        request = self._event(payload.get("request_id"), payload.get("token"))
        claimed = payload.get("data_type")
        if claimed is not None and claimed != request["data_type"]:
            raise _Reply(400, f"data_type {claimed!r} does not match the event's type {request['data_type']!r}")
        # Programs may say they are the CLI or the Python API; anything else is recorded as "json".
        via = payload.get("via") if payload.get("via") in ("cli", "python") else "json"
        response = self._submit(request, payload["value"], str(via), payload.get("comment"))
        request_id = request["request_id"]
        self._send_json(
            200,
            {
                "status": "submitted",
                "request_id": request_id,
                "value": response["value"],
                "data_type": request["data_type"],
                "message": f"answer for {request['event_name']!r} accepted",
            },
        )
        self._answered(request, response)


def _wait_seconds(text: str | None, limit: float) -> float:
    """The ``wait`` of a status request: 0 to `limit` seconds; anything else is a 400."""
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= limit:  # also refuses nan
        raise _Reply(400, f"wait must be a number of seconds from 0 to {limit:g}, got {text[:40]!r}")
    return seconds


def make_server(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 0,
    on_answer: Callable[[str, Record], None] | None = None,
    identity_header: str | None = None,
) -> HitlServer:
    """Bind a server for `store` (port 0 picks a free port); call `serve_forever` or use `start_server`.

    `on_answer(request_id, response)` is called with each outcome the server stores, after its reply.
    `identity_header` defaults to ``$FLYTE_HITL_IDENTITY_HEADER``; set it only behind a proxy that sets it.
    """
    import os

    header = identity_header if identity_header is not None else os.environ.get(IDENTITY_HEADER_ENV) or None
    return HitlServer((host, port), store, on_answer, header)


def start_server(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 0,
    on_answer: Callable[[str, Record], None] | None = None,
    identity_header: str | None = None,
) -> tuple[HitlServer, threading.Thread]:
    """Start a server in a daemon thread; returns ``(httpd, thread)`` for `stop_server`.

    Example:
        >>> httpd, thread = start_server(Store("/tmp/flyte/hitl"))
        >>> stop_server(httpd, thread)
    """
    httpd = make_server(store, host, port, on_answer, identity_header)
    thread = threading.Thread(target=httpd.serve_forever, name=f"hitl-server-{httpd.server_address[1]}", daemon=True)
    thread.start()
    return httpd, thread


def stop_server(httpd: HitlServer, thread: threading.Thread) -> None:
    """Stop accepting requests, close the socket and wait for the serving thread."""
    httpd.shutdown()
    httpd.server_close()
    thread.join()


_embedded: dict[str, HitlServer] = {}
_embedded_lock = threading.Lock()


def embedded_server(store: Store, on_answer: Callable[[str, Record], None]) -> str:
    """Start this process's server for `store` on first use and return its URL.

    Bound to ``FLYTE_HITL_HOST`` (default 127.0.0.1) and ``FLYTE_HITL_PORT`` (default 0, a free port).
    """
    import os

    with _embedded_lock:
        httpd = _embedded.get(store.root)
        if httpd is None:
            host = os.environ.get(HOST_ENV) or "127.0.0.1"
            port_text = os.environ.get(PORT_ENV) or "0"
            try:
                port = int(port_text)
            except ValueError:
                raise HitlError(f"{PORT_ENV} must be a port number, got {port_text!r}") from None
            httpd, _ = start_server(store, host, port, on_answer)
            _embedded[store.root] = httpd
            logger.info("serving %s at %s", store.root, httpd.url)
        return httpd.url
