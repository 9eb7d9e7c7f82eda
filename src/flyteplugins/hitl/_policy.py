"""Who is asking and whether they may answer: identity and policy, decided here and nowhere else.

Identity comes only from what a server is configured to trust: the header an authenticating proxy
in front of it sets (``FLYTE_HITL_IDENTITY_HEADER``, e.g. ``X-Forwarded-Email``) and the groups
header the same proxy sets (``FLYTE_HITL_GROUPS_HEADER``, e.g. ``X-Forwarded-Groups``,
comma-separated). A writer to the storage root is trusted as storage access is, and may name an
identity itself. Never from a request body.

An event may name its ``respondents`` (identities, or ``group:NAME``), its ``requester`` (who may not
answer their own question unless ``allow_self_approval``) and, for approvals, a ``quorum``. Such an
event is answered only by an identified person; a refusal says what is missing and never who may answer.

Example:
    >>> who = Who("alice@example.com", frozenset({"ops"}))
    >>> check_answerer({"request_id": "a-1", "respondents": ["group:ops"]}, who)  # allowed: returns None
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import (
    BadHeaderError,
    HitlError,
    InvalidEventError,
    InvalidTokenError,
    NotAllowedError,
    NotIdentifiedError,
)

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

Record = dict[str, Any]


@dataclass(frozen=True)
class Who:
    """The person asking: an identity ("" when unknown) and the groups a proxy says they belong to."""

    identity: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)


def identity_header(configured: str | None = None) -> str | None:
    """The identity header a server trusts: `configured`, else ``$FLYTE_HITL_IDENTITY_HEADER``, else None."""
    return configured if configured is not None else os.environ.get(IDENTITY_HEADER_ENV) or None


def groups_header(configured: str | None = None) -> str | None:
    """The groups header a server trusts: `configured`, else ``$FLYTE_HITL_GROUPS_HEADER``, else None."""
    return configured if configured is not None else os.environ.get(GROUPS_HEADER_ENV) or None


def identify(headers: Message, identity_name: str | None, groups_name: str | None) -> Who:
    """Who sent a request, from the headers the server is configured to trust (and only those).

    Raises `BadHeaderError` when a trusted header comes twice: a proxy that appends its own would leave
    the client's first, so neither is trusted.
    """
    identity = _one(headers, identity_name)[:MAX_IDENTITY]
    if not identity:
        return Who()
    groups = [g.strip() for g in _one(headers, groups_name).split(",")]
    return Who(identity, frozenset(g[:MAX_IDENTITY] for g in groups[:MAX_RESPONDENTS] if g))


def _one(headers: Message, name: str | None) -> str:
    if not name:
        return ""
    values = headers.get_all(name) or []
    if len(values) > 1:
        raise BadHeaderError(f"more than one {name} header")
    return values[0].strip() if values else ""


def normal(identity: str) -> str:
    """`identity` as compared: an e-mail address in lower case, anything else as it is."""
    return identity.lower() if "@" in identity else identity


def canonical(value: str, label: str = "identity") -> str:
    """`value` as identities are compared: NFKC-normalized, case-folded, surrounding space removed."""
    import unicodedata

    text = unicodedata.normalize("NFKC", value).casefold().strip() if isinstance(value, str) else ""
    if not text or len(text) > MAX_IDENTITY or any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise InvalidEventError(f"{label} must be a name of 1 to {MAX_IDENTITY} printable characters, got {value!r}")
    return text


def vote_key(identity: str) -> str:
    """The name of `identity`'s vote record: a digest, so that no identity ever becomes a path."""
    return hashlib.sha256(normal(identity).encode()).hexdigest()


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
    mine = normal(who.identity)
    for entry in request.get("respondents") or ():
        if not isinstance(entry, str):
            continue
        if entry.startswith(GROUP_PREFIX):
            if entry[len(GROUP_PREFIX) :] in who.groups:
                return True
        elif normal(entry) == mine:
            return True
    return False


def is_requester(request: Record, who: Who) -> bool:
    requester = request.get("requester")
    return bool(who.identity) and isinstance(requester, str) and normal(requester) == normal(who.identity)


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
    if not request.get("respondents") and not _token_matches(request, token):
        raise InvalidTokenError(str(request["request_id"]))
    check_answerer(request, who)


def check_viewer(request: Record, who: Who, token: object) -> None:
    """Who may open an event's form or status: whoever holds its token, or an identified respondent.
    Anyone else gets `InvalidTokenError`, as for an unknown id: no one learns which events exist."""
    if is_respondent(request, who) or _token_matches(request, token):
        return
    raise InvalidTokenError(str(request["request_id"]))


def _token_matches(request: Record, token: object) -> bool:
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
        checked = [_entry("respondents entry", r) for r in respondents]
        for entry in checked:
            if entry.startswith(GROUP_PREFIX) and not entry[len(GROUP_PREFIX) :].strip():
                raise InvalidEventError(f"respondents entry {entry!r} names no group")
        fields["respondents"] = checked
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
    if quorum > 1:
        if not approval:
            raise InvalidEventError(f"quorum applies to approvals only (data_type bool), got quorum={quorum!r}")
        people = {normal(r) for r in fields.get("respondents", ())}
        if people and not any(r.startswith(GROUP_PREFIX) for r in people) and quorum > len(people):
            raise InvalidEventError(f"quorum {quorum} is more than the {len(people)} respondents named")
        fields["quorum"] = quorum
    return fields


def _entry(label: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEventError(f"{label} must be a non-empty string, got {value!r}")
    value = value.strip()
    if len(value) > MAX_IDENTITY:
        raise InvalidEventError(f"{label} is {len(value)} characters long; the limit is {MAX_IDENTITY}")
    return value
