"""Events that pause a task until a person or a program answers, and the wait loop.

Data flows one way. `Event.create` writes the question through `_store`. The form server
(`server.py`, embedded in this process unless ``FLYTE_HITL_ENDPOINT`` names another one) checks
and stores the answer, then calls `_waiters.notify` with it, which hands it to the waiting call
at once: the wait returns without reading storage again.
Answers stored by anything else (another server replica, the CLI) are found by polling the
root: one storage read per poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Literal, TypeVar, cast
from urllib.parse import quote

from . import _html, _notify, _wake
from ._aio import Blocking, blocking
from ._answers import expired_record, seconds_left, utc
from ._errors import EventTimeoutError, InvalidEventError, InvalidValueError
from ._store import Record, Store, default_root
from ._values import Value, parse_value, type_name

T = TypeVar("T")

EventScope = Literal["run"]
"""Where an event lives. Only "run" exists: an event belongs to the run (and action) that created it."""

ENDPOINT_ENV = "FLYTE_HITL_ENDPOINT"

_MAX_NAME = 200


_Waker = Callable[[str, Record], None]
"""Called with the root an outcome was stored under and the stored outcome record."""


class _Waiters:
    """In-process wake-ups, keyed by request id.

    The embedded server (and `submit` without a server) calls `notify` with the outcome it has
    just stored, after sending the reply, so a waiting call returns within milliseconds instead of
    at its next poll, and without reading the record back: at 10,000 waits those reads held the
    wake-ups up to 1.8 s behind the answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: dict[str, list[_Waker]] = {}  # lists: a set of one costs 150 bytes more

    # add/remove rather than a context manager: a waiting call holds what it allocates for as
    # long as it waits, and a generator-based one costs about 380 bytes a wait.
    def add(self, request_id: str, waker: _Waker) -> None:
        with self._lock:
            self._wakers.setdefault(request_id, []).append(waker)

    def remove(self, request_id: str, waker: _Waker) -> None:
        with self._lock:
            wakers = self._wakers.get(request_id)
            if wakers is not None and waker in wakers:
                wakers.remove(waker)
                if not wakers:
                    del self._wakers[request_id]

    def notify(self, root: str, request_id: str, response: Record) -> None:
        """Wake the waits on `request_id`: `response` is the outcome just stored under `root`.

        A wait on another root (the same id can exist under two) reads its own root instead.
        """
        with self._lock:
            wakers = list(self._wakers.get(request_id, ()))
        for wake in wakers:
            wake(root, response)


_waiters = _Waiters()
_stores: dict[str, Store] = {}
_occurrences: dict[tuple[str, ...], int] = {}
_state_lock = threading.Lock()


_wait_loop: asyncio.AbstractEventLoop | None = None


def _shared_wait_loop() -> asyncio.AbstractEventLoop:
    """This process's private event loop (in a daemon thread) that runs the polling of blocking waits."""
    global _wait_loop
    with _state_lock:
        if _wait_loop is None:
            _wait_loop = asyncio.new_event_loop()
            threading.Thread(target=_wait_loop.run_forever, name="hitl-waits", daemon=True).start()
        return _wait_loop


def _forget_wait_loop() -> None:
    global _wait_loop
    _wait_loop = None  # a forked child has the loop object but not its thread


os.register_at_fork(after_in_child=_forget_wait_loop)


def _store_for(root: str) -> Store:
    with _state_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = Store(root)
        return store


def _endpoint_for(store: Store) -> str:
    """The form server's URL: ``$FLYTE_HITL_ENDPOINT``, the deployed app in a cluster task, or an embedded one."""
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        return endpoint.rstrip("/")
    import flyte

    tctx = flyte.ctx()
    if tctx and tctx.is_in_cluster():
        # A server in this pod is out of a person's reach: links go to the deployed form server app.
        from ._deploy import served_endpoint

        return served_endpoint(store)
    from . import server

    return server.embedded_server(store, functools.partial(_waiters.notify, store.root))


def _new_request_id(name: str) -> str:
    """A request id that a re-run of the same task finds again.

    Inside a Flyte task it is derived from the run, the action, the event name and how many events
    of that name this action created before; elsewhere it is random.
    """
    import flyte

    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:48] or "event"
    tctx = flyte.ctx()
    if not tctx:
        return f"{slug}-{uuid.uuid4().hex[:24]}"
    action = tctx.action
    key = tuple(str(p or "") for p in (action.org, action.project, action.domain, action.run_name, action.name, name))
    with _state_lock:
        occurrence = _occurrences[key] = _occurrences.get(key, 0) + 1
    digest = hashlib.sha256("\x1f".join((*key, str(occurrence))).encode()).hexdigest()
    return f"{slug}-{digest[:24]}"


def _check_seconds(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidEventError(f"{label} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_args(name: object, data_type: object, scope: object, prompt: object, timeout: object, poll: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidEventError(f"event name must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME:
        raise InvalidEventError(f"event name is {len(name)} characters long; the limit is {_MAX_NAME}")
    if scope != "run":
        raise InvalidEventError(f"scope must be 'run', got {scope!r}")
    if not isinstance(prompt, str):
        raise InvalidEventError(f"prompt must be a string, got {prompt!r}")
    _check_seconds("timeout_seconds", timeout)
    _check_seconds("poll_interval_seconds", poll)
    return type_name(data_type)


def _check_choices(type_str: str, choices: object, default: object) -> tuple[list[Value] | None, Value | None]:
    """The choices and default as the event's type; InvalidEventError names any that does not fit."""
    checked: list[Value] | None = None
    if choices is not None:
        if type_str == "bool":
            raise InvalidEventError("choices are for str, int and float events; a bool event already has two")
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise InvalidEventError(f"choices must be a list of values, got {choices!r}")
        try:
            checked = [parse_value(c, type_str) for c in choices]
        except InvalidValueError as e:
            raise InvalidEventError(f"choices must all be {type_str}: {e}") from e
        if not checked or len(set(checked)) != len(checked):
            raise InvalidEventError(f"choices must be a non-empty list of distinct values, got {choices!r}")
    if default is None:
        return checked, None
    try:
        return checked, parse_value(default, type_str, choices=checked)
    except InvalidValueError as e:
        raise InvalidEventError(f"default {default!r} does not fit the event: {e}") from e


class Event(Generic[T]):
    """A question waiting for one typed answer from a person (web form) or a program (JSON).

    Create events with `new_event` (or `Event.create`); both have an ``.aio`` variant.

    Example:
        >>> event = new_event("approve", data_type=bool, prompt="Ship it?")
        >>> approved = event.wait()  # blocks until someone answers
    """

    #: Seconds between the "waiting for ... left" lines on the console.
    note_every_seconds: float = 60.0
    #: The clock that deadlines are measured on; tests may replace it.
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self,
        request: Record,
        data_type: type[T],
        poll_interval_seconds: float,
        store: Store,
        endpoint: str,
    ) -> None:
        self._request = request
        self._data_type = data_type
        self._poll = poll_interval_seconds
        self._store = store
        self._endpoint = endpoint
        self._announced = False
        self._response: Record | None = None
        self._notify_url: str | None = None

    @property
    def name(self) -> str:
        """The event's name, as given to `new_event`."""
        return cast(str, self._request["event_name"])

    @property
    def scope(self) -> EventScope:
        """Always "run"."""
        return cast(EventScope, self._request["scope"])

    @property
    def data_type(self) -> type[T]:
        """The Python type of the answer: int, float, str or bool."""
        return self._data_type

    @property
    def prompt(self) -> str:
        """The question shown to the person."""
        return cast(str, self._request["prompt"])

    @property
    def request_id(self) -> str:
        """The id of the stored event; stable across re-runs of the same task."""
        return cast(str, self._request["request_id"])

    @property
    def timeout_seconds(self) -> float:
        """Seconds the event waits for an answer, counted from its creation."""
        return cast(float, self._request["timeout_seconds"])

    @property
    def poll_interval_seconds(self) -> float:
        """Seconds between storage reads while waiting."""
        return self._poll

    @property
    def endpoint(self) -> str:
        """Base URL of the form server."""
        return self._endpoint

    @property
    def token(self) -> str:
        """The event's secret token: whoever holds it may answer. Share the form URL, not your logs."""
        return cast(str, self._request["token"])

    @property
    def form_url(self) -> str:
        """The web form's URL, carrying the token."""
        return f"{self._endpoint}/form/{self.request_id}?token={quote(self.token, safe='')}"

    @property
    def api_url(self) -> str:
        """The JSON endpoint that programs POST answers to."""
        return f"{self._endpoint}/submit/json"

    @property
    def expires_at(self) -> str:
        """When the event stops taking answers (UTC, ISO 8601)."""
        return cast(str, self._request["expires_at"])

    @property
    def choices(self) -> list[Value] | None:
        """The allowed answers, or None when any value of `data_type` is allowed."""
        return cast("list[Value] | None", self._request.get("choices"))

    @property
    def default(self) -> Value | None:
        """The value `wait()` returns when the timeout passes, or None (then it raises)."""
        return cast("Value | None", self._request.get("default"))

    @property
    def response(self) -> Record | None:
        """The stored outcome once `wait()` has returned: the value and its audit trail
        (``answered_at``, ``via``, ``client``, ``comment``, ``identity``), or the expiry mark."""
        return self._response

    @property
    def curl_command(self) -> str:
        """A one-line curl command that answers the event (replace the value placeholder)."""
        return _html.curl_command(self.api_url, self.request_id, self.token, type_name(self._data_type))

    def __repr__(self) -> str:
        return (
            f"Event(name={self.name!r}, scope={self.scope!r}, data_type={type_name(self._data_type)}, "
            f"request_id={self.request_id!r}, endpoint={self._endpoint!r})"
        )

    def _create(
        cls,
        name: str,
        data_type: type[T],
        scope: EventScope = "run",
        prompt: str = "Please provide a value",
        timeout_seconds: float = 3600,
        poll_interval_seconds: float = 5,
        *,
        choices: list[T] | None = None,
        default: T | None = None,
        notify: str | None = None,
        comment_required_on_reject: bool = False,
    ) -> Event[T]:
        type_str = _check_args(name, data_type, scope, prompt, timeout_seconds, poll_interval_seconds)
        checked_choices, checked_default = _check_choices(type_str, choices, default)
        notify_url = _notify.check_url(notify if notify is not None else os.environ.get(_notify.NOTIFY_ENV) or None)
        store = _store_for(default_root())
        endpoint = _endpoint_for(store)
        request_id = _new_request_id(name)
        now = time.time()
        fresh = {
            "request_id": request_id,
            "event_name": name,
            "scope": scope,
            "prompt": prompt,
            "data_type": type_str,
            "token": secrets.token_urlsafe(24),
            "created_at": utc(now),
            "expires_at": utc(now + float(timeout_seconds)),
            "timeout_seconds": timeout_seconds,
            "endpoint": endpoint,
        }
        optional = {
            "choices": checked_choices,
            "default": checked_default,
            "comment_required_on_reject": comment_required_on_reject or None,
            "wake": _wake.address(request_id),  # where writers send this process wake-ups
        }
        fresh.update({k: v for k, v in optional.items() if v is not None})
        # Create first: a new event is one write (one request on an object store, where reading
        # first made it two). A refused create means the event exists, made by an earlier run of
        # this task (or a racing process): re-attach to it.
        request = fresh if store.create_request(fresh) else store.read_request(request_id)
        if request is None or request.get("event_name") != name or request.get("data_type") != type_str:
            raise InvalidEventError(
                f"request_id {request_id!r} already holds event {request and request.get('event_name')!r} "
                f"of type {request and request.get('data_type')!r}, not {name!r} of type {type_str!r}"
            )
        event = cls(request, data_type, float(poll_interval_seconds), store, endpoint)
        # Kept off storage: a webhook URL often carries a secret, and a re-run passes it again.
        event._notify_url = notify_url
        return event

    create = Blocking(_create, bind="class")

    def _wait(self) -> T:
        # The calling thread sleeps on one lock; a shared loop does the polling (see _wait_aio).
        # Threads that each wake on their own timer every poll starve each other of the GIL: at
        # 10,000 waits a 2-core machine spent its time in the scheduler and never answered.
        # A bare lock, not run_coroutine_threadsafe's future: a parked thread holds less memory.
        loop = _shared_wait_loop()
        parked = _Parked(self._wait_aio(inline=self._store.is_local))
        # The task runs in this thread's context variables (Flyte's task context).
        loop.call_soon_threadsafe(parked.start, loop, context=contextvars.copy_context())
        try:
            parked.finished.acquire()
        except BaseException:  # interrupted (Ctrl-C): stop polling for a wait nobody is in
            loop.call_soon_threadsafe(parked.cancel)
            raise
        assert parked.task is not None
        return parked.task.result()

    async def _wait_aio(self, inline: bool = False) -> T:
        # Between polls the coroutine awaits a bare future that a timer or the in-process server
        # settles, so it holds no thread (and no extra task); only the storage reads go through
        # asyncio.to_thread. Thousands of waits share a handful of threads.
        # `inline`: blocking waits on a local root pass True, and their shared private loop then
        # reads the small record itself (tens of microseconds) after the first pass, instead of
        # handing every poll to a worker thread. With 10,000 waits those hand-offs came 2,000 a
        # second and starved the wake-ups: the last one came up to 54 s after the last answer.
        # The price: while a local read is retried after an I/O error, the other blocking waits'
        # wake-ups wait too. `.aio` waits run on the caller's loop and keep the worker thread.
        loop = _WaitLoop(self)
        running = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] | None = None
        notified = True  # the first pass reads storage at once
        stored: Record | None = None  # the outcome an in-process notifier stored under our root

        def on_loop_notified(root: str, response: Record) -> None:
            nonlocal notified, stored
            notified = True  # kept until the next pass, whatever woke the sleeper first
            if root == self._store.root:
                stored = response
            if sleeper is not None:
                _settle(sleeper)

        def waker(root: str, response: Record) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
                running.call_soon_threadsafe(on_loop_notified, root, response)

        def on_wake() -> None:  # another process stored an outcome: read storage now
            with contextlib.suppress(RuntimeError):
                running.call_soon_threadsafe(on_loop_notified, "", {})

        # Before the first read, so an outcome stored after it is announced to this wait.
        if inline:
            unlisten = _wake.listen(self._store, self._request, on_wake)
        else:
            unlisten = await asyncio.to_thread(_wake.listen, self._store, self._request, on_wake)
        _waiters.add(self.request_id, waker)
        answered_by_poll = False
        try:
            while True:
                woken, notified = notified, False
                if stored is not None:  # the first writer's outcome, as a read would return it
                    if inline:
                        return cast(T, _outcome(self, dict(stored)))
                    return cast(T, await asyncio.to_thread(_outcome, self, dict(stored)))
                if inline and self._announced:
                    done, value = loop.step(woken)
                else:
                    done, value = await asyncio.to_thread(loop.step, woken)
                if done:
                    answered_by_poll = not woken and (self._response or {}).get("status") == "completed"
                    return cast(T, value)
                if notified:  # an answer arrived during the step: read again at once
                    continue
                sleeper = running.create_future()
                timer = running.call_later(loop.sleep_seconds(), _settle, sleeper)
                try:
                    await sleeper
                finally:
                    timer.cancel()
                    sleeper = None
        finally:
            unlisten(answered_by_poll=answered_by_poll)
            _waiters.remove(self.request_id, waker)

    wait = Blocking(_wait, _wait_aio, bind="instance")
    """Block until the event is answered and return the answer as `data_type`.

    Raises `EventTimeoutError` (a `TimeoutError`) once `timeout_seconds` have passed since the
    event was created; the stored event is then marked expired so late answers are refused.
    ``await event.wait.aio()`` does the same without blocking the event loop.
    """


class _Parked:
    """A blocking wait's task on the shared loop, and the lock its calling thread sleeps on."""

    __slots__ = ("coro", "finished", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro: Coroutine[Any, Any, Any] | None = coro
        self.task: asyncio.Task[Any] | None = None
        self.finished = threading.Lock()
        self.finished.acquire()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: run the wait as a task, and let the caller go when it is done."""
        assert self.coro is not None
        self.task, self.coro = loop.create_task(self.coro), None
        self.task.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        self.finished.release()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        elif self.coro is not None:  # interrupted before it started
            self.coro.close()
            self.coro = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _WaitLoop:
    """The state of one wait: when to read storage next, when to print, when to give up."""

    def __init__(self, event: Event[Any]) -> None:
        self._event = event
        self._clock = event.clock
        now = self._clock()
        self._deadline = now + seconds_left(event._request)
        self._next_poll = now
        self._next_note = now + event.note_every_seconds

    def sleep_seconds(self) -> float:
        return max(0.0, min(self._next_poll, self._next_note, self._deadline) - self._clock())

    def step(self, woken: bool) -> tuple[bool, Any]:
        """One pass: read storage if woken or due, expire if past the deadline. Returns (done, value)."""
        event, now = self._event, self._clock()
        if not event._announced:
            event._announced = True
            _announce(event)
        if woken or now >= self._next_poll or now >= self._deadline:
            self._next_poll = now + event.poll_interval_seconds
            if woken or now >= self._deadline:
                response = event._store.read_response(event.request_id)
            else:  # a timed poll: many waits on one object store share a listing per interval
                response = event._store.poll_response(event.request_id, event.poll_interval_seconds)
            if response is not None:
                return True, _outcome(event, response)
        if now >= self._deadline:
            expired = expired_record(event._request)
            if event._store.create_response(event.request_id, expired):
                response = expired
            else:  # an answer landed between our read and the expiry mark: it wins
                response = event._store.read_response(event.request_id) or expired
            return True, _outcome(event, response)
        if now >= self._next_note:
            self._next_note = now + event.note_every_seconds
            _say(f"waiting for {event.name!r} … {_html.time_left(max(1.0, self._deadline - now))}")
        return False, None


def _outcome(event: Event[Any], response: Record) -> Any:
    event._response = response
    if response.get("status") != "completed":
        if not response.get("default_applied"):
            _say(f"{event.name!r} expired without an answer")
            _update_report(event, response)
            raise EventTimeoutError(event.name, event.request_id, event.timeout_seconds)
        value = parse_value(response.get("value"), type_name(event.data_type))
        _say(f"{event.name!r} timed out; using its default {value!r}")
        _update_report(event, response)
        return value
    value = parse_value(response.get("value"), type_name(event.data_type))
    source = _html.source(response)
    comment = f', comment "{_html.one_line(str(response["comment"]), 80)}"' if response.get("comment") else ""
    _say(f"{event.name!r} answered: {value!r}" + (f" (via {source}{comment})" if source or comment else ""))
    _update_report(event, response)
    return value


def _say(line: str) -> None:
    """Print one console line; text the console cannot encode is escaped rather than lost or fatal."""
    text = f"[hitl] {line}"
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


def _announce(event: Event[Any]) -> None:
    # One line each, never wrapped or split, so a triple-click copies the whole URL or command.
    left = _html.time_left(seconds_left(event._request))
    _say(f"waiting for {event.name!r} ({type_name(event.data_type)}, {left}): {_html.one_line(event.prompt)}")
    _say(f"form: {event.form_url}")
    _say(f"curl: {event.curl_command}")
    if event._notify_url:
        _notify.send(event._notify_url, _notify.payload(event))
    _update_report(event, None)


def _update_report(event: Event[Any], response: Record | None) -> None:
    """Show the event (and its answer, once there is one) in the task's Flyte report, if it has one."""
    import flyte

    if not flyte.ctx():
        return
    from flyte._context import internal_ctx

    report = internal_ctx().get_report()
    if report is None:
        return
    report.get_tab(f"HITL: {event.name}").replace(_html.report_section(event, response))
    import flyte.report

    def flush() -> None:
        # The report is a convenience: failing to write it must not fail the wait.
        try:
            asyncio.run(flyte.report.flush.aio())
        except Exception as e:
            logging.getLogger("flyteplugins.hitl").warning("could not update the Flyte report: %s", e)

    # flush is async; run it on a private loop in a thread that carries this thread's context,
    # which works whether or not the caller is itself inside an event loop.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(flush,), daemon=True)
    thread.start()
    thread.join()


@blocking()
def new_event(
    name: str,
    data_type: type[T],
    scope: EventScope = "run",
    prompt: str = "Please provide a value",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    choices: list[T] | None = None,
    default: T | None = None,
    notify: str | None = None,
) -> Event[T]:
    """Create a human-in-the-loop event (or re-attach to it when a task is re-run).

    Args:
        name: A descriptive name for the event, shown in logs and on the form.
        data_type: The type of the answer: int, float, str or bool.
        scope: Where the event lives; only "run" is supported.
        prompt: The question shown to the person.
        timeout_seconds: How long to wait for an answer, from creation (default: one hour).
        poll_interval_seconds: How often to read storage for answers from other servers (default: 5).
        choices: The only answers allowed (str, int and float events); the form offers them as buttons.
        default: Returned by ``wait()`` when the timeout passes, instead of raising; recorded as applied.
        notify: A URL to POST a JSON notice to when the event starts waiting (default:
            ``$FLYTE_HITL_NOTIFY_URL``); a Slack or Mattermost incoming webhook shows its ``text`` as is.

    Returns:
        The `Event`; call ``event.wait()`` (or ``await event.wait.aio()``) for the answer.

    Example:
        >>> event = new_event("approve", data_type=bool, prompt="Ship it?")
        >>> event = await new_event.aio("x", data_type=int, prompt="What should I add to x?")
        >>> event = new_event("size", data_type=str, choices=["S", "M", "L"], default="M")
    """
    return Event.create(
        name,
        data_type,
        scope,
        prompt,
        timeout_seconds,
        poll_interval_seconds,
        choices=choices,
        default=default,
        notify=notify,
    )


@blocking()
def approve(
    name: str,
    prompt: str = "Do you approve?",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    default: bool | None = None,
    require_reject_comment: bool = False,
    notify: str | None = None,
) -> bool:
    """Ask a person to approve or reject, and return True for approve.

    The responder may add a comment (kept in the audit trail); with ``require_reject_comment``
    a rejection without one is refused. Without ``default``, no answer in time raises
    `EventTimeoutError`.

    Example:
        >>> if hitl.approve("deploy", prompt="Deploy model v3 to production?"):
        ...     deploy()
        >>> ok = await hitl.approve.aio("deploy", require_reject_comment=True)
    """
    event = Event.create(
        name,
        bool,
        "run",
        prompt,
        timeout_seconds,
        poll_interval_seconds,
        default=default,
        notify=notify,
        comment_required_on_reject=require_reject_comment,
    )
    return event.wait()
