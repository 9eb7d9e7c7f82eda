"""Events that pause a task until a person or a program answers, and the wait loop.

Data flows one way. `Event.create` writes the question through `_store`. The form server
(`server.py`, embedded in this process unless ``FLYTE_HITL_ENDPOINT`` names another one) checks
and stores the answer, then calls `_waiters.notify` with it, which hands it to the waiting call
at once: the wait returns without reading storage again. A writer in another process (another
server replica, the CLI) sends the waiting process a wake-up (`_wake.py`), after which the wait
reads the outcome from storage; without one, the wait finds it by polling the root, one storage
read per poll interval. How a wait sleeps and is woken is in `_engine.py`.
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
import weakref
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, cast
from urllib.parse import quote

from typing_extensions import Self

from . import _engine, _flyte, _html, _markdown, _notify, _wake
from ._aio import Blocking, BlockingMethod, blocking
from ._answers import expired_record, seconds_left, utc
from ._errors import EventTimeoutError, InvalidEventError, StorageError
from ._store import REQUEST_FILE, RESPONSE_FILE, Record, Store, default_root
from ._values import build_value, declare, forget, remember, spec_for, type_name

if TYPE_CHECKING:
    from ._slack import Slack

#: Where `notify` sends word that an event waits: webhook URLs and Slack channels.
Notify = Union[str, "Slack", Sequence[Union[str, "Slack"]]]

T = TypeVar("T")
V = TypeVar("V")

EventScope = Literal["run"]
"""Where an event lives. Only "run" exists: an event belongs to the run (and action) that created it."""

ENDPOINT_ENV = "FLYTE_HITL_ENDPOINT"

_MAX_NAME = 200
#: The longest timeout: ten years. Deadlines are stored as dates, and a date past the year 9999 has no form.
MAX_TIMEOUT_SECONDS = 10 * 365 * 24 * 3600

logger = logging.getLogger("flyteplugins.hitl")

_waiters = _engine.waiters  # the embedded server and `submit` hand outcomes to waits through it
_stores: dict[str, Store] = {}
_readers: weakref.WeakKeyDictionary[Store, Store] = weakref.WeakKeyDictionary()
_state_lock = threading.Lock()


def _store_for(root: str) -> Store:
    with _state_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = Store(root)
        return store


def _reader_for(store: Store) -> Store:
    """`store`'s root with one attempt per read or write: the wait loop itself retries, asleep on its
    signal (so an answer handed over during an outage still wakes it), and an ``.aio`` wait holds a
    worker thread for one storage request only, not for a whole series of retries."""
    with _state_lock:
        reader = _readers.get(store)
        if reader is None:
            reader = _readers[store] = Store(store.root)
            reader.attempts = 1
            reader.batch_from = store.batch_from
        return reader


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


def _new_token() -> str:
    """A random token (32 URL-safe characters) that does not start with "-", which a command line
    such as ``hitl status ID --token TOKEN`` would take for an option."""
    while (token := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return token


def _new_request_id(name: str) -> str:
    """A request id that a re-run of the same task finds again.

    Inside a Flyte task it is derived from the run, the action, the event name and how many events
    of that name this attempt of the action created before, so every attempt (a retry in the same
    process or a new one) finds the events the first attempt created; elsewhere it is random.
    """
    import flyte

    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:48] or "event"
    tctx = flyte.ctx()
    if not tctx:
        return f"{slug}-{uuid.uuid4().hex[:24]}"
    action = tctx.action
    key = tuple(str(p or "") for p in (action.org, action.project, action.domain, action.run_name, action.name, name))
    with _state_lock:  # events created from several threads of one task still get distinct numbers
        occurrence = _flyte.occurrence(tctx, name)
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
    if _check_seconds("timeout_seconds", timeout) > MAX_TIMEOUT_SECONDS:
        raise InvalidEventError(f"timeout_seconds must be at most {MAX_TIMEOUT_SECONDS:,} (ten years), got {timeout!r}")
    _check_seconds("poll_interval_seconds", poll)
    return type_name(data_type)


def _check_reattached(request: Record | None, fresh: Record) -> Record:
    """The stored event a re-run re-attaches to, if it is the one this call declares."""
    request_id, name, type_str = fresh["request_id"], fresh["event_name"], fresh["data_type"]
    if request is None or request.get("event_name") != name or request.get("data_type") != type_str:
        raise InvalidEventError(
            f"request_id {request_id!r} already holds event {request and request.get('event_name')!r} "
            f"of type {request and request.get('data_type')!r}, not {name!r} of type {type_str!r}"
        )
    for key in ("schema", "choices", "default"):
        if request.get(key) != fresh.get(key):
            raise InvalidEventError(
                f"event {name!r} (request_id {request_id!r}) exists already, with {key} {request.get(key)!r}; "
                f"this call asks for {fresh.get(key)!r}. A re-run keeps the event it created first: "
                "give the event a new name to ask a different question"
            )
    return request


def _create(
    name: str,
    data_type: type[V],
    scope: EventScope = "run",
    prompt: str = "Please provide a value",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    choices: list[V] | None = None,
    default: V | None = None,
    notify: Notify | None = None,
    comment_required_on_reject: bool = False,
    details: Mapping[str, Any] | None = None,
) -> Event[V]:
    """Create the event, or re-attach to it in a re-run task: `Event.create`, the same as `new_event`.

    Example:
        >>> event = hitl.Event.create("approve", data_type=bool, prompt="Ship it?")
        >>> event = await hitl.Event.create.aio("approve", data_type=bool)
        >>> event = await hitl.Event.create("approve", data_type=bool)  # 2.12.1's form
    """
    type_str = _check_args(name, data_type, scope, prompt, timeout_seconds, poll_interval_seconds)
    declared = declare(data_type, choices, default)
    checked_details = _markdown.check_details(details)
    notify_targets = _notify.targets(notify)
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
        "token": _new_token(),
        "created_at": utc(now),
        "expires_at": utc(now + float(timeout_seconds)),
        "timeout_seconds": timeout_seconds,
        "endpoint": endpoint,
    }
    optional = {
        "schema": declared.get("schema"),
        "choices": declared.get("choices"),
        "default": declared.get("default"),
        "details": checked_details,
        "comment_required_on_reject": comment_required_on_reject or None,
        "wake": _wake.address(request_id),  # where writers send this process wake-ups
        "slack": any(not isinstance(t, str) for t in notify_targets) or None,  # its messages: <id>/slack.json
    }
    fresh.update({k: v for k, v in optional.items() if v is not None})
    # Create first: a new event is one write (one request on an object store, where reading
    # first made it two). A refused create means the event exists, made by an earlier run of
    # this task (or a racing process): re-attach to it.
    request = fresh if store.create_request(fresh) else _check_reattached(store.read_request(request_id), fresh)
    event = Event(request, data_type, float(poll_interval_seconds), store, endpoint)
    remember(request_id, spec_for(data_type))
    # Kept off storage: a webhook URL often carries a secret, and a re-run passes it again.
    event._notify_targets = notify_targets
    return event


class Event(Generic[T]):
    """A question waiting for one typed answer from a person (web form) or a program (JSON).

    Create events with `new_event` (or `Event.create`); both have an ``.aio`` variant. An event is
    also awaitable, to itself: ``await Event.create(...)``, as written for 2.12.1, gives the event.

    Example:
        >>> event = new_event("approve", data_type=bool, prompt="Ship it?")
        >>> approved = event.wait()  # blocks until someone answers
    """

    #: Seconds between the "waiting for ... left" lines on the console.
    note_every_seconds: float = 60.0
    #: Seconds past its deadline that a wait keeps trying, through a storage outage, to store the expiry mark.
    expiry_grace_seconds: float = 60.0
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
        self._notify_targets: list[_notify.Target] = []

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
        """The Python type of the answer, as given to `new_event` (int, bool, a dataclass, ...)."""
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
    def request_path(self) -> str:
        """Where the question is stored (a local path or an object-store URL), as 2.12.1's ``request_path``."""
        return self._store.path(self.request_id, REQUEST_FILE)

    @property
    def response_path(self) -> str:
        """Where the outcome will be stored, as 2.12.1's ``response_path``. A writer with access to the
        root may store an answer there itself (a JSON record ``{"status": "completed", "value": ...}``,
        2.12.1's format); the servers never take a path from a client."""
        return self._store.path(self.request_id, RESPONSE_FILE)

    @property
    def expires_at(self) -> str:
        """When the event stops taking answers (UTC, ISO 8601)."""
        return cast(str, self._request["expires_at"])

    @property
    def choices(self) -> list[T] | None:
        """The allowed answers (as `data_type`), or None when any value of `data_type` is allowed."""
        choices = self._request.get("choices")
        return None if choices is None else [build_value(self._data_type, c) for c in choices]

    @property
    def default(self) -> T | None:
        """The value `wait()` returns when the timeout passes (as `data_type`), or None (then it raises)."""
        default = self._request.get("default")
        return None if default is None else cast(T, build_value(self._data_type, default))

    @property
    def response(self) -> Record | None:
        """The stored outcome once `wait()` has returned: the value and its audit trail
        (``answered_at``, ``via``, ``client``, ``comment``, ``identity``), or the expiry mark."""
        return self._response

    @property
    def curl_command(self) -> str:
        """A one-line curl command that answers the event (replace the value placeholder). With
        `choices`, its value is the first choice (as stored: an Enum member's value), so it runs as is."""
        choices = self._request.get("choices")
        example = choices[0] if choices else spec_for(self._data_type).example()
        return _html.curl_command(self.api_url, self.request_id, self.token, example)

    def __repr__(self) -> str:
        return (
            f"Event(name={self.name!r}, scope={self.scope!r}, data_type={type_name(self._data_type)}, "
            f"request_id={self.request_id!r}, endpoint={self._endpoint!r})"
        )

    create = Blocking(_create)

    def __await__(self) -> Generator[Any, None, Self]:
        # 2.12.1's `create` was a coroutine, so code written for it says `await Event.create(...)`.
        yield from ()
        return self

    def _wait(self) -> T:
        """Block until the event is answered and return the answer as `data_type`.

        Raises `EventTimeoutError` (a `TimeoutError`) once `timeout_seconds` have passed since the
        event was created; the stored event is then marked expired so late answers are refused.
        Transient storage errors (timeouts, refused connections, 5xx) do not end the wait before its
        deadline: it reads again with a capped back-off, and logs the outage when it starts and ends.
        ``await event.wait.aio()`` does the same without blocking the event loop or holding a thread.

        Example:
            >>> value = event.wait()
            >>> value = await event.wait.aio()
        """
        signal = threading.Event()
        with _engine.registered(self._store, self._request, signal.set) as wake:
            # Before the first read, so that an outcome stored after it reaches this wait by a wake-up.
            unlisten = _wake.listen(self._store, self._request, wake.read_now)
            by_poll = False
            try:
                poller = _Poller(self)
                while True:
                    signal.clear()  # before the read: a wake-up during it makes the next sleep return at once
                    woken = wake.take()
                    if wake.handed is not None:  # the first writer's outcome, as a read would return it
                        return cast(T, _outcome(self, dict(wake.handed)))
                    done, value = poller.step(poller.clock(), woken)
                    if done:
                        by_poll = poller.missed_wake_up(woken, wake)
                        return cast(T, value)
                    signal.wait(poller.sleep_seconds())
            finally:
                unlisten(answered_by_poll=by_poll)

    async def _wait_aio(self) -> T:
        # The same loop as `_wait`, asleep on an asyncio.Event instead: it holds no thread between
        # polls, and each storage request goes to a worker thread (context variables included).
        loop = asyncio.get_running_loop()
        signal = asyncio.Event()

        def set_signal() -> None:  # from any thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(signal.set)

        with _engine.registered(self._store, self._request, set_signal) as wake:
            unlisten = await asyncio.to_thread(_wake.listen, self._store, self._request, wake.read_now)
            by_poll = False
            try:
                poller = _Poller(self)
                while True:
                    signal.clear()
                    woken = wake.take()
                    if wake.handed is not None:
                        return cast(T, _outcome(self, dict(wake.handed)))
                    now = poller.clock()
                    if poller.reads_storage(now, woken):
                        done, value = await asyncio.to_thread(poller.step, now, woken)
                    else:
                        done, value = poller.step(now, woken)  # the console line at most
                    if done:
                        by_poll = poller.missed_wake_up(woken, wake)
                        return cast(T, value)
                    timer = loop.call_later(poller.sleep_seconds(), signal.set)
                    try:
                        await signal.wait()
                    finally:
                        timer.cancel()
            finally:
                unlisten(answered_by_poll=by_poll)

    wait = BlockingMethod(_wait, _wait_aio)


class _Poller:
    """The state of one wait: when to read storage next, when to print, when to give up.

    `step` does one pass; a pass that reads storage makes one storage request (two when an answer
    races the expiry mark). Transient storage errors before the deadline (and for a grace period
    after it, to store the expiry mark) make the next read come sooner, with a capped back-off.
    """

    def __init__(self, event: Event[Any]) -> None:
        self._event = event
        self._reader = _reader_for(event._store)
        self.clock = event.clock
        now = self.clock()
        self._deadline = now + seconds_left(event._request)
        self._next_poll = now  # the first pass reads at once
        self._next_note = now + event.note_every_seconds
        self._backoff = 0.0  # while storage fails: the delay before the next read, else 0
        self._reads = 0
        if not event._announced:
            event._announced = True
            _announce(event)

    def reads_storage(self, now: float, woken: bool) -> bool:
        return woken or now >= self._next_poll or (not self._backoff and now >= self._deadline)

    def sleep_seconds(self) -> float:
        due = self._next_poll if self._backoff else min(self._next_poll, self._deadline)
        return min(max(0.0, min(due, self._next_note) - self.clock()), threading.TIMEOUT_MAX)

    def missed_wake_up(self, woken: bool, wake: _engine.Wake) -> bool:
        """Whether the answer the last pass read came at a timed poll that a wake-up should have
        beaten: not at the wait's first read (the answer may be older than the wait), not when woken,
        and not when this process's server stored it (it hands the answer over before the wait returns)."""
        return self._reads > 1 and not woken and wake.handed is None and _answered(self._event)

    def step(self, now: float, woken: bool) -> tuple[bool, Any]:
        """One pass at time `now`: read storage if woken or due, expire past the deadline. Returns (done, value)."""
        event = self._event
        if self.reads_storage(now, woken):
            self._reads += 1
            try:
                response, mine = self._read(now, direct=woken or bool(self._backoff))
            except StorageError as e:
                if not e.transient or now >= self._deadline + event.expiry_grace_seconds:
                    raise
                self._backoff = min(max(2 * self._backoff, _engine.FIRST_BACKOFF_SECONDS), _engine.MAX_BACKOFF_SECONDS)
                self._next_poll = now + self._backoff
                _engine.outages.failed(self._reader.root, e, self._backoff)
                response, mine = None, True
            else:
                if self._backoff:
                    self._backoff = 0.0
                    _engine.outages.answered(self._reader.root)
                self._next_poll = now + event.poll_interval_seconds
            if response is not None:
                if not mine:
                    _await_replies(event.request_id)
                return True, _outcome(event, response)
        if now >= self._next_note:
            self._next_note = now + event.note_every_seconds
            _say(f"waiting for {event.name!r} … {_html.time_left(max(1.0, self._deadline - now))}")
        return False, None

    def _read(self, now: float, direct: bool) -> tuple[Record | None, bool]:
        """The stored outcome (or the expiry mark this pass stored, past the deadline), and whether
        this wait wrote it."""
        event, reader = self._event, self._reader
        if now >= self._deadline:
            expired = expired_record(event._request)
            if reader.create_response(event.request_id, expired):
                return expired, True
            return reader.read_response(event.request_id) or expired, False  # an answer came first: it wins
        if direct:
            return reader.read_response(event.request_id), False
        # A timed poll: many waits on one object store share a listing per interval.
        return reader.poll_response(event.request_id, event.poll_interval_seconds), False


def _answered(event: Event[Any]) -> bool:
    """Whether the event's outcome is an answer (not an expiry mark)."""
    return (event._response or {}).get("status") == "completed"


def _await_replies(request_id: str) -> None:
    """Return once this process's server has written its replies for `request_id`, if it is sending one.

    A wait that finds its answer by reading storage may find it before the server that stored it has
    replied; if the program then ends at once, the person would see an error for an answer that counted.
    """
    server = sys.modules.get("flyteplugins.hitl.server")
    await_replies = getattr(server, "await_replies", None)
    if await_replies is not None:
        await_replies(request_id)


def _outcome(event: Event[Any], response: Record) -> Any:
    event._response = response
    if event._request.get("slack"):
        from . import _slack

        _slack.outcome_known(event._store, event._request, response)
    forget(event.request_id)  # settled: its type is no longer needed to check answers
    if response.get("status") != "completed":
        if not response.get("default_applied"):
            _say(f"{event.name!r} expired without an answer")
            _update_report(event, response)
            raise EventTimeoutError(event.name, event.request_id, event.timeout_seconds)
        value = build_value(event.data_type, response.get("value"))
        _say(f"{event.name!r} timed out; using its default {_shown(value)}")
        _update_report(event, response)
        return value
    value = build_value(event.data_type, response.get("value"))
    source = _html.source(response)
    comment = f', comment "{_html.one_line(str(response["comment"]), 80)}"' if response.get("comment") else ""
    _say(f"{event.name!r} answered: {_shown(value)}" + (f" (via {source}{comment})" if source or comment else ""))
    _update_report(event, response)
    return value


def _shown(value: object, limit: int = 200) -> str:
    """`value` for a console line: its repr, cut at `limit` characters (an answer may be a megabyte)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# C0 and C1 controls (ESC, CR, BS, ...) and the bidirectional overrides: shown escaped, so that
# text from a person (a comment, an identity, a name) can neither move the cursor nor fake a line.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_controls(text: str) -> str:
    return _CONTROL_RE.sub(lambda m: ascii(m.group())[1:-1], text)


def _say(line: str) -> None:
    """Print one console line, control characters escaped; text the console cannot encode is escaped
    rather than lost or fatal."""
    text = f"[hitl] {_escape_controls(line)}"
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
    if event._notify_targets:
        _notify.announce(event._notify_targets, event, event._store, event._request)
    _update_report(event, None)


#: Seconds a report write may take before it is given up (and logged).
_REPORT_WRITE_SECONDS = 10.0
_report_writes: dict[int, bool] = {}  # id(report) -> whether another write is wanted after the running one


def _update_report(event: Event[Any], response: Record | None) -> None:
    """Show the event (and its answer, once there is one) in the task's Flyte report, if it has one.

    The tab is replaced at once; writing the report out happens in the background and never holds up
    the wait: a blocking wait in an ``async def`` task holds Flyte's event loop, which the write may need.
    """
    report = _flyte.current_report()
    if report is None:
        return
    report.get_tab(f"HITL: {event.name}").replace(_html.report_section(event, response))
    key = id(report)
    with _state_lock:
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
        with _state_lock:
            if not _report_writes[key]:
                del _report_writes[key]
                return
            _report_writes[key] = False


def _after_fork_in_child() -> None:
    # The child has only the forking thread. A lock that another thread held at the fork stays
    # held forever, the locks inside cached stores included: start again with fresh ones.
    global _state_lock, _readers
    _state_lock = threading.Lock()
    _stores.clear()
    _readers = weakref.WeakKeyDictionary()
    _report_writes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
    notify: Notify | None = None,
    details: Mapping[str, Any] | None = None,
) -> Event[T]:
    """Create a human-in-the-loop event (or re-attach to it when a task is re-run).

    Args:
        name: A descriptive name for the event, shown in logs and on the form.
        data_type: The type of the answer: int, float, str, bool, date, datetime, an Enum, a Literal,
            list[...] of those, or a dataclass, TypedDict or pydantic model of those (see the README).
        scope: Where the event lives; only "run" is supported.
        prompt: The question shown to the person, in Markdown (plain text on the console).
        timeout_seconds: How long to wait for an answer, from creation (default: one hour; at most ten years).
        poll_interval_seconds: How often to read storage for answers from other servers (default: 5).
        choices: The only answers allowed (str, int, float, Enum and Literal events); the form offers
            them as buttons.
        default: Returned by ``wait()`` when the timeout passes, instead of raising; recorded as applied.
            For a structured type, an instance (``default=Review(score=3)``).
        notify: Where to say that the event waits, when its wait starts: a URL to POST a JSON notice to
            (a Slack or Mattermost incoming webhook shows its ``text`` as is), a `Slack` channel to post
            the question to with buttons to answer it there, or a list of those (default:
            ``$FLYTE_HITL_NOTIFY_URL`` and ``$FLYTE_HITL_SLACK_CHANNEL``).
        details: Facts for the decision (an agent's tool call, a model's metrics), shown under the
            prompt as a table on the form, in ``/status`` and in the report; JSON values only.

    Returns:
        The `Event`; call ``event.wait()`` (or ``await event.wait.aio()``) for the answer.

    Example:
        >>> event = new_event("approve", data_type=bool, prompt="Ship it?")
        >>> event = await new_event.aio("x", data_type=int, prompt="What should I add to x?")
        >>> event = new_event("size", data_type=str, choices=["S", "M", "L"], default="M")
        >>> review = new_event("review", data_type=Review, prompt="Label **img-42**", details={"model": 0.91})
    """
    return _create(
        name,
        data_type,
        scope,
        prompt,
        timeout_seconds,
        poll_interval_seconds,
        choices=choices,
        default=default,
        notify=notify,
        details=details,
    )


async def _approve_aio(
    name: str,
    prompt: str = "Do you approve?",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    default: bool | None = None,
    require_reject_comment: bool = False,
    notify: Notify | None = None,
    details: Mapping[str, Any] | None = None,
) -> bool:
    event = await Event.create.aio(
        name,
        bool,
        "run",
        prompt,
        timeout_seconds,
        poll_interval_seconds,
        default=default,
        notify=notify,
        comment_required_on_reject=require_reject_comment,
        details=details,
    )
    return await event.wait.aio()


@blocking(_approve_aio)
def approve(
    name: str,
    prompt: str = "Do you approve?",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    default: bool | None = None,
    require_reject_comment: bool = False,
    notify: Notify | None = None,
    details: Mapping[str, Any] | None = None,
) -> bool:
    """Ask a person to approve or reject, and return True for approve.

    The responder may add a comment (kept in the audit trail); with ``require_reject_comment``
    a rejection without one is refused. Without ``default``, no answer in time raises
    `EventTimeoutError`. ``details`` (a mapping) is shown under the prompt as a table.
    ``await approve.aio(...)`` waits without holding a thread.

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
        details=details,
    )
    return event.wait()
