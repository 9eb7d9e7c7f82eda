"""Long-polls of a server (``GET /status/<id>?wait=N``) and of ``hitl status --wait``: block until an outcome.

A long-poll reads the stored state when it starts and when it ends, and nothing is remembered
between long-polls: an answer the waiting task refuses reopens the event, and the next read says so.
In between, a long-poll sleeps until something may have changed. Outcomes this server stores wake it
at once (`Watch.stored`); outcomes stored by anyone else (another replica, the CLI, the waiting
task's expiry mark) are found by one poll every `Watch.poll_seconds`, shared by every long-poll: one
read per watched event, so a few long-polls cost a few reads a second whatever the root holds. From
`Watch.list_from` watched events on an object store, the poll lists the root instead (a request per
1,000 objects under it).
"""

from __future__ import annotations

import logging
import math
import threading

from . import _answers
from ._errors import StorageError
from ._store import Outcome, Record, Store

logger = logging.getLogger("flyteplugins.hitl.watch")


class _Watched:
    __slots__ = ("count", "done")

    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()


class Watch:
    """Waits for outcomes under one root, for any number of threads at once.

    Example:
        >>> watch = Watch(Store("s3://bucket/hitl"))
        >>> watch.outcome(request, 30).response  # the outcome, or None if none came within 30 s
        >>> watch.close()
    """

    #: Seconds between the shared polls while anything is watched.
    poll_seconds = 1.0
    #: Watched events from which a poll lists the root rather than reading each event's outcome.
    list_from = 50
    #: Most long-polls held at once; past it, a long-poll returns the current state at once.
    most: float = math.inf

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._held = 0
        self._poller: threading.Thread | None = None
        self._wakeup = threading.Event()  # cut the poller's sleep short (close)
        self._closed = False
        self._failing = False

    def outcome(self, request: Record, wait: float) -> Outcome:
        """The event's stored state (`_answers.outcome`); with `wait`, once it has an outcome, or after
        that many seconds, never waiting past the event's deadline (its expiry mark is read then, if any)."""
        found = _answers.outcome(self.store, request)
        if found.response is None and wait > 0:
            self.wait(str(request["request_id"]), min(wait, max(0.0, _answers.seconds_left(request))))
            found = _answers.outcome(self.store, request)
        return found

    def stored(self, request_id: str) -> None:
        """This process has just stored an outcome of `request_id`: its long-polls read the state now."""
        with self._lock:
            watched = self._watched.get(request_id)
        if watched is not None:
            watched.done.set()

    def wait(self, request_id: str, seconds: float) -> bool:
        """Sleep until an outcome of `request_id` may have been stored (True), at most `seconds` (False).
        Returns False at once when `most` long-polls are held already, or the watch is closed."""
        with self._lock:
            if self._closed or self._held >= self.most:
                return False
            watched = self._watched.get(request_id)
            if watched is None or watched.done.is_set():  # a new long-poll sleeps until the next change
                watched = self._watched[request_id] = _Watched()
            watched.count += 1
            self._held += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="hitl-watch", daemon=True)
                self._poller.start()
        try:
            return watched.done.wait(max(0.0, seconds))
        finally:
            with self._lock:
                self._held -= 1
                watched.count -= 1
                if watched.count == 0 and self._watched.get(request_id) is watched:
                    del self._watched[request_id]

    def close(self) -> None:
        """Release every long-poll (each reads the state once more) and stop polling."""
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
                pending = {k: w for k, w in self._watched.items() if not w.done.is_set()}
                listing = len(self._watched) >= self.list_from
            try:
                self._poll_once(pending, listing)
            except StorageError as e:
                if not self._failing:
                    logger.warning("long-polls cannot read %s: %s", self.store.root, e)
                self._failing = True
            else:
                if self._failing:
                    logger.info("long-polls read %s again", self.store.root)
                self._failing = False

    def _poll_once(self, pending: dict[str, _Watched], listing: bool) -> None:
        if not pending:
            return
        answered = self.store.list_answered() if listing else None
        for request_id, watched in pending.items():
            if answered is None:
                if self.store.read_outcome(request_id).response is not None:
                    watched.done.set()
            elif request_id in answered:
                watched.done.set()
