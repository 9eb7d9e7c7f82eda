"""Wake-ups across processes (`_wake`) and long-polls (`_watch`, ``GET /status?wait=N``, ``hitl status --wait``).

Real UDP sockets on loopback, real roots, real servers on port 0, real processes for the CLI.
The cluster layout itself (form servers and Flyte runs in separate processes) is in test_cluster.py.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import after_first_read, event_record, post_json, python, request, until, wait
from s3_helpers import MotoS3, S3Bucket, use_root

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _wait, _wake
from flyteplugins.hitl._store import Store
from flyteplugins.hitl._watch import Watch
from flyteplugins.hitl.server import HitlServer, start_server, stop_server

HANG_GUARD = 30.0


def _event(store: Store, request_id: str = "wake-1", token: str = "tok-123", seconds: float = 600) -> dict:
    record = event_record(
        request_id, name="wake", prompt="Wake?", timeout_seconds=seconds, endpoint="http://127.0.0.1:9", token=token
    )
    assert store.create_request(record)
    return record


class Woken:
    """An ``on_wake`` that counts its calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.count >= count, HANG_GUARD), f"only {self.count} wake-ups"


@pytest.fixture
def listening(store: Store) -> Iterator[tuple[dict, Woken, tuple[str, int]]]:
    """A registered wait on a fresh event: (request, on_wake counter, the listener's address)."""
    request = _event(store)
    woken = Woken()
    listening = _listen(store, request, woken)
    waiter = store.read_waiter(request["request_id"])
    assert waiter is not None
    yield request, woken, (waiter["host"], waiter["port"])
    _wake.unlisten(listening)


def _listen(store: Store, request: dict, on_wake: Callable[[], None]) -> _wake.Listening | None:
    """Register as a wait does: with the socket, then (for an event created elsewhere) in waiter.json."""
    listening = _wake.listen(request, on_wake)
    if listening is not None:
        _wake.record(store, request, listening)
    return listening


def _poke(store: Store, request: dict) -> dict:
    """Wake the waiting process as a writer of an outcome does: note where, (store it,) then send."""
    response: dict = {"request_id": request["request_id"], "status": "completed", "value": 1}
    _wake.mark(store, request, response)
    _wake.poke(store, request, response)
    return response


def _send(address: tuple[str, int], data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, address)


# -- _wake -------------------------------------------------------------------------------------------


def test_listen_records_its_address_and_a_poke_wakes_the_wait(store: Store, listening: tuple) -> None:
    request, woken, address = listening
    assert address[0] == "127.0.0.1" and address[1] > 0
    assert _wake._listener.address == address
    _poke(store, request)
    woken.wait_for(1)


def test_unauthenticated_wake_ups_are_dropped_before_an_authentic_one(listening: tuple) -> None:
    request, woken, address = listening
    request_id = request["request_id"]
    forged = _wake.datagram({"request_id": request_id, "token": "not-the-token"})
    stamp, nonce = "1" + "0" * 12, "ab" * 8
    forgeries = (
        forged,
        forged.rsplit(b" ", 1)[0] + b" " + b"0" * 64,  # right shape, made-up mac
        _wake.datagram({"request_id": "other-event", "token": request["token"]}),  # no wait here for it
        b" ".join([_wake.MAGIC, request_id.encode(), stamp.encode(), nonce.encode()]),  # four fields
        b"GET / HTTP/1.1\r\n\r\n",
        b"",
        b"\xff" * 600,
        b"HITLWAKE1 \xff \xff \xff \xff",
    )
    for data in forgeries:
        assert not _wake._listener.handle(data, "test")
    assert woken.count == 0
    for data in forgeries:  # the same through the socket
        _send(address, data)
    # Datagrams from one socket on loopback arrive in order and one thread handles them: when the
    # authentic one has woken the wait, every forged one before it has been dropped.
    _send(address, _wake.datagram(request))
    woken.wait_for(1)
    assert woken.count == 1


def test_a_replayed_wake_up_is_dropped_and_one_that_comes_too_soon_is_deferred(listening: tuple) -> None:
    request, woken, _ = listening
    listener = _wake._listener
    now = [1000.0]
    listener.clock = lambda: now[0]  # type: ignore[method-assign]
    try:
        first = _wake.datagram(request)
        assert listener.handle(first)
        assert woken.count == 1
        now[0] += 10 * listener.min_gap_seconds
        assert not listener.handle(first)  # a replay, however late
        assert listener.handle(_wake.datagram(request))  # a fresh one after the gap
        assert woken.count == 2
        assert listener.handle(_wake.datagram(request))  # too soon after the last one: deferred
        assert listener.handle(_wake.datagram(request))  # and folded into the same deferred wake-up
        listener._wake_deferred()
        assert woken.count == 2, "not before the window ends"
        now[0] += listener.min_gap_seconds
        listener._wake_deferred()
        assert woken.count == 3
        listener._wake_deferred()
        assert woken.count == 3, "once"
    finally:
        del listener.clock


def test_a_wake_up_replayed_after_32_newer_ones_is_still_dropped(listening: tuple) -> None:
    request, _, _ = listening
    listener = _wake._listener
    started = time.time()
    old = _wake.datagram(request, now=started - 10)
    assert listener.handle(old)
    for i in range(40):  # a millisecond apart, as writers' clocks tick
        assert listener.handle(_wake.datagram(request, now=started + i / 1000))  # deferred, most of them
    assert not listener.handle(old)


def test_a_wake_up_inside_the_rate_limit_window_arrives_at_its_end(listening: tuple) -> None:
    # Through the socket, on the real clock: the second authentic wake-up comes well inside the
    # window (1 s) and is delivered when the window ends, not dropped until the next poll.
    request, woken, address = listening
    _send(address, _wake.datagram(request))
    woken.wait_for(1)
    _send(address, _wake.datagram(request))
    woken.wait_for(2)
    assert woken.count == 2


@pytest.mark.parametrize(
    "data",
    [
        b"HITLWAKE1 wake-1 " + b"9" * 400 + b" " + b"ab" * 8 + b" " + b"0" * 64,  # a 400-digit timestamp
        b"HITLWAKE1 wake-1 -5 " + b"ab" * 8 + b" " + b"0" * 64,
        b"HITLWAKE1 wake-1 1e9 " + b"ab" * 8 + b" " + b"0" * 64,
        b"HITLWAKE1 wake-1 \xd9\xa2 " + b"ab" * 8 + b" " + b"0" * 64,  # an Arabic-Indic digit
        b"HITLWAKE1 wake-1 1 " + b"ab" * 8 + b" " + b"0" * 64 + b" ",
        b"HITLWAKE1 " + b"a" * 600,
    ],
    ids=["400 digits", "negative", "exponent", "non-ASCII digit", "trailing space", "long"],
)
def test_a_malformed_wake_up_is_dropped_quietly(
    listening: tuple, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    request, woken, address = listening
    with caplog.at_level(logging.DEBUG, logger="flyteplugins.hitl.wake"):
        assert not _wake._listener.handle(data, "test")
        _send(address, data)
        _send(address, _wake.datagram(request))  # after it, on the same path: it has been handled
        woken.wait_for(1)
    levels = {r.levelno for r in caplog.records if r.name == "flyteplugins.hitl.wake"}
    assert levels <= {logging.DEBUG}, [r.getMessage() for r in caplog.records]


def test_an_error_in_the_receiving_path_is_logged_once_a_minute_with_a_count(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wake.Listener, "min_gap_seconds", 0)
    request = _event(store)
    calls = Woken()

    def failing() -> None:
        calls()
        raise RuntimeError("a bug in a wait's wake-up")

    listening = _wake.listen(request, failing)
    assert listening is not None
    try:
        with caplog.at_level(logging.DEBUG, logger="flyteplugins.hitl.wake"):
            for _ in range(5):
                _send(listening.address, _wake.datagram(request))
            calls.wait_for(5)  # the receiving thread went on after each error
    finally:
        _wake.unlisten(listening)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "(1 since the last such line)" in errors[0].getMessage()


def test_a_stale_or_future_wake_up_is_dropped(listening: tuple) -> None:
    request, woken, _ = listening
    import time

    listener = _wake._listener
    assert not listener.handle(_wake.datagram(request, now=time.time() - _wake.MAX_SKEW_SECONDS - 5))
    assert not listener.handle(_wake.datagram(request, now=time.time() + _wake.MAX_SKEW_SECONDS + 5))
    assert woken.count == 0


def test_the_listener_is_shared_and_closes_with_the_last_wait(store: Store) -> None:
    first, second = _event(store, "wake-a"), _event(store, "wake-b")
    stop_first = _listen(store, first, Woken())
    address = _wake._listener.address
    assert address is not None
    stop_second = _listen(store, second, Woken())
    assert _wake._listener.address == address
    assert store.read_waiter("wake-a") == store.read_waiter("wake-b") == {"host": address[0], "port": address[1]}
    _wake.unlisten(stop_first)
    assert _wake._listener.address == address
    _wake.unlisten(stop_second)
    assert _wake._listener.address is None and not _wake._listener._watched
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the port is free again
        probe.bind(address)


def test_a_new_event_records_the_address_and_its_wait_writes_no_waiter_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(root))
    event = hitl.new_event("fresh", data_type=int, prompt="n?", poll_interval_seconds=3600)
    request = store.read_request(event.request_id)
    assert request is not None
    host, port = _wake._listener.address or ("", 0)
    assert request["wake"] == {"host": host, "port": port} and host == "127.0.0.1"
    woken = Woken()
    listening = _listen(store, request, woken)
    try:
        assert store.read_waiter(event.request_id) is None  # the request says it: no write
        _poke(store, request)
        woken.wait_for(1)  # woken directly: the wait is in this process
        # As another process would poke: to the request's address.
        monkeypatch.setattr(_wake._listener, "wake_here", lambda request_id: False)
        monkeypatch.setattr(_wake._listener, "min_gap_seconds", 0)
        _poke(store, request)
        woken.wait_for(2)
    finally:
        _wake.unlisten(listening)


def test_a_re_attached_wait_records_where_it_listens(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # An earlier run created the event, and recorded an address where nobody listens any more.
    request = {**_event(store), "wake": {"host": "127.0.0.1", "port": closed_udp_port()}}
    woken = Woken()
    listening = _listen(store, request, woken)
    try:
        host, port = _wake._listener.address or ("", 0)
        assert store.read_waiter(request["request_id"]) == {"host": host, "port": port}
        monkeypatch.setattr(_wake._listener, "wake_here", lambda request_id: False)
        _poke(store, request)  # waiter.json wins over the request's stale address
        woken.wait_for(1)
    finally:
        _wake.unlisten(listening)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wake_ups_can_be_turned_off(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_wake.WAKE_ENV, "0")
    request = _event(store)
    assert _listen(store, request, Woken()) is None
    assert store.read_waiter(request["request_id"]) is None and _wake._listener.address is None
    _poke(store, request)  # nothing to do, nothing raised


@pytest.mark.parametrize(
    ("host", "port"), [("192.0.2.1", "0"), ("0.0.0.0", "0"), ("::", "0"), ("pod", "0"), ("127.0.0.1", "70000")]
)
def test_a_listener_that_cannot_bind_leaves_the_wait_polling_and_says_so_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str, port: str
) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here; a wildcard address is no address to send to.
    monkeypatch.setenv(_wake.HOST_ENV, host)
    monkeypatch.setenv(_wake.PORT_ENV, port)
    monkeypatch.setattr(_wake._listener, "_bind_failed", False)
    request = _event(store)
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        for _ in range(2):
            _wake.unlisten(_listen(store, request, Woken()))
    assert store.read_waiter(request["request_id"]) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"]
    assert len(warnings) == 1 and host in warnings[0]
    assert "polling" in warnings[0]


def test_poke_never_raises_and_logs_a_bad_waiter_record_once(
    store: Store, root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wake, "_send_failed", False)
    request = _event(store)
    _poke(store, request)  # no waiter.json: nobody listens yet
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        for record in ({"host": "not an address", "port": 1}, {"host": "127.0.0.1", "port": 70000}, {}):
            store.put_waiter(request["request_id"], record)
            _poke(store, request)
        (root / request["request_id"] / "waiter.json").write_text("{not json")
        _poke(store, request)
    warnings = [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"]
    assert len(warnings) == 1 and "polling" in warnings[0]


def test_a_wait_with_an_hour_poll_returns_at_once_when_another_process_answers(root: Path) -> None:
    # The answer comes from `hitl submit` straight to the root, in another process: only a
    # wake-up can bring it to the wait before its next poll, an hour away.
    event = hitl.new_event("cli", data_type=int, prompt="n?", poll_interval_seconds=3600, timeout_seconds=600)
    result: list[int] = []
    waiting = threading.Thread(target=lambda: result.append(event.wait()), daemon=True)
    waiting.start()
    until(lambda: bool(_wake._listener._watched), "the wait registers for wake-ups")
    cli = python("-m", "flyteplugins.hitl", "submit", event.request_id, "7", "--root", str(root))
    out, _ = cli.communicate(timeout=HANG_GUARD)
    assert cli.returncode == 0, out
    waiting.join(HANG_GUARD)
    assert result == [7]
    assert _wake._listener.address is None  # closed with the last wait


def test_an_answer_found_by_a_poll_instead_of_a_wake_up_is_reported_once(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored by a writer that sends no wake-up (as when a NetworkPolicy drops them): the poll finds it.
    from flyteplugins.hitl import _answers

    monkeypatch.setattr(_wake, "_missed_once", False)
    store = Store(str(root))
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        for value in (1, 2):
            event = hitl.new_event("polled", data_type=int, prompt="n?", poll_interval_seconds=0.05)
            result: list[int] = []
            waiting = threading.Thread(target=lambda e=event, r=result: r.append(e.wait()), daemon=True)
            waiting.start()
            # Answered once the wait's first read has returned, so a later poll finds it.
            after_first_read(event)
            _answers.submit(store, _answers.load(store, event.request_id), value, via="python", client="t")
            waiting.join(HANG_GUARD)
            assert result == [value]
    warnings = [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"]
    assert len(warnings) == 1 and "udp 127.0.0.1:" in warnings[0]
    assert "at a poll, though its writer sent a wake-up" in warnings[0]


@pytest.mark.parametrize("writer", ["2.12.1", "elsewhere"])
def test_an_answer_whose_writer_sent_no_wake_up_here_is_no_sign_of_a_missed_one(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, writer: str
) -> None:
    # flyteplugins-slack writes 2.12.1's record straight to response_path and sends no wake-up; a
    # writer that read a stale address sent its wake-up elsewhere. Neither is the network's fault.
    monkeypatch.setattr(_wake, "_missed_once", False)
    event = hitl.new_event("quiet", data_type=int, prompt="n?", poll_interval_seconds=0.05)
    result: list[int] = []
    waiting = threading.Thread(target=lambda: result.append(event.wait()), daemon=True)
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        waiting.start()
        after_first_read(event)
        record = {"request_id": event.request_id, "status": "completed", "value": 5}
        if writer == "elsewhere":
            record["woke"] = {"host": "127.0.0.1", "port": closed_udp_port()}
        Path(event.response_path).write_text(json.dumps(record))
        waiting.join(HANG_GUARD)
        assert result == [5]
    assert [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"] == []


def test_a_writer_notes_in_the_outcome_where_it_sent_the_wake_up(root: Path) -> None:
    event = hitl.new_event("noted", data_type=int, prompt="n?", poll_interval_seconds=3600, timeout_seconds=600)
    host, port = _wake._listener.address or ("", 0)
    _submit_from_another_process(root, event.request_id, "4")
    stored = json.loads(Path(event.response_path).read_text())
    assert stored["woke"] == {"host": host, "port": port}
    assert event.wait() == 4


def test_an_answer_older_than_the_wait_is_no_sign_of_a_missed_wake_up(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Answered by another process before the wait began (as for a run re-attaching after a crash):
    # its wake-up found nobody listening, and the wait's first read finds the answer.
    monkeypatch.setattr(_wake, "_missed_once", False)
    event = hitl.new_event("early", data_type=int, prompt="n?", poll_interval_seconds=0.05)
    cli = python("-m", "flyteplugins.hitl", "submit", event.request_id, "3", "--root", str(root))
    out, _ = cli.communicate(timeout=HANG_GUARD)
    assert cli.returncode == 0, out
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        assert event.wait() == 3
    assert [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"] == []


RACING_WAITS = 300


def test_answers_stored_by_this_process_s_server_are_no_sign_of_a_missed_wake_up(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Timed reads every millisecond: now and then one finds the answer before the server that stored
    # it has replied (a page: the form's reply) and handed it over. That answer came from this very
    # process: no wake-up was missed.
    monkeypatch.setattr(_wake, "_missed_once", False)
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        for i in range(RACING_WAITS):
            event = hitl.new_event(f"own-{i}", data_type=int, prompt="n?", poll_interval_seconds=0.001)
            result: list[int] = []
            waiting = threading.Thread(target=lambda e=event, r=result: r.append(e.wait()), daemon=True)
            waiting.start()
            until(lambda: bool(_wake._listener._watched), "the wait registers")
            form = urlencode({"request_id": event.request_id, "token": event.token, "value": str(i)}).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            assert request(event.endpoint, "POST", "/submit", form, headers).status == 200
            waiting.join(HANG_GUARD)
            assert result == [i]
    assert [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"] == []


def _submit_from_another_process(root: Path, request_id: str, value: str) -> None:
    cli = python("-m", "flyteplugins.hitl", "submit", request_id, value, "--root", str(root))
    out, _ = cli.communicate(timeout=HANG_GUARD)
    assert cli.returncode == 0, out


def test_two_waits_on_one_event_are_both_woken_by_one_wake_up(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    # Polls a minute apart: only the wake-up datagram from the other process can end both waits before then.
    monkeypatch.setattr(_wake, "_missed_once", False)
    event = hitl.new_event("twice", data_type=int, prompt="n?", poll_interval_seconds=60, timeout_seconds=600)
    results: list[int] = []

    def one_wait() -> None:
        results.append(wait(mode, event))

    threads = [threading.Thread(target=one_wait, daemon=True) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl"):
        for thread in threads:
            thread.start()
        waits = lambda: list(_wait._waits.get(event.request_id, ()))  # noqa: E731
        until(lambda: len(waits()) == 2 and all(w.reads >= 1 for w in waits()), "both waits read storage")
        time.sleep(0.5)  # past their first reads: what ends them now is a wake-up or a poll a minute away
        _submit_from_another_process(root, event.request_id, "7")
        for thread in threads:
            thread.join(20)  # well before the poll
        assert results == [7, 7]
    assert [r.getMessage() for r in caplog.records if "NetworkPolicy" in r.getMessage()] == []


def test_wake_ups_reach_a_wait_listening_on_ipv6(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    monkeypatch.setattr(_wake, "_listener", _wake.Listener())
    monkeypatch.setenv(_wake.HOST_ENV, "::1")
    event = hitl.new_event("six", data_type=int, prompt="n?", poll_interval_seconds=3600, timeout_seconds=600)
    request = Store(str(root)).read_request(event.request_id)
    assert request is not None and request["wake"]["host"] == "::1"
    result: list[int] = []
    waiting = threading.Thread(target=lambda: result.append(event.wait()), daemon=True)
    waiting.start()
    after_first_read(event, polls=0)
    time.sleep(0.3)  # past the first read
    _submit_from_another_process(root, event.request_id, "6")
    waiting.join(HANG_GUARD)
    assert result == [6]


def test_in_kubernetes_a_loopback_wake_address_is_a_warning_naming_the_setting(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wake, "_listener", _wake.Listener())
    monkeypatch.delenv(_wake.HOST_ENV, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")  # resolves to loopback only
    monkeypatch.setattr(_wake, "_loopback_warned", False)
    request = _event(store)
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        for _ in range(2):  # the socket opens twice: said once
            listening = _wake.listen(request, Woken())
            _wake.unlisten(listening)
            assert listening is not None and listening.address[0] == "127.0.0.1"
    warnings = [r for r in caplog.records if r.name == "flyteplugins.hitl.wake"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert _wake.HOST_ENV in warnings[0].getMessage() and "localhost" in warnings[0].getMessage()


def test_with_a_fixed_port_concurrent_short_waits_never_collide_on_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Each wait opens the one socket if none is open and closes it when it was the last: with a fixed
    # port, one wait's close racing another's bind must not fail the bind.
    monkeypatch.setattr(_wake, "_listener", _wake.Listener())
    monkeypatch.setenv(_wake.PORT_ENV, str(closed_udp_port()))
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # the console lines of 240 events
    events = [hitl.new_event(f"short-{i}", data_type=int, prompt="n?") for i in range(240)]
    for i, event in enumerate(events):
        hitl.submit(event.request_id, i, root=str(root))  # answered already: each wait is one read
    got: dict[int, int] = {}

    def run(part: int) -> None:
        for i in range(part, len(events), 8):
            got[i] = events[i].wait()

    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.wake"):
        threads = [threading.Thread(target=run, args=(part,), daemon=True) for part in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG_GUARD * 4)
    assert got == {i: i for i in range(len(events))}
    assert [r.getMessage() for r in caplog.records if r.name == "flyteplugins.hitl.wake"] == []
    assert _wake._listener.address is None


FLOOD = r"""
import os, socket, sys, time
host, port, request_id, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
stamp = str(int(time.time() * 1000)).encode()
junk = [
    b"HITLWAKE1 " + request_id.encode() + b" " + b"9" * 400 + b" " + b"ab" * 8 + b" " + b"0" * 64,
    b"HITLWAKE1 " + request_id.encode() + b" " + stamp + b" " + b"ab" * 8 + b" " + b"f" * 64,  # forged
    b"HITLWAKE1 " + request_id.encode() + b" " + b"1" * 16,
    b"\xff" * 512,
    b"HITLWAKE1 \xff \xff \xff \xff",
]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sent, end = 0, time.monotonic() + seconds
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    sock.setblocking(False)
    while time.monotonic() < end:
        try:
            sock.sendto(junk[sent % len(junk)], (host, port))
        except BlockingIOError:
            time.sleep(0.0001)
        sent += 1
print("SENT", sent, flush=True)
"""


def test_a_flood_of_junk_wake_ups_neither_hides_the_real_one_nor_fills_the_log(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    event = hitl.new_event("flooded", data_type=int, prompt="n?", poll_interval_seconds=3600, timeout_seconds=600)
    result: list[int] = []
    with caplog.at_level(logging.INFO, logger="flyteplugins"):
        waiting = threading.Thread(target=lambda: result.append(event.wait()), daemon=True)
        waiting.start()
        after_first_read(event, polls=0)
        time.sleep(0.3)  # past the first read
        host, port = _wake._listener.address or ("", 0)
        flood = python("-c", FLOOD, host, str(port), event.request_id, "4")
        time.sleep(1)  # the flood is on
        _submit_from_another_process(root, event.request_id, "5")
        answered = time.monotonic()
        waiting.join(HANG_GUARD)  # an hour before the next poll
        returned = time.monotonic()
        out, _ = flood.communicate(timeout=HANG_GUARD)
    assert result == [5]
    assert flood.returncode == 0 and int(out.split()[-1]) > 1000, out
    logged = sum(len(r.getMessage()) for r in caplog.records)
    sys.__stdout__.write(
        f"\n[figure] flood of {int(out.split()[-1]):,} junk datagrams in 4 s: the wait returned "
        f"{returned - answered:.2f} s after the answer; {logged:,} bytes logged\n"
    )
    assert logged < 10_000, [r.getMessage() for r in caplog.records][:5]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- _watch ------------------------------------------------------------------------------------------


def test_watch_releases_a_long_poll_when_this_process_stores_the_outcome(store: Store) -> None:
    record = _event(store, "w-1")
    watch = Watch(store)
    watch.poll_seconds = 3600  # only `stored` can release it
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(watch.outcome(record, HANG_GUARD * 2).response))
    thread.start()
    until(lambda: bool(watch._watched), "the long-poll waits")
    store.create_response("w-1", {"status": "completed", "value": 1})
    watch.stored("w-1")
    thread.join(HANG_GUARD)
    assert got == [{"status": "completed", "value": 1}]
    assert watch.wait("w-1", 0.01) is False, "nothing is remembered: a later long-poll reads the state"
    watch.close()


def test_past_its_most_long_polls_a_watch_returns_at_once(store: Store) -> None:
    watch = Watch(store)
    watch.poll_seconds, watch.most = 3600, 2
    held = [threading.Thread(target=watch.wait, args=(f"m-{i}", HANG_GUARD * 2)) for i in range(2)]
    for t in held:
        t.start()
    until(lambda: watch._held == 2, "two long-polls held")
    assert watch.wait("m-9", HANG_GUARD * 2) is False  # at once: the test would hang otherwise
    watch.close()
    for t in held:
        t.join(HANG_GUARD)


def test_watch_finds_an_outcome_stored_elsewhere_by_its_shared_poll(store: Store) -> None:
    _event(store, "w-2")
    watch = Watch(store)
    watch.poll_seconds = 0.05
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(watch.wait("w-2", HANG_GUARD * 2)))
    thread.start()
    Store(store.root).create_response("w-2", {"status": "completed", "value": 2})
    thread.join(HANG_GUARD)
    assert got == [True]
    assert watch.wait("w-3", 0.01) is False
    watch.close()


def test_close_releases_every_long_poll(store: Store) -> None:
    watch = Watch(store)
    watch.poll_seconds = 3600
    threads = [threading.Thread(target=watch.wait, args=(f"w-{i}", 3600)) for i in range(5)]
    for t in threads:
        t.start()
    until(lambda: len(watch._watched) == 5, "five long-polls wait")
    watch.close()
    for t in threads:
        t.join(HANG_GUARD)
        assert not t.is_alive()
    assert watch.wait("w-9", 3600) is False


def test_long_polls_on_s3_share_one_listing_and_read_only_what_is_answered(
    moto: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = use_root(S3Bucket(moto), monkeypatch)
    store = Store(root)
    ids = [f"s3-{i}" for i in range(20)]
    records = {request_id: _event(store, request_id) for request_id in ids}
    watch = Watch(store)
    watch.poll_seconds = 0.05
    watch.list_from = len(ids)  # this many watched: a poll lists the root (fewer read each event)
    results: dict[str, object] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.update({i: watch.outcome(records[i], HANG_GUARD * 2).response}))
        for i in ids
    ]
    for t in threads:
        t.start()
    until(lambda: len(watch._watched) == len(ids), "every long-poll waits")

    def listings() -> int:
        return sum(1 for m, p in list(moto.requests) if m == "GET" and p.rstrip("/").count("/") <= 1)

    # A poll that began while fewer were watched reads each of them: let it end (a listing comes next).
    started = listings()
    until(lambda: listings() > started, "a poll that lists the root")
    before = moto.count("GET", "/response.json")
    lists = listings()
    store.create_response(ids[3], {"status": "completed", "value": 3}, slot=0)
    threads[3].join(HANG_GUARD)
    assert results[ids[3]] == {"status": "completed", "value": 3}
    polls = listings() - lists
    # The 19 still pending read nothing of their own: only the answered one was read.
    assert moto.count("GET", "/response.json") - before == 1
    assert polls >= 1
    watch.close()
    for t in threads:
        t.join(HANG_GUARD)


# -- GET /status?wait=N and hitl status --wait --------------------------------------------------------


@pytest.fixture
def two_servers(store: Store) -> Iterator[tuple[HitlServer, HitlServer]]:
    servers = [start_server(Store(store.root), "127.0.0.1", 0) for _ in range(2)]
    yield servers[0][0], servers[1][0]
    for httpd, thread in servers:
        stop_server(httpd, thread)


def _long_poll(base: str, request_id: str, token: str, wait: str, out: list) -> threading.Thread:
    """GET /status?wait= in a thread; the client gives up after HANG_GUARD s, long before wait=60 would end."""

    def run() -> None:
        reply = request(base, "GET", f"/status/{request_id}?token={token}&wait={wait}", timeout=HANG_GUARD)
        out.append((reply.status, reply.json()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("where", ["same server", "other replica"])
def test_status_long_poll_returns_when_the_event_is_answered(
    store: Store, two_servers: tuple[HitlServer, HitlServer], where: str
) -> None:
    polled, answering = two_servers[0], two_servers[0 if where == "same server" else 1]
    if where == "same server":
        polled.watch.poll_seconds = 3600  # only the server's own store can release it in time
    event = _event(store)
    out: list = []
    thread = _long_poll(polled.url, event["request_id"], event["token"], "60", out)
    until(lambda: bool(polled.watch._watched), "the long-poll waits")
    reply = post_json(answering.url, {"request_id": event["request_id"], "token": event["token"], "value": 4})
    assert reply.status == 200
    thread.join(HANG_GUARD + 5)
    assert out and out[0][0] == 200
    assert out[0][1]["state"] == "answered" and out[0][1]["response"]["value"] == 4


def test_status_long_poll_returns_when_the_event_expires(store: Store, server: HitlServer) -> None:
    event = _event(store, seconds=0.5)
    out: list = []
    _long_poll(server.url, event["request_id"], event["token"], "60", out).join(HANG_GUARD + 5)
    assert out and out[0][0] == 200 and out[0][1]["state"] == "expired"


def test_status_without_wait_or_with_wait_0_answers_at_once(store: Store, server: HitlServer) -> None:
    event = _event(store)
    for query in ("", "&wait=0", "&wait=0.0"):
        reply = request(server.url, "GET", f"/status/{event['request_id']}?token={event['token']}{query}")
        assert reply.status == 200 and reply.json()["state"] == "waiting"


@pytest.mark.parametrize("wait", ["-1", "61", "60.5", "abc", "nan", "inf", "1e9", "%00", "1,2"])
def test_bad_wait_values_are_400_and_the_server_keeps_serving(store: Store, server: HitlServer, wait: str) -> None:
    event = _event(store)
    reply = request(server.url, "GET", f"/status/{event['request_id']}?token={event['token']}&wait={wait}")
    assert reply.status == 400 and "wait must be" in reply.json()["detail"]
    assert request(server.url, "GET", "/health").status == 200


def test_bad_wait_with_a_wrong_token_is_still_a_400_before_any_read(store: Store, server: HitlServer) -> None:
    reply = request(server.url, "GET", "/status/nope?token=x&wait=x")
    assert reply.status == 400


@pytest.mark.parametrize("through", ["endpoint", "root"])
def test_hitl_status_wait_blocks_until_answered(store: Store, server: HitlServer, through: str) -> None:
    event = _event(store)
    request_id, token = event["request_id"], event["token"]
    where = ["--endpoint", server.url, "--token", token] if through == "endpoint" else ["--root", store.root]
    quick = python("-m", "flyteplugins.hitl", "status", request_id, *where, "--wait", "0.1")
    out, _ = quick.communicate(timeout=HANG_GUARD)
    assert quick.returncode == 7 and json.loads(out)["state"] == "waiting"  # 7: still waiting
    blocked = python("-m", "flyteplugins.hitl", "status", request_id, *where, "--wait", "600")
    # Answer only once the command is waiting: an answer already there would need no wait at all.
    if through == "endpoint":
        until(lambda: request_id in server.watch._watched, "the command's long-poll reaches the server")
    else:
        time.sleep(2)  # the command starts and reads in about 0.2 s; it watches the root from there
    assert blocked.poll() is None, "the command did not wait"
    assert post_json(server.url, {"request_id": request_id, "token": token, "value": 9}).status == 200
    out, _ = blocked.communicate(timeout=HANG_GUARD)
    assert blocked.returncode == 0, out
    record = json.loads(out)
    assert record["state"] == "answered" and record["response"]["value"] == 9


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "soon"])
def test_hitl_status_refuses_a_bad_wait(store: Store, wait: str) -> None:
    event = _event(store)
    proc = python("-m", "flyteplugins.hitl", "status", event["request_id"], "--root", store.root, "--wait", wait)
    out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
