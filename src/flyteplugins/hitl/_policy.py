"""Who is asking and whether they may answer: identity and policy, decided here and nowhere else.

Identity comes only from what a server is configured to trust: the header an authenticating proxy
in front of it sets (``FLYTE_HITL_IDENTITY_HEADER``, e.g. ``X-Forwarded-Email``) and the groups
header the same proxy sets (``FLYTE_HITL_GROUPS_HEADER``, e.g. ``X-Forwarded-Groups``,
comma-separated). A writer to the storage root is trusted as storage access is, and may name an
identity itself. Never from a request body.

An event may name its ``respondents`` (identities, or ``group:NAME``), its ``requester`` (who may not
answer their own question unless ``allow_self_approval``) and, for approvals, a ``quorum``. Such an
event is answered only by an identified person; a refusal says what is missing and never who may answer.

One person has one name everywhere: every identity and group name, from any source, is compared in
its `canonical` form, and one that has none (empty, too long, or holding a control, bidi or invisible
character) is refused, never cut.

Example:
    >>> who = Who("alice@example.com", frozenset({"ops"}))
    >>> check_answerer({"request_id": "a-1", "respondents": ["group:ops"]}, who)  # allowed: returns None
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import (
    BadHeaderError,
    HitlError,
    InvalidEventError,
    InvalidIdentityError,
    InvalidTokenError,
    NotAllowedError,
    NotIdentifiedError,
)
from ._text import printable

if TYPE_CHECKING:
    from email.message import Message

IDENTITY_HEADER_ENV = "FLYTE_HITL_IDENTITY_HEADER"
GROUPS_HEADER_ENV = "FLYTE_HITL_GROUPS_HEADER"
REQUESTER_ENV = "FLYTE_HITL_REQUESTER"

#: The longest identity (or group name) taken from a header or an argument, in characters.
MAX_IDENTITY = 320
#: Most entries in ``respondents``, and most groups taken from a groups header.
MAX_RESPONDENTS = 100
GROUP_PREFIX = "group:"
SLACK_PREFIX = "slack:"
_SLACK_ID = re.compile("[0-9a-z]+")

Record = dict[str, Any]


def canonical(value: object, label: str = "identity") -> str:
    """`value` as one person (or group) is named everywhere: NFKC-normalized, case-folded, without
    surrounding space. A Slack user named ``slack:<id>`` keeps Slack's upper-case id
    (``slack:u012ab`` is ``slack:U012AB``), since Slack ids are upper-case letters and digits; what
    follows the id (``slack:U012AB <a@example.com>``, as answers record a Slack user) is case-folded.

    Raises `InvalidIdentityError` (a `ValueError`) for a value that is not a string, is empty, is longer
    than `MAX_IDENTITY` or holds a control, bidi or invisible character: such a name is refused, never cut.

    Example:
        >>> canonical(" Alice@Example.COM ")
        'alice@example.com'
        >>> canonical("Slack:u012ab3cd")
        'slack:U012AB3CD'
    """
    if not isinstance(value, str):
        raise InvalidIdentityError(value, label, "it is not a string")
    text = value.strip()
    if len(text) <= MAX_IDENTITY:  # normalizing is bounded by the limit, whatever was sent
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).strip()
    hidden = [c for c in text[: MAX_IDENTITY + 1] if printable(c) != c]
    if not text:
        rule = "it is empty"
    elif len(text) > MAX_IDENTITY:
        rule = f"it is {len(text)} characters long; the limit is {MAX_IDENTITY}"
    elif hidden:
        rule = f"it holds a control, bidi or invisible character ({printable(hidden[0])})"
    elif not text.startswith(SLACK_PREFIX):
        return text
    elif user := _SLACK_ID.match(text, len(SLACK_PREFIX)):
        return SLACK_PREFIX + user.group().upper() + text[user.end() :]
    else:
        rule = "a Slack user is named slack:<id>, the id being letters and digits (slack:U012AB3CD)"
    raise InvalidIdentityError(value, label, rule)


def canonical_or_none(value: object) -> str | None:
    """The `canonical` form of a stored name (a respondents entry, the requester, a vote's identity), or
    None when it has none: such a name matches no one."""
    try:
        return canonical(value)
    except InvalidIdentityError:
        return None


@dataclass(frozen=True)
class Who:
    """The person asking: an identity ("" when unknown) and the groups a proxy says they belong to, each
    in its `canonical` form (`InvalidIdentityError` if one has none)."""

    identity: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.identity:
            object.__setattr__(self, "identity", canonical(self.identity))
        object.__setattr__(self, "groups", frozenset(canonical(g, "group") for g in self.groups))


def identity_header(configured: str | None = None) -> str | None:
    """The identity header a server trusts: `configured`, else ``$FLYTE_HITL_IDENTITY_HEADER``, else None."""
    return configured if configured is not None else os.environ.get(IDENTITY_HEADER_ENV) or None


def groups_header(configured: str | None = None) -> str | None:
    """The groups header a server trusts: `configured`, else ``$FLYTE_HITL_GROUPS_HEADER``, else None."""
    return configured if configured is not None else os.environ.get(GROUPS_HEADER_ENV) or None


def identify(headers: Message, identity_name: str | None, groups_name: str | None) -> Who:
    """Who sent a request, from the headers the server is configured to trust (and only those).

    Raises `BadHeaderError` when a trusted header comes twice (a proxy that appends its own would leave
    the client's first, so neither is trusted), or holds a name that has no `canonical` form.
    """
    identity = _one(headers, identity_name)
    if not identity:
        return Who()
    try:
        identity = canonical(identity)
    except InvalidIdentityError as e:
        raise BadHeaderError(f"the {identity_name} header is refused: {e}") from None
    groups = [g.strip() for g in _one(headers, groups_name).split(",") if g.strip()]
    try:
        return Who(identity, frozenset(groups))
    except InvalidIdentityError as e:
        raise BadHeaderError(f"the {groups_name} header is refused: {e}") from None


def _one(headers: Message, name: str | None) -> str:
    if not name:
        return ""
    values = headers.get_all(name) or []
    if len(values) > 1:
        raise BadHeaderError(f"more than one {name} header")
    return values[0].strip() if values else ""


def vote_key(identity: str) -> str:
    """The name of `identity`'s vote record: a digest of its `canonical` form, so that one person has
    one vote and no identity ever becomes a path. A stored name that has none is hashed as it is."""
    return hashlib.sha256((canonical_or_none(identity) or identity).encode()).hexdigest()


def quorum(request: Record) -> int:
    """How many approvals decide the event (1: the first answer decides)."""
    value = request.get("quorum")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def needs_identity(request: Record) -> bool:
    """Whether only an identified person may answer: the event names respondents, a quorum or a requester."""
    return bool(request.get("respondents")) or quorum(request) > 1 or bool(request.get("requester"))


def is_respondent(request: Record, who: Who) -> bool:
    """Whether `who` is named among the event's respondents, in person or through a group."""
    if not who.identity:
        return False
    for entry in map(canonical_or_none, request.get("respondents") or ()):
        if entry is not None and entry.startswith(GROUP_PREFIX):
            if canonical_or_none(entry[len(GROUP_PREFIX) :]) in who.groups:
                return True
        elif entry == who.identity:
            return True
    return False


def is_requester(request: Record, who: Who) -> bool:
    return bool(who.identity) and canonical_or_none(request.get("requester")) == who.identity


def refusal(request: Record, who: Who) -> HitlError | None:
    """Why `who` may not answer the event (the error to raise), or None when they may."""
    request_id = str(request.get("request_id"))
    if not needs_identity(request):
        return None
    if not who.identity:
        return NotIdentifiedError(request_id, "no identity came with this request; sign in through the proxy")
    if request.get("respondents") and not is_respondent(request, who):
        return NotAllowedError(request_id, who.identity, "they are not among its respondents")
    if is_requester(request, who) and not request.get("allow_self_approval"):
        return NotAllowedError(request_id, who.identity, "they asked the question, and may not answer it themselves")
    return None


def check_answerer(request: Record, who: Who) -> None:
    """Raise `NotIdentifiedError` (401) or `NotAllowedError` (403) unless `who` may answer the event."""
    error = refusal(request, who)
    if error is not None:
        raise error


def check_credentials(request: Record, who: Who, token: object) -> None:
    """The one gate of every server's answer. Where the event names respondents, the identity is the
    credential: only an identified respondent passes, token or not. Elsewhere the token is checked
    first, then whether `who` may answer (`check_answerer`)."""
    if not request.get("respondents") and not token_matches(request, token):
        raise InvalidTokenError(str(request["request_id"]))
    check_answerer(request, who)


def check_viewer(request: Record, who: Who, token: object) -> None:
    """Who may open an event's form or status: whoever holds its token, or an identified respondent.
    Anyone else gets `InvalidTokenError`, as for an unknown id: no one learns which events exist."""
    if is_respondent(request, who) or token_matches(request, token):
        return
    raise InvalidTokenError(str(request["request_id"]))


def token_matches(request: Record, token: object) -> bool:
    """Whether `token` is the event's own (compared in constant time)."""
    # Tokens are ASCII; any other text (an unpaired surrogate from JSON, say) is simply wrong.
    return (
        isinstance(token, str)
        and token.isascii()
        and hmac.compare_digest(token.encode(), str(request["token"]).encode())
    )


def event_fields(
    respondents: Sequence[str] | None,
    requester: str | None,
    allow_self_approval: bool,
    quorum: int,
    *,
    approval: bool,
) -> Record:
    """The policy fields an event stores, after checking the arguments (`InvalidEventError`, at once).

    `requester` defaults to ``$FLYTE_HITL_REQUESTER``. Flyte's task context (``flyte.ctx()``) exposes the
    run and action but not who started the run, so there is no other default.
    """
    fields: Record = {}
    if respondents is not None:
        if isinstance(respondents, (str, bytes)) or not isinstance(respondents, Sequence):
            raise InvalidEventError(f"respondents must be a list of identities or 'group:NAME', got {respondents!r}")
        if not respondents or len(respondents) > MAX_RESPONDENTS:
            raise InvalidEventError(f"respondents must name 1 to {MAX_RESPONDENTS} entries, got {len(respondents)}")
        fields["respondents"] = [_entry("respondents entry", r) for r in respondents]
    if requester is None:
        requester = os.environ.get(REQUESTER_ENV) or None
    if requester is not None:
        fields["requester"] = _entry("requester", requester)
    if not isinstance(allow_self_approval, bool):
        raise InvalidEventError(f"allow_self_approval must be True or False, got {allow_self_approval!r}")
    if allow_self_approval:
        fields["allow_self_approval"] = True
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise InvalidEventError(f"quorum must be a whole number of at least 1, got {quorum!r}")
    if quorum > 1 and not approval:
        raise InvalidEventError(f"quorum applies to approvals only (data_type bool), got quorum={quorum!r}")
    if quorum > 1:
        fields["quorum"] = quorum
    _check_decidable(fields, quorum)
    return fields


def _entry(label: str, value: object) -> str:
    """A respondents entry or the requester in canonical form (``group:`` and its name each), or
    `InvalidEventError` saying why it has none."""
    try:
        name = canonical(value, label)
        if name.startswith(GROUP_PREFIX):
            name = GROUP_PREFIX + canonical(name[len(GROUP_PREFIX) :], f"{label}'s group")
    except InvalidIdentityError as e:
        raise InvalidEventError(str(e)) from None
    return name


def _check_decidable(fields: Record, quorum: int) -> None:
    """Refuse an event that no one could ever decide: one whose respondents, all named in person, are
    fewer than its quorum once the requester (who may not answer their own question) is left out.
    Where a group is named, how many people may answer is not known here, and the event is accepted."""
    named = fields.get("respondents")
    if not named or any(entry.startswith(GROUP_PREFIX) for entry in named):
        return
    people = set(named)
    requester = fields.get("requester")
    excluded = requester in people and not fields.get("allow_self_approval")
    if excluded:
        people.discard(requester)
    if quorum <= len(people):
        return
    besides = ""
    if excluded:
        besides = f" besides the requester {requester!r}, who may not answer their own question"
        besides += " unless allow_self_approval=True"
    if quorum == 1:
        raise InvalidEventError(f"no one may answer the event: its respondents name no one{besides}")
    raise InvalidEventError(
        f"quorum {quorum} is more than the {len(people)} respondents named{besides}; the event could never be decided"
    )
