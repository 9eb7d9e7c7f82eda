"""One wait on one event, end to end: registration, sleep, wake-ups, poll, outcome.

`Event.wait()` (`wait`) and ``await Event.wait.aio()`` (`wait_aio`) run the same loop, `_Wait.steps`,
written once: it yields either a function that does storage I/O, which the blocking wait calls and the
``.aio`` wait runs in a worker thread, or the seconds to sleep, which the blocking wait spends on a
`threading.Event` and the ``.aio`` wait on an `asyncio.Event` (holding no thread).

1. **Registration.** Before anything can interrupt it, a wait registers in this process (`hand_over`
   finds it) and with the socket for wake-up datagrams (`_wake.listen`); one ``with`` block undoes
   both however the wait ends, cancellation included.
2. **Sleep.** Until its next poll, its next console line or its deadline, or until signalled.
3. **Wake-ups.** Three things signal a wait, from any thread: this process's server (or `submit`)
   handing over the outcome it has just stored (`hand_over`: the wait returns it without a read); a
   wake-up datagram from a writer in another process (the wait reads storage at once); and its timer.
   The signal is cleared *before* each storage read, so a wake-up that lands during the read is
   never lost: the next sleep returns at once and the wait reads again.
4. **Poll.** One read of the outcome per poll interval, through `_answers.outcome`, which also stores
   the decision that stored votes make when no voter stored it; at the deadline, after that read, a
   create-only write of the expiry mark (an answer stored first wins). The store retries transient
   errors itself and logs the outage; a wait that the store gives up on (reading, or recording a
   refusal) keeps trying until its deadline (and `Event.expiry_grace_seconds` past it).
5. **Outcome.** The answer, built as the event's type and printed; or the default, or
   `EventTimeoutError`, once the deadline has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

from . import _answers, _console, _flyte, _markdown, _notify, _policy, _text, _wake
from ._answers import expired_record, seconds_left
from ._errors import EventTimeoutError, InvalidValueError, StorageError
from ._store import MAX_REFUSALS, Record, Store


class Event(Protocol):
    """What a wait reads of the event it waits on, and keeps on it: a `hitl.Event` (named here by
    shape, so that this module and `hitl.py` do not import each other)."""

    note_every_seconds: float
    expiry_grace_seconds: float
    clock: Callable[[], float]
    _request: Record
    _store: Store
    _announced: bool
    _response: Record | None
    _notify_targets: list[Any]
    _unidentified: str | None
    _span: Any

    @property
    def name(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def data_type(self) -> Any: ...
    @property
    def prompt(self) -> str: ...
    @property
    def prompt_type(self) -> str: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def poll_interval_seconds(self) -> float: ...
    @property
    def form_url(self) -> str: ...
    @property
    def curl_command(self) -> str: ...


logger = logging.getLogger("flyteplugins.hitl")

# -- registration ------------------------------------------------------------------------------------

_lock = threading.Lock()
_waits: dict[str, list[_Wait]] = {}  # request id -> the waits on it in this process


def hand_over(root: str, request_id: str, response: Record) -> None:
    """Wake every wait on `request_id`: `response` is the outcome just stored under `root`.

    The embedded server (after its reply) and `submit` without a server call this, so a wait in this
    process returns within milliseconds and without reading the record back.

    Example:
        >>> hand_over("/tmp/flyte/hitl", "approve-1a2b", {"status": "completed", "value": True})
    """
    with _lock:
        waits = list(_waits.get(request_id, ()))
    for wait in waits:
        wait.hand_over(root, response)


_await_replies: Callable[[str], None] = lambda request_id: None  # noqa: E731


def on_replies(hook: Callable[[str], None]) -> None:
    """Set what a wait calls before it returns an outcome it read from storage: `server.py` registers
    its ``await_replies``, which returns once this process's servers have written their replies for the
    event. Otherwise a program that ends right after its wait could cut off the reply to the person
    whose answer it read."""
    global _await_replies
    _await_replies = hook


class _Wait:
    """One wait on `event`: registered while its ``with`` block runs; `steps` is its loop."""

    def __init__(self, event: Event, signal: Callable[[], None], clear: Callable[[], None]) -> None:
        self.event = event
        self.root = event._store.root
        self._signal = signal
        self._clear = clear
        #: Set by `read_now`; the loop takes it right before it reads storage.
        self.woken = False
        #: The outcome an in-process writer stored under this wait's root: returned without a read.
        self.handed: Record | None = None
        self._listening: _wake.Listening | None = None
        #: Storage reads begun.
        self.reads = 0
        self._by_poll = False  # the answer came at a timed poll that a wake-up should have beaten
        from . import _telemetry  # imported by the first event already

        self._telemetry = _telemetry
        #: This wait's span: the one its event started when it was created (a later wait starts its own).
        request = event._request
        self.span = event._span or _telemetry.start_wait_span(
            event.name, event.request_id, str(request.get("data_type")), _policy.quorum(request), _answers.utc_now()
        )
        event._span = None

    def __enter__(self) -> _Wait:
        with _lock:
            _waits.setdefault(self.event.request_id, []).append(self)
        try:
            self._listening = _wake.listen(self.event._request, self.read_now)
        except BaseException:
            self._unregister()
            raise
        self._telemetry.waiting.add(1, {"hitl.event.name": self.event.name})
        return self

    def __exit__(self, *exc: object) -> None:
        self._telemetry.waiting.add(-1, {"hitl.event.name": self.event.name})
        self.span.end()
        try:
            _wake.unlisten(self._listening, answered_by_poll=self._by_poll)
        finally:
            self._unregister()

    def _unregister(self) -> None:
        with _lock:
            waits = _waits.get(self.event.request_id, [])
            if self in waits:
                waits.remove(self)
                if not waits:
                    del _waits[self.event.request_id]

    def read_now(self) -> None:
        """Wake the wait to read storage at once (callable from any thread)."""
        self.woken = True
        self._signal()

    def hand_over(self, root: str, response: Record) -> None:
        """`response` was just stored under `root`; a wait on another root reads its own instead."""
        if root == self.root:
            self.handed = response
        self.read_now()

    def steps(self) -> Generator[Callable[[], Any] | float, Any, Any]:
        """The loop: yields storage I/O to run (send back its result, or throw in its exception) or
        seconds to sleep (send None); returns the event's value or raises `EventTimeoutError`."""
        event = self.event
        if self._listening is not None:  # before the first read: an outcome stored after it wakes this wait
            yield functools.partial(_wake.record, event._store, event._request, self._listening)
        clock = event.clock
        now = clock()
        deadline = now + seconds_left(event._request)
        next_read, next_note = now, now + event.note_every_seconds
        reread = False  # read at once: the answer just read was refused, and the event takes answers again
        while True:
            self._clear()  # before the read: a wake-up during it makes the next sleep return at once
            woken, self.woken = self.woken, False
            now = clock()
            if self.handed is not None:  # the first writer's outcome, as a read would return it
                handed, self.handed = dict(self.handed), None
                self.span.add_event("woken", {"hitl.by": "this process"})
                try:
                    return self._returned(handed)
                except InvalidValueError as e:
                    yield from self._retried(functools.partial(self._refuse, handed, e), deadline)
                    reread = True
            if woken or reread or now >= next_read:
                self.reads += 1
                reread = False
                if woken:
                    self.span.add_event("woken")
                try:
                    response = yield functools.partial(self._read, now >= deadline)
                except StorageError as e:
                    if not e.transient or now >= deadline + event.expiry_grace_seconds:
                        raise
                    # The store has retried and logged the outage: try again later, still waiting.
                    next_read = now + min(event.poll_interval_seconds, event._store.max_backoff_seconds)
                else:
                    if response is not None:
                        # Blamed on the network only when the writer sent a wake-up here; not at the first
                        # read (the answer may be older than the wait), not when woken, and not when this
                        # process's server stored it (it handed the answer over).
                        answered = response.get("status") == "completed"
                        self._by_poll = answered and self._was_woken(response) and not woken and self.reads > 1
                        try:
                            return self._returned(response)
                        except InvalidValueError as e:
                            if not answered:
                                raise
                            yield from self._retried(functools.partial(self._refuse, response, e), deadline)
                            reread = True
                            continue
                    next_read = min(now + event.poll_interval_seconds, deadline)
            if not event._announced:  # after the first read: a re-run that finds its answer prints no form
                event._announced = True
                _announce(event)
                if event._notify_targets:
                    self.span.add_event("notified")
            if now >= next_note:
                from . import _html  # the pages' module: imported by the first wait, not with the package

                next_note = now + event.note_every_seconds
                _say(f"waiting for {event.name!r} … {_html.time_left(max(1.0, deadline - now))}")
            yield min(max(0.0, min(next_read, next_note) - clock()), threading.TIMEOUT_MAX)

    def _returned(self, response: Record) -> Any:
        """The value of `response` (see `_outcome`), with the outcome recorded on the span and metrics:
        an answer once the task's type took it (a refusal raises `InvalidValueError` first), an expiry
        before `EventTimeoutError` is raised."""
        if response.get("status") != "completed":
            self._telemetry.outcome(self.span, self.event._request, response, time.time())
            return _outcome(self.event, response)
        value = _outcome(self.event, response)
        self._telemetry.outcome(self.span, self.event._request, response, time.time())
        return value

    def _was_woken(self, response: Record) -> bool:
        """Whether the writer of `response` sent a wake-up to where this wait listens."""
        where = None if self._listening is None else self._listening.address
        woke = response.get("woke")
        return self.handed is None and where is not None and woke == {"host": where[0], "port": where[1]}

    def _retried(self, todo: Callable[[], Any], deadline: float) -> Generator[Callable[[], Any] | float, Any, Any]:
        """`todo` (storage I/O) run as a step, tried again through a storage outage as the reads are."""
        event = self.event
        while True:
            try:
                return (yield todo)
            except StorageError as e:
                if not e.transient or event.clock() >= deadline + event.expiry_grace_seconds:
                    raise
                self._clear()  # a wake-up meanwhile is kept in `woken`, for the loop
                yield min(event.poll_interval_seconds, event._store.max_backoff_seconds)

    def _refuse(self, response: Record, error: InvalidValueError) -> None:
        """Record that the event's type refused `response` (a rule only the task's code knows), which
        reopens the event for a new answer; past `MAX_REFUSALS` refusals, raise `error` instead."""
        event, store = self.event, self.event._store
        outcome = store.read_outcome(event.request_id)
        if outcome.response is None or outcome.response.get("answered_at") != response.get("answered_at"):
            return  # another attempt of this task refused it already
        if outcome.slot + 1 >= MAX_REFUSALS:
            raise error
        record = _answers.refusal_record(event.request_id, outcome.slot, response, str(error), error.field_errors)
        if store.create_refusal(event.request_id, outcome.slot, record):
            self._telemetry.refused(self.span, event._request, response, str(error))
        if event._request.get("slack"):  # its Slack messages get their controls back
            from . import _slack

            _slack.reopened(store, event._request, record)
        _say(f"{event.name!r}: the answer {_shown(response.get('value'))} was refused ({error}); waiting for another")

    def _read(self, expire: bool) -> Record | None:
        """The stored outcome, or None; with `expire` (past the deadline) the expiry mark when this wait
        stores it first. Waits until this process's servers have replied to the answer it finds."""
        event, store = self.event, self.event._store
        # Through `_answers.outcome`: a decision that the stored votes make (cast before the deadline)
        # but that no voter stored is settled here, and wins over the expiry mark.
        found = _answers.outcome(store, event._request)
        response = found.response
        if response is None and expire:
            expired = expired_record(event._request)
            if _answers.store_outcome(store, event._request, expired, found.slot):
                return expired
            response = store.read_response(event.request_id) or expired  # an answer came first: it wins
        if response is not None:
            _await_replies(event.request_id)
        return response


def wait_blocking(event: Event) -> Any:
    """Block until `event` is answered (see `Event.wait`)."""
    signal = threading.Event()
    with _console.interruptible(event.name, _withdrawal(event)), _Wait(event, signal.set, signal.clear) as waiting:
        steps = waiting.steps()
        result: Any = None
        error: Exception | None = None
        while True:
            try:
                todo = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            result = error = None
            if callable(todo):
                try:
                    result = todo()
                except Exception as e:
                    error = e
            else:
                signal.wait(todo)


async def wait_aio(event: Event) -> Any:
    """`wait` as a native coroutine: asleep on an `asyncio.Event`, it holds no thread between polls;
    each storage request goes to a worker thread (context variables included)."""
    loop = asyncio.get_running_loop()
    signal = asyncio.Event()

    def set_signal() -> None:  # from any thread
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(signal.set)

    # Registered before the first await.
    with _console.interruptible(event.name, _withdrawal(event)), _Wait(event, set_signal, signal.clear) as waiting:
        steps = waiting.steps()
        result: Any = None
        error: Exception | None = None
        while True:
            try:
                todo = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            result = error = None
            if callable(todo):
                try:
                    result = await asyncio.to_thread(todo)
                except Exception as e:
                    error = e
            else:
                timer = loop.call_later(todo, signal.set)
                try:
                    await signal.wait()
                finally:
                    timer.cancel()


def _withdrawal(event: Event) -> Callable[[], str] | None:
    """What withdraws `event` when a Ctrl-C ends the program during its wait; None in a Flyte task on a
    cluster, where a retry of the task re-attaches to the event and waits on."""
    import flyte

    tctx = flyte.ctx()
    return None if tctx and tctx.is_in_cluster() else functools.partial(_withdraw, event)


def _withdraw(event: Event) -> str:
    """Store the outcome that closes `event` (2.12.1's expiry, marked withdrawn) unless it has one; the
    line that says what became of it."""
    record = {"request_id": event.request_id, "status": "expired", "withdrawn_at": _answers.utc_now()}
    try:
        withdrawn = _answers.store_outcome(event._store, event._request, record)
    except StorageError as e:
        return f"{event.name!r} could not be withdrawn ({e}); it takes answers until it expires"
    if not withdrawn:
        return f"{event.name!r} has an outcome already; nothing withdrawn"
    return f"{event.name!r} is withdrawn; it takes no more answers"


# -- outcome and console -----------------------------------------------------------------------------


def _outcome(event: Event, response: Record) -> Any:
    """The event's value from its stored outcome, printed and shown in the report. An answer that the
    type refuses raises `InvalidValueError` before anything is printed or kept (`_Wait` reopens the event)."""
    from ._schema import forget
    from ._task_types import build_value

    answered = response.get("status") == "completed"
    value = build_value(event.data_type, response.get("value")) if answered or response.get("default_applied") else None
    event._response = response
    forget(event.request_id)  # settled: its type is no longer needed to check answers
    if event._request.get("slack"):  # bring its Slack messages up to date (in the background)
        from . import _slack

        _slack.outcome_known(event._store, event._request, response)
    if not answered:
        if not response.get("default_applied"):
            _say(f"{event.name!r} {'was withdrawn' if response.get('withdrawn_at') else 'expired without an answer'}")
            _update_report(event, response)
            error = EventTimeoutError(event.name, event.request_id, event.timeout_seconds)
            if note := _answers.votes_note(event._store, event._request):
                error.args = (f"{error}; {note}",)
            raise error
        _say(f"{event.name!r} timed out; using its default {_shown(value)}")
        _update_report(event, response)
        return value
    from . import _html

    source = _html.source(response)
    comment = f', comment "{_html.one_line(str(response["comment"]), 80)}"' if response.get("comment") else ""
    how = f" (via {source}{comment})" if source or comment else ""
    if response.get("votes"):  # a quorum's decision: every vote it counted
        how = f" (votes: {'; '.join(_vote_shown(v) for v in response['votes'])})"
    _say(f"{event.name!r} answered: {_shown(value)}{how}")
    _update_report(event, response)
    return value


def _vote_shown(vote: Record) -> str:
    """One vote for a console line: who, what, when, and the comment."""
    from . import _html

    what = "approved" if vote.get("value") is True else "rejected"
    comment = f' "{_html.one_line(str(vote["comment"]), 80)}"' if vote.get("comment") else ""
    return f"{vote.get('identity')} {what} at {vote.get('voted_at')}{comment}"


def _shown(value: object, limit: int = 200) -> str:
    """`value` for a console line: its repr, cut at `limit` characters (an answer may be a megabyte)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _say(line: str) -> None:
    """Print one console line, control characters escaped; text the console cannot encode is escaped
    rather than lost or fatal."""
    text = f"[hitl] {_text.printable(line)}"
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    # One write, not print's two (text, then newline): another thread's output can land between
    # those, inside a form URL or curl command that someone is about to copy.
    out = sys.stdout
    out.write(text + "\n")
    out.flush()


def _announce(event: Event) -> None:
    # One line each, never wrapped or split, so a triple-click copies the whole URL or command.
    import shlex

    from . import _html
    from ._task_types import type_name

    left = _html.time_left(seconds_left(event._request))
    prompt = _html.one_line(_markdown.plain(event.prompt, event.prompt_type))
    _say(f"waiting for {event.name!r} ({type_name(event.data_type)}, {left}): {prompt}")
    _say(f"form: {event.form_url}")
    if event._unidentified:  # the form and curl refuse everyone: a writer to the root names the person
        root = shlex.quote(event._store.root)
        _say(f"answer: hitl submit --root {root} --as IDENTITY {event.request_id} VALUE ({event._unidentified})")
    else:
        _say(f"curl: {event.curl_command}")
    if event._notify_targets:
        _notify.announce(event._notify_targets, event, event._store, event._request)
    _update_report(event, None)


#: Seconds a report write may take before it is given up (and logged).
_REPORT_WRITE_SECONDS = 10.0
_report_writes: dict[int, bool] = {}  # id(report) -> whether another write is wanted after the running one


def _update_report(event: Event, response: Record | None) -> None:
    """Show the event (and its answer, once there is one) in the task's Flyte report, if it has one.

    The tab is replaced at once; writing the report out happens in the background and never holds up
    the wait: a blocking wait in an ``async def`` task holds Flyte's event loop, which the write may need.
    """
    report = _flyte.current_report()
    if report is None:
        return
    from . import _html

    report.get_tab(f"HITL: {event.name}").replace(_html.report_section(event, response))
    key = id(report)
    with _lock:
        if key in _report_writes:  # a write is running: it goes once more, with this tab in it
            _report_writes[key] = True
            return
        _report_writes[key] = False
    # In a thread that carries this thread's context variables (Flyte's task context).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(_write_report, key), name="hitl-report", daemon=True).start()


def _write_report(key: int) -> None:
    import flyte.report

    while True:
        try:
            asyncio.run(asyncio.wait_for(flyte.report.flush.aio(), _REPORT_WRITE_SECONDS))
        except TimeoutError:
            logger.warning("could not update the Flyte report: no write finished within %g s", _REPORT_WRITE_SECONDS)
        except Exception as e:  # the report is a convenience: failing to write it must not fail the wait
            logger.warning("could not update the Flyte report: %s", str(e) or type(e).__name__)
        with _lock:
            if not _report_writes[key]:
                del _report_writes[key]
                return
            _report_writes[key] = False


def _after_fork_in_child() -> None:
    # The child has only the forking thread: other threads' waits, and a lock they held, are gone.
    global _lock
    _lock = threading.Lock()
    _waits.clear()
    _report_writes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
