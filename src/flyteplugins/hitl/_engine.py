"""How a waiting call sleeps and is woken; the wait loop itself is `hitl.Event.wait`.

A wait sleeps on a signal: a `threading.Event` for a blocking wait, an `asyncio.Event` set through
``loop.call_soon_threadsafe`` for an ``.aio`` wait. Three things set it: the wait's own timer (its
next poll, its next console line, its deadline); the in-process server handing over the outcome it
has just stored (`waiters.notify`); and anything that learns that storage changed, from any thread
(`Wake.read_now`). The waiting side clears the signal *before* each storage read, so a wake-up that
lands during the read is never lost: the next sleep returns at once and the wait reads again.

Example:
    >>> signal = threading.Event()
    >>> wake = Wake("/tmp/flyte/hitl", signal.set)
    >>> waiters.add("approve-1a2b", wake)
    >>> waiters.notify("/tmp/flyte/hitl", "approve-1a2b", {"status": "completed", "value": True})
    >>> signal.is_set(), wake.take(), wake.handed["value"]
    (True, True, True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store import Store

logger = logging.getLogger("flyteplugins.hitl")

Record = dict[str, Any]


class Wake:
    """What wakes one wait, from any thread: an outcome handed over, or "read storage now"."""

    __slots__ = ("_signal", "handed", "root", "woken")

    def __init__(self, root: str, signal: Callable[[], None]) -> None:
        self.root = root
        self._signal = signal
        #: Set by `read_now`; the wait takes it (`take`) right before it reads storage.
        self.woken = False
        #: The outcome an in-process writer stored under this wait's root: returned without a read.
        self.handed: Record | None = None

    def hand_over(self, root: str, response: Record) -> None:
        """`response` was just stored under `root`; a wait on another root reads its own instead."""
        if root == self.root:
            self.handed = response
        self.read_now()

    def read_now(self) -> None:
        """Wake the wait to read storage at once (callable from any thread)."""
        self.woken = True
        self._signal()

    def take(self) -> bool:
        """Whether the wait was woken since the last `take`; clears it. Call before each read."""
        woken, self.woken = self.woken, False
        return woken


class Waiters:
    """In-process wake-ups, keyed by request id.

    The embedded server (and `submit` without a server) calls `notify` with the outcome it has just
    stored, after sending the reply, so a waiting call returns within milliseconds and without
    reading the record back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakes: dict[str, list[Wake]] = {}

    def add(self, request_id: str, wake: Wake) -> None:
        with self._lock:
            self._wakes.setdefault(request_id, []).append(wake)

    def remove(self, request_id: str, wake: Wake) -> None:
        with self._lock:
            wakes = self._wakes.get(request_id)
            if wakes is not None and wake in wakes:
                wakes.remove(wake)
                if not wakes:
                    del self._wakes[request_id]

    def waiting(self) -> int:
        """How many waits are registered (for tests and benchmarks)."""
        with self._lock:
            return sum(len(w) for w in self._wakes.values())

    def notify(self, root: str, request_id: str, response: Record) -> None:
        """Wake the waits on `request_id`: `response` is the outcome just stored under `root`."""
        with self._lock:
            wakes = list(self._wakes.get(request_id, ()))
        for wake in wakes:
            wake.hand_over(root, response)

    def _after_fork(self) -> None:
        # The child has only the forking thread: other threads' waits and a lock they held are gone.
        self._lock = threading.Lock()
        self._wakes = {}


waiters = Waiters()


@contextlib.contextmanager
def registered(store: Store, request: Record, signal: Callable[[], None]) -> Iterator[Wake]:
    """For the duration of one wait on `request` in `store`: the `Wake` that every wake-up goes
    through, with `signal` setting the wait's event (callable from any thread)."""
    wake = Wake(store.root, signal)
    request_id = request["request_id"]
    waiters.add(request_id, wake)
    try:
        yield wake
    finally:
        waiters.remove(request_id, wake)


class Outages:
    """One warning when storage reads under a root start failing, one line when they succeed again.

    Per root, not per wait: a thousand waits riding out one outage log it once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def failed(self, root: str, error: BaseException, retry_seconds: float) -> None:
        with self._lock:
            if root in self._failing:
                return
            self._failing.add(root)
        logger.warning(
            "storage error under %r, still waiting (next read in %.3g s, then at most every %.3g s): %s",
            root,
            retry_seconds,
            MAX_BACKOFF_SECONDS,
            error,
        )

    def answered(self, root: str) -> None:
        with self._lock:
            if root not in self._failing:
                return
            self._failing.discard(root)
        logger.warning("storage under %r answers again; waits go on", root)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


outages = Outages()

#: First delay before reading again after a transient storage error; doubled after each one.
FIRST_BACKOFF_SECONDS = 0.5
#: Longest delay between reads while storage keeps failing.
MAX_BACKOFF_SECONDS = 8.0


def _after_fork_in_child() -> None:
    waiters._after_fork()
    outages._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
