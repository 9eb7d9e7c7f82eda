"""The storage root: paths from validated ids, reads, create-only writes, listing.

Layout: ``<root>/<request_id>/request.json`` (the question, written once when the event is
created) and ``<root>/<request_id>/response.json`` (the outcome, written once: an answer, or
an expiry mark). Both are created with a create-only write, so the first writer wins and no
reader ever sees a half-written file:

- local paths: write a temp file, then ``os.link`` it into place (fails if the name exists);
- s3/gs/abfs: a single put with ``mode="create"`` (If-None-Match: *) through obstore, built by
  ``flyte.storage`` so Flyte's configured credentials and endpoints apply;
- other fsspec protocols: exists-then-write, atomic only within one process (documented).

Clients never choose a path: every path is computed here from a request id that matched
`REQUEST_ID_RE`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import InvalidRequestIdError, StorageError

logger = logging.getLogger("flyteplugins.hitl.store")

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
REQUEST_FILE = "request.json"
RESPONSE_FILE = "response.json"
DEFAULT_LOCAL_ROOT = "/tmp/flyte/hitl"
ROOT_ENV = "FLYTE_HITL_ROOT"

Record = dict[str, Any]


def check_request_id(request_id: object) -> str:
    """Return `request_id` if it is a well-formed id, else raise `InvalidRequestIdError`."""
    if isinstance(request_id, str) and REQUEST_ID_RE.fullmatch(request_id):
        return request_id
    raise InvalidRequestIdError(request_id)


def default_root() -> str:
    """The root named by ``FLYTE_HITL_ROOT``, or the local default under Flyte's local data directory."""
    return os.environ.get(ROOT_ENV) or DEFAULT_LOCAL_ROOT


class _Backend(Protocol):
    def read(self, key: str) -> bytes | None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def list_ids(self) -> list[str]: ...


class Store:
    """Reads and writes event records under one root (a local path or an fsspec URL).

    Example:
        >>> store = Store("/tmp/flyte/hitl")
        >>> store.read_response("0123abcd") is None
        True
    """

    #: Attempts for a read or write that fails with a transient error before giving up.
    attempts = 5
    #: First back-off delay in seconds; doubled after each failed attempt.
    backoff_seconds = 0.2

    def __init__(self, root: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.root = root.rstrip("/") or "/"
        self._backend = _make_backend(self.root)
        self._sleep = sleep
        self._warned = False

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def read_request(self, request_id: str) -> Record | None:
        """The stored question for `request_id`, or None if there is none."""
        return self._read(check_request_id(request_id), REQUEST_FILE)

    def read_response(self, request_id: str) -> Record | None:
        """The stored outcome (answer or expiry) for `request_id`, or None while it is pending."""
        return self._read(check_request_id(request_id), RESPONSE_FILE)

    def create_request(self, record: Record) -> bool:
        """Store a new question; False (and nothing written) if one exists under this id."""
        return self._create(check_request_id(record["request_id"]), REQUEST_FILE, record)

    def create_response(self, request_id: str, record: Record) -> bool:
        """Store the outcome; False (and nothing written) if one exists: the first writer wins."""
        return self._create(check_request_id(request_id), RESPONSE_FILE, record)

    def list_ids(self) -> list[str]:
        """Request ids of every event under the root (unordered)."""
        ids = self._retry("list", self._backend.list_ids)
        return [i for i in ids if REQUEST_ID_RE.fullmatch(i)]

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
        for attempt in range(1, self.attempts + 1):
            try:
                return op()
            except _TRANSIENT as e:
                if attempt == self.attempts:
                    raise StorageError(
                        f"cannot {what} under {self.root!r} after {attempt} attempts: {e}", self.root
                    ) from e
                if not self._warned:
                    self._warned = True
                    logger.warning("storage error under %r (%s), retrying: %s", self.root, what, e)
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _transient_errors() -> tuple[type[BaseException], ...]:
    # OSError covers local I/O and timeouts; obstore's own errors cover 5xx and connection failures.
    # FileNotFoundError/FileExistsError never reach here: backends turn them into None/False.
    errors: list[type[BaseException]] = [OSError]
    try:
        from obstore.exceptions import BaseError as ObstoreError

        errors.append(ObstoreError)
    except ImportError:  # pragma: no cover - obstore comes with flyte
        pass
    return tuple(errors)


_TRANSIENT = _transient_errors()


def _make_backend(root: str) -> _Backend:
    protocol, _, rest = root.partition("://")
    if not rest:
        return _LocalBackend(root)
    if protocol == "file":
        return _LocalBackend(rest)
    if protocol in ("s3", "gs", "abfs", "abfss"):
        return _ObjectBackend(root, protocol)
    return _FsspecBackend(root)


class _LocalBackend:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def read(self, key: str) -> bytes | None:
        try:
            with open(os.path.join(self.root, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        path = os.path.join(self.root, key)
        if os.path.exists(path):
            return False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link() refuses an existing name: an atomic create-only publish of a complete file.
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def list_ids(self) -> list[str]:
        try:
            with os.scandir(self.root) as entries:
                return [e.name for e in entries if e.is_dir()]
        except FileNotFoundError:
            return []


class _ObjectBackend:
    def __init__(self, root: str, protocol: str) -> None:
        import flyte.storage

        fs: Any = flyte.storage.get_underlying_filesystem(path=root)
        bucket, _, prefix = root.split("://", 1)[1].partition("/")
        self._store = fs._construct_store(bucket)
        self._prefix = f"{prefix}/" if prefix else ""

    def read(self, key: str) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get(self._store, self._prefix + key).bytes())
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        import obstore

        try:
            obstore.put(self._store, self._prefix + key, data, mode="create")
            return True
        except FileExistsError:
            return False

    def list_ids(self) -> list[str]:
        import obstore

        listing = obstore.list_with_delimiter(self._store, self._prefix or None)
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]]


class _FsspecBackend:
    # Generic fsspec protocols have no portable create-only write; a lock makes first-writer-wins
    # hold within this process, and the README says it is not atomic across processes.
    _lock = threading.Lock()

    def __init__(self, root: str) -> None:
        import fsspec

        self._fs, self._root = fsspec.core.url_to_fs(root, use_listings_cache=False)

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self._fs.cat_file(f"{self._root}/{key}"))
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        path = f"{self._root}/{key}"
        with self._lock:
            if self._fs.exists(path):
                return False
            self._fs.pipe_file(path, data)
            return True

    def list_ids(self) -> list[str]:
        try:
            entries = self._fs.ls(self._root, detail=True)
        except FileNotFoundError:
            return []
        return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
