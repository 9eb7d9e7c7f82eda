"""The storage root (`_store`): create-only writes, atomic publishing, id validation, listing, retries."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import question, read_line, run_python, until

from flyteplugins.hitl import InvalidRequestIdError, StorageError
from flyteplugins.hitl._errors import ConfigurationError, UnsafeRootError
from flyteplugins.hitl._store import (
    FSYNC_ENV,
    ROOT_ENV,
    Store,
    _is_transient,
    _storage_errors,
    check_request_id,
    default_root,
)

BAD_IDS: list[object] = [
    "../x",
    "..",
    ".",
    "a/b",
    "/abs",
    "a\\b",
    "",
    " ",
    "a b",
    "a.b",
    "%2e%2e",
    "a\x00b",
    "a\nb",
    "ü",
    "événement",
    "a" * 129,
    None,
    42,
    b"abc",
]


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def local_store(store: Store) -> Store:
    """The local backend."""
    return store


@pytest.fixture
def any_store(store: Store) -> Store:
    """The local backend (object stores: test_s3/gcs/azure.py)."""
    return store


# -- create-only ----------------------------------------------------------------------------------


def test_read_missing_records_is_none(any_store: Store) -> None:
    assert any_store.read_request("nothing-here") is None
    assert any_store.read_response("nothing-here") is None


def test_second_create_returns_false_and_keeps_the_first_content(any_store: Store) -> None:
    assert any_store.create_request(question("ev-1", prompt="first")) is True
    assert any_store.create_request(question("ev-1", prompt="second")) is False
    assert any_store.read_request("ev-1") == question("ev-1", prompt="first")

    assert any_store.create_response("ev-1", {"status": "completed", "value": 1}) is True
    assert any_store.create_response("ev-1", {"status": "completed", "value": 2}) is False
    assert any_store.create_response("ev-1", {"status": "expired"}) is False
    assert any_store.read_response("ev-1") == {"status": "completed", "value": 1}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_writes_leave_no_file_open_and_no_temp_file(any_store: Store, root: Path) -> None:
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    any_store.create_request(question("warm-up"))
    before = open_files()
    for i in range(100):
        assert any_store.create_request(question(f"ev-{i}")) is True
        assert any_store.create_request(question(f"ev-{i}")) is False  # refused: the name exists
        any_store.put_waiter(f"ev-{i}", {"host": "127.0.0.1", "port": 9})
    assert open_files() == before
    assert not [p for p in _tree(root) if p.endswith(".tmp")]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"expires_at": None}, "expires_at"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"token": 42}, "token"),
        ({"prompt": None, "data_type": ["int"]}, "prompt, data_type"),
    ],
)
def test_a_question_without_the_fields_readers_rely_on_is_a_storage_error(
    local_store: Store, root: Path, change: dict[str, object], named: str
) -> None:
    # A record edited by hand, or not written by this package: one clear error, not a KeyError later.
    record = {k: v for k, v in {**question("odd"), **change}.items() if v is not None}
    (root / "odd").mkdir(parents=True)
    (root / "odd" / "request.json").write_text(json.dumps(record))
    message = f"odd/request.json is not an event's question: {named} missing or not valid"
    with pytest.raises(StorageError, match=message):
        local_store.read_request("odd")


def test_records_keep_unicode_and_markup_exactly(any_store: Store) -> None:
    record = question("ev-u", prompt='Größe? <b>"quoted"</b> \u2603 \n second line')
    assert any_store.create_request(record)
    assert any_store.read_request("ev-u") == record


@pytest.mark.parametrize("size", [(1 << 16) - 40, 1 << 16, 3 * (1 << 16) + 5])
def test_records_of_any_size_read_back_whole(any_store: Store, size: int) -> None:
    # Sizes around the local backend's 64 KiB read, including an exact multiple of it.
    record = {"value": ""}
    record["value"] = "x" * (size - len(json.dumps(record, separators=(",", ":"))))
    assert any_store.create_response("big", record)
    assert any_store.read_response("big") == record


def test_local_layout_is_root_id_request_and_response(store: Store, root: Path) -> None:
    store.create_request(question("ev-2"))
    store.create_response("ev-2", {"status": "completed", "value": 5})
    assert _tree(root) == ["ev-2", "ev-2/request.json", "ev-2/response.json"]
    assert json.loads((root / "ev-2" / "response.json").read_text()) == {"status": "completed", "value": 5}


def _race(store: Store, request_id: str, n: int) -> dict[int, bool]:
    """`n` threads released together each try to store their own answer; returns who got True."""
    barrier = threading.Barrier(n)
    results: dict[int, bool] = {}

    def answer(i: int) -> None:
        barrier.wait()
        results[i] = store.create_response(request_id, {"status": "completed", "value": i})

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_32_threads_racing_create_response_exactly_one_wins(any_store: Store) -> None:
    for r in range(16):
        request_id = f"race-{r}"
        results = _race(any_store, request_id, 32)
        winners = [i for i, won in results.items() if won]
        assert len(results) == 32
        assert len(winners) == 1, f"round {r}: winners {winners}"
        assert any_store.read_response(request_id) == {"status": "completed", "value": winners[0]}


def test_no_reader_ever_sees_a_half_written_file(local_store: Store, root: Path) -> None:
    store = local_store
    # Large records make a torn write likely to be seen if publishing were not atomic.
    ids = [f"big-{i}" for i in range(120)]
    payload = {i: "x" * (200_000 + n) for n, i in enumerate(ids)}
    stop = threading.Event()
    seen: dict[str, int] = {"raw": 0, "store": 0}
    problems: list[str] = []

    def raw_reader() -> None:
        while not stop.is_set():
            for rid in ids:
                path = root / rid / "response.json"
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    record = json.loads(data)
                except ValueError:
                    problems.append(f"{rid}: {len(data)} bytes of invalid JSON")
                    continue
                if record["value"] != payload[rid]:
                    problems.append(f"{rid}: wrong content")
                seen["raw"] += 1

    def store_reader() -> None:
        while not stop.is_set():
            for rid in ids:
                try:
                    record = store.read_response(rid)
                except StorageError as e:
                    problems.append(str(e)[:200])
                    continue
                if record is not None:
                    assert record["value"] == payload[rid]
                    seen["store"] += 1

    readers = [threading.Thread(target=raw_reader), threading.Thread(target=store_reader)]
    for t in readers:
        t.start()
    try:
        for n, rid in enumerate(ids):
            assert store.create_response(rid, {"status": "completed", "value": payload[rid]})
            if n == 0:  # both readers are running before the rest are written
                until(lambda: seen["raw"] > 0 and seen["store"] > 0, "both readers see the first record")
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert problems == []
    leftovers = [p for p in _tree(root) if not p.endswith("response.json") and "/" in p]
    assert leftovers == [], "no temp files are left behind"


def test_writers_killed_mid_write_leave_whole_records_only(root: Path) -> None:
    """Writers killed with SIGKILL while writing 1 MB records leave whole records only: a temp file
    cut off mid-write may stay beside them, under a name no reader or listing takes for a record."""
    code = """
import os, sys
from flyteplugins.hitl._store import Store
store = Store(os.environ["KILL_ROOT"])
print("ready", flush=True)
i = 0
while True:
    store.create_response(f"{os.getpid()}-{i}", {"status": "completed", "value": "x" * 1_000_000})
    i += 1
"""
    for delay in (0.003, 0.011, 0.023, 0.037):
        proc = run_python(code, env={"KILL_ROOT": str(root)})
        assert read_line(proc).strip() == "ready"
        deadline = time.monotonic() + 30
        while not list(root.glob(f"{proc.pid}-2/response.json")) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(delay)  # somewhere inside a later record's write
        proc.kill()
        proc.communicate()
    names = _tree(root)
    strays = [n for n in names if "/" in n and not n.endswith("/response.json")]
    assert all(n.endswith(".tmp") for n in strays), strays
    store = Store(str(root))
    assert all(e.answered for e in store.list_events() if (root / e.request_id / "request.json").exists())
    records = list(root.glob("*/response.json"))
    assert len(records) >= 12
    for path in records:
        assert store.read_response(path.parent.name) == {"status": "completed", "value": "x" * 1_000_000}


def test_create_only_holds_across_processes(root: Path, tmp_path: Path) -> None:
    """Four processes race to answer the same 40 events: each event gets exactly one answer."""
    code = """
import json, os, sys
from flyteplugins.hitl._store import Store
store = Store(os.environ["RACE_ROOT"])
print("ready", flush=True)
while not os.path.exists(os.environ["RACE_GO"]):
    pass
won = [rid for rid in (f"p-{i}" for i in range(40))
       if store.create_response(rid, {"status": "completed", "value": os.environ["RACE_NAME"]})]
print(json.dumps(won))
"""
    go = tmp_path / "go"
    env = {"RACE_ROOT": str(root), "RACE_GO": str(go)}
    procs = [run_python(code, env={**env, "RACE_NAME": f"proc{n}"}) for n in range(4)]
    outputs: dict[str, str] = {}
    try:
        for proc in procs:
            assert read_line(proc).strip() == "ready"
        go.touch()  # all four have imported the package and now spin until this file appears
        for n, proc in enumerate(procs):
            outputs[f"proc{n}"], _ = proc.communicate(timeout=60)
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert all(proc.returncode == 0 for proc in procs), outputs
    won = {name: json.loads(out.strip().splitlines()[-1]) for name, out in outputs.items()}
    store = Store(str(root))
    for i in range(40):
        rid = f"p-{i}"
        owners = [name for name, ids in won.items() if rid in ids]
        assert len(owners) == 1, f"{rid} won by {owners}"
        assert store.read_response(rid) == {"status": "completed", "value": owners[0]}


# -- request ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda v: repr(v)[:20])
def test_bad_request_ids_raise_and_write_nothing(store: Store, root: Path, tmp_path: Path, bad: object) -> None:
    root.mkdir()
    before = _tree(tmp_path)
    for call in (
        lambda: store.read_request(bad),  # type: ignore[arg-type]
        lambda: store.read_response(bad),  # type: ignore[arg-type]
        lambda: store.create_request(question(bad)),  # type: ignore[arg-type]
        lambda: store.create_response(bad, {"status": "completed", "value": 1}),  # type: ignore[arg-type]
        lambda: check_request_id(bad),
    ):
        with pytest.raises(InvalidRequestIdError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert "invalid request_id" in str(info.value)
    assert _tree(tmp_path) == before, "nothing was written anywhere"


@pytest.mark.parametrize("good", ["a", "A-z_0", "a" * 128, "integer_input_event-0645bbc83ccd124a64f7debe"])
def test_well_formed_ids_are_accepted(store: Store, good: str) -> None:
    assert check_request_id(good) == good
    assert store.create_request(question(good))
    assert store.read_request(good) == question(good)


def test_long_bad_ids_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidRequestIdError) as info:
        check_request_id("/" * 10_000)
    assert len(str(info.value)) < 300


# -- listing --------------------------------------------------------------------------------------


def test_listing_of_a_missing_root_is_empty(any_store: Store) -> None:
    assert [e.request_id for e in any_store.list_events()] == []


def test_listing_returns_every_event(any_store: Store) -> None:
    ids = {f"ev-{i}" for i in range(7)}
    for rid in ids:
        any_store.create_request(question(rid))
    any_store.create_response("ev-3", {"status": "completed", "value": 1})
    assert sorted([e.request_id for e in any_store.list_events()]) == sorted(ids)


def test_listing_skips_stray_entries(store: Store, root: Path) -> None:
    store.create_request(question("real-one"))
    (root / "not.an.id").mkdir()
    (root / "stray-file").write_text("x")
    assert [e.request_id for e in store.list_events()] == ["real-one"]


# -- damaged records and storage failures -----------------------------------------------------------


def test_a_record_that_is_not_json_is_a_storage_error_naming_the_file(store: Store, root: Path) -> None:
    (root / "torn").mkdir(parents=True)
    (root / "torn" / "response.json").write_text('{"status": "compl')
    with pytest.raises(StorageError) as info:
        store.read_response("torn")
    assert "torn/response.json" in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_a_record_that_is_not_an_object_is_a_storage_error(store: Store, root: Path) -> None:
    (root / "list").mkdir(parents=True)
    (root / "list" / "request.json").write_text("[1, 2]")
    with pytest.raises(StorageError, match="not a JSON object"):
        store.read_request("list")


def _break_root(root: Path, how: str) -> Path:
    """A local root that no retry can fix; returns the path to give `Store`."""
    root.parent.mkdir(parents=True, exist_ok=True)
    if how == "a regular file":
        root.write_text("I am a file, not a directory")
        return root
    if how == "under a regular file":
        root.write_text("I am a file, not a directory")
        return root / "sub"
    if how == "in a symlink loop":
        root.symlink_to(root)
        return root / "sub"
    assert how == "a name too long"
    return root / ("x" * 300)


@pytest.mark.parametrize("how", ["a regular file", "under a regular file", "in a symlink loop", "a name too long"])
def test_a_root_no_retry_can_fix_fails_at_once_with_a_storage_error_naming_the_root(
    root: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken_root = _break_root(root, how)
    sleeps: list[float] = []
    broken = Store(str(broken_root), sleep=sleeps.append)
    caplog.set_level(logging.WARNING, logger="flyteplugins.hitl.store")
    for call in (
        lambda: broken.create_request(question("ev-1")),
        lambda: broken.create_response("ev-1", {"status": "completed", "value": 1}),
        lambda: broken.read_request("ev-1"),
        lambda: broken.read_response("ev-1"),
        broken.list_events,
        broken.check_root,
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert isinstance(info.value, OSError), "callers can catch it as an OSError too"
        assert info.value.root == str(broken_root)
        assert str(broken_root) in str(info.value)
        assert info.value.transient is False, "a wait raises it at once instead of riding it out"
        assert "attempts" not in str(info.value), f"retried: {info.value}"
        assert isinstance(info.value.__cause__, OSError)
        assert not isinstance(info.value.__cause__, StorageError)
    assert sleeps == [], "one attempt each, no back-off"
    assert not [r for r in caplog.records if r.name == "flyteplugins.hitl.store"], "no 'retrying' warning"
    if root.is_file():
        assert root.read_text() == "I am a file, not a directory", "nothing was written"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        *[(OSError(e, os.strerror(e)), False) for e in (errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EROFS)],
        *[(OSError(e, os.strerror(e)), False) for e in (errno.ENAMETOOLONG, errno.EEXIST, errno.EINVAL)],
        (PermissionError(errno.EACCES, "denied"), False),
        (PermissionError("403 from an object store, no errno"), False),
        *[(OSError(e, os.strerror(e)), True) for e in (errno.EAGAIN, errno.EINTR, errno.EIO, errno.ENOSPC)],
        *[(OSError(e, os.strerror(e)), True) for e in (errno.EDQUOT, errno.EMFILE, errno.ESTALE)],
        (TimeoutError(errno.ETIMEDOUT, "timed out"), True),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (OSError("conditional write conflict; retrying"), True),
    ],
    ids=repr,
)
def test_only_errors_a_retry_may_fix_are_transient(error: OSError, transient: bool) -> None:
    assert _is_transient(error) is transient


def test_a_transient_failure_that_heals_is_retried_and_succeeds(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Too many open files (EMFILE), for real: the soft limit is lowered to the lowest free descriptor,
    # so the write's next open fails; the first back-off raises it again.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    sleeps: list[float] = []

    def heal(seconds: float) -> None:
        sleeps.append(seconds)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    healing = Store(str(root), sleep=heal)
    healing.check_root()
    _storage_errors()  # imports obstore's exception classes now, while files can still be opened
    free = os.open(os.devnull, os.O_RDONLY)
    os.close(free)
    caplog.set_level(logging.INFO, logger="flyteplugins.hitl.store")
    resource.setrlimit(resource.RLIMIT_NOFILE, (free, hard))
    try:
        assert healing.create_request(question("ev-heal")) is True
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sleeps == [Store.backoff_seconds]
    assert healing.read_request("ev-heal") == question("ev-heal")
    lines = [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.store"]
    assert len(lines) == 2 and "retrying" in lines[0] and "answers again" in lines[1], lines


@pytest.mark.parametrize(
    ("command", "via"),
    [(["list"], "--root"), (["list"], ROOT_ENV), (["status", "ev-1"], ROOT_ENV), (["submit", "ev-1", "1"], ROOT_ENV)],
)
def test_the_cli_on_a_root_that_is_a_file_fails_promptly_with_one_line(
    tmp_path: Path, command: list[str], via: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("I am a file, not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYTE_HITL_")}
    if via == ROOT_ENV:
        env[ROOT_ENV] = str(afile)
    else:
        command = [*command, "--root", str(afile)]
    done = subprocess.run(
        [sys.executable, "-m", "flyteplugins.hitl", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hitl: cannot "), done.stderr
    assert "Not a directory" in done.stderr and str(afile) in done.stderr
    # Retried, it would print a "retrying" warning and fail "after 6 attempts" (about 15 s later).
    assert "attempts" not in done.stderr and "retrying" not in done.stderr and "Traceback" not in done.stderr
    assert afile.read_text() == "I am a file, not a directory"


def test_a_record_path_that_is_a_directory_is_a_storage_error(store: Store, root: Path) -> None:
    (root / "odd" / "response.json").mkdir(parents=True)
    odd = Store(str(root), sleep=lambda s: None)
    with pytest.raises(StorageError, match=r"odd/response\.json"):
        odd.read_response("odd")
    assert store.create_response("odd", {"status": "completed", "value": 1}, slot=0) is False


def test_file_url_roots_use_the_local_backend(root: Path) -> None:
    url_store = Store(f"file://{root}")
    assert url_store.create_request(question("via-url"))
    assert (root / "via-url" / "request.json").is_file()
    assert Store(str(root)).read_request("via-url") == question("via-url")


def test_records_are_private_to_the_owner(store: Store, root: Path) -> None:
    # request.json holds the event's token: other local users must not read it.
    store.create_request(question("private"))
    mode = os.stat(root / "private" / "request.json").st_mode & 0o777
    assert mode & 0o077 == 0, oct(mode)


def test_the_root_comes_from_the_environment_with_a_local_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, "s3://bucket/hitl")
    assert default_root() == "s3://bucket/hitl"
    monkeypatch.delenv(ROOT_ENV)
    assert default_root().startswith("/tmp/flyte/"), "the default lives under Flyte's local data directory"


# -- syncing to disk ------------------------------------------------------------------------------


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[tuple[int, bool]]:
    """Each os.fsync call as (size of the file synced, whether `path` existed then); still syncs."""
    calls: list[tuple[int, bool]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append((os.fstat(fd).st_size, path.exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("setting", ["1", "true", "YES", "on"])
def test_with_fsync_each_record_is_synced_whole_before_it_is_published(
    root: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv(FSYNC_ENV, setting)
    store = Store(str(root))
    calls = _record_fsyncs(monkeypatch, root / "synced" / "response.json")
    assert store.create_request(question("synced"))
    assert store.create_response("synced", {"value": "x" * 5000})
    size = (root / "synced" / "response.json").stat().st_size
    assert len(calls) == 2
    assert calls[1] == (size, False), "the whole answer is synced before its name appears"


@pytest.mark.parametrize("setting", [None, "", "0", "false", "No", "off"])
def test_without_fsync_records_are_published_unsynced(
    root: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    if setting is None:
        monkeypatch.delenv(FSYNC_ENV, raising=False)
    else:
        monkeypatch.setenv(FSYNC_ENV, setting)
    store = Store(str(root))
    calls = _record_fsyncs(monkeypatch, root / "plain" / "response.json")
    assert store.create_request(question("plain"))
    assert store.create_response("plain", {"value": 1})
    assert store.read_response("plain") == {"value": 1}
    assert calls == []


def test_a_bad_fsync_setting_is_a_configuration_error_naming_it_and_writes_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FSYNC_ENV, "maybe")
    store = Store(str(root))
    with pytest.raises(ConfigurationError, match=r"FLYTE_HITL_FSYNC must be 1 or 0 .*got 'maybe'"):
        store.create_request(question("never"))
    assert not root.exists() or _tree(root) == []


@pytest.mark.parametrize(
    ("root", "local"),
    [("/tmp/x", True), ("relative/dir", True), ("file:///tmp/x", True), ("s3://b/p", False), ("az://c/p", False)],
)
def test_is_local_tells_local_paths_from_remote_urls(root: str, local: bool) -> None:
    assert Store(root).is_local is local


# -- what a root may be ---------------------------------------------------------------------------

BAD_ROOTS = {
    "s3://": "names no bucket",
    "s3:///hitl": "names no bucket",
    "gs://": "names no bucket",
    "abfs://": "names no bucket",
    "s3:/bucket/x": "looks like a URL without '//'",
    "gs:bucket": "looks like a URL without '//'",
    "memory://hitl": "'memory' is not a supported storage scheme",
    "hdfs://cluster/hitl": "'hdfs' is not a supported storage scheme",
    "http://host/hitl": "'http' is not a supported storage scheme",
    "s3://key:secret@bucket/hitl": "'s3://***@bucket/hitl': it carries credentials",
    "gs://bucket?x=1": "is not a bucket or container name",
    "file://relative": "needs an absolute path",
    "~/hitl": "'~' is not expanded",
    "": "empty",
    " /tmp/x": "surrounding spaces",
    "/tmp/a\nb": "control characters",
}


@pytest.mark.parametrize("bad", list(BAD_ROOTS), ids=repr)
def test_a_bad_root_is_a_configuration_error_naming_the_setting_the_value_and_the_forms(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ROOT_ENV, bad)
    with pytest.raises(ConfigurationError) as info:
        Store(default_root() if bad else bad).create_request(question("never"))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert ROOT_ENV in message and BAD_ROOTS[bad] in message
    assert repr(bad) in message or ("secret" in bad and "secret" not in message)
    assert "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or abfs[s]://CONTAINER[/PREFIX]" in message
    assert _tree(tmp_path) == [], "nothing written, no stray 's3:' directory"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("gcs://bucket/hitl/", "gs://bucket/hitl"),
        ("s3a://bucket/hitl", "s3://bucket/hitl"),
        ("az://container", "abfs://container"),
        ("abfss://c@acct.dfs.core.windows.net/x", "abfss://c@acct.dfs.core.windows.net/x"),
        ("ABFSS://container/a/b", "abfss://container/a/b"),
        ("s3://bucket//hitl//", "s3://bucket/hitl"),
        ("/tmp/x/", "/tmp/x"),
        ("/data/not-a-scheme://x", "/data/not-a-scheme://x"),
        ("./s3:", "./s3:"),
    ],
)
def test_aliases_become_their_canonical_scheme(given: str, canonical: str) -> None:
    assert Store(given).root == canonical


# -- a local root is private to its owner --------------------------------------------------------


def test_the_root_and_event_directories_are_created_private(tmp_path: Path) -> None:
    root = tmp_path / "new" / "hitl"
    store = Store(str(root))
    assert store.create_request(question("ev"))
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert os.stat(root / "ev").st_mode & 0o777 == 0o700
    assert os.stat(root / "ev" / "request.json").st_mode & 0o777 == 0o600


def test_a_world_writable_root_is_refused_and_nothing_is_read_or_written(store: Store, root: Path) -> None:
    # Another user made the root first, open to all, and planted an answer in it.
    (root / "ev").mkdir(parents=True)
    (root / "ev" / "response.json").write_text('{"status": "completed", "value": true}')
    root.chmod(0o777)
    for call in (
        lambda: store.read_response("ev"),
        lambda: store.create_request(question("other")),
        store.list_events,
    ):
        with pytest.raises(UnsafeRootError) as info:
            call()
        assert isinstance(info.value, StorageError) and isinstance(info.value, PermissionError)
        assert str(root) in str(info.value) and "writable by every user" in str(info.value)
    assert _tree(root) == ["ev", "ev/response.json"]


def test_a_world_writable_root_is_refused_even_with_the_sticky_bit(store: Store, root: Path) -> None:
    # Others could still create an event's directory (its id is predictable in a task) before us.
    root.mkdir()
    root.chmod(0o1777)
    with pytest.raises(UnsafeRootError, match="writable by every user"):
        store.create_request(question("ev"))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_root_owned_by_another_user_is_refused(store: Store, root: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    root.mkdir(mode=0o700)
    os.chown(root, nobody, -1)
    with pytest.raises(UnsafeRootError) as info:
        store.read_request("ev")
    assert f"belongs to uid {nobody}" in str(info.value) and ROOT_ENV in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_root_under_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    # Whoever owns the parent can rename our root away and put one of theirs in its place.
    import pwd

    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(parent, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(UnsafeRootError, match="a directory above the root"):
        Store(str(parent / "hitl")).create_request(question("ev"))
    assert not (parent / "hitl").exists() or _tree(parent / "hitl") == []


def test_a_root_under_a_world_writable_directory_needs_its_sticky_bit(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeRootError, match="writable by every user"):
        Store(str(shared / "hitl")).create_request(question("ev"))
    shared.chmod(0o1777)  # like /tmp: others cannot rename or remove what is ours
    assert Store(str(shared / "hitl2")).create_request(question("ev"))


def test_a_symlinked_root_is_checked_where_it_leads(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    target.chmod(0o777)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafeRootError, match="target"):
        Store(str(tmp_path / "link")).read_request("ev")
    target.chmod(0o700)
    assert Store(str(tmp_path / "link")).create_request(question("ev"))


def test_a_root_removed_while_in_use_lists_nothing_at_once(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(str(root))
    store.create_request(question("ev-1"))
    assert [e.request_id for e in store.list_events()] == ["ev-1"]
    shutil.rmtree(root)  # a /tmp cleaner
    with caplog.at_level(logging.WARNING):
        assert store.list_events() == [] and store.read_request("ev-1") is None
    assert caplog.records == [], "no storage error, no retries"
    assert not root.exists()


# -- answer slots: a refusal by the waiting task reopens the event -------------------------------


def test_a_refused_answer_reopens_the_event_in_the_next_slot(store: Store, root: Path) -> None:
    store.create_request({"request_id": "slots"})
    assert store.read_outcome("slots") == (None, 0, None)
    assert store.create_response("slots", {"status": "completed", "value": 7})
    assert store.read_outcome("slots").response == {"status": "completed", "value": 7}
    assert [e.answered for e in store.list_events()] == [True]

    refusal = {"error": "value must be a multiple of 5"}
    assert store.create_refusal("slots", 0, refusal)
    assert store.create_refusal("slots", 0, {"error": "again"}) is False, "one refusal per answer"
    assert store.read_outcome("slots") == (None, 1, refusal)
    assert [e.answered for e in store.list_events()] == [False], "waiting again"

    assert store.create_response("slots", {"status": "completed", "value": 10})
    assert store.create_response("slots", {"status": "completed", "value": 15}) is False, "first answer wins"
    assert store.read_outcome("slots") == ({"status": "completed", "value": 10}, 1, refusal)
    assert sorted(p.name for p in (root / "slots").iterdir()) == [
        "refused.json",
        "request.json",
        "response.1.json",
        "response.json",
    ]
    assert [e.answered for e in store.list_events()] == [True]


def test_an_expiry_mark_is_never_followed_by_another_slot(store: Store) -> None:
    store.create_request({"request_id": "gone"})
    assert store.create_response("gone", {"status": "expired"})
    store.create_refusal("gone", 0, {"error": "not an answer"})  # nobody refuses an expiry; if one did
    assert store.read_outcome("gone") == ({"status": "expired"}, 0, None)
