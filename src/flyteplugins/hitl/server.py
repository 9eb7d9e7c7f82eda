"""The form server: an HTTP handler, a `ThreadingHTTPServer` around it, and starting and stopping it.

Endpoints (`_endpoints.py`; every one answers a client's mistake with a clear 4xx and writes nothing):

- ``GET /health``: ``{"status": "healthy"}``
- ``GET /``: an HTML index of events, newest first, a page at a time, without tokens or links
- ``GET /form/<request_id>?token=…``: the answer form (or the event's state once answered/expired)
- ``POST /submit``: a form-encoded answer (``request_id``, ``token``, ``value``) → an HTML page
- ``POST /submit/json``: a JSON answer ``{"request_id", "token", "value"[, "data_type"]}`` → JSON
- ``GET /status/<request_id>?token=…[&wait=N]``: the event and its outcome as JSON (never the token);
  with ``wait`` (0 to 60 s), once the event is answered or expired, or after N seconds (at once
  when long-polls hold their share of the connections already: `HitlServer.long_poll_share`)

The handler leaves parsing to the standard library's `parse_request` and adds the checks that keep
the framing of each request unambiguous (RFC 9112): a request whose length could be read two ways
gets 400 and the connection closes, so nothing hidden in it is ever read as the next request.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import ipaddress
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, cast

from . import _endpoints, _policy, _wait, _wake
from ._endpoints import Request, Response, Site, trusted_proxies
from ._errors import ConfigurationError
from ._store import Record, Store
from ._watch import Watch

logger = logging.getLogger("flyteplugins.hitl.server")

HOST_ENV = "FLYTE_HITL_HOST"
PORT_ENV = "FLYTE_HITL_PORT"
IDENTITY_HEADER_ENV = _policy.IDENTITY_HEADER_ENV
TRUSTED_PROXY_ENV = "FLYTE_HITL_TRUSTED_PROXY"
MAX_CONNECTIONS_ENV = "FLYTE_HITL_MAX_CONNECTIONS"
#: Connections served at once unless ``FLYTE_HITL_MAX_CONNECTIONS`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 512

#: Longest request line or header line, and largest header section, in bytes.
MAX_LINE = 65536
MAX_HEADER_BYTES = 65536

# A header line: an RFC 9110 token, a colon, then a value of visible characters, spaces and tabs.
_HEADER_LINE_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n")
# Control characters in a request line, CRLF aside (a bare CR or LF, NUL, tab...).
_REQUEST_LINE_CTL_RE = re.compile(rb"[\x00-\x1f\x7f]")
# 1*DIGIT (RFC 9110), and short enough for int(); anything longer is far past the body limit anyway.
_LENGTH_RE = re.compile(r"[0-9]{1,18}")
_QUERY_RE = re.compile(r"\?\S*")

# The client went away, or stalled past the handler timeout: routine, logged in one line, never answered.
_CLIENT_GONE = (ConnectionError, TimeoutError)

# What a connection over the limit gets, in one send from the accepting thread.
_BUSY_BODY = b'{"detail": "the server is at its connection limit; try again shortly"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _HeaderReader:
    """Stands in for the handler's input while the standard parser reads the header section.

    It refuses what the email parser underneath would read in a way of its own (a bare CR or LF,
    which it takes for a line break; a folded line; a line without a name) and counts the section
    against `MAX_HEADER_BYTES`. On the first fault it records a reply and ends the section.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.left = MAX_HEADER_BYTES
        #: (status, detail) to answer, (0, "") to close without a reply, or None.
        self.fault: tuple[int, str] | None = None

    def readline(self, limit: int = -1) -> bytes:
        if self.fault is not None:
            return b"\r\n"
        line = self.raw.readline(limit)
        self.left -= len(line)
        if len(line) > MAX_LINE:
            return line  # the standard parser answers 431
        if not line.endswith(b"\n"):
            self.fault = (0, "")  # the client left in the middle of the headers
        elif self.left < 0:
            self.fault = (431, f"the header section is larger than {MAX_HEADER_BYTES} bytes")
        elif line == b"\r\n":
            return line
        elif not _HEADER_LINE_RE.fullmatch(line):
            self.fault = (400, f"malformed header line {line[:100]!r}")
        else:
            return line
        return b"\r\n"


class _Notice:
    """A warning logged at most once a minute, with how often its cause came up meanwhile."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.at = -math.inf

    def __call__(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.at >= 60:
            times = "once" if self.count == 1 else f"{self.count} times"
            logger.warning("%s (%s since the last such message)", self.message, times)
            self.count, self.at = 0, now


class HitlServer(ThreadingHTTPServer):
    """Serves every event under one storage root.

    At most `max_connections` connections are served at once. A connection waiting for a request
    must send it whole within the handler's `timeout`, or it is closed (`service_actions`), and must
    take each reply within its `write_timeout`, or it is closed too. Long-polls hold at most
    `long_poll_share` of the connections; past that, a long-poll is answered at once with the current
    state. Past the limit, the connection that has waited longest for its request is closed to make
    room; when every connection is busy with a request, a new one gets a short 503.

    Example:
        >>> httpd = make_server(Store("/tmp/flyte/hitl"), port=0)
        >>> port = httpd.server_address[1]
    """

    # Handler threads are daemons so that one slow or idle client never keeps a finished program
    # alive; `stop_server` and the embedded server's exit hook give the requests being handled a
    # bounded time to finish their replies, so closing the server need not join them.
    daemon_threads = True
    block_on_close = False
    # The default backlog of 5 resets bursts of simultaneous connections.
    request_queue_size = 256
    allow_reuse_address = True
    #: Seconds the accepting thread pauses when the process has no file descriptor left for a connection
    #: and none waiting for a request to close; a tenth of it after closing some.
    accept_backoff_seconds = 0.1
    #: Connections waiting for a request closed at once when the process runs out of file descriptors.
    shed_on_exhaustion = 32
    #: Share of `max_connections` that ``GET /status?wait=N`` long-polls may hold at once.
    long_poll_share = 0.5

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        on_answer: Callable[[str, Record], None] | None = None,
        identity_header: str | None = None,
        *,
        trust_forwarded: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.on_answer = on_answer
        if ":" in address[0]:  # an IPv6 address, such as ::1 or ::
            self.address_family = socket.AF_INET6
        super().__init__(address, HitlHandler)
        # Bound to loopback, only this machine reaches us, unless a page renames us (DNS rebinding); a
        # trusted proxy in front decides which names reach us.
        loopback = ipaddress.ip_address(str(self.server_address[0])).is_loopback
        self.site = Site(
            store, identity_header, loopback_only=loopback and not trust_forwarded, trust_forwarded=trust_forwarded
        )
        self.site.on_answer = on_answer
        self.max_connections = max_connections
        self.site.watch.most = max(1, int(max_connections * self.long_poll_share))
        self._connections = 0
        # Connections waiting for (the rest of) a request → their deadline; the longest waiting first.
        self._waiting: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._turned_away = _Notice(
            f"at the limit of {max_connections} connections ({MAX_CONNECTIONS_ENV}): a new one got 503"
        )
        self._no_descriptors = _Notice("out of file descriptors for new connections: closing those waiting longest")
        # Requests between their read body and their written reply.
        self._busy = 0
        self._idle = threading.Condition()
        from . import _telemetry  # OpenTelemetry's API: imported by the first server, not the package

        self.telemetry = _telemetry
        _servers.add(self)

    @property
    def store(self) -> Store:
        return self.site.store

    # -- connections -------------------------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = self._connections < self.max_connections or self._close_longest_waiting()
            if admitted:
                self._connections += 1
        if not admitted:
            self._turned_away()
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # a thread per connection
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            self._connections -= 1
            self._waiting.pop(request, None)

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as e:
            # The connection stays queued, so the loop would retry at once, forever: free some
            # descriptors, and pause while their handlers close them.
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self._no_descriptors()
                with self._lock:
                    shed = sum(self._close_longest_waiting() for _ in range(self.shed_on_exhaustion))
                time.sleep(self.accept_backoff_seconds / (10 if shed else 1))
            raise

    def waiting(self, connection: socket.socket, seconds: float) -> None:
        """The handler waits for a request on `connection`, which must arrive whole within `seconds`."""
        with self._lock:
            self._waiting.pop(connection, None)
            self._waiting[connection] = time.monotonic() + seconds

    def handling(self, connection: socket.socket) -> None:
        """The handler has read the request on `connection` (or is done with it)."""
        with self._lock:
            self._waiting.pop(connection, None)

    def service_actions(self) -> None:
        # Called by serve_forever between polls: close connections whose request is late.
        now = time.monotonic()
        with self._lock:
            while self._waiting:
                connection, deadline = next(iter(self._waiting.items()))
                if deadline > now:
                    break
                del self._waiting[connection]
                _stop_reading(connection)

    def _close_longest_waiting(self) -> bool:
        """Stop reading the connection that has waited longest for its request; False if none waits.
        Its handler then ends, closing it. The caller holds the lock."""
        if not self._waiting:
            return False
        connection = next(iter(self._waiting))
        del self._waiting[connection]
        _stop_reading(connection)
        return True

    @property
    def watch(self) -> Watch:
        """The long-polls of ``GET /status/<id>?wait=N``."""
        return self.site.watch

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "site"):  # not when binding failed, which closes the socket before the site exists
            self.site.watch.close()  # open long-polls answer now

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

    def busy(self, delta: int) -> None:
        """Count a request in (+1) once its body is read, and out (-1) once its reply is written."""
        with self._idle:
            self._busy += delta
            if self._busy == 0:
                self._idle.notify_all()

    def finish(self, timeout: float) -> bool:
        """Wait until no request is being handled, at most `timeout` seconds; False if some still are."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-reply is routine; anything else is our bug and deserves a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, _CLIENT_GONE):
            logger.info("%s: connection ended: %s", client_address[0], exc)
        elif isinstance(exc, OSError) and exc.errno == errno.EBADF:
            # Stopping (Ctrl-C, SIGTERM) closed a connection accepted a moment before its thread ran.
            logger.info("%s: connection closed by the server stopping", client_address[0])
        else:
            logger.exception("internal error while serving %s", client_address[0])


def _stop_reading(connection: socket.socket) -> None:
    """End any read on `connection` now, in whichever thread: the next one finds the end of the stream."""
    with contextlib.suppress(OSError):  # already closed
        connection.shutdown(socket.SHUT_RD)


class HitlHandler(BaseHTTPRequestHandler):
    """Parses and frames each request, hands it to `_endpoints.handle`, writes the reply."""

    server: HitlServer
    protocol_version = "HTTP/1.1"
    server_version = "flyteplugins-hitl"
    sys_version = ""
    #: Seconds a connection may take to send a whole request (line, headers and body), counted from
    #: when the server starts waiting for it; a connection idle or trickling that long is closed.
    timeout = 30
    #: Seconds a reply may take to be sent; a client that stops reading its replies is closed then.
    write_timeout = 10
    #: Largest accepted request body, in bytes; larger ones get 413.
    max_body_bytes = 1 << 20
    #: Largest accepted ``POST /submit/batch`` body: a thousand answers.
    max_batch_body_bytes = 8 << 20
    # Replies are written in one send; without NODELAY, a small reply can still sit in Nagle's buffer.
    disable_nagle_algorithm = True

    _busy = False

    def setup(self) -> None:
        super().setup()
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):  # Linux, macOS
            # A send waits until the replies before it are on their way: a client that stops reading
            # blocks the next reply at once (closed after `write_timeout`), instead of having hundreds of
            # pipelined requests answered into the socket's buffer first.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1)

    # -- parsing -------------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self.server.waiting(self.connection, self.timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.handling(self.connection)
            if self._busy:
                self._busy = False
                self.server.busy(-1)

    def parse_request(self) -> bool:
        """The standard parser, plus strict checks of the request line, header lines and framing."""
        self.command, self.headers = None, None  # type: ignore[assignment]
        self._expect_100 = False
        line: bytes = self.raw_requestline  # type: ignore[attr-defined]  # set by handle_one_request
        if not line.endswith(b"\n"):  # cut off by the client leaving
            self.close_connection = True
            return False
        self.requestline = str(line, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if words and (not line.endswith(b"\r\n") or _REQUEST_LINE_CTL_RE.search(line[:-2])):
            return self._refuse(400, f"malformed request line {self.requestline[:100]!r}")
        if words and len(words) != 3:
            return self._refuse(400, f"bad request line {self.requestline[:100]!r}: expected 'METHOD TARGET HTTP/1.1'")
        if words and words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            return self._refuse(400, f"unsupported HTTP version in {self.requestline[:100]!r}: use HTTP/1.0 or 1.1")
        reader = _HeaderReader(cast(BinaryIO, self.rfile))
        self.rfile = reader  # type: ignore[assignment]
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = reader.raw  # type: ignore[assignment]
        if not parsed:
            return False
        if reader.fault is not None:
            status, detail = reader.fault
            if not status:
                self.close_connection = True
                return False
            return self._refuse(status, detail)
        framing = self._framing()
        if framing is not None:
            return self._refuse(*framing)
        # The standard parser compares the whole value; Connection is a list of tokens in any case.
        if "close" in (token.strip().lower() for token in (self.headers.get("Connection") or "").split(",")):
            self.close_connection = True
        if self._expect_100:
            super().handle_expect_100()
        if not hasattr(self, "do_" + self.command):
            # Any other method: the endpoints answer 405 with Allow (or 404), as for a wrong method.
            self._handle()
            return False
        return True

    _expect_100 = False

    def handle_expect_100(self) -> bool:
        # Called by the standard parser; the interim reply is sent only once the framing checks passed.
        self._expect_100 = True
        return True

    def _framing(self) -> tuple[int, str] | None:
        """(status, detail) when the body's length is ambiguous or not supported (RFC 9112 §6.3), else None."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                return 400, "Transfer-Encoding and Content-Length together: the body's length is ambiguous"
            return 411, "Transfer-Encoding is not supported; send the body with Content-Length"
        if len(lengths) > 1:
            return 400, "more than one Content-Length header"
        if lengths and not _LENGTH_RE.fullmatch(lengths[0].strip(" \t")):
            return 400, f"invalid Content-Length {lengths[0][:40]!r}: expected a number of bytes, digits only"
        return None

    def _refuse(self, status: int, detail: str) -> bool:
        self._write(_endpoints.json_reply(status, {"detail": detail}, close=True), head=False)
        return False

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        self.server.handling(self.connection)
        # Busy from here until the reply is written: a stopping server waits for that, not for a
        # client that is slow to send its body.
        self._busy = True
        self.server.busy(1)
        if isinstance(body, Response):
            self.server.telemetry.http_request(_endpoints.route_of(self.path), body.status)
            self._write(body, head=self.command == "HEAD")
            return
        request = Request(self.command, self.path, self.headers, body, self.client_address[0])
        reply = _endpoints.handle(self.server.site, request)
        self.server.telemetry.http_request(_endpoints.route_of(self.path), reply.status)
        try:
            self._write(reply, head=self.command == "HEAD")
        finally:
            try:
                # Also when the client is gone (the write raised): the answer is stored all the same.
                if reply.answered is not None:
                    self._answered(*reply.answered)
            finally:
                for request_id in request.replying:
                    self.server.site.replies.end(request_id)

    def _answered(self, event: Record, response: Record) -> None:
        """Tell whoever waits for `response`, the outcome just stored: this server's long-polls, the
        in-process waiter, and (by a wake-up) a waiting process elsewhere. After the reply, so none of
        them can outrun it, and before `await_replies` lets a wait that read the outcome return, so
        such a wait sees it was handed over. The reply is out (or its client gone): a failure here is
        logged, never answered."""
        request_id = event["request_id"]
        self.server.site.watch.stored(request_id)
        if self.server.on_answer is not None:
            try:
                self.server.on_answer(request_id, response)
            except Exception:
                logger.exception("handing the answer to %s to its waiter failed", request_id)
        _wake.poke(self.server.store, event, response)

    def _read_body(self) -> bytes | Response | None:
        """The body (None if the request has no Content-Length), or the reply refusing it."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return None
        length = int(length_text.strip(" \t"))
        limit = self.max_batch_body_bytes if self.path.split("?")[0] == "/submit/batch" else self.max_body_bytes
        if length > limit:
            detail = f"request body of {length} bytes exceeds the limit of {limit} bytes"
            return _endpoints.json_reply(413, {"detail": detail}, close=True)
        chunks, received = [], 0
        try:
            while received < length:
                chunk = self.rfile.read1(length - received)  # type: ignore[attr-defined]
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
        except TimeoutError:
            pass
        if received < length:
            detail = f"request body ended after {received} of {length} bytes"
            return _endpoints.json_reply(400, {"detail": detail}, close=True)
        return b"".join(chunks)

    # -- replies -------------------------------------------------------------------------------

    def _write(self, reply: Response, *, head: bool) -> None:
        """Write status line, headers and body in one send."""
        if reply.close:
            self.close_connection = True
        self.log_request(reply.status)
        lines = [
            f"{self.protocol_version} {reply.status} {_endpoints.phrase(reply.status)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Length: {len(reply.body)}",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.connection.settimeout(self.write_timeout)  # for the whole send, not each part of it
        self.wfile.write(data if head else data + reply.body)
        self.connection.settimeout(self.timeout)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The standard parser calls this for a request it cannot read (414, 431): answer in JSON.
        detail = message or HTTPStatus(code).phrase
        self._refuse(code, f"{detail}: {explain}" if explain else detail)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Form and status links carry the event's token in the query string: the access log
        # shows that a query was there, never what it said.
        line = _QUERY_RE.sub("?...", self.requestline)
        self.log_message('"%s" %s %s', line, code, size)

    def log_message(self, format: str, *args: Any) -> None:
        # Client-controlled text is escaped so a request line cannot forge log lines.
        text = (format % args).encode("unicode_escape").decode("ascii")
        logger.info("%s %s", self.address_string(), text)


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
    Proxy headers (identity, groups, ``X-Forwarded-Host`` and ``X-Forwarded-Proto``) are believed only
    from the peers ``FLYTE_HITL_TRUSTED_PROXIES`` names (loopback by default); ``FLYTE_HITL_TRUSTED_PROXY=1``,
    which it supersedes, takes the forwarded host and scheme from any peer. ``FLYTE_HITL_MAX_CONNECTIONS``
    caps the connections served at once. A server bound to a loopback address answers only requests
    whose ``Host`` is a loopback name or address (``127.0.0.1``, ``localhost``, ``[::1]``), so a page of
    another site cannot reach it under a name of its own (DNS rebinding); others get 421.

    Example:
        >>> httpd = make_server(Store("/tmp/flyte/hitl"), port=0)
        >>> httpd.server_close()
    """
    header = _policy.identity_header(identity_header)
    trusted_proxies()  # a bad FLYTE_HITL_TRUSTED_PROXIES entry is refused before the port is bound
    trusted = os.environ.get(TRUSTED_PROXY_ENV, "").strip().lower()
    if trusted not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigurationError(f"{TRUSTED_PROXY_ENV} must be 1 or 0 (or true/false, yes/no, on/off), got {trusted!r}")
    limit_text = os.environ.get(MAX_CONNECTIONS_ENV, "").strip() or str(DEFAULT_MAX_CONNECTIONS)
    if not (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text) <= 1_000_000):
        raise ConfigurationError(f"{MAX_CONNECTIONS_ENV} must be a whole number from 1, got {limit_text!r}")
    return HitlServer(
        (host, port),
        store,
        on_answer,
        header,
        trust_forwarded=trusted in ("1", "true", "yes", "on"),
        max_connections=int(limit_text),
    )


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
    # A short poll interval: stopping waits for the loop to see the request.
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"hitl-server-{httpd.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return httpd, thread


#: Longest time a stopping server waits for the replies it is writing.
GRACE_SECONDS = 2.0


def stop_server(httpd: HitlServer, thread: threading.Thread, grace: float = GRACE_SECONDS) -> None:
    """Stop accepting connections, let the requests being handled finish their replies (at most
    `grace` seconds), then close the socket and wait for the serving thread."""
    httpd.shutdown()
    httpd.server_close()
    httpd.finish(grace)
    thread.join()


_servers: weakref.WeakSet[HitlServer] = weakref.WeakSet()


def await_replies(request_id: str, timeout: float = 2.0) -> None:
    """Wait until no server of this process is in the middle of handling an answer for `request_id`.

    From the moment a server handles a submit for `request_id` until its reply is written and the
    answer handed on (to this process's waits, long-polls and wake-ups), the answer may already be in
    storage. A wait that finds it there calls this before it returns, so that a program ending right
    after the wait does not cut that reply off. Returns after `timeout` seconds at most.

    Example:
        >>> await_replies("approve-5d10420902c680f3a2abfc22", timeout=0.5)
    """
    deadline = time.monotonic() + timeout
    for httpd in list(_servers):
        httpd.site.replies.wait(request_id, max(0.0, deadline - time.monotonic()))


_wait.on_replies(await_replies)


_embedded: dict[str, tuple[HitlServer, threading.Thread]] = {}
_embedded_lock = threading.Lock()


def embedded_server(store: Store, on_answer: Callable[[str, Record], None]) -> str:
    """Start this process's server for `store` on first use and return its URL.

    Bound to ``FLYTE_HITL_HOST`` (default 127.0.0.1) and ``FLYTE_HITL_PORT`` (default 0, a free port).
    When the program ends, the server stops accepting connections and gives the requests it is
    handling up to `GRACE_SECONDS` to write their replies.
    """
    with _embedded_lock:
        entry = _embedded.get(store.root)
        if entry is None:
            host = os.environ.get(HOST_ENV) or "127.0.0.1"
            port_text = os.environ.get(PORT_ENV) or "0"
            try:
                port = int(port_text)
            except ValueError:
                raise ConfigurationError(f"{PORT_ENV} must be a port number, got {port_text!r}") from None
            try:
                entry = start_server(store, host, port, on_answer)
            except OSError as e:  # the port is taken, the address is not this host's: the settings
                raise ConfigurationError(
                    f"cannot start the form server on {host}:{port} ({HOST_ENV}, {PORT_ENV}): {e.strerror or e}"
                ) from None
            if not _embedded:
                atexit.register(_stop_embedded)
            _embedded[store.root] = entry
            logger.info("serving %s at %s", store.root, entry[0].url)
        return entry[0].url


def _stop_embedded() -> None:
    """At exit: stop every embedded server, sharing one grace period among them."""
    with _embedded_lock:
        entries = list(_embedded.values())
        _embedded.clear()
    deadline = time.monotonic() + GRACE_SECONDS
    for httpd, _ in entries:
        httpd.shutdown()
        httpd.server_close()
    for httpd, thread in entries:
        httpd.finish(max(0.0, deadline - time.monotonic()))
        thread.join(max(0.0, deadline - time.monotonic()))


# A forked child has the parent's servers but not their threads.
os.register_at_fork(after_in_child=_embedded.clear)
