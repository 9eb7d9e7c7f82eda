"""Answer in Slack: the message an event posts, the answers its buttons and modals give, and the
message kept showing the event's stored state (`refresh`). Imported only when Slack is used.

The waiting task posts the message (`announce`) and stores where it went in ``<root>/<id>/slack.json``
for any server to rewrite. Every form server takes ``POST /slack/interactions`` (`interaction`),
signed by Slack. A clicker counts as a person only through the e-mail Slack gives (``users.info``);
where the event names respondents, a requester or a quorum and none can be had, nothing is stored.
No token goes to the channel; a failing Web API holds up no wait or answer (daemon threads, deadlines).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

from . import _answers, _http, _policy
from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    ConfigurationError,
    EventExpiredError,
    HitlError,
    InvalidEventError,
    InvalidValueError,
    StorageError,
)
from ._markdown import shown as _shown_detail
from ._schema import check_answer, describe
from ._store import Record, Store, put_slack, read_slack
from ._text import visible

logger = logging.getLogger("flyteplugins.hitl.slack")

TOKEN_ENV = "SLACK_BOT_TOKEN"
SECRET_ENV = "SLACK_SIGNING_SECRET"
API_ENV = "FLYTE_HITL_SLACK_API_URL"
CHANNEL_ENV = "FLYTE_HITL_SLACK_CHANNEL"
DEFAULT_API_URL = "https://slack.com/api/"

#: Seconds one Web API call may take in all (waits after HTTP 429 included) before it is given up.
TIMEOUT_SECONDS = 10.0
#: Seconds a ``users.info`` look-up may take: an answer waits for it, well within `ACK_SECONDS`.
USERS_INFO_SECONDS = 1.0
#: Seconds an interaction's reply waits for its work; later, Slack gets an empty acknowledgement and
#: the work finishes after it (Slack shows an error past three seconds).
ACK_SECONDS = 2.0
#: Oldest (or most future) signed request accepted, in seconds, as Slack's documentation asks.
MAX_SKEW_SECONDS = 300
#: Seconds an e-mail found for a Slack user is kept (a look-up that finds none is not kept).
USER_CACHE_SECONDS = 3600.0
#: Seconds the end of the program waits for the message rewrites still running: a task that ends
#: at its event's expiry still leaves the message saying so.
EXIT_GRACE_SECONDS = 5.0

#: The clock signatures are checked against; tests may replace it.
clock: Callable[[], float] = time.time

_BLOCK_PREFIX = "hitl:"
_ANSWER_VIEW = "hitl-answer"
_REJECT_VIEW = "hitl-reject"
_USER_ID = re.compile(r"[A-Z0-9]{1,32}")
_MENTION = re.compile(r"[A-Z0-9]{1,32}|here|channel|everyone")
_MAX_BUTTONS = 5
_MAX_OPTIONS = 100
_MAX_CHECKBOXES = 10
_MAX_FIELDS = 10
_MAX_INPUT_LENGTH = 3000
_MAX_REWRITES = 10  # rewrites in a row by one thread, each after the state changed while the last was sent


@dataclasses.dataclass(frozen=True)
class Slack:
    """A Slack channel to post an event's question to, with buttons (or a form) to answer it there.

    Needs ``SLACK_BOT_TOKEN`` (``chat:write``, ``users:read``, and ``users:read.email`` for events with
    respondents, a requester or a quorum) where the task runs and on the form servers, and
    ``SLACK_SIGNING_SECRET`` on the form servers, whose ``/slack/interactions`` is the interactivity URL.

    Args:
        channel: A channel id (``C0123ABCD``) or name (``#deploys``); default ``$FLYTE_HITL_SLACK_CHANNEL``.
        mention: A user id (``U024BE7LH``), a user group id (``S0614TZR7``), or ``"here"`` or
            ``"channel"``: mentioned in the message.
        thread_ts: Post the message as a reply in this thread.

    Example:
        >>> ok = hitl.approve("deploy", prompt="Ship v3?", notify=hitl.Slack("#deploys", mention="U024BE7LH"))
    """

    channel: str | None = None
    mention: str | None = dataclasses.field(default=None, kw_only=True)
    thread_ts: str | None = dataclasses.field(default=None, kw_only=True)


# -- configuration -----------------------------------------------------------------------------------


def resolve(target: Slack) -> Slack:
    """`target` with its channel filled in from ``$FLYTE_HITL_SLACK_CHANNEL``, after checking that
    the settings to post it are there; `ConfigurationError` or `InvalidEventError` otherwise."""
    channel = target.channel or os.environ.get(CHANNEL_ENV) or None
    if channel is None:
        raise ConfigurationError(f"hitl.Slack() needs a channel: pass one, or set {CHANNEL_ENV}")
    if not isinstance(channel, str) or not channel.strip() or len(channel) > 200:
        raise InvalidEventError(f"the Slack channel must be a channel id or name, got {channel!r}")
    if target.mention is not None and not (isinstance(target.mention, str) and _MENTION.fullmatch(target.mention)):
        raise InvalidEventError(
            f"mention must be a Slack user or group id (U…, W…, S…) or 'here', 'channel', got {target.mention!r}"
        )
    if target.thread_ts is not None and not isinstance(target.thread_ts, str):
        raise InvalidEventError(
            f"thread_ts must be a message timestamp such as '1712345678.000100', got {target.thread_ts!r}"
        )
    bot_token()
    api_url()
    return Slack(channel.strip(), mention=target.mention, thread_ts=target.thread_ts)


def bot_token() -> str:
    """``$SLACK_BOT_TOKEN``, or `ConfigurationError`."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigurationError(
            f"{TOKEN_ENV} is not set: Slack needs a bot token (xoxb-…) to post and update messages"
        )
    return token


def api_url() -> str:
    """The Web API base, ``$FLYTE_HITL_SLACK_API_URL`` (default ``https://slack.com/api/``), ending in '/'."""
    url = os.environ.get(API_ENV, "").strip() or DEFAULT_API_URL
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{API_ENV} must be an http:// or https:// URL, got {_http.redact_url(url)!r}")
    return url if url.endswith("/") else url + "/"


# -- the Web API ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Web API call failed; the message says why (Slack's error code, an HTTP status, a timeout)."""


class _Health:
    """Logs the first failure of an outage, and the recovery, once each."""

    def __init__(self) -> None:
        self._failing, self._lock = False, threading.Lock()

    def failed(self, what: str, error: Exception) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
        until = " (further failures are not logged until Slack answers)" if first else ""
        logger.log(logging.WARNING if first else logging.DEBUG, "Slack: %s failed: %s%s", what, error, until)

    def answered(self) -> None:
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            logger.info("Slack answers again")


_health = _Health()


def call(method: str, body: Mapping[str, Any], *, seconds: float = TIMEOUT_SECONDS, form: bool = False) -> Record:
    """Call the Web API `method` with `body` (JSON, or form-encoded for the methods that take only
    that) and return its reply; `ApiError` unless Slack says ``ok``. A rate-limited call (HTTP 429)
    is sent again after its ``Retry-After`` when that still falls within `seconds`."""
    if form:
        from urllib.parse import urlencode

        data, content_type = urlencode(body).encode(), "application/x-www-form-urlencoded"
    else:
        data, content_type = json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8"
    headers = {"Authorization": f"Bearer {bot_token()}", "Content-Type": content_type}
    reply = _send(api_url() + method, data, headers, seconds)
    try:
        result = json.loads(reply.body)
    except ValueError:
        raise ApiError("the reply is not JSON") from None
    if not isinstance(result, dict) or result.get("ok") is not True:
        raise ApiError(str(result.get("error") if isinstance(result, dict) else "the reply is not an object"))
    _health.answered()
    return result


def _send(url: str, data: bytes, headers: Mapping[str, str], seconds: float) -> _http.Reply:
    """POST `data` to `url` within `seconds` in all, waiting out each HTTP 429's ``Retry-After`` that
    ends within them; `ApiError` unless the reply is 200."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            left = max(0.001, deadline - time.monotonic())
            reply = _http.exchange("POST", url, seconds=left, body=data, headers=headers, max_body=1 << 20)
        except _http.ExchangeError as e:
            raise ApiError(str(e)) from None
        after = (reply.headers.get("Retry-After") or "").strip()
        pause = int(after) if after.isascii() and after.isdigit() and len(after) <= 4 else 1
        if reply.status != 429 or time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)  # calls run in daemon threads, never on a wait's or a reply's thread
    if reply.status != 200:
        raise ApiError(f"HTTP {reply.status} {reply.reason}")
    return reply


def _in_background(name: str, target: Callable[..., object], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _try(what: str, method: str, body: Mapping[str, Any], **kw: Any) -> Record | None:
    """`call`, with a failure logged (once per outage) instead of raised."""
    try:
        return call(method, body, **kw)
    except (ApiError, ConfigurationError) as e:
        _health.failed(what, e)
        return None


# -- the message ---------------------------------------------------------------------------------------


class State(NamedTuple):
    """What a message shows: the outcome (None while it takes answers), the answer the task last
    refused, and the votes of an approval with a quorum."""

    response: Record | None = None
    refusal: Record | None = None
    votes: list[Record] | None = None


def state_of(store: Store, request: Record) -> State:
    """The event's state as stored now."""
    found = _answers.outcome(store, request)
    return State(found.response, found.refusal, _answers.votes_of(store, request, found.response))


def announce(store: Store, request: Record, targets: Sequence[Slack]) -> threading.Thread:
    """Post the question to each of `targets` in a daemon thread, then record where it went."""
    return _in_background("hitl-slack", _post, store, request, list(targets))


def _post(store: Store, request: Record, targets: list[Slack]) -> None:
    request_id = str(request["request_id"])
    try:
        if read_slack(store, request_id) is not None:
            return  # a re-run of the task: its first run posted the message
        state = state_of(store, request)
    except StorageError as e:
        logger.warning("Slack: not posting %r: %s", request["event_name"], e)
        return
    controls = _verifiable(request)
    messages = []
    for target in targets:
        body: Record = {"channel": target.channel, **_content(request, state, target, controls)}
        if target.thread_ts:
            body["thread_ts"] = target.thread_ts
        reply = _try(f"posting {request['event_name']!r} to {target.channel}", "chat.postMessage", body)
        if reply is not None:
            where = {"channel": reply.get("channel", target.channel), "ts": reply.get("ts"), "mention": target.mention}
            messages.append(where if controls else {**where, "controls": False})
    if not messages:
        return
    try:
        put_slack(store, request_id, {"messages": messages})
    except StorageError as e:
        logger.warning("Slack: cannot record where %r was posted: %s", request["event_name"], e)
        return
    refresh(store, request, state)  # an outcome stored while it was being posted found no message to rewrite


_warned: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message, *args)


def _verifiable(request: Record) -> bool:
    """Whether the event's form server can check Slack's signature: this process's own server if
    ``SLACK_SIGNING_SECRET`` is set here, another unless its ``/health`` says ``"slack": false``."""
    endpoint = str(request.get("endpoint") or "")
    server = sys.modules.get("flyteplugins.hitl.server")
    if server is not None and endpoint in [httpd.url for httpd, _ in list(server._embedded.values())]:
        verifiable = bool(os.environ.get(SECRET_ENV, "").strip())
    else:
        try:
            health = json.loads(_http.exchange("GET", endpoint + "/health", seconds=5.0, max_body=1 << 16).body)
        except (_http.ExchangeError, ValueError):
            health = None
        verifiable = not (isinstance(health, dict) and health.get("slack") is False)
    if not verifiable:
        _warn_once("Slack: %s lacks %s: messages get no buttons, and say where to answer", endpoint, SECRET_ENV)
    return verifiable


def outcome_known(store: Store, request: Record, response: Record) -> threading.Thread | None:
    """The waiting task has its outcome: `refresh`, unless the server that stored it does."""
    return None if response.get("transport") in ("form", "json", "slack") else refresh(store, request)


def reopened(store: Store, request: Record, refusal: Record) -> threading.Thread | None:
    """The waiting task refused the stored answer: `refresh` (the message gets its controls back)."""
    return refresh(store, request)


_running: set[threading.Thread] = set()  # message rewrites in this process, which the program's end waits for
_running_lock = threading.Lock()


def refresh(store: Store, request: Record, sent: State | None = None) -> threading.Thread | None:
    """Bring `request`'s Slack messages (if it has any), which show `sent` if known, up to its stored
    state, in a daemon thread."""
    if not request.get("slack"):
        return None
    thread = threading.Thread(target=_rewrite, args=(store, request, sent), name="hitl-slack-update", daemon=True)
    with _running_lock:
        _running.add(thread)
    thread.start()
    return thread


@atexit.register
def _finish_rewrites() -> None:
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    with _running_lock:
        running = list(_running)
    for thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))


def _rewrite(store: Store, request: Record, sent: State | None) -> None:
    """Rewrite the messages with the state read now, and read it again after each rewrite: one sent
    earlier (by another thread or replica) may reach Slack last, and this one then sends the last state."""
    try:
        for _ in range(_MAX_REWRITES):
            record = read_slack(store, str(request["request_id"]))
            if record is None or (state := state_of(store, request)) == sent:
                return  # not posted yet (the poster shows the state once it has recorded where), or shown
            _update(request, state, list(record.get("messages") or []))
            sent = state
    except StorageError as e:
        logger.warning("Slack: cannot bring the message of %r up to date: %s", request["event_name"], e)
    finally:
        with _running_lock:
            _running.discard(threading.current_thread())


def _update(request: Record, state: State, messages: list[Record]) -> None:
    for message in messages:
        target = Slack(str(message.get("channel")), mention=message.get("mention"))
        body = {"channel": message.get("channel"), "ts": message.get("ts")}
        body.update(_content(request, state, target, message.get("controls") is not False))
        _try(f"updating the message of {request['event_name']!r}", "chat.update", body)


def _content(request: Record, state: State, target: Slack, controls: bool = True) -> Record:
    """A message's ``text`` (the notification: no prompt, which may be long, and no link) and ``blocks``."""
    text = f"Human input needed: {escape(str(request['event_name']))}"
    if state.response is not None:
        text += f": {_outcome_text(request, state.response)}"
    return {"text": text, "blocks": blocks(request, state, target, controls=controls)}


def blocks(request: Record, state: State | None, target: Slack, *, controls: bool = True) -> list[Record]:
    """The message's blocks: the question, its details, and the outcome; or while it takes answers, the
    deadline, the quorum's rule and tally or why the task refused the last answer, and the controls."""
    state = state or State()
    out: list[Record] = [{"type": "header", "text": _plain(str(request["event_name"]), 150)}]
    if str(request["prompt"]).strip():
        out.append(_prompt(request))
    details = list((request.get("details") or {}).items())
    for start in range(0, min(len(details), 40), _MAX_FIELDS):
        fields = [
            {"type": "mrkdwn", "text": _cut(f"*{escape(str(k))}*\n{escape(_shown_detail(v))}", 2000)}
            for k, v in details[start : start + _MAX_FIELDS]
        ]
        out.append({"type": "section", "fields": fields})
    if state.response is not None:
        text = _cut(_outcome_text(request, state.response), 3000)
        return [*out, {"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    line = [f"Answer by {_date(str(request['expires_at']))}"]
    if target.mention:
        line.insert(0, _mention(target.mention))
    if (quorum := _policy.quorum(request)) > 1:  # the rule before anyone votes, then the tally (not who voted)
        approvals = sum(v.get("value") is True for v in state.votes or ())
        line[:0] = [f"{quorum} approvals needed; one rejection decides", f"{approvals} of {quorum} approvals"]
    if state.refusal is not None:
        refused = _cut(str(state.refusal.get("error")), 1000)
        line.insert(0, f"The task refused the last answer ({escape(refused)}); please answer again")
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(line)}]})
    if controls:
        return [*out, _controls(request)]
    # No click can be verified: the inbox (where an event with respondents opens without its token) or the index.
    url = str(request.get("endpoint") or "").rstrip("/") + ("/inbox" if request.get("respondents") else "/")
    return [*out, {"type": "section", "text": {"type": "mrkdwn", "text": f"Answer on the web form: {escape(url)}"}}]


def _prompt(request: Record) -> Record:
    """The prompt: Slack mrkdwn for a Markdown prompt, else plain text, shown verbatim."""
    prompt = str(request["prompt"])
    if request.get("prompt_type") == "markdown":
        return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(mrkdwn(prompt), 3000)}}
    return {"type": "section", "text": _plain(prompt, 3000)}


def _controls(request: Record) -> Record:
    elements: list[Record]
    if request["data_type"] == "bool":
        elements = [
            {"type": "button", "action_id": "approve", "value": "true", "style": "primary", "text": _plain("Approve")},
            {"type": "button", "action_id": "reject", "value": "false", "style": "danger", "text": _plain("Reject")},
        ]
    elif (options := _choices(request)) is not None and len(options[0]) <= _MAX_OPTIONS:
        if len(labels := options[1]) <= _MAX_BUTTONS:
            elements = [
                {"type": "button", "action_id": f"choice:{i}", "value": str(i), "text": _plain(label, 75)}
                for i, label in enumerate(labels)
            ]
        else:
            select: Record = {"type": "static_select", "action_id": "select", "placeholder": _plain("Choose one…")}
            select["options"] = _options(labels)
            elements = [select]
    else:
        elements = [{"type": "button", "action_id": "answer", "value": "answer", "text": _plain("Answer…")}]
    return {"type": "actions", "block_id": _BLOCK_PREFIX + str(request["request_id"]), "elements": elements}


def _choices(request: Record) -> tuple[list[Any], list[str]] | None:
    """The allowed answers of a choice event (an Enum, a Literal, or `choices`) and their labels."""
    schema = request.get("schema")
    if isinstance(schema, dict):
        return (schema["choices"], _labels(schema)) if schema.get("kind") == "choice" else None
    choices = request.get("choices")
    return (choices, [_shown(c) for c in choices]) if isinstance(choices, list) else None


def _labels(schema: Mapping[str, Any]) -> list[str]:
    return [str(x) for x in schema.get("labels") or [_shown(c) for c in schema["choices"]]]


def _options(labels: Sequence[str]) -> list[Record]:
    return [{"text": _plain(label, 75), "value": str(i)} for i, label in enumerate(labels)]


def _outcome_text(request: Record, response: Record) -> str:
    """The outcome in mrkdwn: "Approved by @alice" with the comment quoted, "Answered 42 by …",
    "Expired, default 'M' used"; a quorum's decision lists every vote (who, what, when, comment)."""
    if response.get("status") != "completed":
        if response.get("default_applied"):
            return f":hourglass: Expired, default {escape(_shown(response.get('value')))} used"
        return ":hourglass: Expired without an answer"
    value = response.get("value")
    if request["data_type"] == "bool":
        head = ":white_check_mark: Approved" if value is True else ":x: Rejected"
    else:
        head = f":white_check_mark: Answered {escape(_shown(value))}"
    votes = response.get("votes")
    if not isinstance(votes, list):
        return f"{head} by {who(response)}{_quoted(response.get('comment'))}"
    approvals = sum(v.get("value") is True for v in votes if isinstance(v, dict))
    lines = [f"{head}: {approvals} of {response.get('quorum')} approvals"]
    for vote in (v for v in votes if isinstance(v, dict)):
        what = "approved" if vote.get("value") is True else "rejected"
        lines.append(f"• {who(vote)} {what} {_date(str(vote.get('voted_at')))}{_quoted(vote.get('comment'))}")
    return "\n".join(lines)


def _quoted(comment: object) -> str:
    """A comment as mrkdwn quote lines, each line inside the quote."""
    return "".join(f"\n> {escape(line)}" for line in str(comment).splitlines()) if comment else ""


def who(response: Mapping[str, Any], *, mrkdwn: bool = True) -> str:
    """Who gave `response` (or a vote): a Slack mention, the identity a proxy vouched for, or how it came."""
    identity = str(response.get("identity") or "")
    match = re.match(r"slack:([A-Z0-9]+)", identity)
    if match and mrkdwn:
        return f"<@{match.group(1)}>"
    if identity:
        return escape(identity) if mrkdwn else visible(identity)
    via = {"form": "the web form", "json": "the JSON API", "cli": "the command line", "python": "the Python API"}
    return via.get(str(response.get("via")), "someone")


def escape(text: str) -> str:
    """`text` for Slack mrkdwn: invisible and bidi characters shown as markers (as on the pages), then
    &, < and > escaped, so it can neither mention nor link."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def mrkdwn(markdown: str) -> str:
    """A Markdown prompt as Slack mrkdwn: escaped first, then bold, headings and links translated
    (the rest of Markdown reads well as it is).

    Example:
        >>> mrkdwn("Ship **v3** to [prod](https://x.example)?")
        'Ship *v3* to <https://x.example|prod>?'
    """
    text = escape(markdown)
    text = _HEADING.sub(r"*\1*", text)
    text = _BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", text)
    return _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1).replace('|', '¦')}>", text)


def _mention(mention: str) -> str:
    if mention in ("here", "channel", "everyone"):
        return f"<!{mention}>"
    return f"<!subteam^{mention}>" if mention.startswith("S") else f"<@{mention}>"


def _date(stamp: str) -> str:
    """A moment (ISO 8601) in each reader's own time zone, with the UTC time as the fallback."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{escape(stamp)}>"


def _plain(text: str, limit: int = 75) -> Record:
    return {"type": "plain_text", "text": _cut(visible(text), limit) or " ", "emoji": False}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# -- the modal -----------------------------------------------------------------------------------------


def _fields(request: Record) -> list[Record]:
    """The inputs an answer is made of: an object's fields, else one named "value"."""
    schema = request.get("schema") or {"kind": request["data_type"]}
    if schema["kind"] == "object":
        return list(schema["fields"])
    if schema["kind"] == "choice" or request.get("choices") is not None:
        values, labels = _choices(request) or ([], [])
        schema = {"kind": "choice", "choices": values, "labels": labels}
    return [{"name": "value", "type": schema, "required": True}]


def modal(request: Record, channel: str = "") -> Record:
    """The modal that asks for an answer of the event's type: one input per field, each with its
    bounds. It carries the request id and the `channel` it was opened from (to tell the person there)."""
    inputs = [_input(f, label="Your answer" if f["name"] == "value" else None) for f in _fields(request)]
    return _view(request, _ANSWER_VIEW, inputs, channel)


def _reject_modal(request: Record, channel: str = "") -> Record:
    comment = {"type": "plain_text_input", "action_id": "v", "multiline": True, "max_length": _MAX_INPUT_LENGTH}
    block = {"type": "input", "block_id": "comment", "label": _plain("Why reject?"), "element": comment}
    return _view(request, _REJECT_VIEW, [block], channel)


def _view(request: Record, callback_id: str, inputs: list[Record], channel: str) -> Record:
    head = [_prompt(request)] if str(request["prompt"]).strip() else []
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": f"{request['request_id']} {channel}".strip(),
        "title": _plain(str(request["event_name"]), 24),
        "submit": _plain("Submit"),
        "close": _plain("Cancel"),
        "blocks": [*head, *inputs][:100],
    }


def _input(f: Mapping[str, Any], label: str | None = None) -> Record:
    schema, kind = f["type"], f["type"]["kind"]
    element: Record = {"action_id": "v"}
    if kind in ("int", "float"):
        element.update(type="number_input", is_decimal_allowed=kind == "float")
        low = schema.get("ge", schema["gt"] + 1 if "gt" in schema and kind == "int" else None)
        high = schema.get("le", schema["lt"] - 1 if "lt" in schema and kind == "int" else None)
        element.update({k: str(v) for k, v in (("min_value", low), ("max_value", high)) if v is not None})
    elif kind == "bool":
        element.update(
            type="static_select", options=[{"text": _plain(t), "value": str(t == "Yes").lower()} for t in ("Yes", "No")]
        )
    elif kind == "choice" and len(schema["choices"]) <= _MAX_OPTIONS:
        element.update(type="static_select", options=_options(_labels(schema)))
    elif kind == "list" and schema["items"]["kind"] == "choice" and len(schema["items"]["choices"]) <= _MAX_OPTIONS:
        many = len(schema["items"]["choices"]) > _MAX_CHECKBOXES
        element.update(type="multi_static_select" if many else "checkboxes", options=_options(_labels(schema["items"])))
    elif kind in ("date", "datetime"):
        element["type"] = "datepicker" if kind == "date" else "datetimepicker"
    else:  # str, a list (one item per line), a choice among too many to list
        element.update(type="plain_text_input", multiline=kind == "list")
        if kind == "str":
            if 0 < schema.get("min_length", 0) <= _MAX_INPUT_LENGTH:
                element["min_length"] = schema["min_length"]
            if schema.get("max_length", _MAX_INPUT_LENGTH + 1) <= _MAX_INPUT_LENGTH:
                element["max_length"] = schema["max_length"]
    if element["type"] in ("plain_text_input", "number_input") and f.get("default") is not None and kind != "list":
        element["initial_value"] = _shown(f["default"])
    elif element["type"] == "datepicker" and f.get("default") is not None:
        element["initial_date"] = str(f["default"])
    block: Record = {
        "type": "input",
        "block_id": str(f["name"]),
        "label": _plain(label or str(f["name"]).replace("_", " ").capitalize(), 2000),
        "element": element,
        "optional": not f.get("required") or bool(f.get("nullable")),
    }
    hint = str(f.get("description") or describe(schema))
    block["hint"] = _plain(f"one per line; {hint}" if element.get("multiline") else hint, 2000)
    return block


_MISSING = object()


def answer_from_view(request: Record, values: Mapping[str, Any]) -> object:
    """The raw answer from a submitted modal's ``view.state.values`` (checked by `_answers.submit`)."""
    fields = _fields(request)
    answer: dict[str, object] = {}
    for f in fields:
        block = values.get(str(f["name"]))
        state = block.get("v") if isinstance(block, dict) else None
        got = _from_state(f["type"], state if isinstance(state, dict) else {})
        if got is _MISSING and f.get("nullable"):
            got = None
        if got is not _MISSING:
            answer[str(f["name"])] = got
    if fields[0]["name"] == "value" and len(fields) == 1 and request.get("schema", {}).get("kind") != "object":
        return answer.get("value", "")
    return answer


def _from_state(schema: Mapping[str, Any], state: Mapping[str, Any]) -> object:
    kind = state.get("type")
    if kind in ("plain_text_input", "number_input"):
        text = state.get("value")
        if not isinstance(text, str) or not text.strip():
            return _MISSING
        if schema["kind"] == "list":
            return [line.strip() for line in text.splitlines() if line.strip()]
        return text
    if kind == "static_select":
        option = state.get("selected_option")
        return _chosen(schema, option.get("value")) if isinstance(option, dict) else _MISSING
    if kind in ("checkboxes", "multi_static_select"):
        options = state.get("selected_options")
        chosen = [_chosen(schema["items"], o.get("value")) for o in options or [] if isinstance(o, dict)]
        return chosen if chosen else _MISSING if schema.get("min_length") else []
    if kind == "datepicker":
        return state.get("selected_date") or _MISSING
    if kind == "datetimepicker":
        stamp = state.get("selected_date_time")
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            return _MISSING
        return datetime.fromtimestamp(stamp, timezone.utc).isoformat()
    return _MISSING


def _chosen(schema: Mapping[str, Any], value: object) -> object:
    """The option picked: "true"/"false" for a bool, else the choice at that index."""
    if schema["kind"] == "bool":
        return value
    text = str(value)
    if not (text.isascii() and text.isdigit() and int(text) < len(schema["choices"])):
        raise InvalidValueError(f"{text[:40]!r} is not one of the options", value)
    return schema["choices"][int(text)]


# -- who may answer ----------------------------------------------------------------------------------


class _Refused(Exception):
    """The clicker may not answer; the message (plain text) says why, and never who may."""


_NOT_YOURS = "Only the people this question names may answer it."


def answering_as(request: Record, user_id: str) -> tuple[Record, str]:
    """Who the Slack user `user_id` answers `request` as, with the request as `_policy` checks it for
    them, or `_Refused`. Where the event names no one, anyone answers, as ``slack:<id>``; elsewhere only
    the e-mail Slack gives makes them a person (without it nothing tells them from the requester, or
    their click from their vote on the form), and ``slack:<id>`` in respondents or requester is them."""
    if not _policy.needs_identity(request):
        return request, f"slack:{user_id}"
    try:
        identity = _policy.canonical(email, label="the e-mail Slack gives") if (email := _email(user_id)) else ""
    except HitlError:
        identity = ""
    if not identity:
        raise _Refused(_unverified(request))
    in_slack = _policy.Who(f"slack:{user_id}")
    checked = dict(request)
    if _policy.is_respondent(request, in_slack):
        checked["respondents"] = [*request["respondents"], identity]
    if _policy.is_requester(request, in_slack):
        checked["requester"] = identity
    who = _policy.Who(identity)
    if _policy.refusal(checked, who) is not None:
        mine = _policy.is_requester(checked, who)
        raise _Refused("You asked this question, so someone else must answer it." if mine else _NOT_YOURS)
    return checked, identity


def _unverified(request: Record) -> str:
    """Where a clicker Slack gives no e-mail for can answer: the form, without the token on an event with
    respondents; on another, the form takes the token and still the proxy's identity: the link carries it."""
    url = f"{str(request.get('endpoint') or '').rstrip('/')}/form/{request['request_id']}"
    if not request.get("respondents"):
        url += f"?token={quote(str(request['token']), safe='')}"
    return (
        "Slack did not say who you are (no e-mail address came for your account), so your answer was not "
        f"stored. Answer on the web form instead: {url}"
    )


_users: dict[str, tuple[str, float]] = {}  # Slack user id -> (e-mail, when found); a miss is never kept


def _email(user_id: str) -> str | None:
    """The e-mail Slack gives for a user (``users.info``; kept when found), or None: no
    ``users:read.email`` scope, a slow or failed call, no bot token. A failure is never kept."""
    cached = _users.get(user_id)
    if cached is not None and time.monotonic() - cached[1] < USER_CACHE_SECONDS:
        return cached[0]
    reply = _try(f"looking up user {user_id}", "users.info", {"user": user_id}, form=True, seconds=USERS_INFO_SECONDS)
    user = (reply or {}).get("user")
    profile = user.get("profile") if isinstance(user, dict) else None
    email = profile.get("email") if isinstance(profile, dict) else None
    if isinstance(email, str) and email.strip():
        _users[user_id] = (email, time.monotonic())
        return email
    if isinstance(profile, dict) and "email" not in profile:
        _warn_once("Slack's users.info gives no email field: the app needs the users:read.email scope")
    return None


# -- the interaction endpoint ------------------------------------------------------------------------


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> str | None:
    """Why a request does not carry Slack's signature over `body`, or None when it does: ``v0=`` and the
    hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed by the signing secret, compared in constant
    time, with a timestamp within five minutes (a captured request cannot be replayed later)."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "malformed X-Slack-Request-Timestamp"
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return "stale X-Slack-Request-Timestamp"
    mac = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"v0={mac}".encode(), signature.encode("utf-8", "replace")):
        return "bad X-Slack-Signature"
    return None


@dataclasses.dataclass
class Outcome:
    """What the interaction endpoint replies: an HTTP status, a JSON body (None: an empty
    acknowledgement), (request, response) to hand on when an answer was stored, and what to tell the
    person privately (a ``chat.postEphemeral``) instead of `body` past the acknowledgement."""

    status: int
    body: Record | None = None
    answered: tuple[Record, Record] | None = None
    late: Record | None = None


def interaction(
    store: Store, headers: Any, body: bytes, client: str, stored_late: Callable[[Record, Record], None]
) -> Outcome:
    """Handle ``POST /slack/interactions`` (`headers` has ``get_all``): verify, then act on a click or a
    modal. Work past `ACK_SECONDS` finishes after the reply, handing an answer it stores to `stored_late`."""
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        _warn_once("Slack interactions refused: %s is not set on this server", SECRET_ENV)
        return Outcome(503, {"detail": f"Slack interactions are not set up on this server ({SECRET_ENV})"})
    stamps = headers.get_all("X-Slack-Request-Timestamp") or []
    signatures = headers.get_all("X-Slack-Signature") or []
    why = "more than one signature header" if len(stamps) > 1 or len(signatures) > 1 else None
    why = why or verify(secret, (stamps or [None])[0], (signatures or [None])[0], body, clock())
    if why is not None:
        logger.info("Slack interaction refused: %s", why)
        return Outcome(401, {"detail": f"not a request signed by Slack: {why}"})
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=5, strict_parsing=True, errors="strict")
        payload = json.loads(fields["payload"][0])
        if not isinstance(payload, dict):
            raise ValueError("payload is not an object")
    except (UnicodeDecodeError, ValueError, KeyError, RecursionError) as e:
        return Outcome(400, {"detail": f"malformed Slack interaction: {e}"})
    handler = {"block_actions": _on_action, "view_submission": _on_view}.get(str(payload.get("type")))
    if handler is None:
        return Outcome(200)  # view_closed, shortcuts...: nothing to do
    return _within_ack(lambda: handler(store, payload, client), stored_late)


def _within_ack(work: Callable[[], Outcome], stored_late: Callable[[Record, Record], None]) -> Outcome:
    """`work()`'s outcome if it is ready within `ACK_SECONDS`, else an empty acknowledgement; work
    that finishes later hands its answer to `stored_late` and its refusal to the person, privately."""
    lock, state = threading.Lock(), dict[str, Outcome]()

    def run() -> None:
        try:
            result = work()
        except HitlError as e:  # storage failed, or a modal of an event that is gone: no traceback
            logger.log(logging.ERROR if isinstance(e, StorageError) else logging.INFO, "Slack interaction: %s", e)
            result = Outcome(200)
        except Exception:
            logger.exception("internal error handling a Slack interaction")
            result = Outcome(200)
        with lock:
            late, state["result"] = "late" in state, result
        if late and result.late is not None:  # Slack took the acknowledgement as the reply
            _try("telling a person", "chat.postEphemeral", result.late)
        if late and result.answered is not None:
            stored_late(*result.answered)

    _in_background("hitl-slack-interaction", run).join(ACK_SECONDS)
    with lock:  # the work's outcome, or else the acknowledgement, after which the work is late
        return state.get("result") or state.setdefault("late", Outcome(200))


def _user_id(payload: Record) -> str | None:
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) and _USER_ID.fullmatch(user_id) else None


def _channel(payload: Record) -> str:
    """The id of the channel a click came from, or ""."""
    channel = payload.get("channel")
    found = channel.get("id") if isinstance(channel, dict) else None
    return found if isinstance(found, str) and _USER_ID.fullmatch(found) else ""


def _ephemeral(url: object, text: str) -> None:
    """Tell the clicker alone, through the click's ``response_url`` (in a daemon thread; no bot token needed)."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return
    body = json.dumps({"response_type": "ephemeral", "replace_original": False, "text": text}).encode()

    def send() -> None:
        try:
            _send(url, body, {"Content-Type": "application/json"}, TIMEOUT_SECONDS)
        except ApiError as e:
            _health.failed("replying to a click", e)

    _in_background("hitl-slack-reply", send)


def _on_action(store: Store, payload: Record, client: str) -> Outcome:
    actions = payload.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    block, url = str(action.get("block_id")), payload.get("response_url")
    if not block.startswith(_BLOCK_PREFIX):
        return Outcome(200)  # a block of another app's message
    try:
        request = _answers.load(store, block.removeprefix(_BLOCK_PREFIX))
    except StorageError:
        raise
    except HitlError:
        _ephemeral(url, "This question no longer exists.")
        return Outcome(200)
    user_id, action_id = _user_id(payload), str(action.get("action_id"))
    if user_id is None:
        return Outcome(400, {"detail": "the interaction names no user"})
    try:
        checked, identity = answering_as(request, user_id)
        if action_id == "answer" or (action_id == "reject" and request.get("comment_required_on_reject")):
            existing = _answers.outcome(store, request).response
            if existing is not None:
                raise AlreadyAnsweredError(str(request["request_id"]), existing)
            view = (modal if action_id == "answer" else _reject_modal)(request, _channel(payload))
            what = f"opening the answer form of {request['event_name']!r}"
            body = {"trigger_id": payload.get("trigger_id"), "view": view}
            _in_background("hitl-slack-view", _try, what, "views.open", body)
            return Outcome(200)
        response = _submit(store, request, checked, _action_value(request, action_id, action), identity, client)
    except (_Refused, AlreadyAnsweredError, EventExpiredError, InvalidValueError) as e:
        _ephemeral(url, _refused(store, request, e))
        return Outcome(200)
    return _stored(request, response)


def _action_value(request: Record, action_id: str, action: Mapping[str, Any]) -> object:
    if action_id in ("approve", "reject") and request["data_type"] == "bool":
        return action_id == "approve"
    options = _choices(request)
    if action_id == "select":
        selected = action.get("selected_option")
        index = selected.get("value") if isinstance(selected, dict) else None
    elif action_id.startswith("choice:"):
        index = action_id.removeprefix("choice:")
    else:
        raise InvalidValueError(f"unknown control {action_id[:40]!r}", action_id)
    if options is None:
        raise InvalidValueError("this question has no options", index)
    return _chosen({"kind": "choice", "choices": options[0]}, index)


def _submit(
    store: Store, request: Record, checked: Record, raw: object, identity: str, client: str, comment: object = None
) -> Record:
    """Store the answer (`checked`: the request as checked for this person), then `refresh`."""
    response = _answers.submit(
        store, checked, raw, via="slack", client=client, comment=comment, identity=identity, transport="slack"
    )
    refresh(store, request)
    return response


def _refused(store: Store, request: Record, error: Exception, *, mrkdwn: bool = True) -> str:
    """What the person is told when their answer is not stored (the message is brought up to date)."""
    if isinstance(error, AlreadyVotedError):
        return "You have voted on this question already: each person votes once."
    if isinstance(error, AlreadyAnsweredError):
        response = error.response
    elif isinstance(error, EventExpiredError):
        refresh(store, request)  # a late click may be the first to see the deadline
        response = _answers.outcome(store, request).response or _answers.expired_record(request)
    else:
        text = str(error) if isinstance(error, _Refused) else f"Not accepted: {error}"
        return escape(text) if mrkdwn else text
    if response.get("status") == "completed":
        return f"Already answered by {who(response, mrkdwn=mrkdwn)}."
    return "This question expired; it takes no more answers."


def _on_view(store: Store, payload: Record, client: str) -> Outcome:
    view = payload.get("view")
    if not isinstance(view, dict) or view.get("callback_id") not in (_ANSWER_VIEW, _REJECT_VIEW):
        return Outcome(200)  # another app's modal
    request_id, _, channel = str(view.get("private_metadata")).partition(" ")
    request, user_id = _answers.load(store, request_id), _user_id(payload)
    if user_id is None:
        return Outcome(400, {"detail": "the interaction names no user"})
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    values = values if isinstance(values, dict) else {}
    rejecting = view["callback_id"] == _REJECT_VIEW
    comment = ((values.get("comment") or {}).get("v") or {}).get("value") or "" if rejecting else None
    try:  # the value first, so that its refusal never waits for a look-up
        raw = False if rejecting else answer_from_view(request, values)
        check_answer(request, raw)
        checked, identity = answering_as(request, user_id)
        return _stored(request, _submit(store, request, checked, raw, identity, client, comment=comment))
    except InvalidValueError as e:
        message, field_errors = str(e), e.field_errors
    except (_Refused, AlreadyAnsweredError, EventExpiredError) as e:
        message, field_errors = _refused(store, request, e, mrkdwn=False), {}
    names = {str(f["name"]) for f in _fields(request)}
    first = "comment" if rejecting else str(_fields(request)[0]["name"])
    errors = {k: v for k, v in field_errors.items() if k in names} or {first: message}
    shown = {k: _cut(visible(v), 1000) for k, v in errors.items()}  # plain text in the modal
    told = f"Your answer to {escape(str(request['event_name']))} was not stored: {escape(message)}"
    return Outcome(
        200, {"response_action": "errors", "errors": shown}, late={"channel": channel, "user": user_id, "text": told}
    )


def _stored(request: Record, response: Record) -> Outcome:
    """The reply to a stored answer, handed on to the waiting task unless it is a vote that did not decide."""
    return Outcome(200) if response.get("status") == "voted" else Outcome(200, answered=(request, response))
