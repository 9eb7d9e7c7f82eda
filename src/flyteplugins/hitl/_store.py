"""The storage root: paths from validated ids, reads, create-only writes, listing.

Layout: ``<root>/<request_id>/request.json`` (the question, written once when the event is
created) and ``<root>/<request_id>/response.json`` (the outcome, written once: an answer, or
an expiry mark). Both are created with a create-only write, so the first writer wins and no
reader ever sees a half-written file:

- local paths: write a temp file beside the record, then ``link`` it into place, which fails if the
  name exists, and remove the temp name. A record survives the crash of any
  process at once; with ``FLYTE_HITL_FSYNC=1`` it is also synced to disk before the write
  returns, so that it survives a power loss (this costs 0.4 to 0.9 ms of CPU per record);
- s3/gs/abfs: a single put with ``mode="create"`` (If-None-Match: *) through obstore, built by
  ``flyte.storage`` so Flyte's configured credentials and endpoints apply.

No other kind of root is accepted (`parse_root`): a backend without a create-only write cannot keep
"first answer wins" across processes.

A local root is private to its owner: it and its event directories are created with mode 0700 and
records with 0600, and a root that another user owns or could change (it, or a directory above it,
is writable by others without the sticky bit) is refused with `UnsafeRootError`, since answers
planted there would be believed.

``<root>/<request_id>/waiter.json`` says where a process that re-attached to the event takes
wake-ups (`_wake`; the creating process records it in the request); each such wait overwrites it
(a rename locally, a plain put on object stores).

A waiting event polls with one read of its response per poll interval.

Clients never choose a path: every path is computed here from a request id that matched
`REQUEST_ID_RE`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from . import _flyte
from ._errors import ConfigurationError, HitlError, InvalidRequestIdError, StorageError, UnsafeRootError

logger = logging.getLogger("flyteplugins.hitl.store")

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
REQUEST_FILE = "request.json"
RESPONSE_FILE = "response.json"
REFUSED_FILE = "refused.json"
WAITER_FILE = "waiter.json"
DEFAULT_LOCAL_ROOT = "/tmp/flyte/hitl"
ROOT_ENV = "FLYTE_HITL_ROOT"
FSYNC_ENV = "FLYTE_HITL_FSYNC"

Record = dict[str, Any]


#: Answers the waiting task may refuse before an event stops reopening: the next refusal ends its wait.
MAX_REFUSALS = 20


def slotted(name: str, slot: int) -> str:
    """The record `name` of answer slot `slot`: ``response.json``, ``response.1.json``, ...

    An event takes its answer in slot 0. When the waiting task's type refuses a stored answer (a
    validator only the task's code knows), the task records the refusal beside it and the event
    takes answers in the next slot: every record stays create-only, so the first answer wins in each.
    """
    if not slot:
        return name
    stem, _, extension = name.rpartition(".")
    return f"{stem}.{slot}.{extension}"


class Outcome(NamedTuple):
    """An event's state in storage (see `Store.read_outcome`)."""

    #: The current slot's outcome (an answer or the expiry mark), or None while it takes answers.
    response: Record | None
    #: The current slot: how many answers the waiting task refused.
    slot: int
    #: The latest refusal, if any: the refused answer and why the task refused it.
    refusal: Record | None


class Listed(NamedTuple):
    """One event as a listing of the root shows it (see `Store.list_events`)."""

    request_id: str
    #: When its request was written (the listing's modification time), in seconds since the epoch.
    created: float
    #: Whether its current answer slot holds an outcome (an answer or an expiry mark).
    answered: bool
    #: Its current answer slot: how many answers the waiting task refused (see `slotted`).
    slot: int = 0


def check_request_id(request_id: object) -> str:
    """Return `request_id` if it is a well-formed id, else raise `InvalidRequestIdError`."""
    if isinstance(request_id, str) and REQUEST_ID_RE.fullmatch(request_id):
        return request_id
    raise InvalidRequestIdError(request_id)


def default_root() -> str:
    """The root named by ``FLYTE_HITL_ROOT``, or the local default under Flyte's local data directory."""
    return os.environ.get(ROOT_ENV) or DEFAULT_LOCAL_ROOT


#: URL schemes of the roots we accept, and the backend scheme each one means.
ROOT_SCHEMES = {
    "file": "file",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "abfs": "abfs",
    "abfss": "abfss",
    "az": "abfs",
}
ROOT_FORMS = (
    "a local path, file:///PATH, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or abfs[s]://CONTAINER[/PREFIX] "
    "(also s3a://, gcs:// and az://)"
)
# "s3:/bucket", "gs:bucket": a scheme without "//" would otherwise be a relative directory "s3:".
_SCHEME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# Bucket names (S3, GCS) and Azure containers, optionally with their account (container@account.dfs...);
# never a user name or password.
_BUCKET = re.compile(r"[A-Za-z0-9._-]+")
_CONTAINER = re.compile(r"[A-Za-z0-9._-]+(@[A-Za-z0-9.-]+)?")
_USERINFO = re.compile(r"://[^/@]*:[^/@]*@")


def parse_root(root: str) -> str:
    """`root` in its canonical form, or `ConfigurationError` naming ``FLYTE_HITL_ROOT`` and the accepted forms.

    A root is a local path or the URL of an object store with a create-only write; aliases become
    their canonical scheme (``gcs://`` → ``gs://``, ``s3a://`` → ``s3://``, ``az://`` → ``abfs://``).

    Example:
        >>> parse_root("gcs://bucket/hitl/")
        'gs://bucket/hitl'
        >>> parse_root("s3://")
        Traceback (most recent call last):
        ...
        ConfigurationError: FLYTE_HITL_ROOT (or the root argument) is 's3://': it names no bucket; ...
    """

    # A password written into the URL is left out of the message.
    shown = _USERINFO.sub("://***@", root) if isinstance(root, str) else root

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(f"{ROOT_ENV} (or the root argument) is {shown!r}: {why}; expected {ROOT_FORMS}")

    if not isinstance(root, str) or not root.strip():
        raise refuse("it is empty")
    if any(c in root for c in "\0\n\r") or root != root.strip():
        raise refuse("it holds control characters or surrounding spaces")
    scheme, separator, rest = root.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        if _SCHEME_LIKE.match(root):
            raise refuse("it looks like a URL without '//' (write ./NAME for a local directory of that name)")
        if root.startswith("~"):
            raise refuse("'~' is not expanded here (give the full path)")
        return root.rstrip("/") or "/"
    canonical = ROOT_SCHEMES.get(scheme.lower())
    if canonical is None:
        raise refuse(f"{scheme!r} is not a supported storage scheme")
    if canonical == "file":
        if not rest.startswith("/"):
            raise refuse("a file URL needs an absolute path (file:///PATH)")
        return f"file://{rest.rstrip('/') or '/'}"
    bucket, _, prefix = rest.partition("/")
    if not (_CONTAINER if canonical.startswith("abfs") else _BUCKET).fullmatch(bucket):
        if "@" in bucket and ":" in bucket:
            raise refuse("it carries credentials; Flyte's storage settings provide them")
        raise refuse("it names no bucket" if not bucket else f"{bucket!r} is not a bucket or container name")
    prefix = prefix.strip("/")
    return f"{canonical}://{bucket}/{prefix}" if prefix else f"{canonical}://{bucket}"


def fsync_wanted() -> bool:
    """Whether ``FLYTE_HITL_FSYNC`` asks local records to be synced to disk before a write returns."""
    text = os.environ.get(FSYNC_ENV, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{FSYNC_ENV} must be 1 or 0 (or true/false, yes/no, on/off), got {text!r}")


class _Backend(Protocol):
    def read(self, key: str) -> bytes | None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def put(self, key: str, data: bytes) -> None: ...
    def list_answered(self) -> set[str] | None: ...
    def list_events(self) -> list[Listed]: ...
    def vote_names(self, request_id: str) -> list[str]: ...
    def prepare(self) -> None: ...


class Store:
    """Reads and writes event records under one root (a local path or an object-store URL).

    Every operation is one storage request on object stores (a read is one GET, a create one
    conditional PUT). Transient failures (timeouts, refused connections, 5xx) are retried with
    exponential back-off and logged once per outage; a failure that outlasts the retries, or one
    that retrying cannot fix (denied access, a missing bucket), raises `StorageError` naming the root.
    A root that is not a local path or a supported URL raises `ConfigurationError` at once (see
    `parse_root`); a local root other users could change raises `UnsafeRootError` on first use.

    Example:
        >>> store = Store("/tmp/flyte/hitl")
        >>> store.read_response("0123abcd") is None
        True
    """

    #: Attempts for a read or write that fails with a transient error before giving up.
    attempts = 6
    #: First back-off delay in seconds; doubled after each failed attempt.
    backoff_seconds = 0.5
    #: Longest back-off delay in seconds.
    max_backoff_seconds = 8.0
    #: Per-request limit in seconds on object stores (read when the store first reaches its root).
    request_timeout_seconds = 20.0
    #: Connection limit in seconds on object stores (read when the store first reaches its root).
    connect_timeout_seconds = 5.0

    def __init__(
        self,
        root: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = parse_root(root)
        self._backend_instance: _Backend | None = None
        self._backend_lock = threading.Lock()
        self._sleep = sleep
        # True from the first transient failure until the next success: one warning per outage.
        self._failing = False
        self._warned_at = -math.inf

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    @property
    def is_local(self) -> bool:
        """Whether the root is a local path (a read is a few system calls, no network)."""
        protocol, separator, _ = self.root.partition("://")
        return not separator or protocol == "file"

    def path(self, request_id: str, name: str) -> str:
        """Where the record `name` (`REQUEST_FILE` or `RESPONSE_FILE`) of `request_id` lives: a local
        path or an object-store URL. For callers that name a record to others; this store reads and
        writes it itself."""
        return f"{self.root}/{check_request_id(request_id)}/{name}"

    def read_request(self, request_id: str) -> Record | None:
        """The stored question for `request_id`, or None if there is none. A record without the
        fields every reader relies on (edited by hand, or not written by this package) raises
        `StorageError` here, rather than a KeyError wherever it is used."""
        record = self._read(check_request_id(request_id), REQUEST_FILE)
        if record is not None:
            bad = [k for k in _REQUEST_FIELDS if not isinstance(record.get(k), str)]
            if not bad and not _is_timestamp(record["expires_at"]):
                bad = ["expires_at"]
            if bad:
                raise StorageError(
                    f"{self.root}/{request_id}/{REQUEST_FILE} is not an event's question: "
                    f"{', '.join(bad)} missing or not valid",
                    self.root,
                )
        return record

    def read_response(self, request_id: str) -> Record | None:
        """The stored outcome (answer or expiry) for `request_id`, or None while it is pending."""
        return self.read_outcome(request_id).response

    def read_outcome(self, request_id: str) -> Outcome:
        """The current outcome, its slot and the latest refusal: one read while an event waits for
        its first answer, two once it has one, two more for each answer the task refused."""
        check_request_id(request_id)
        slot, refusal = 0, None
        while True:
            response = self._read(request_id, slotted(RESPONSE_FILE, slot))
            if response is None or response.get("status") != "completed" or slot >= MAX_REFUSALS:
                return Outcome(response, slot, refusal)
            refused = self._read(request_id, slotted(REFUSED_FILE, slot))
            if refused is None:
                return Outcome(response, slot, refusal)
            slot, refusal = slot + 1, refused

    def create_request(self, record: Record) -> bool:
        """Store a new question; False (and nothing written) if one exists under this id."""
        return self._create(check_request_id(record["request_id"]), REQUEST_FILE, record)

    def create_response(self, request_id: str, record: Record, slot: int | None = None) -> bool:
        """Store the outcome in `slot` (default: the current one); False (and nothing written) if one
        exists there: the first writer wins."""
        if slot is None:
            slot = self.read_outcome(request_id).slot
        return self._create(check_request_id(request_id), slotted(RESPONSE_FILE, slot), record)

    def create_refusal(self, request_id: str, slot: int, record: Record) -> bool:
        """Record that the waiting task refused the answer in `slot`, which reopens the event in the
        next slot; False if that answer was refused already (by another attempt of the task)."""
        return self._create(check_request_id(request_id), slotted(REFUSED_FILE, slot), record)

    def read_waiter(self, request_id: str) -> Record | None:
        """Where a process waiting on `request_id` takes wake-ups (see `_wake`), or None."""
        return self._read(check_request_id(request_id), WAITER_FILE)

    def put_waiter(self, request_id: str, record: Record) -> None:
        """Record where this process takes wake-ups for `request_id`, replacing any earlier record.

        One attempt, never retried: a wait must not be held up by it (without it, the wait polls).
        """
        key = f"{check_request_id(request_id)}/{WAITER_FILE}"
        data = json.dumps(record, separators=(",", ":")).encode()
        try:
            self._backend.put(key, data)
        except _storage_errors()[0] as e:
            raise StorageError(
                f"cannot write {key} under {self.root!r}: {_brief(e)}", self.root, transient=_is_transient(e)
            ) from e

    def list_answered(self) -> set[str] | None:
        """Ids with a stored outcome, from one listing of the root (object stores); None where a
        read of each response costs less (local roots)."""
        return self._retry("list answers", lambda: self._backend.list_answered())

    def check_root(self) -> None:
        """Make sure a local root exists and is safe to use (`UnsafeRootError` if not), as the first
        read or write would; on object stores nothing is sent (a server starting during an outage
        should start, and answer 503 until the store is back)."""
        if self.is_local:
            self._retry("open the root", lambda: self._backend.prepare())

    def list_events(self) -> list[Listed]:
        """Every event under the root, newest first, from one listing of the root.

        Example:
            >>> [e.request_id for e in Store("/tmp/flyte/hitl").list_events() if not e.answered]  # doctest: +SKIP
            ['approve-5d1042…', 'count-3f2a…']
        """
        events = self._retry("list", lambda: self._backend.list_events())
        events = [e for e in events if REQUEST_ID_RE.fullmatch(e.request_id)]
        events.sort(key=lambda e: (e.created, e.request_id), reverse=True)
        return events

    @property
    def _backend(self) -> _Backend:
        # Built on first use, so that constructing a Store never fails and a misconfigured
        # object store surfaces as a StorageError from the first read or write.
        with self._backend_lock:
            if self._backend_instance is None:
                try:
                    self._backend_instance = _make_backend(self)
                except HitlError:
                    raise
                except Exception as e:
                    raise StorageError(f"cannot open storage root {self.root!r}: {_brief(e)}", self.root) from e
            return self._backend_instance

    def _read(self, request_id: str, name: str) -> Record | None:
        key = f"{request_id}/{name}"
        data = self._retry(f"read {key}", lambda: self._backend.read(key))
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError as e:
            raise StorageError(f"{self.root}/{key} is not valid JSON: {e}", self.root) from e
        if not isinstance(record, dict):
            raise StorageError(f"{self.root}/{key} holds {type(record).__name__}, not a JSON object", self.root)
        return record

    def _create(self, request_id: str, name: str, record: Record) -> bool:
        key = f"{request_id}/{name}"
        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._retry(f"write {key}", lambda: self._backend.create(key, data))

    def _retry(self, what: str, op: Callable[[], Any]) -> Any:
        delay = self.backoff_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                result = op()
            except StorageError:
                raise
            except Exception as e:
                if not isinstance(e, _storage_errors()[0]):
                    raise
                from . import _telemetry  # OpenTelemetry's API: imported at the first failure

                _telemetry.storage_error(what.split(" ", 1)[0])  # read, create, list, put: each failed request
                if not _is_transient(e):
                    raise StorageError(f"cannot {what} under {self.root!r}: {_brief(e)}", self.root) from e
                if attempt >= self.attempts:
                    raise StorageError(
                        f"cannot {what} under {self.root!r} after {attempt} attempts: {_brief(e)}",
                        self.root,
                        transient=True,
                    ) from e
                now = time.monotonic()
                # Once per outage, and at most once a minute when failures and successes interleave.
                if not self._failing and now - self._warned_at >= 60:
                    self._warned_at = now
                    logger.warning("storage error under %r (%s), retrying: %s", self.root, what, _brief(e))
                self._failing = True
                self._sleep(min(delay, self.max_backoff_seconds))
                delay *= 2
                continue
            if self._failing:
                self._failing = False
                logger.info("storage under %r answers again", self.root)
            return result

    def create_vote(self, request_id: str, key: str, record: Record) -> bool:
        """Store one person's vote under ``<request_id>/votes/<key>.json`` (`key`: a hex digest of their
        identity); False (and nothing written) if they voted already: one vote each, on every replica."""
        if not _VOTE_KEY_RE.fullmatch(key):
            raise ValueError(f"a vote key is a hex digest, got {key!r}")
        return self._create(check_request_id(request_id), f"{VOTES_DIR}/{key}.json", record)

    def read_vote(self, request_id: str, key: str) -> Record | None:
        """The vote stored under `key` (see `create_vote`), or None if that person has not voted."""
        if not _VOTE_KEY_RE.fullmatch(key):
            raise ValueError(f"a vote key is a hex digest, got {key!r}")
        return self._read(check_request_id(request_id), f"{VOTES_DIR}/{key}.json")

    def list_votes(self, request_id: str) -> list[Record]:
        """Every vote stored for `request_id`: one listing of its votes, then one read per vote."""
        return list(self.read_votes(request_id).values())

    def read_votes(self, request_id: str, known: Mapping[str, Record] | None = None) -> dict[str, Record]:
        """Every vote stored for `request_id` by record name: one listing of its votes, then one read per
        vote not in `known` (a vote never changes once written)."""
        check_request_id(request_id)
        names = self._retry(f"list {request_id}/{VOTES_DIR}", lambda: self._backend.vote_names(request_id))
        votes = {}
        for name in names:
            record = (known or {}).get(name) or self._read(request_id, f"{VOTES_DIR}/{name}")
            if record is not None:
                votes[name] = record
        return votes

    def read_listed(self, event: Listed) -> Outcome:
        """The state of `event` in the slot its listing found, taking the listing's word for whether
        that slot has an outcome: one read for the outcome, or one for the refusal that opened a later
        slot still waiting, and none for a first slot still waiting."""
        request_id = check_request_id(event.request_id)
        if event.answered:
            return Outcome(self._read(request_id, slotted(RESPONSE_FILE, event.slot)), event.slot, None)
        refusal = self._read(request_id, slotted(REFUSED_FILE, event.slot - 1)) if event.slot else None
        return Outcome(None, event.slot, refusal)


class _PermanentError(Exception):
    """A storage failure that retrying cannot fix (raised by backends, e.g. for a missing bucket)."""


@functools.cache
def _storage_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    # (errors that come from storage, the subset worth retrying). OSError covers local I/O,
    # timeouts and refused connections; obstore reports 5xx and connection failures as
    # GenericError, while its other errors (denied, unauthenticated, bad path or config) are final.
    # FileNotFoundError/FileExistsError from a read or create never reach here: backends turn
    # them into None/False. Built on the first error, not at import: obstore's native module
    # takes a few milliseconds to load and a local root never needs it.
    storage: list[type[BaseException]] = [OSError, _PermanentError]
    transient: list[type[BaseException]] = [OSError]
    try:
        obstore = _flyte.obstore_errors()
        storage.append(obstore.base)
        transient.append(obstore.transient)
    except ImportError:  # pragma: no cover - obstore comes with flyte
        pass
    return tuple(storage), tuple(transient)


# Local errors that no retry can fix: a root (or a directory above it) that is a file or a symbolic
# link loop, a path that is too long, no permission, a read-only filesystem, a name that exists where
# it should not, an argument the filesystem refuses. They fail at once instead of after ~15 s of
# back-off. Every other OSError stays transient: out of space or quota (someone may free it), I/O
# errors and stale handles (network filesystems), too many open files, EAGAIN/EINTR, and the errors of
# object stores (timeouts and refused connections; their OSErrors carry no errno or a network one).
_PERMANENT_ERRNOS = frozenset(
    {
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EEXIST,
        errno.EINVAL,
    }
)


# What a question record must hold, as strings, for every reader (pages, status, waits, the CLI).
_REQUEST_FIELDS = ("request_id", "event_name", "prompt", "data_type", "token", "expires_at")


def _is_timestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, PermissionError) or getattr(error, "errno", None) in _PERMANENT_ERRNOS:
        return False
    return isinstance(error, _storage_errors()[1])


def _brief(error: BaseException) -> str:
    """The first line of an error, shortened: obstore messages carry a multi-line debug dump."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _make_backend(store: Store) -> _Backend:
    # The root passed parse_root: a local path, file:///PATH, or an object-store URL with a bucket.
    protocol, separator, rest = store.root.partition("://")
    if not separator:
        return _LocalBackend(store.root)
    if protocol == "file":
        return _LocalBackend(rest)
    return _ObjectBackend(store.root, store.request_timeout_seconds, store.connect_timeout_seconds)


def _check_local_root(root: str) -> None:
    """Raise `UnsafeRootError` unless only this user (and the superuser) can change `root`.

    The root itself must be owned by this user and not writable by others; every directory above
    it (and every symbolic link on the way) must be owned by this user or the superuser and, if
    others can write to it, carry the sticky bit (as /tmp does), so that nobody else can rename,
    replace or fill it.
    """
    uid = os.geteuid()
    real = os.path.realpath(root)
    paths = dict.fromkeys([*_lineage(root), *_lineage(real)])
    for path in paths:
        info = os.lstat(path)
        is_root = path in (root, real)
        owners = (uid,) if is_root else (uid, 0)
        if info.st_uid not in owners:
            whose = "the root" if is_root else "a directory above the root"
            raise UnsafeRootError(
                f"refusing storage root {root!r}: {path!r} ({whose}) belongs to uid {info.st_uid}, not to this "
                f"user (uid {uid}), who could not trust the answers in it; use a directory of your own "
                f"({ROOT_ENV})",
                root,
            )
        writable_by_others = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH
        if writable_by_others and (is_root or not info.st_mode & stat.S_ISVTX):
            raise UnsafeRootError(
                f"refusing storage root {root!r}: {path!r} is writable by every user (mode "
                f"{stat.S_IMODE(info.st_mode):04o}), so anyone could plant answers in it; "
                f"run chmod o-w on it or use another directory ({ROOT_ENV})",
                root,
            )


def _lineage(path: str) -> list[str]:
    """`path` and each directory above it, from / down."""
    parts = []
    while True:
        parts.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return parts[::-1]
        path = parent


class _LocalBackend:
    # Plain os calls rather than file objects: a buffered file adds fstat, isatty and lseek calls,
    # and each system call lets another server thread take the GIL. A read is open, read, close.

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        #: Whether each record is synced to disk before it is published (``FLYTE_HITL_FSYNC``).
        self.fsync = fsync_wanted()
        #: Whether the root exists and passed `_check_local_root`.
        self._ready = False

    def prepare(self) -> None:
        """Create the root (mode 0700) if it is missing, then check that it is safe to trust.

        Done before the first write, and before the first read of a root that exists: a root someone
        else made first (or changed) could hold planted answers. Checked after creating, so a root created by
        someone else in between is checked too.
        """
        if self._ready:
            return
        for path in _lineage(self.root):
            if os.path.isdir(path):
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700 if path == self.root else 0o755)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.root)
        _check_local_root(self.root)
        self._ready = True

    def _readable(self) -> bool:
        """Whether there is a root to read. A read does not create a missing root: there is nothing
        in it yet, and a mistyped ``--root`` should leave no directory behind. An existing root is
        checked as for a write."""
        if not self._ready:
            try:
                os.stat(self.root)
            except FileNotFoundError:
                return False
            self.prepare()
        return True

    def _make_event_dir(self, directory: str) -> None:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:  # the root went away (a /tmp cleaner): make it, and check it, again
            self._ready = False
            self.prepare()
            os.mkdir(directory, 0o700)

    def read(self, key: str) -> bytes | None:
        if not self._readable():
            return None
        try:
            fd = os.open(os.path.join(self.root, key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            # A short read of a regular file means its end: a record (well under 64 KiB) takes one read.
            chunks = [os.read(fd, 1 << 16)]
            while len(chunks[-1]) == 1 << 16:
                chunks.append(os.read(fd, 1 << 16))
            return b"".join(chunks)
        finally:
            os.close(fd)

    def create(self, key: str, data: bytes) -> bool:
        # No check for an existing record first: link() refuses it anyway, and a second answer is rare.
        self.prepare()
        path = os.path.join(self.root, key)
        try:
            # link() refuses an existing name: an atomic create-only publish of a complete file.
            self._via_temp(path, data, os.link)
            return True
        except FileExistsError:
            return False

    def put(self, key: str, data: bytes) -> None:
        # A temp file renamed over the old one: readers see the old record or the new one, never half.
        self.prepare()
        self._via_temp(os.path.join(self.root, key), data, os.replace)

    def _via_temp(self, path: str, data: bytes, publish: Callable[[str, str], None]) -> None:
        """Write `data` to a new temporary file beside `path` (making the event's directory if need
        be), then `publish(temp, path)`. The temporary name never outlives the call."""
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            self._make_event_dir(os.path.dirname(path))
            fd = os.open(tmp, flags, 0o600)
        try:
            try:
                self._write(fd, data)
            finally:
                os.close(fd)
            publish(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):  # os.replace has moved it
                os.unlink(tmp)

    def _write(self, fd: int, data: bytes) -> None:
        """Write all of `data` to `fd`, and sync it to disk when asked, so a published file is never
        empty after a power loss."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def list_answered(self) -> set[str] | None:
        return None  # a local read costs nothing worth saving

    def vote_names(self, request_id: str) -> list[str]:
        try:
            return _vote_records(os.listdir(os.path.join(self.root, request_id, VOTES_DIR)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list_events(self) -> list[Listed]:
        if not self._readable():
            return []
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if e.is_dir()]
        except FileNotFoundError:  # the root went away (a /tmp cleaner): nothing in it, checked again when back
            self._ready = False
            return []
        events = []
        for name in names:
            directory = os.path.join(self.root, name)
            try:
                created = os.stat(os.path.join(directory, REQUEST_FILE)).st_mtime
            except (FileNotFoundError, NotADirectoryError):
                continue  # being created, or not an event
            events.append(Listed(name, created, *_answered_in(directory)))
        return events


def _answered_in(directory: str) -> tuple[bool, int]:
    """Whether the event in `directory` has an outcome in its current slot, and that slot (see `slotted`)."""
    slot = 0
    while os.path.exists(os.path.join(directory, slotted(RESPONSE_FILE, slot))):
        if slot >= MAX_REFUSALS or not os.path.exists(os.path.join(directory, slotted(REFUSED_FILE, slot))):
            return True, slot
        slot += 1
    return False, slot


def _is_slot_of(name: str, base: str) -> bool:
    """Whether the file `name` is `base` of some slot (``response.json``, ``response.3.json``)."""
    stem, _, extension = base.rpartition(".")
    if name == base:
        return True
    middle = name.removeprefix(stem + ".").removesuffix("." + extension)
    return name.startswith(stem + ".") and name.endswith("." + extension) and middle.isdigit()


class _ObjectBackend:
    """S3, GCS and Azure through an obstore store configured by ``flyte.storage`` (Flyte's credentials
    and endpoints, e.g. ``FLYTE_AWS_ENDPOINT``), with our own timeouts and no retries inside obstore:
    `Store` retries, so that one poll is one request and an outage is logged once."""

    def __init__(self, root: str, timeout: float, connect_timeout: float) -> None:
        bucket, _, prefix = root.split("://", 1)[1].partition("/")
        self._store = _flyte.object_store(root, bucket, timeout=timeout, connect_timeout=connect_timeout)
        self._root = root
        self._prefix = f"{prefix}/" if prefix else ""

    def prepare(self) -> None:
        pass  # the first request tells whether the bucket can be reached

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self._store.get(self._prefix + key).bytes())
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        path = self._prefix + key
        try:
            # One PUT with If-None-Match: * (S3, Azure) or if-generation-match: 0 (GCS): the
            # service itself refuses the second writer, so this holds across processes and hosts.
            self._store.put(path, data, mode="create")
            return True
        except FileExistsError:
            pass
        except _flyte.obstore_errors().exists:
            pass
        except FileNotFoundError as e:
            raise _PermanentError(f"{self._root!r} cannot be written (does the bucket exist?): {_brief(e)}") from e
        # S3 also answers 409 while a concurrent conditional write to the key is still in flight,
        # which obstore reports the same way. Only report "exists" once the object is there;
        # otherwise the other write failed and this one is retried.
        try:
            self._store.head(path)
        except FileNotFoundError:
            raise OSError(f"conditional write conflict on {path}; retrying") from None
        return False

    def put(self, key: str, data: bytes) -> None:
        self._store.put(self._prefix + key, data)

    def vote_names(self, request_id: str) -> list[str]:
        prefix = f"{self._prefix}{request_id}/{VOTES_DIR}/"
        return _vote_records(
            [m["path"][len(prefix) :] for batch in self._store.list(prefix, chunk_size=1000) for m in batch]
        )

    def list_answered(self) -> set[str] | None:
        # One request per 1,000 objects under the root.
        return {i for i, (_, (answered, _)) in self._list().items() if answered}

    def list_events(self) -> list[Listed]:
        return [Listed(i, created, *state) for i, (created, state) in self._list().items() if created is not None]

    def _list(self) -> dict[str, tuple[float | None, tuple[bool, int]]]:
        """Each event id under the root: when its request was written, whether its current slot has an
        outcome (more answers than refusals), and that slot (the refusals)."""
        created: dict[str, float] = {}
        answers: dict[str, int] = {}
        refusals: dict[str, int] = {}
        for batch in self._store.list(self._prefix or None, chunk_size=1000):
            for meta in batch:
                request_id, _, name = meta["path"][len(self._prefix) :].partition("/")
                if name == REQUEST_FILE:
                    created[request_id] = meta["last_modified"].timestamp()
                elif _is_slot_of(name, RESPONSE_FILE):
                    answers[request_id] = answers.get(request_id, 0) + 1
                elif _is_slot_of(name, REFUSED_FILE):
                    refusals[request_id] = refusals.get(request_id, 0) + 1
        ids = created.keys() | answers.keys()
        return {i: (created.get(i), (answers.get(i, 0) > refusals.get(i, 0), refusals.get(i, 0))) for i in ids}


#: The directory of an event's votes (approvals with a quorum), one create-only record per person.
VOTES_DIR = "votes"
_VOTE_KEY_RE = re.compile(r"[0-9a-f]{64}")


def _vote_records(names: list[str]) -> list[str]:
    """The names of vote records among `names`, sorted."""
    return sorted(n for n in names if n.endswith(".json") and _VOTE_KEY_RE.fullmatch(n[:-5]))


# -- where an event's Slack messages are (see `_slack`) ------------------------------------------------

SLACK_FILE = "slack.json"


def read_slack(store: Store, request_id: str) -> Record | None:
    """Where the Slack messages of `request_id` were posted (``{"messages": [{"channel", "ts"}, ...]}``), or None."""
    return store._read(check_request_id(request_id), SLACK_FILE)


def put_slack(store: Store, request_id: str, record: Record) -> None:
    """Record where the Slack messages of `request_id` were posted, so that any server can update them."""
    key = f"{check_request_id(request_id)}/{SLACK_FILE}"
    data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    store._retry(f"write {key}", lambda: store._backend.put(key, data))
