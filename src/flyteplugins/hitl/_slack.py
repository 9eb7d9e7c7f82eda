"""Answer in Slack: the message an event posts, the answers its buttons and modals give, and the
message rewritten with the outcome. Imported only when Slack is used.

Standard library only: a Web API call is one JSON (or form) POST with a bearer token through
`_http.exchange` (one deadline for the whole exchange), and an interaction is a form-encoded POST
that Slack signs with HMAC-SHA256.

- The waiting task posts the message when its wait starts (`announce`, in a daemon thread) and
  stores where it went in ``<root>/<request_id>/slack.json``, so that any server can rewrite it.
- Every form server takes ``POST /slack/interactions`` (`interaction`): the signature is checked
  before anything is parsed; the clicker (``slack:<user id>``, with their e-mail when Slack gives it)
  answers through `_answers.submit` like every other writer; Slack gets its acknowledgement within
  `ACK_SECONDS` even when storage or Slack is slow, and the rest finishes after it.
- Whoever stores an outcome has the message rewritten (`answer_stored` on the servers,
  `outcome_known` in the waiting task): the controls removed, the outcome and who decided.

No capability token ever goes to Slack: there, the signed interaction and the person's Slack
identity authorize the answer. A failing Web API never holds up a wait or an answer: calls run in
daemon threads with a deadline, and an outage is logged once.
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from ._schema import describe
from ._store import Record, Store, put_slack, read_slack

logger = logging.getLogger("flyteplugins.hitl.slack")

TOKEN_ENV = "SLACK_BOT_TOKEN"
SECRET_ENV = "SLACK_SIGNING_SECRET"
API_ENV = "FLYTE_HITL_SLACK_API_URL"
CHANNEL_ENV = "FLYTE_HITL_SLACK_CHANNEL"
DEFAULT_API_URL = "https://slack.com/api/"

#: Seconds one Web API call may take in all before it is given up.
TIMEOUT_SECONDS = 10.0
#: Seconds a ``users.info`` look-up may take: an answer waits for it.
USERS_INFO_SECONDS = 2.0
#: Seconds an interaction's reply waits for its work; later, Slack gets an empty acknowledgement and
#: the work finishes after it (Slack shows an error past three seconds).
ACK_SECONDS = 2.0
#: Oldest (or most future) signed request accepted, in seconds, as Slack's documentation asks.
MAX_SKEW_SECONDS = 300
#: Seconds an e-mail looked up for a Slack user is kept; a failed look-up is kept for a minute.
USER_CACHE_SECONDS = 3600.0

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


@dataclasses.dataclass(frozen=True)
class Slack:
    """A Slack channel to post an event's question to, with buttons (or a form) to answer it there.

    Needs ``SLACK_BOT_TOKEN`` (a bot token with ``chat:write``, ``users:read`` and optionally
    ``users:read.email``) where the task runs and on the form servers, and ``SLACK_SIGNING_SECRET``
    on the form servers, whose ``/slack/interactions`` is the Slack app's interactivity URL.

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
        self._failing = False
        self._lock = threading.Lock()

    def failed(self, what: str, error: Exception) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
        if first:
            logger.warning("Slack: %s failed: %s (further failures are not logged until Slack answers)", what, error)
        else:
            logger.debug("Slack: %s failed: %s", what, error)

    def answered(self) -> None:
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            logger.info("Slack answers again")


_health = _Health()


def call(method: str, body: Mapping[str, Any], *, seconds: float = TIMEOUT_SECONDS, form: bool = False) -> Record:
    """Call the Web API `method` with `body` (JSON, or form-encoded for the methods that take only
    that) and return its reply; `ApiError` unless Slack says ``ok``.

    Example:
        >>> call("chat.postMessage", {"channel": "C0123", "text": "Ship it?"})["ts"]
        '1712345678.000100'
    """
    if form:
        from urllib.parse import urlencode

        data, content_type = urlencode(body).encode(), "application/x-www-form-urlencoded"
    else:
        data, content_type = json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8"
    headers = {"Authorization": f"Bearer {bot_token()}", "Content-Type": content_type}
    try:
        reply = _http.exchange(
            "POST", api_url() + method, seconds=seconds, body=data, headers=headers, max_body=1 << 20
        )
    except _http.ExchangeError as e:
        raise ApiError(str(e)) from None
    if reply.status != 200:
        raise ApiError(f"HTTP {reply.status} {reply.reason}")
    try:
        result = json.loads(reply.body)
    except ValueError:
        raise ApiError("the reply is not JSON") from None
    if not isinstance(result, dict) or result.get("ok") is not True:
        raise ApiError(str(result.get("error") if isinstance(result, dict) else "the reply is not an object"))
    _health.answered()
    return result


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


def announce(store: Store, request: Record, targets: Sequence[Slack]) -> threading.Thread:
    """Post the question to each of `targets` in a daemon thread, then record where it went.

    Example:
        >>> announce(store, request, [Slack("#deploys")])
    """
    return _in_background("hitl-slack", _post, store, request, list(targets))


def _post(store: Store, request: Record, targets: list[Slack]) -> None:
    request_id = str(request["request_id"])
    try:
        if read_slack(store, request_id) is not None:
            return  # a re-run of the task: its first run posted the message
    except StorageError as e:
        logger.warning("Slack: not posting %r: %s", request["event_name"], e)
        return
    messages = []
    for target in targets:
        body: Record = {"channel": target.channel, "text": _fallback(request), "blocks": blocks(request, None, target)}
        if target.thread_ts:
            body["thread_ts"] = target.thread_ts
        reply = _try(f"posting {request['event_name']!r} to {target.channel}", "chat.postMessage", body)
        if reply is not None:
            messages.append(
                {"channel": reply.get("channel", target.channel), "ts": reply.get("ts"), "mention": target.mention}
            )
    if not messages:
        return
    try:
        put_slack(store, request_id, {"messages": messages})
        response = store.read_response(request_id)
    except StorageError as e:
        logger.warning("Slack: cannot record where %r was posted: %s", request["event_name"], e)
        return
    if response is not None:  # answered while it was being posted: its writer found no message to update
        _update(request, response, messages)


def outcome_known(store: Store, request: Record, response: Record) -> threading.Thread | None:
    """The waiting task has its outcome: rewrite the event's Slack messages, unless the server that
    stored it does (an answer through a form server's endpoint).

    Example:
        >>> outcome_known(store, request, expired_record(request))
    """
    if response.get("transport") in ("form", "json", "slack"):
        return None
    return answer_stored(store, request, response)


def reopened(store: Store, request: Record, refusal: Record) -> threading.Thread | None:
    """The waiting task refused the stored answer and the event takes answers again: give the
    message its controls back, saying why."""
    return answer_stored(store, request, {"status": "reopened", "error": refusal.get("error")})


def answer_stored(store: Store, request: Record, response: Record) -> threading.Thread | None:
    """`response` is stored for `request`: rewrite its Slack messages (if it has any) in a daemon thread."""
    if not request.get("slack"):
        return None
    thread = threading.Thread(target=_rewrite, args=(store, request, response), name="hitl-slack-update", daemon=True)
    with _updates_lock:
        if not _updates_hooked:
            atexit.register(_finish_updates)
            _updates_hooked.append(True)
        _updates.add(thread)
    thread.start()
    return thread


_updates: set[threading.Thread] = set()  # message rewrites running
_updates_lock = threading.Lock()
_updates_hooked: list[bool] = []
#: Seconds the end of the program waits for the message rewrites still running: a task that ends
#: at its event's expiry still leaves the message saying so.
EXIT_GRACE_SECONDS = 5.0


def _finish_updates() -> None:
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    with _updates_lock:
        running = list(_updates)
    for thread in running:
        thread.join(max(0.0, deadline - time.monotonic()))


def _rewrite(store: Store, request: Record, response: Record) -> None:
    try:
        record = read_slack(store, str(request["request_id"]))
        if record is not None:  # else not posted yet: the poster updates it once it is
            _update(request, response, list(record.get("messages") or []))
    except StorageError as e:
        logger.warning("Slack: cannot find the message of %r to update: %s", request["event_name"], e)
    finally:
        with _updates_lock:
            _updates.discard(threading.current_thread())


def _update(request: Record, response: Record, messages: list[Record]) -> None:
    for message in messages:
        target = Slack(str(message.get("channel")), mention=message.get("mention"))
        body = {
            "channel": message.get("channel"),
            "ts": message.get("ts"),
            "text": f"{_fallback(request)}: {_outcome_text(request, response, mrkdwn=False)}",
            "blocks": blocks(request, response, target),
        }
        _try(f"updating the message of {request['event_name']!r}", "chat.update", body)


def _fallback(request: Record) -> str:
    """The notification text: no prompt (it may be long) and no link (the form's carries the token)."""
    return f"Human input needed: {request['event_name']}"


def blocks(request: Record, response: Record | None, target: Slack) -> list[Record]:
    """The message's blocks: the question, its details and deadline, and the controls while it
    waits (`response` None, or a vote that did not decide: then with the tally), else the outcome
    and who decided."""
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
    if response is None or response.get("status") in ("voted", "reopened"):
        line = f"Answer by {_date(str(request['expires_at']))}"
        if target.mention:
            line = f"{_mention(target.mention)} · {line}"
        if response is not None:  # the tally (not who voted), or why the task refused the last answer
            line = f"{escape(_outcome_text(request, response, mrkdwn=False))} · {line}"
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
        out.append(_controls(request))
    else:
        out.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_outcome_text(request, response), 3000)}}
        )
    return out


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
        labels = options[1]
        if len(labels) <= _MAX_BUTTONS:
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


def _outcome_text(request: Record, response: Record, *, mrkdwn: bool = True) -> str:
    """ "Approved by @alice", "Answered 42 by …", "Expired, default 'M' used", "1 of 2 approvals"."""
    if response.get("status") == "voted":
        return f"{response.get('approvals')} of {response.get('quorum')} approvals"
    if response.get("status") == "reopened":
        return _cut(f"The task refused the last answer ({response.get('error')}); please answer again", 1000)
    if response.get("status") != "completed":
        if response.get("default_applied"):
            text = f"Expired, default {_shown(response.get('value'))} used"
        else:
            text = "Expired without an answer"
        return f":hourglass: {escape(text)}" if mrkdwn else text
    by = who(response, mrkdwn=mrkdwn)
    value = response.get("value")
    if request["data_type"] == "bool":
        head = "Approved" if value is True else "Rejected"
        mark = ":white_check_mark:" if value is True else ":x:"
    else:
        head, mark = f"Answered {_shown(value)}", ":white_check_mark:"
    text = f"{escape(head) if mrkdwn else head} by {by}"
    comment = response.get("comment")
    if comment:
        text += f"\n> {escape(str(comment))}" if mrkdwn else f': "{comment}"'
    return f"{mark} {text}" if mrkdwn else text


def who(response: Mapping[str, Any], *, mrkdwn: bool = True) -> str:
    """Who gave `response`: a Slack mention, the identity a proxy vouched for, or how it came."""
    identity = str(response.get("identity") or "")
    match = re.match(r"slack:([A-Z0-9]+)", identity)
    if match and mrkdwn:
        return f"<@{match.group(1)}>"
    if identity:
        return escape(identity) if mrkdwn else identity
    via = {"form": "the web form", "json": "the JSON API", "cli": "the command line", "python": "the Python API"}
    return via.get(str(response.get("via")), "someone")


def escape(text: str) -> str:
    """`text` for Slack mrkdwn: &, < and > escaped, so it can neither mention nor link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _date(expires_at: str) -> str:
    """The deadline in each reader's own time zone, with the UTC time as the fallback."""
    moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{escape(expires_at)}>"


def _plain(text: str, limit: int = 75) -> Record:
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": False}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


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


def modal(request: Record) -> Record:
    """The modal that asks for an answer of the event's type: one input per field, each with its bounds."""
    inputs = [_input(f, label="Your answer" if f["name"] == "value" else None) for f in _fields(request)]
    return _view(request, _ANSWER_VIEW, inputs)


def _reject_modal(request: Record) -> Record:
    comment = {"type": "plain_text_input", "action_id": "v", "multiline": True, "max_length": _MAX_INPUT_LENGTH}
    block = {"type": "input", "block_id": "comment", "label": _plain("Why reject?"), "element": comment}
    return _view(request, _REJECT_VIEW, [block])


def _view(request: Record, callback_id: str, inputs: list[Record]) -> Record:
    head = [_prompt(request)] if str(request["prompt"]).strip() else []
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": str(request["request_id"]),
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
        if low is not None:
            element["min_value"] = str(low)
        if high is not None:
            element["max_value"] = str(high)
    elif kind == "bool":
        element.update(type="static_select", options=[_option("Yes", "true"), _option("No", "false")])
    elif kind == "choice" and len(schema["choices"]) <= _MAX_OPTIONS:
        element.update(type="static_select", options=_options(_labels(schema)))
    elif kind == "list" and schema["items"]["kind"] == "choice" and len(schema["items"]["choices"]) <= _MAX_OPTIONS:
        many = len(schema["items"]["choices"]) > _MAX_CHECKBOXES
        element.update(type="multi_static_select" if many else "checkboxes", options=_options(_labels(schema["items"])))
    elif kind == "date":
        element["type"] = "datepicker"
    elif kind == "datetime":
        element["type"] = "datetimepicker"
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


def _option(text: str, value: str) -> Record:
    return {"text": _plain(text), "value": value}


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
        if not isinstance(option, dict):
            return _MISSING
        return _chosen(schema, option.get("value"))
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


def answering_as(request: Record, identity: str, names: Sequence[str]) -> str | None:
    """Who a person known by `names` (``slack:U…``, an e-mail) answers `request` as, or None when they
    may not, as `_policy` decides for the web form: where the event names no one, as `identity` (their
    Slack id and e-mail); else as the first of their names that passes (the e-mail first), and never
    when one of their names is the requester's (unless the event allows self-approval)."""
    if not _policy.needs_identity(request):
        return identity
    people = [_policy.Who(identity=name) for name in sorted(names, key=lambda n: n.startswith("slack:")) if name]
    if not request.get("allow_self_approval") and any(_policy.is_requester(request, who) for who in people):
        return None
    return next((who.identity for who in people if _policy.refusal(request, who) is None), None)


_users: dict[str, tuple[str | None, float]] = {}  # Slack user id -> (e-mail or None, when looked up)
_users_lock = threading.Lock()


def _email(user_id: str) -> str | None:
    """The e-mail of a Slack user (``users.info``, cached), or None when Slack does not give it."""
    now = time.monotonic()
    with _users_lock:
        cached = _users.get(user_id)
    if cached is not None and now - cached[1] < (USER_CACHE_SECONDS if cached[0] else 60.0):
        return cached[0]
    reply = _try(
        f"looking up Slack user {user_id}", "users.info", {"user": user_id}, form=True, seconds=USERS_INFO_SECONDS
    )
    profile = ((reply or {}).get("user") or {}).get("profile") or {}
    email = profile.get("email") if isinstance(profile.get("email"), str) else None
    with _users_lock:
        _users[user_id] = (email, now)
    return email


# -- the interaction endpoint ------------------------------------------------------------------------


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> str | None:
    """Why a request does not carry Slack's signature over `body`, or None when it does.

    The signature is ``v0=`` and the hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed by the
    signing secret, compared in constant time; a timestamp more than five minutes off is refused,
    so a captured request cannot be replayed later.
    """
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
    acknowledgement) and, when an answer was stored in time, (request, response) to hand on."""

    status: int
    body: Record | None = None
    answered: tuple[Record, Record] | None = None


_secret_missing_logged = False


def interaction(
    store: Store,
    headers: Any,
    body: bytes,
    client: str,
    stored_late: Callable[[Record, Record], None],
) -> Outcome:
    """Handle ``POST /slack/interactions``: verify, then act on a click or a submitted modal.

    `headers` has ``get_all`` (an `email.message.Message`). Work that takes longer than
    `ACK_SECONDS` finishes after the reply; an answer it then stores is handed to `stored_late`.
    """
    global _secret_missing_logged
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        if not _secret_missing_logged:
            _secret_missing_logged = True
            logger.warning("Slack interactions refused: %s is not set on this server", SECRET_ENV)
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
    kind = payload.get("type")
    if kind == "block_actions":
        work: Callable[[], Outcome] = lambda: _on_action(store, payload, client)  # noqa: E731
    elif kind == "view_submission":
        work = lambda: _on_view(store, payload, client)  # noqa: E731
    else:
        return Outcome(200)  # view_closed, shortcuts...: nothing to do
    return _within_ack(work, stored_late)


def _within_ack(work: Callable[[], Outcome], stored_late: Callable[[Record, Record], None]) -> Outcome:
    """`work()`'s outcome if it is ready within `ACK_SECONDS`, else an empty acknowledgement; work
    that finishes later hands its answer to `stored_late`."""
    lock = threading.Lock()
    state: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            result = work()
        except StorageError as e:
            logger.error("Slack interaction: %s", e)
            result = Outcome(200)
        except HitlError as e:  # a modal of an event that is gone, say: nothing to store, no traceback
            logger.info("Slack interaction refused: %s", e)
            result = Outcome(200)
        except Exception:
            logger.exception("internal error handling a Slack interaction")
            result = Outcome(200)
        with lock:
            state["result"] = result
            late = state.get("late", False)
        done.set()
        if late and result.body is not None:  # Slack took the acknowledgement as the reply
            logger.info("Slack interaction: a reply came after the acknowledgement and is lost: %s", result.body)
        if late and result.answered is not None:
            stored_late(*result.answered)

    threading.Thread(target=run, name="hitl-slack-interaction", daemon=True).start()
    done.wait(ACK_SECONDS)
    with lock:
        if "result" in state:
            return state["result"]  # type: ignore[no-any-return]
        state["late"] = True
    return Outcome(200)


def _request_id(text: object, prefix: str = "") -> str | None:
    if isinstance(text, str) and text.startswith(prefix):
        return text[len(prefix) :]
    return None


def _user(payload: Record) -> tuple[str, list[str]] | None:
    """The clicker's identity as recorded, and every name respondents may know them by."""
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        return None
    email = _email(user_id)
    identity = f"slack:{user_id}" + (f" <{email}>" if email else "")
    return identity, [f"slack:{user_id}", *([email] if email else [])]


def _ephemeral(url: object, text: str) -> None:
    """Tell the clicker alone, through the click's ``response_url`` (in a daemon thread)."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return
    body = json.dumps({"response_type": "ephemeral", "replace_original": False, "text": text}).encode()

    def send() -> None:
        try:
            reply = _http.exchange(
                "POST", url, seconds=TIMEOUT_SECONDS, body=body, headers={"Content-Type": "application/json"}
            )
        except _http.ExchangeError as e:
            _health.failed("replying to a click", ApiError(str(e)))
            return
        if reply.status != 200:
            _health.failed("replying to a click", ApiError(f"HTTP {reply.status} {reply.reason}"))

    _in_background("hitl-slack-reply", send)


_NOT_YOURS = "Only the people this question names may answer it."


def _on_action(store: Store, payload: Record, client: str) -> Outcome:
    actions = payload.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    request_id = _request_id(action.get("block_id"), _BLOCK_PREFIX)
    url = payload.get("response_url")
    if request_id is None:
        return Outcome(200)  # a block of another app's message
    try:
        request = _answers.load(store, request_id)
    except StorageError:
        raise
    except HitlError:
        _ephemeral(url, "This question no longer exists.")
        return Outcome(200)
    user = _user(payload)
    if user is None:
        return Outcome(400, {"detail": "the interaction names no user"})
    as_who = answering_as(request, *user)
    if as_who is None:
        _ephemeral(url, _NOT_YOURS)
        return Outcome(200)
    identity = as_who
    action_id = str(action.get("action_id"))
    opens = action_id == "answer" or (action_id == "reject" and request.get("comment_required_on_reject"))
    if opens:
        existing = store.read_response(request_id)
        if existing is not None:
            _ephemeral(url, _closed(request, existing))
            return Outcome(200)
        view = modal(request) if action_id == "answer" else _reject_modal(request)
        what = f"opening the answer form of {request['event_name']!r}"
        _in_background(
            "hitl-slack-view", _try, what, "views.open", {"trigger_id": payload.get("trigger_id"), "view": view}
        )
        return Outcome(200)
    try:
        raw = _action_value(request, action_id, action)
        response = _submit(store, request, raw, identity, client)
    except (AlreadyAnsweredError, EventExpiredError, InvalidValueError) as e:
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


def _submit(store: Store, request: Record, raw: object, identity: str, client: str, comment: object = None) -> Record:
    response = _answers.submit(
        store, request, raw, via="slack", client=client, comment=comment, identity=identity, transport="slack"
    )
    answer_stored(store, request, response)
    return response


def _refused(store: Store, request: Record, error: HitlError) -> str:
    """What the person is told when their answer is not stored (the message is brought up to date)."""
    if isinstance(error, AlreadyVotedError):
        return "You have voted on this question already: each person votes once."
    if isinstance(error, AlreadyAnsweredError):
        return _closed(request, error.response)
    if isinstance(error, EventExpiredError):
        response = store.read_response(str(request["request_id"])) or _answers.expired_record(request)
        answer_stored(store, request, response)  # a late click may be the first to see the deadline
        return _closed(request, response)
    return f"Not accepted: {escape(str(error))}"


def _closed(request: Record, response: Record, *, mrkdwn: bool = True) -> str:
    if response.get("status") == "completed":
        return f"Already answered by {who(response, mrkdwn=mrkdwn)}."
    return "This question expired; it takes no more answers."


def _on_view(store: Store, payload: Record, client: str) -> Outcome:
    view = payload.get("view")
    if not isinstance(view, dict) or view.get("callback_id") not in (_ANSWER_VIEW, _REJECT_VIEW):
        return Outcome(200)  # another app's modal
    request = _answers.load(store, view.get("private_metadata"))
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    values = values if isinstance(values, dict) else {}
    first = "comment" if view["callback_id"] == _REJECT_VIEW else str(_fields(request)[0]["name"])

    def errors(message: str, field_errors: Mapping[str, str] | None = None) -> Outcome:
        names = {str(f["name"]) for f in _fields(request)}
        shown = {k: _cut(v, 1000) for k, v in (field_errors or {}).items() if k in names} or {
            first: _cut(message, 1000)
        }
        return Outcome(200, {"response_action": "errors", "errors": shown})

    user = _user(payload)
    if user is None:
        return Outcome(400, {"detail": "the interaction names no user"})
    as_who = answering_as(request, *user)
    if as_who is None:
        return errors(_NOT_YOURS)
    identity = as_who
    try:
        if view["callback_id"] == _REJECT_VIEW:
            comment_state = (values.get("comment") or {}).get("v") or {}
            response = _submit(store, request, False, identity, client, comment=comment_state.get("value") or "")
        else:
            response = _submit(store, request, answer_from_view(request, values), identity, client)
    except InvalidValueError as e:
        return errors(str(e), e.field_errors)
    except AlreadyVotedError as e:
        return errors(_refused(store, request, e))
    except AlreadyAnsweredError as e:
        return errors(_closed(request, e.response, mrkdwn=False))
    except EventExpiredError:
        return errors("This question expired; it takes no more answers.")
    return _stored(request, response)


def _stored(request: Record, response: Record) -> Outcome:
    """The reply to a stored answer; it is handed on to the waiting task, unless it is a vote that did
    not decide the event yet (the wait returns only on the decision)."""
    if response.get("status") == "voted":
        return Outcome(200)
    return Outcome(200, answered=(request, response))
