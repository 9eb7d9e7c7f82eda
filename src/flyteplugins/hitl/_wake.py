"""Wake-ups across processes: a writer that stored an outcome tells the waiting process to read it now.

In a cluster the waiting task and the form server are different pods that share only the storage
root, so without this an answer reaches the task at its next poll. With it:

1. A new event's request record carries where its process takes wake-ups (`address`, under
   ``"wake"``). A wait calls `listen`: the process's one listener (a UDP socket, shared by all its
   waits, open while any wait is) takes datagrams for it. Only when the request does not say where
   this process listens (a re-run re-attached to the event, or the listener moved) does the wait
   record it in ``<root>/<request_id>/waiter.json``, which overrides the request's.
2. Every writer, right after it stored an outcome, calls `poke`: one read of ``waiter.json`` (else
   the request's address), then one datagram ``HITLWAKE1 <request_id> <time ms> <nonce> <mac>`` to
   that address, where the mac is HMAC-SHA256 keyed by the event's token (which every writer has
   just read to check the answer).
3. The listener drops anything that is not authenticated for an event one of its waits is on, is
   older than `MAX_SKEW_SECONDS`, repeats a nonce, or comes within `Listener.min_gap_seconds` of the
   event's last wake-up; it never reads storage itself. For the rest it calls the wait's
   ``on_wake``, and the wait reads the outcome from storage as it does when it polls.

UDP because it is fire-and-forget: a writer never waits for the task, a blocked path (a
NetworkPolicy, a dead pod) costs it nothing, and a lost datagram costs only latency, since the
wait still polls. Settings (read when the listener opens):

- ``FLYTE_HITL_WAKE``: ``0`` turns wake-ups off in this process (listening and poking);
- ``FLYTE_HITL_WAKE_HOST``: the address to listen on and record (default: the pod IP in a
  Kubernetes pod, else 127.0.0.1);
- ``FLYTE_HITL_WAKE_PORT``: the UDP port (default 0, any free port).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

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
_MAX_DATAGRAM = 512
_MAX_NONCES = 32


def enabled() -> bool:
    """Whether wake-ups are on in this process (``FLYTE_HITL_WAKE`` is not 0/false/no/off)."""
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
    nonce = secrets.token_hex(8)
    return b" ".join((MAGIC, *(p.encode() for p in (request_id, stamp, nonce, mac(token, request_id, stamp, nonce)))))


# -- the waiting side ---------------------------------------------------------------------------------


class Unregister(Protocol):
    """What `listen` returns: call it when the wait ends."""

    def __call__(self, answered_by_poll: bool = False) -> None: ...


class _Wait:
    __slots__ = ("last_wake", "nonces", "on_wake", "request_id", "token")

    def __init__(self, request_id: str, token: str, on_wake: Callable[[], None]) -> None:
        self.request_id = request_id
        self.token = token
        self.on_wake = on_wake
        self.last_wake = -float("inf")
        self.nonces: list[str] = []


class Listener:
    """This process's UDP socket for wake-ups, shared by every wait, open while any wait is.

    Example:
        >>> unregister = listen(store, request, lambda: print("read storage now"))
        >>> unregister()  # the last wait ended: the socket closes
    """

    #: Seconds after a wake-up during which further wake-ups for the same event are dropped.
    min_gap_seconds = 1.0
    #: The monotonic clock for the rate limit; tests may replace it.
    clock: Callable[[], float] = staticmethod(time.monotonic)
    #: The wall clock that datagram stamps are checked against; tests may replace it.
    wall: Callable[[], float] = staticmethod(time.time)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[str, list[_Wait]] = {}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        #: (host, port) the open socket takes datagrams on.
        self.address: tuple[str, int] | None = None
        self._bind_failed = False

    def open(self) -> tuple[str, int] | None:
        """Open the socket if it is not open (it closes when the last wait ends); its address, or None."""
        with self._lock:
            if self._sock is None and not self._open():
                return None
            return self.address

    def add(self, wait: _Wait) -> tuple[str, int] | None:
        """Register `wait`, opening the socket if it is the first; returns the address, or None if it cannot listen."""
        with self._lock:
            if self._sock is None and not self._open():
                return None
            self._waits.setdefault(wait.request_id, []).append(wait)
            return self.address

    def remove(self, wait: _Wait) -> None:
        """Forget `wait`; close the socket when it was the last."""
        with self._lock:
            waits = self._waits.get(wait.request_id)
            if waits is not None and wait in waits:
                waits.remove(wait)
                if not waits:
                    del self._waits[wait.request_id]
            if self._waits or self._sock is None:
                return
            sock, self._sock, self.address = self._sock, None, None
            thread, self._thread = self._thread, None
        with contextlib.suppress(OSError):  # wakes the receiving thread (Linux), which then exits
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        # The port is free only once the receiving thread's recvfrom has returned.
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def wake_here(self, request_id: str) -> bool:
        """Wake this process's own waits on `request_id` directly; False if it has none."""
        with self._lock:
            waits = list(self._waits.get(request_id, ()))
        for wait in waits:
            wait.on_wake()
        return bool(waits)

    @property
    def waiting(self) -> int:
        """How many waits are registered."""
        with self._lock:
            return sum(len(w) for w in self._waits.values())

    def _open(self) -> bool:
        host = _wake_host()
        port_text = os.environ.get(PORT_ENV) or "0"
        try:
            port, ip = int(port_text), ipaddress.ip_address(host)
            if ip.is_unspecified or not 0 <= port < 65536:  # writers need the one address to send to
                raise ValueError
        except ValueError:
            self._warn_once(f"{HOST_ENV}={host!r} / {PORT_ENV}={port_text!r} is not one IP address and a port")
            return False
        sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            self._warn_once(f"cannot listen for wake-ups on udp {host}:{port}: {e.strerror or e}")
            return False
        self._sock = sock
        self.address = (host, int(sock.getsockname()[1]))
        self._thread = threading.Thread(target=self._receive, args=(sock,), name="hitl-wake", daemon=True)
        self._thread.start()
        logger.debug("listening for wake-ups on udp %s:%d", *self.address)
        return True

    def _warn_once(self, why: str) -> None:
        if not self._bind_failed:
            self._bind_failed = True
            logger.warning("%s; waits find answers by polling", why)

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data, sender = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:
                return  # closed
            if not data:
                if self._sock is not sock:
                    return  # shut down by remove()
                continue
            try:
                self.handle(data, sender)
            except Exception:  # a bug here must not end wake-ups for every wait of the process
                logger.exception("error while handling a wake-up from %s", sender)

    def handle(self, data: bytes, sender: object = None) -> bool:
        """Check one datagram; call the matching wait's ``on_wake`` and return True if it is accepted."""
        parts = data.split(b" ")
        if len(parts) != 5 or parts[0] != MAGIC:
            return self._drop("malformed", sender)
        try:
            request_id, stamp, nonce, given = (p.decode("ascii") for p in parts[1:])
            sent = int(stamp) / 1000
        except (UnicodeDecodeError, ValueError):
            return self._drop("malformed", sender)
        if abs(self.wall() - sent) > MAX_SKEW_SECONDS:
            return self._drop(f"stale ({request_id[:128]!r})", sender)
        with self._lock:
            waits = list(self._waits.get(request_id, ()))
        # Only the token of a wait registered here can authenticate: no storage is read for a datagram.
        wait = next((w for w in waits if hmac.compare_digest(mac(w.token, request_id, stamp, nonce), given)), None)
        if wait is None:
            return self._drop(f"not authenticated for a wait here ({request_id[:128]!r})", sender)
        now = self.clock()
        with self._lock:
            if nonce in wait.nonces:
                return self._drop(f"replayed ({request_id!r})", sender)
            wait.nonces = [*wait.nonces[-_MAX_NONCES + 1 :], nonce]
            if now - wait.last_wake < self.min_gap_seconds:
                return self._drop(f"rate-limited ({request_id!r})", sender)
            wait.last_wake = now
        logger.debug("wake-up for %r", request_id)
        wait.on_wake()
        return True

    @staticmethod
    def _drop(why: str, sender: object) -> bool:
        logger.debug("wake-up dropped from %s: %s", sender, why)
        return False


_listener = Listener()
_record_failed = False


def _forget_listener() -> None:
    global _listener
    _listener = Listener()  # a forked child has the socket object but not its thread, nor the parent's waits


os.register_at_fork(after_in_child=_forget_listener)


_fresh: set[str] = set()  # events this process created with its listener's address in the request
_fresh_lock = threading.Lock()


def address(request_id: str) -> dict[str, Any] | None:
    """Where this process takes wake-ups, for the request record of the new event `request_id`.

    Opens the listener if it is not open; None when wake-ups are off or it cannot listen. A wait
    on this event in this process then writes no ``waiter.json`` while the listener is still there.

    Example:
        >>> fresh["wake"] = address(fresh["request_id"])  # {"host": "10.0.3.7", "port": 41233}
    """
    if not enabled():
        return None
    where = _listener.open()
    if where is None:
        return None
    with _fresh_lock:
        _fresh.add(request_id)
    return {"host": where[0], "port": where[1]}


def listen(store: Store, request: Record, on_wake: Callable[[], None]) -> Unregister:
    """Take wake-ups for `request` until the returned function is called.

    `on_wake()` is called from the listener's thread for each accepted wake-up: it means "read
    storage now" and carries nothing the wait should trust. Unless this process created the event
    and its request records where the listener still is, writes ``waiter.json`` (one storage write)
    before it returns, so that a writer that stores the outcome after this call finds it; the
    wait should read storage once after this call. Never raises: without a listener the wait
    simply polls.

    Call the returned function with ``answered_by_poll=True`` when a timed poll, not a wake-up,
    found the answer: the first time, a warning says that wake-ups do not reach this process.

    Example:
        >>> unregister = listen(store, event_request, lambda: loop.call_soon_threadsafe(wake))
        >>> try:
        ...     ...  # wait, reading storage when woken or when the poll interval passes
        ... finally:
        ...     unregister()
    """
    global _record_failed
    if not enabled():
        return _nothing
    wait = _Wait(str(request["request_id"]), str(request["token"]), on_wake)
    where = _listener.add(wait)
    if where is None:
        return _nothing
    record = {"host": where[0], "port": where[1]}
    with _fresh_lock:
        created_here = wait.request_id in _fresh
        _fresh.discard(wait.request_id)
    if not (created_here and request.get("wake") == record):
        try:
            store.put_waiter(wait.request_id, record)
        except StorageError as e:
            if not _record_failed:
                _record_failed = True
                logger.warning("cannot record where this process takes wake-ups (%s); waits find answers by polling", e)

    def unregister(answered_by_poll: bool = False) -> None:
        _listener.remove(wait)
        if answered_by_poll:
            _missed(wait.request_id, where)

    return unregister


def _nothing(answered_by_poll: bool = False) -> None:
    pass


_missed_once = False


def _missed(request_id: str, address: tuple[str, int]) -> None:
    global _missed_once
    if not _missed_once:
        _missed_once = True
        logger.warning(
            "the answer to %r reached this process at a poll, not by a wake-up: if that repeats, writers "
            "cannot reach udp %s:%d (a NetworkPolicy?) or do not send wake-ups; see docs/DEPLOYMENT.md",
            request_id,
            *address,
        )


def _wake_host() -> str:
    host = os.environ.get(HOST_ENV, "").strip()
    if host:
        return host
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        # A pod's hostname resolves to its pod IP (kubelet writes it to /etc/hosts).
        with contextlib.suppress(OSError):
            return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


# -- the writing side ---------------------------------------------------------------------------------

_send_failed = False


def poke(store: Store, request: Record) -> None:
    """Tell the process waiting on `request` that its outcome is stored; call right after storing it.

    Best-effort: at most one storage read (``waiter.json``; else the request's ``"wake"``) and one
    UDP datagram; never raises.
    On an object store the read runs in a daemon thread and the caller waits for it at most
    `POKE_WAIT_SECONDS`. A failure is logged once per process; the wait then finds the outcome
    at its next poll. A wait in this very process (the embedded server's) is woken directly,
    with neither.

    Example:
        >>> if store.create_response(request_id, response):
        ...     poke(store, request)
    """
    if not enabled() or _listener.wake_here(str(request.get("request_id"))):
        return
    if store.is_local:
        _poke(store, request)
        return
    thread = threading.Thread(target=_poke, args=(store, request), name="hitl-poke", daemon=True)
    thread.start()
    thread.join(POKE_WAIT_SECONDS)


def _poke(store: Store, request: Record) -> None:
    global _send_failed
    try:
        waiter = store.read_waiter(str(request["request_id"])) or request.get("wake")
        if waiter is None:
            return  # nobody waits with wake-ups (yet): the wait's first read finds the outcome
        host, port = ipaddress.ip_address(str(waiter["host"])), int(waiter["port"])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        family = socket.AF_INET6 if host.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(datagram(request), (str(host), port))
    except Exception as e:  # best-effort by contract: the wait polls anyway
        if not _send_failed:
            _send_failed = True
            why = "waits find answers by polling"
            logger.warning("cannot send a wake-up for %r (%s); %s", request.get("request_id"), e, why)
        else:
            logger.debug("cannot send a wake-up for %r: %s", request.get("request_id"), e)
