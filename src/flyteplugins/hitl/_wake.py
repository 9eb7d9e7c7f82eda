"""Wake-up datagrams: a writer that stored an outcome tells the waiting process, over UDP, to read it now.

In a cluster the waiting task and the form server are different pods that share only the storage
root, so without these an answer reaches the task at its next poll. With them:

1. A new event's request record carries where its process takes wake-up datagrams (`address`,
   under ``"wake"``). Each wait registers with `listen`: the process's one UDP socket (shared by
   all its waits, open while any wait is) takes datagrams for it. Only when the request does not
   say where this process listens (a re-run re-attached to the event, or the socket moved) does
   the wait record it in ``<root>/<request_id>/waiter.json`` (`record`), which overrides the request's.
2. Every writer, before it stores an outcome, notes in it where the wake-up will go (`mark`: one read
   of ``waiter.json``, else the request's address, under ``"woke"``) and, right after storing it,
   calls `poke`: one datagram ``HITLWAKE1 <request_id> <time ms> <nonce> <mac>`` to that address,
   where the mac is HMAC-SHA256 keyed by the event's token (which every writer has just read to
   check the answer). A wait that finds an outcome at a poll blames the network only when the
   outcome says a wake-up was sent to it (a writer that sends none, such as one that writes 2.12.1's
   record straight to ``response_path``, is no sign of trouble).
3. The listener drops, cheapest check first and without reading storage, anything malformed, for an
   event no wait here is on, older than `MAX_SKEW_SECONDS`, not authenticated, or replayed. An
   authentic datagram calls ``on_wake`` of every wait on its event, at most once per
   `Listener.min_gap_seconds`: one that comes sooner is deferred to the end of that window. While
   junk floods the socket (the kernel then drops datagrams, the real one perhaps among them), every
   wait reads storage once a second instead, and the receiving thread takes a fraction of a core.

UDP because it is fire-and-forget: a writer never waits for the task, a blocked path (a
NetworkPolicy, a dead pod) costs it nothing, and a lost datagram costs only latency, since the
wait still polls. Settings (read when the socket opens):

- ``FLYTE_HITL_WAKE``: ``0`` turns wake-up datagrams off in this process (listening and poking);
- ``FLYTE_HITL_WAKE_HOST``: the address (or a name resolving to it) to listen on and record
  (default: the pod's address in a Kubernetes pod, else 127.0.0.1);
- ``FLYTE_HITL_WAKE_PORT``: the UDP port (default 0, any free port).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ._errors import StorageError
from ._store import Record, Store

logger = logging.getLogger("flyteplugins.hitl.wake")

WAKE_ENV = "FLYTE_HITL_WAKE"
HOST_ENV = "FLYTE_HITL_WAKE_HOST"
PORT_ENV = "FLYTE_HITL_WAKE_PORT"

MAGIC = b"HITLWAKE1"
#: Oldest (or most future) wake-up accepted, in seconds: covers clock skew between pods.
MAX_SKEW_SECONDS = 300.0
#: Longest a writer waits for its poke on an object store (the read runs in a thread).
POKE_WAIT_SECONDS = 1.0
#: Receive buffer asked for, so that a flood of junk does not crowd out the one datagram that counts.
RECEIVE_BUFFER_BYTES = 1 << 20
_MAX_DATAGRAM = 512
_MAX_NONCES = 32
# The fields of a wake-up, each checked for its shape and length before anything computes with it.
_DATAGRAM_RE = re.compile(rb"HITLWAKE1 ([A-Za-z0-9_-]{1,128}) ([0-9]{1,15}) ([0-9a-f]{16}) ([0-9a-f]{64})")


def enabled() -> bool:
    """Whether wake-up datagrams are on in this process (``FLYTE_HITL_WAKE`` is not 0/false/no/off)."""
    return os.environ.get(WAKE_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def mac(token: str, request_id: str, stamp: str, nonce: str) -> str:
    """The hex HMAC-SHA256 that authenticates a wake-up for `request_id`, keyed by the event's token.

    Example:
        >>> len(mac("tok", "approve-1a2b", "1700000000000", "00ff"))
        64
    """
    message = f"hitl-wake/1\n{request_id}\n{stamp}\n{nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def datagram(request: Record, now: float | None = None) -> bytes:
    """The wake-up for `request` (its id and token), stamped with `now` (default: the wall clock)."""
    request_id, token = str(request["request_id"]), str(request["token"])
    stamp = str(int((time.time() if now is None else now) * 1000))
    import secrets

    nonce = secrets.token_hex(8)
    return b" ".join((MAGIC, *(p.encode() for p in (request_id, stamp, nonce, mac(token, request_id, stamp, nonce)))))


# -- the waiting side ---------------------------------------------------------------------------------


class _Watched:
    """One event that waits of this process take wake-ups for: its token, and what was accepted."""

    __slots__ = ("calls", "deferred", "floor", "last_wake", "nonces", "request_id", "token")

    def __init__(self, request_id: str, token: str) -> None:
        self.request_id = request_id
        self.token = token
        self.calls: list[Callable[[], None]] = []  # each wait's on_wake
        self.last_wake = -float("inf")
        self.deferred: float | None = None  # when a wake-up that came too soon is due
        self.nonces: list[tuple[str, int]] = []  # the last _MAX_NONCES accepted (nonce, stamp)
        self.floor = -1  # stamps at or below it are refused: their nonces have left `nonces`


class Listening(NamedTuple):
    """One wait's registration with the listener (from `listen`); pass it to `record` and `unlisten`."""

    watched: _Watched
    on_wake: Callable[[], None]
    address: tuple[str, int]


class Listener:
    """This process's UDP socket for wake-up datagrams, shared by every wait, open while any wait is.

    Example:
        >>> listening = listen(request, lambda: print("read storage now"))
        >>> unlisten(listening)  # the last wait ended: the socket closes
    """

    #: Seconds after a wake-up for an event before the next one is passed on (a sooner one waits).
    min_gap_seconds = 1.0
    #: Dropped datagrams a second from which the socket counts as flooded: the kernel may then drop
    #: the real wake-up with the junk, so each wait reads storage once a second until the flood ends.
    flood_per_second = 1000
    #: The monotonic clock for the rate limit; tests may replace it.
    clock: Callable[[], float] = staticmethod(time.monotonic)
    #: The wall clock that datagram stamps are checked against; tests may replace it.
    wall: Callable[[], float] = staticmethod(time.time)

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the registry, taken by the receiving thread too
        self._socket_lock = threading.Lock()  # opening and closing the socket, one at a time
        self._watched: dict[str, list[_Watched]] = {}
        self._deferred: set[_Watched] = set()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        #: (host, port) the open socket takes datagrams on.
        self.address: tuple[str, int] | None = None
        self._bind_failed = False
        self._errors = 0
        self._errors_logged_at = -float("inf")
        self._flood_logged_at = -float("inf")
        #: Events this process created with the socket's address in their request (see `record`).
        self.fresh: set[str] = set()

    def open(self) -> tuple[str, int] | None:
        """Open the socket if it is not open (it closes when the last wait ends); its address, or None."""
        with self._socket_lock:
            if self._sock is None:
                self._open()
            return self.address

    def add(self, request_id: str, token: str, on_wake: Callable[[], None]) -> Listening | None:
        """Register a wait, opening the socket if it is the first; None if this process cannot listen."""
        with self._socket_lock:
            if self._sock is None and not self._open():
                return None
            assert self.address is not None
            with self._lock:
                same = self._watched.setdefault(request_id, [])
                watched = next((w for w in same if w.token == token), None)
                if watched is None:
                    watched = _Watched(request_id, token)
                    same.append(watched)
                watched.calls.append(on_wake)
            return Listening(watched, on_wake, self.address)

    def remove(self, listening: Listening) -> None:
        """Forget one wait; close the socket when it was the last."""
        watched = listening.watched
        with self._socket_lock:
            with self._lock:
                if listening.on_wake in watched.calls:
                    watched.calls.remove(listening.on_wake)
                same = self._watched.get(watched.request_id, [])
                if not watched.calls and watched in same:
                    same.remove(watched)
                    self._deferred.discard(watched)
                    if not same:
                        del self._watched[watched.request_id]
                if self._watched or self._sock is None:
                    return
                sock, self._sock, self.address = self._sock, None, None
                thread, self._thread = self._thread, None
            with contextlib.suppress(OSError):  # wakes the receiving thread (Linux), which then exits
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            # The port is free only once the receiving thread's recvfrom has returned: until then a
            # new socket on a fixed port would fail to bind.
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)

    def watching(self, request_id: str) -> bool:
        """Whether a wait of this process is on `request_id`."""
        with self._lock:
            return bool(self._watched.get(request_id))

    def wake_here(self, request_id: str) -> bool:
        """Wake this process's own waits on `request_id` directly; False if it has none."""
        with self._lock:
            calls = [call for w in self._watched.get(request_id, ()) for call in w.calls]
        for call in calls:
            call()
        return bool(calls)

    def _open(self) -> bool:
        port_text = os.environ.get(PORT_ENV) or "0"
        host = _listen_host()
        try:
            port = int(port_text)
            if not 0 <= port < 65536:
                raise ValueError
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            if ipaddress.ip_address(str(sockaddr[0]).split("%")[0]).is_unspecified:
                raise ValueError  # writers need the one address to send to
        except (ValueError, OSError):
            self._warn_once(f"{HOST_ENV}={host!r} / {PORT_ENV}={port_text!r} is not one address and a port")
            return False
        sock = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # the kernel may cap it (net.core.rmem_max): what it gives is fine
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        try:
            sock.bind(sockaddr)
        except OSError as e:
            sock.close()
            self._warn_once(f"cannot listen for wake-ups on udp {host}:{port}: {e.strerror or e}")
            return False
        self._sock = sock
        self.address = (str(sockaddr[0]), int(sock.getsockname()[1]))
        self._thread = threading.Thread(target=self._receive, args=(sock,), name="hitl-wake", daemon=True)
        self._thread.start()
        logger.debug("listening for wake-ups on udp %s:%d", *self.address)
        return True

    def _warn_once(self, why: str) -> None:
        if not self._bind_failed:
            self._bind_failed = True
            logger.warning("%s; waits find answers by polling", why)

    def _receive(self, sock: socket.socket) -> None:
        timeout: float | None = None
        window_end, junk, flooded, count = time.monotonic() + 1.0, 0, False, 0
        while True:
            wanted = self._until_deferred()
            if flooded:  # to see the flood end, and wake the waits once more when it has
                wanted = 1.0 if wanted is None else min(wanted, 1.0)
            try:
                if wanted != timeout:
                    timeout = wanted
                    sock.settimeout(timeout)
                data, sender = sock.recvfrom(_MAX_DATAGRAM + 1)
            except (TimeoutError, BlockingIOError):
                data, sender = None, None
            except OSError:
                return  # closed
            if data == b"" and self._sock is not sock:
                return  # shut down by remove()
            try:
                if data is not None and not self.handle(data, sender):
                    junk += 1
                if self._deferred:
                    self._wake_deferred()
                now = time.monotonic()
                if now >= window_end:
                    was, flooded = flooded, junk >= self.flood_per_second
                    if flooded and not was:
                        self._say_flooded(junk, sender)
                    if flooded or was:
                        self.wake_all()
                    window_end, junk = now + 1.0, 0
                count += 1
                if flooded and count % 256 == 0:
                    time.sleep(0.005)  # a flood gets a fraction of a core; the kernel drops the rest
            except Exception:  # a bug here must not end wake-ups for every wait of the process
                self._log_error(sender)

    def wake_all(self) -> None:
        """Wake every wait of this process to read storage (once a second while the socket is flooded)."""
        with self._lock:
            calls = [call for same in self._watched.values() for w in same for call in w.calls]
        for call in calls:
            call()

    def _say_flooded(self, junk: int, sender: object) -> None:
        now = time.monotonic()
        if now - self._flood_logged_at >= 60:
            self._flood_logged_at = now
            logger.warning(
                "%d junk datagrams in a second on the wake-up socket (the last from %s): while that lasts, "
                "waits read storage once a second instead of trusting wake-ups to get through",
                junk,
                sender,
            )

    def _log_error(self, sender: object) -> None:
        # At most once a minute, with a count: a datagram that trips a bug must not flood the log.
        self._errors += 1
        now = time.monotonic()
        if now - self._errors_logged_at >= 60:
            logger.exception(
                "error while handling a wake-up from %s (%d since the last such line)", sender, self._errors
            )
            self._errors, self._errors_logged_at = 0, now

    def handle(self, data: bytes, sender: object = None) -> bool:
        """Check one datagram; wake the waits on its event (now, or at the end of the rate-limit
        window) and return True if it is accepted."""
        match = _DATAGRAM_RE.fullmatch(data)
        if match is None:
            return self._drop("malformed", sender)
        request_id, stamp, nonce, given = (part.decode("ascii") for part in match.groups())
        with self._lock:
            candidates = list(self._watched.get(request_id, ()))
        if not candidates:
            return self._drop(f"no wait here on {request_id!r}", sender)
        sent = int(stamp)  # at most 15 digits: no overflow below
        if abs(self.wall() - sent / 1000) > MAX_SKEW_SECONDS:
            return self._drop(f"stale ({request_id!r})", sender)
        # Only the token of a wait registered here can authenticate: no storage is read for a datagram.
        watched = next(
            (w for w in candidates if hmac.compare_digest(mac(w.token, request_id, stamp, nonce), given)), None
        )
        if watched is None:
            return self._drop(f"not authenticated ({request_id!r})", sender)
        now = self.clock()
        with self._lock:
            if sent <= watched.floor or any(n == nonce for n, _ in watched.nonces):
                return self._drop(f"replayed ({request_id!r})", sender)
            watched.nonces.append((nonce, sent))
            if len(watched.nonces) > _MAX_NONCES:
                watched.floor = max(watched.floor, watched.nonces.pop(0)[1])
            due = watched.last_wake + self.min_gap_seconds
            if now < due:
                if watched.deferred is None and watched.calls:
                    watched.deferred = due
                    self._deferred.add(watched)
                logger.debug("wake-up for %r deferred by %.3f s", request_id, due - now)
                return True
            watched.last_wake = now
            calls = list(watched.calls)
        logger.debug("wake-up for %r", request_id)
        for call in calls:
            call()
        return True

    def _until_deferred(self) -> float | None:
        """Seconds until the next deferred wake-up is due (None: there is none)."""
        if not self._deferred:
            return None
        with self._lock:
            due = min((w.deferred for w in self._deferred if w.deferred is not None), default=None)
        # Never 0: that would make the socket non-blocking rather than time out.
        return None if due is None else max(0.001, due - self.clock())

    def _wake_deferred(self) -> None:
        now = self.clock()
        with self._lock:
            ready = [w for w in self._deferred if w.deferred is not None and w.deferred <= now]
            for watched in ready:
                self._deferred.discard(watched)
                watched.deferred, watched.last_wake = None, now
            calls = [call for w in ready for call in w.calls]
        for call in calls:
            call()

    @staticmethod
    def _drop(why: str, sender: object) -> bool:
        logger.debug("wake-up dropped from %s: %s", sender, why)
        return False


_listener = Listener()
_record_failed = False


def _after_fork_in_child() -> None:
    global _listener
    _listener = Listener()  # a forked child has the socket object but not its thread, nor the parent's waits


os.register_at_fork(after_in_child=_after_fork_in_child)


def address(request_id: str) -> dict[str, Any] | None:
    """Where this process takes wake-ups, for the request record of the new event `request_id`.

    Opens the socket if it is not open; None when wake-ups are off or it cannot listen. A wait
    on this event in this process then writes no ``waiter.json`` while the socket is still there.

    Example:
        >>> fresh["wake"] = address(fresh["request_id"])  # {"host": "10.0.3.7", "port": 41233}
    """
    if not enabled():
        return None
    where = _listener.open()
    if where is None:
        return None
    with _listener._lock:
        _listener.fresh.add(request_id)
    return {"host": where[0], "port": where[1]}


def listen(request: Record, on_wake: Callable[[], None]) -> Listening | None:
    """Take wake-ups for `request` until `unlisten`; None when wake-ups are off or cannot be had.

    `on_wake()` is called from the listener's thread for each accepted wake-up: it means "read
    storage now" and carries nothing the wait should trust. No storage I/O and no blocking: a wait
    registers before anything can interrupt it, and then calls `record`.
    """
    if not enabled():
        return None
    return _listener.add(str(request["request_id"]), str(request["token"]), on_wake)


def record(store: Store, request: Record, listening: Listening) -> None:
    """Write ``waiter.json`` (one storage write) unless this process created the event and its request
    still records where the socket is. Call before the wait's first read, so that a writer that stores
    the outcome after it finds this process. Never raises: without it the wait simply polls."""
    global _record_failed
    request_id = str(request["request_id"])
    where = {"host": listening.address[0], "port": listening.address[1]}
    with _listener._lock:
        created_here = request_id in _listener.fresh
        _listener.fresh.discard(request_id)
    if created_here and request.get("wake") == where:
        return
    try:
        store.put_waiter(request_id, where)
    except StorageError as e:
        if not _record_failed:
            _record_failed = True
            logger.warning("cannot record where this process takes wake-ups (%s); waits find answers by polling", e)


def unlisten(listening: Listening | None, answered_by_poll: bool = False) -> None:
    """End one wait's registration. With ``answered_by_poll=True`` (a timed poll found an answer whose
    writer sent a wake-up here), the first time, a warning says that wake-ups do not reach this process."""
    if listening is None:
        return
    _listener.remove(listening)
    if answered_by_poll:
        _missed(listening.watched.request_id, listening.address)


_missed_once = False
_loopback_warned = False


def _missed(request_id: str, address: tuple[str, int]) -> None:
    global _missed_once
    if not _missed_once:
        _missed_once = True
        logger.warning(
            "the answer to %r reached this process at a poll, though its writer sent a wake-up: if that "
            "repeats, writers cannot reach udp %s:%d (a NetworkPolicy?); see docs/DEPLOYMENT.md",
            request_id,
            *address,
        )


def _listen_host() -> str:
    """``FLYTE_HITL_WAKE_HOST``; else in a Kubernetes pod the first address its hostname resolves to
    other than loopback (IPv4 or IPv6); else 127.0.0.1."""
    host = os.environ.get(HOST_ENV, "").strip()
    if host:
        return host
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "127.0.0.1"
    name = socket.gethostname()
    try:  # a pod's hostname resolves to its address (kubelet writes it to /etc/hosts)
        found = [str(info[4][0]) for info in socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)]
    except OSError:
        found = []
    global _loopback_warned
    for ip in found:
        if not ipaddress.ip_address(ip.split("%")[0]).is_loopback:
            return ip
    if _loopback_warned:
        return "127.0.0.1"
    _loopback_warned = True
    logger.warning(
        "in a Kubernetes pod, but its hostname %r resolves to no address other than loopback (%s): wake-ups "
        "from other pods cannot reach this one; set %s to the pod's IP (the downward API's status.podIP)",
        name,
        ", ".join(found) or "nothing",
        HOST_ENV,
    )
    return "127.0.0.1"


# -- the writing side ---------------------------------------------------------------------------------

_send_failed = False


def mark(store: Store, request: Record, record: Record) -> None:
    """Note in `record`, an outcome about to be stored for `request`, where `poke` will send its wake-up
    (``"woke": {"host", "port"}``), so that a wait that finds the outcome at a poll can tell a lost
    wake-up from none sent. Nothing when none will be sent (wake-ups off, nobody recorded as listening).

    At most one storage read (``waiter.json``; else the request's ``"wake"``), none when this process
    waits on the event itself; on an object store it runs in a daemon thread and the caller waits for
    it at most `POKE_WAIT_SECONDS`. Never raises: a failure is logged once per process.

    Example:
        >>> mark(store, request, response)
        >>> if store.create_response(request_id, response):
        ...     poke(store, request, response)
    """
    if not enabled():
        return
    found: list[dict[str, Any]] = []
    here = _listener.address
    if here is not None and _listener.watching(str(request.get("request_id"))):
        found.append({"host": here[0], "port": here[1]})
    elif store.is_local:
        _look_up(store, request, found)
    else:
        thread = threading.Thread(target=_look_up, args=(store, request, found), name="hitl-poke", daemon=True)
        thread.start()
        thread.join(POKE_WAIT_SECONDS)
    if found:
        record["woke"] = found[0]


def poke(store: Store, request: Record, response: Record) -> None:
    """Tell the process waiting on `request` that its outcome `response` is stored; call right after
    storing it. Waits in this very process are woken directly; else one UDP datagram goes where
    `mark` noted in `response`, if it noted anywhere. No storage I/O; never raises.

    Example:
        >>> if store.create_response(request_id, response):
        ...     poke(store, request, response)
    """
    if not enabled() or _listener.wake_here(str(request.get("request_id"))):
        return
    where = response.get("woke")
    if not isinstance(where, dict):
        return  # nobody waits with wake-ups (yet): the wait's first read finds the outcome
    try:
        host, port = ipaddress.ip_address(str(where["host"])), int(where["port"])
        family = socket.AF_INET6 if host.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(datagram(request), (str(host), port))
    except (OSError, ValueError, KeyError) as e:  # best-effort by contract: the wait polls anyway
        _failed(request, e)


def _look_up(store: Store, request: Record, found: list[dict[str, Any]]) -> None:
    try:
        waiter = store.read_waiter(str(request["request_id"])) or request.get("wake")
        if waiter is None:
            return
        host, port = ipaddress.ip_address(str(waiter["host"])), int(waiter["port"])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        found.append({"host": str(host), "port": port})
    except Exception as e:  # best-effort by contract: the wait polls anyway
        _failed(request, e)


def _failed(request: Record, error: BaseException) -> None:
    global _send_failed
    if not _send_failed:
        _send_failed = True
        why = "waits find answers by polling"
        logger.warning("cannot send a wake-up for %r (%s); %s", request.get("request_id"), error, why)
    else:
        logger.debug("cannot send a wake-up for %r: %s", request.get("request_id"), error)
