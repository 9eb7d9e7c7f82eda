"""Long-polls of a server (``GET /status/<id>?wait=N``) and of ``hitl status --wait``: block until an outcome.

A long-poll holds no storage reads of its own. Outcomes this server stores reach it at once
(`Watch.stored`); outcomes stored by anyone else (another replica, the CLI, the waiting task's
expiry mark) are found by one poll every `Watch.poll_seconds`, shared by every long-poll: one read
per watched event, so a few long-polls cost a few reads a second whatever the root holds. From
`Watch.list_from` watched events on an object store, the poll lists the root instead (a request
per 1,000 objects under it) and reads only the events the listing shows answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._answers import seconds_left
from ._errors import StorageError
from ._store import Record, Store

logger = logging.getLogger("flyteplugins.hitl.watch")


class _Watched:
    __slots__ = ("count", "done", "response")

    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()
        self.response: Record | None = None


class Watch:
    """Waits for outcomes under one root, for any number of threads at once.

    Example:
        >>> watch = Watch(Store("s3://bucket/hitl"))
        >>> watch.wait("approve-1a2b", 30)  # the outcome record, or None after 30 s
        >>> watch.close()
    """

    #: Seconds between the shared polls while anything is watched.
    poll_seconds = 1.0
    #: Watched events from which a poll lists the root rather than reading each event's outcome.
    list_from = 50
    #: Seconds an outcome this server stored is remembered for long-polls that start later.
    remember_seconds = 60.0
    #: Most outcomes remembered that way.
    remember_most = 10_000
    #: The clock; tests may replace it.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._recent: dict[str, tuple[float, Record]] = {}
        self._poller: threading.Thread | None = None
        self._wakeup = threading.Event()  # cut the poller's sleep short (close)
        self._closed = False
        self._failing = False

    def outcome(self, request: Record, wait: float) -> Record | None:
        """The stored outcome of the event `request`; with `wait`, the one that comes within that
        many seconds, never waiting past the event's deadline (its expiry mark is read then, if any)."""
        request_id = str(request["request_id"])
        response = self.store.read_response(request_id)
        if response is None and wait > 0:
            left = seconds_left(request)
            response = self.wait(request_id, min(wait, max(0.0, left)))
            if response is None and left <= wait:  # the deadline passed meanwhile
                response = self.store.read_response(request_id)
        return response

    def stored(self, request_id: str, response: Record) -> None:
        """This process has just stored `response` as the outcome of `request_id`: release its long-polls."""
        now = self.clock()
        with self._lock:
            self._recent.pop(request_id, None)
            self._recent[request_id] = (now, response)
            # Oldest first (insertion order): drop the expired ones, and any beyond the cap.
            while self._recent:
                oldest = next(iter(self._recent))
                if len(self._recent) <= self.remember_most and now - self._recent[oldest][0] < self.remember_seconds:
                    break
                del self._recent[oldest]
            watched = self._watched.get(request_id)
        if watched is not None:
            watched.response = response
            watched.done.set()

    def wait(self, request_id: str, seconds: float) -> Record | None:
        """The outcome of `request_id` as soon as it is stored, or None after `seconds`."""
        with self._lock:
            recent = self._recent.get(request_id)
            if recent is not None and self.clock() - recent[0] < self.remember_seconds:
                return recent[1]
            if self._closed:
                return None
            watched = self._watched.get(request_id)
            if watched is None:
                watched = self._watched[request_id] = _Watched()
            watched.count += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="hitl-watch", daemon=True)
                self._poller.start()
        try:
            watched.done.wait(max(0.0, seconds))
            return watched.response
        finally:
            with self._lock:
                watched.count -= 1
                if watched.count == 0 and self._watched.get(request_id) is watched:
                    del self._watched[request_id]

    def close(self) -> None:
        """Release every long-poll (they return None, or their outcome if it came) and stop polling."""
        with self._lock:
            self._closed = True
            watched = list(self._watched.values())
            poller = self._poller
        self._wakeup.set()
        for w in watched:
            w.done.set()
        if poller is not None:
            poller.join(timeout=30)

    def _poll(self) -> None:
        while True:
            self._wakeup.wait(self.poll_seconds)
            with self._lock:
                if self._closed or not self._watched:
                    self._poller = None  # the next long-poll starts a new poller
                    return
                pending = [k for k, w in self._watched.items() if not w.done.is_set()]
            try:
                self._poll_once(pending)
            except StorageError as e:
                if not self._failing:
                    logger.warning("long-polls cannot read %s: %s", self.store.root, e)
                self._failing = True
            else:
                if self._failing:
                    logger.info("long-polls read %s again", self.store.root)
                self._failing = False

    def _poll_once(self, pending: list[str]) -> None:
        if not pending:
            return
        answered = self.store.list_answered() if len(pending) >= self.list_from else None
        for request_id in pending:
            if answered is not None and request_id not in answered:
                continue
            response = self.store.read_response(request_id)
            if response is not None:
                with self._lock:
                    watched = self._watched.get(request_id)
                if watched is not None:
                    watched.response = response
                    watched.done.set()
