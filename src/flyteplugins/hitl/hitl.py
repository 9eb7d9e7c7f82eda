"""Events that pause a task until a person or a program answers: the public API.

`new_event` (or `Event.create`) writes the question through `_store` and starts this process's form
server unless ``FLYTE_HITL_ENDPOINT`` names another one; `Event.wait` waits for the answer, as
`_wait.py` describes end to end; `approve` does both for a yes/no question.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, cast
from urllib.parse import quote

from typing_extensions import ParamSpec, Self, TypedDict, Unpack

from . import _flyte, _groups, _markdown, _notify, _policy, _wake
from ._aio import Blocking, BlockingMethod, blocking
from ._answers import utc
from ._errors import InvalidEventError
from ._store import REQUEST_FILE, RESPONSE_FILE, Record, Store, default_root
from ._wait import hand_over, wait_aio, wait_blocking

if TYPE_CHECKING:
    from ._slack import Slack

#: Where `notify` sends word that an event waits: webhook URLs and Slack channels.
Notify = Union[str, "Slack", Sequence[Union[str, "Slack"]]]

T = TypeVar("T")
V = TypeVar("V")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

EventScope = Literal["run"]
"""Where an event lives. Only "run" exists: an event belongs to the run (and action) that created it."""
PromptType = Literal["text", "markdown"]
"""How the form shows a prompt: verbatim ("text") or rendered as Markdown ("markdown")."""

ENDPOINT_ENV = "FLYTE_HITL_ENDPOINT"

_MAX_NAME = 200
#: The longest timeout: ten years. Deadlines are stored as dates, and a date past the year 9999 has no form.
MAX_TIMEOUT_SECONDS = 10 * 365 * 24 * 3600

logger = logging.getLogger("flyteplugins.hitl")

_stores: dict[str, Store] = {}
_state_lock = threading.Lock()


def _store_for(root: str) -> Store:
    with _state_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = Store(root)
        return store


def _endpoint_for(store: Store) -> tuple[str, bool]:
    """The form server's URL: ``$FLYTE_HITL_ENDPOINT``, the deployed app in a cluster task, or an
    embedded one; and whether it is embedded."""
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        return endpoint.rstrip("/"), False
    import flyte

    tctx = flyte.ctx()
    if tctx and tctx.is_in_cluster():
        # A server in this pod is out of a person's reach: links go to the deployed form server app.
        from ._deploy import served_endpoint

        return served_endpoint(store), False
    from . import server

    return server.embedded_server(store, functools.partial(hand_over, store.root)), True


def _unidentified(request: Record, endpoint: str, embedded: bool) -> str | None:
    """Why the form server of `request`, an event only a named person may answer, can identify nobody
    (the setting that is missing); None when it can, or cannot say (a server older than ``identifies``)."""
    if not _policy.needs_identity(request):
        return None
    if embedded:
        unset = _policy.identity_header() is None
        return f"this process's form server has no {_policy.IDENTITY_HEADER_ENV}" if unset else None
    from . import _http

    try:
        reply = _http.exchange("GET", f"{endpoint}/health", seconds=2.0, max_body=4096)
        identifies = json.loads(reply.body).get("identifies")
    except (_http.ExchangeError, ValueError, AttributeError):
        return None
    if identifies is False:
        return f"the form server at {endpoint} says it identifies nobody (its {_policy.IDENTITY_HEADER_ENV} is unset)"
    return None


def _warn_unanswerable(event: Event[Any]) -> None:
    """Log, at creation, what keeps the people named for `event` from answering where it is announced."""
    request, name = event._request, event.name
    if event._unidentified:
        logger.warning(
            "event %r (request_id %r) names who may answer, but %s: the form refuses everyone; answer with "
            "`hitl submit --root ... --as IDENTITY` or set %s",
            name,
            event.request_id,
            event._unidentified,
            _policy.IDENTITY_HEADER_ENV,
        )
    respondents = request.get("respondents") or []
    targets = event._notify_targets
    only_groups = respondents and all(r.startswith(_policy.GROUP_PREFIX) for r in respondents)
    if only_groups and targets and not any(isinstance(t, str) for t in targets):
        logger.warning(
            "event %r (request_id %r): its respondents are groups only and it is announced in Slack only, "
            "where a clicker has no groups: they can answer on the form only",
            name,
            event.request_id,
        )


#: The request id the next event created in this context takes: `new_events` numbers its items in
#: their order, then creates them concurrently.
_preset_request_id: ContextVar[str | None] = ContextVar("hitl_preset_request_id", default=None)
#: The token the next event created in this context takes: the items of `new_events` share one.
_preset_token: ContextVar[str | None] = ContextVar("hitl_preset_token", default=None)


def _new_token() -> str:
    """A random token (32 URL-safe characters) that does not start with "-", which a command line
    such as ``hitl status ID --token TOKEN`` would take for an option."""
    preset = _preset_token.get()
    if preset is not None:
        return preset
    import secrets

    while (token := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return token


def _new_request_id(name: str) -> str:
    """A request id that a re-run of the same task finds again.

    Inside a Flyte task it is derived from the run, the action, the event name and how many events
    of that name this attempt of the action created before, so every attempt (a retry in the same
    process or a new one) finds the events the first attempt created; elsewhere it is random.
    """
    preset = _preset_request_id.get()
    if preset is not None:
        return preset
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
    from ._task_types import type_name  # with the first event: not imported with the package

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
    for key in ("schema", "choices", "default", "respondents", "quorum", "allow_self_approval"):
        if request.get(key) != fresh.get(key):
            raise InvalidEventError(
                f"event {name!r} (request_id {request_id!r}) exists already, with {key} {request.get(key)!r}; "
                f"this call asks for {fresh.get(key)!r}. A re-run keeps the event it created first: "
                "give the event a new name to ask a different question"
            )
    return request


class _Asking(TypedDict, total=False):
    """The keyword arguments that `new_event`, `Event.create` and `approve` share (see `new_event`)."""

    notify: Notify | None
    details: Mapping[str, Any] | None
    prompt_type: PromptType
    respondents: Sequence[str] | None
    requester: str | None
    allow_self_approval: bool
    title: str | None
    group: str | None


_ASKING_DEFAULTS: dict[str, Any] = {
    "notify": None,
    "details": None,
    "prompt_type": "text",
    "respondents": None,
    "requester": None,
    "allow_self_approval": False,
    "title": None,
    "group": None,
}


def _asks(func: F) -> F:
    """`func`, whose ``**asking: Unpack[_Asking]`` stands for the keyword arguments of `_Asking`: shown
    as those by `inspect.signature` and `help`, each with its default, and checked as those (any other
    keyword is a `TypeError`, as for a function that lists them)."""
    signature = inspect.signature(func)
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    annotations = _Asking.__annotations__
    for key, default in _ASKING_DEFAULTS.items():
        annotation = getattr(annotations[key], "__forward_arg__", annotations[key])  # as written
        parameters.append(
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    shown = signature.replace(parameters=parameters)

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            shown.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{func.__name__.lstrip('_')}() {e}") from None
        return func(*args, **kwargs)

    checked.__signature__ = shown  # type: ignore[attr-defined]
    return cast(F, checked)


@_asks
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
    comment_required_on_reject: bool = False,
    quorum: int = 1,
    **asking: Unpack[_Asking],
) -> Event[V]:
    """Create the event, or re-attach to it in a re-run task: `Event.create`, the same as `new_event`.

    Example:
        >>> event = hitl.Event.create("approve", data_type=bool, prompt="Ship it?")
        >>> event = await hitl.Event.create.aio("approve", data_type=bool)
        >>> event = await hitl.Event.create("approve", data_type=bool)  # 2.12.1's form
    """
    from ._schema import remember
    from ._task_types import declare, spec_for

    options: dict[str, Any] = {**_ASKING_DEFAULTS, **asking}
    notify, details, prompt_type, respondents, requester, allow_self_approval, title, group = options.values()
    type_str = _check_args(name, data_type, scope, prompt, timeout_seconds, poll_interval_seconds)
    _markdown.check_prompt(name, prompt, prompt_type)
    if title is not None and (not isinstance(title, str) or not title.strip() or len(title) > 200):
        raise InvalidEventError(f"title of event {name!r} must be text of 1 to 200 characters, got {title!r}")
    group = _groups.default_group(name) if group is None else _groups.check_group(name, group)
    declared = declare(data_type, choices, default)
    checked_details = _markdown.check_details(details)
    policy = _policy.event_fields(respondents, requester, allow_self_approval, quorum, approval=data_type is bool)
    notify_targets = _notify.targets(notify)
    store = _store_for(default_root())
    endpoint, embedded = _endpoint_for(store)
    request_id = _new_request_id(name)
    now = time.time()
    from . import _telemetry  # OpenTelemetry's API: imported by the first event, not with the package

    # The wait's span, from now: a child of the current context (a Flyte run's trace, if traced).
    span = _telemetry.start_wait_span(name, request_id, type_str, quorum, utc(now))
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
        "prompt_type": "markdown" if prompt_type == "markdown" else None,  # absent: text
        "title": title,  # absent: the prompt's first line
        "group": group,
        "comment_required_on_reject": comment_required_on_reject or None,
        "wake": _wake.address(request_id),  # where writers send this process wake-ups
        **policy,
        "slack": any(not isinstance(t, str) for t in notify_targets) or None,  # its messages: <id>/slack.json
        # Where the writer of an outcome sends its notice; no reply, page or list shows them.
        "webhooks": [t for t in notify_targets if isinstance(t, str)] or None,
        "trace": _telemetry.carrier(span),  # so that servers link their answer spans to the wait's
    }
    fresh.update({k: v for k, v in optional.items() if v is not None})
    # Create first: a new event is one write (one request on an object store, where reading
    # first made it two). A refused create means the event exists, made by an earlier run of
    # this task (or a racing process): re-attach to it.
    request = fresh if store.create_request(fresh) else _check_reattached(store.read_request(request_id), fresh)
    event = Event(request, data_type, float(poll_interval_seconds), store, endpoint)
    remember(request_id, spec_for(data_type))
    event._notify_targets = notify_targets
    event._span = span
    event._unidentified = _unidentified(request, endpoint, embedded)
    _warn_unanswerable(event)
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
        self._unidentified: str | None = None  # why its form server can identify nobody, if it cannot
        self._span: Any = None  # its wait's span (`_telemetry`), started when it was created

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
    def prompt_type(self) -> PromptType:
        """How the form shows the prompt: "text" (verbatim) or "markdown" (rendered)."""
        return "markdown" if self._request.get("prompt_type") == "markdown" else "text"

    @property
    def group(self) -> str:
        """The group the event is reviewed in (see `new_event`)."""
        return _groups.group_of(self._request)

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
        from ._task_types import build_value

        choices = self._request.get("choices")
        return None if choices is None else [build_value(self._data_type, c) for c in choices]

    @property
    def default(self) -> T | None:
        """The value `wait()` returns when the timeout passes (as `data_type`), or None (then it raises)."""
        from ._task_types import build_value

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
        from ._task_types import spec_for

        choices = self._request.get("choices")
        example = choices[0] if choices else spec_for(self._data_type).example()
        from . import _html

        return _html.curl_command(self.api_url, self.request_id, self.token, example)

    def __repr__(self) -> str:
        from ._task_types import type_name

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
        return cast(T, wait_blocking(self))

    async def _wait_aio(self) -> T:
        return cast(T, await wait_aio(self))

    wait = BlockingMethod(_wait, _wait_aio)


def _after_fork_in_child() -> None:
    # The child has only the forking thread. A lock that another thread held at the fork stays
    # held forever, the locks inside cached stores included: start again with fresh ones.
    global _state_lock
    _state_lock = threading.Lock()
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@blocking()
@_asks
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
    **asking: Unpack[_Asking],
) -> Event[T]:
    """Create a human-in-the-loop event (or re-attach to it when a task is re-run).

    Args:
        name: A descriptive name for the event, shown in logs and on the form.
        data_type: The type of the answer: int, float, str, bool, date, datetime, an Enum, a Literal,
            list[...] of those, or a dataclass, TypedDict or pydantic model of those (see the README).
        scope: Where the event lives; only "run" is supported.
        prompt: The question shown to the person (at most 64 KiB as UTF-8).
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
        prompt_type: "text" (the default) shows the prompt verbatim, line breaks kept; "markdown"
            renders it on the form's pages (CommonMark with tables). The index, the console, the report
            and notices show a Markdown prompt as its plain text.
        respondents: Who may answer: identities (an e-mail, compared case-insensitively; any other
            string exactly) or ``group:NAME``, as the server's trusted proxy headers say. Without it,
            whoever holds the form link may answer.
        requester: Who asks (default: ``$FLYTE_HITL_REQUESTER``); they may not answer their own question.
        allow_self_approval: Let the requester answer their own question.
        title: The form's heading (at most 200 characters); by default, the prompt's first line (the
            rest of the prompt follows it).
        group: The review page the event is shown on with others (``/review/<group>``; at most 200
            printable characters). By default, the run's name and the event's name, so every item of a
            fan-out asking the same question is one group; outside a run, the event's name.

    Returns:
        The `Event`; call ``event.wait()`` (or ``await event.wait.aio()``) for the answer.

    Example:
        >>> event = new_event("approve", data_type=bool, prompt="Ship it?")
        >>> event = await new_event.aio("x", data_type=int, prompt="What should I add to x?")
        >>> event = new_event("size", data_type=str, choices=["S", "M", "L"], default="M")
        >>> review = new_event(
        ...     "review", data_type=Review, prompt="Label **img-42**", prompt_type="markdown", details={"model": 0.91}
        ... )
        >>> event = new_event("size", data_type=int, respondents=["alice@example.com", "group:sre"])
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
        **asking,
    )


@_asks
def _approve(
    name: str,
    prompt: str = "Do you approve?",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    *,
    default: bool | None = None,
    require_reject_comment: bool = False,
    quorum: int = 1,
    **asking: Unpack[_Asking],
) -> Event[bool]:
    """Ask a person to approve or reject, and return True for approve.

    The responder may add a comment (kept in the audit trail); with ``require_reject_comment``
    a rejection without one is refused. Without ``default``, no answer in time raises
    `EventTimeoutError`. ``details`` (a mapping) is shown under the prompt as a table. The prompt
    is shown verbatim; ``prompt_type="markdown"`` renders it as Markdown, and ``title`` is the form's
    heading instead of the prompt's first line; ``group`` names the review page it is shown on
    (see `new_event`).

    ``respondents``, ``requester`` and ``allow_self_approval`` are as for `new_event`. With
    ``quorum=N``, N distinct people must approve (each votes once) and a single rejection decides
    False; ``event.response`` then carries every vote.
    ``await approve.aio(...)`` waits without holding a thread.

    Example:
        >>> if hitl.approve("deploy", prompt="Deploy model v3 to production?"):
        ...     deploy()
        >>> ok = await hitl.approve.aio("deploy", require_reject_comment=True)
        >>> ok = hitl.approve("release", respondents=["group:release-managers"], quorum=2)
    """
    return _create(
        name,
        bool,
        "run",
        prompt,
        timeout_seconds,
        poll_interval_seconds,
        default=default,
        comment_required_on_reject=require_reject_comment,
        quorum=quorum,
        **asking,
    )


def _then_waited(create: Callable[P, Event[T]], answer: str) -> Blocking[P, T]:
    """Ask with `create` and wait for the answer (of type `answer`): a blocking call whose ``.aio``
    twin waits natively."""

    def ask(*args: P.args, **kwargs: P.kwargs) -> T:
        return create(*args, **kwargs).wait()

    async def ask_aio(*args: P.args, **kwargs: P.kwargs) -> T:
        event = await asyncio.to_thread(create, *args, **kwargs)  # a short call: the question's write
        return await event.wait.aio()

    ask.__name__ = ask.__qualname__ = create.__name__.lstrip("_")
    ask.__doc__, ask.__module__ = create.__doc__, create.__module__
    ask.__signature__ = inspect.signature(create).replace(return_annotation=answer)  # type: ignore[attr-defined]
    return Blocking(ask, ask_aio)


approve = _then_waited(_approve, "bool")
