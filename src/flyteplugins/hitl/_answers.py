"""Accepting an answer: the one rule every writer follows (server, CLI, `hitl.submit`).

Callers that take answers from clients check the token first (`_policy.check_credentials`, which also
takes an identified respondent instead). Then `submit` checks who answers (`_policy`), reads
the stored outcome (an answered or expired event refuses at once), refuses answers after the
deadline, checks the value, and stores the answer with a create-only write so the first answer wins.
An approval with a quorum takes votes instead: each person's vote is its own create-only record, and
the vote that completes the quorum (or the first rejection, a veto) writes the decision into the
answer slot, with the same create-only write: one decision, whichever replica stores it.

Also builds the expiry mark, which takes the answer slot when the deadline passes (carrying the
default value when the event has one).
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone
from typing import Any

from . import _policy, _wake
from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    EventExpiredError,
    EventNotFoundError,
    InvalidTokenError,
    InvalidValueError,
    StorageError,
)
from ._store import Outcome, Record, Store, check_request_id

#: How an answer arrived; recorded in the audit trail.
VIA = ("form", "json", "cli", "python", "slack")
_MAX_COMMENT = 4000


def utc_now() -> str:
    """The current time in UTC, ISO 8601 with milliseconds and a Z."""
    return utc(time.time())


def utc(ts: float) -> str:
    """`ts` (seconds since the epoch) in UTC, ISO 8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_left(request: Record) -> float:
    """Seconds until the event's deadline (negative once it has passed), on the wall clock."""
    return datetime.fromisoformat(str(request["expires_at"]).replace("Z", "+00:00")).timestamp() - time.time()


def status_of(request: Record, response: Record | None) -> str:
    """'pending', 'completed' or 'expired'."""
    if response is not None:
        return str(response.get("status", "completed"))
    return "pending" if seconds_left(request) > 0 else "expired"


#: The stored statuses as people read them (pages, ``/status``, the command line).
STATES = {"pending": "waiting", "completed": "answered", "expired": "expired"}


def state_of(request: Record, response: Record | None) -> str:
    """'waiting', 'answered' or 'expired' (`status_of` in the words shown to people and programs)."""
    return STATES[status_of(request, response)]


def status_record(
    request: Record, response: Record | None, refusal: Record | None = None, votes: list[Record] | None = None
) -> Record:
    """What ``GET /status`` shows: the event without its token, its type as people read it
    (``Review {score: int (≥ 1, ≤ 5), label: Label, ...}``), its state (waiting, answered or expired;
    the stored response keeps its own "completed"/"expired" status) and its outcome, and the
    answer the waiting task last refused, with why, if it refused one."""
    from ._schema import describe  # the answer's rules: imported with the first answer, not the package

    schema = request.get("schema")
    record = {
        "request_id": request["request_id"],
        "status": state_of(request, response),
        "type": describe(schema) if isinstance(schema, dict) else request.get("data_type"),
        "request": public_request(request),
        "response": response,
    }
    if refusal is not None:
        record["refused"] = refusal
    if votes is not None:
        record["votes"] = votes
    return record


def refusal_record(request_id: str, slot: int, answer: Record, error: str, field_errors: dict[str, str]) -> Record:
    """What the waiting task stores when its type refuses the answer in `slot`: the answer, the
    error and each field's message; the event then takes answers again."""
    record: Record = {"request_id": request_id, "slot": slot, "refused_at": utc_now(), "answer": answer}
    record["error"] = error
    if field_errors:
        record["field_errors"] = field_errors
    return record


def public_request(request: Record) -> Record:
    """The request as anyone may see it: neither the token nor where the waiting process takes
    wake-ups (an internal address)."""
    return {k: v for k, v in request.items() if k not in ("token", "wake")}


def expired_record(request: Record) -> Record:
    """The expiry mark for `request`; it applies the event's default when there is one."""
    record: Record = {"request_id": request["request_id"], "status": "expired", "expired_at": utc_now()}
    if request.get("default") is not None:
        record.update(default_applied=True, value=request["default"])
    return record


def check_token(request: Record, token: object) -> None:
    """Raise `InvalidTokenError` unless `token` is the event's token (compared in constant time)."""
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), str(request["token"]).encode()):
        raise InvalidTokenError(str(request["request_id"]))


def load(store: Store, request_id: object) -> Record:
    """The stored request for a well-formed `request_id`, or `EventNotFoundError`."""
    request = store.read_request(check_request_id(request_id))
    if request is None:
        raise EventNotFoundError(str(request_id), store.root)
    return request


def submit(
    store: Store,
    request: Record,
    raw: object,
    *,
    via: str,
    client: str,
    comment: object = None,
    identity: str | None = None,
    transport: str = "storage",
    groups: frozenset[str] = frozenset(),
) -> Record:
    """Check `raw` against the event and store it as the answer; return the stored record.

    `via` is how the answer says it was given (form, json, cli, python): a claim, since a program
    can say anything. `transport` is what the writer saw: "form" or "json" for a server endpoint,
    "storage" for a write straight to the root (the CLI, `hitl.submit` without a server).

    `identity` and `groups` say who answers (see `_policy`); an event that names respondents, a
    requester or a quorum refuses anyone else (`NotIdentifiedError`, `NotAllowedError`). With a quorum,
    the answer is a vote: the reply is the vote (``status: "voted"``) until a vote decides, then the
    decision.

    The stored outcome is read first, so an answered or expired event refuses any answer before its
    value is looked at. Raises `AlreadyAnsweredError`, `EventExpiredError` or `InvalidValueError`
    (nothing written).
    """
    request_id = str(request["request_id"])
    who = _policy.Who(identity or "", groups)
    _policy.check_answerer(request, who)
    # The outcome is settled first: an answered or expired event's token must not buy a value check.
    existing, slot, refusal = outcome(store, request)
    if existing is None and seconds_left(request) <= 0:
        if store.create_response(request_id, expired_record(request), slot):
            raise EventExpiredError(request_id, str(request["expires_at"]))
    elif existing is None:
        from ._schema import check_answer

        value = check_answer(request, raw)
        note = _check_comment(request, value, comment)
        response: Record = {
            "request_id": request_id,
            "status": "completed",
            "value": value,
            "data_type": request["data_type"],
            "answered_at": utc_now(),
            "via": via if via in VIA else "json",
            "transport": transport,
            "client": client,
        }
        if note:
            response["comment"] = note
        if identity:
            response["identity"] = identity
        if refusal:  # the answer the task refused before this one, and why: in the audit trail and the reply
            response["refused_before"] = {
                k: refusal[k] for k in ("refused_at", "error", "field_errors") if k in refusal
            }
        if _policy.quorum(request) > 1:
            return _vote(store, request, response, slot)
        _wake.mark(store, request, response)
        if store.create_response(request_id, response, slot):
            return response
    existing = existing or store.read_response(request_id) or expired_record(request)
    if existing.get("status") == "completed":
        raise AlreadyAnsweredError(request_id, existing)
    raise EventExpiredError(request_id, str(request["expires_at"]))


def _check_comment(request: Record, value: Any, comment: object) -> str:
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise InvalidValueError(f"comment must be a string, got {comment!r}", comment)
    comment = comment.strip()
    if len(comment) > _MAX_COMMENT:
        raise InvalidValueError(f"comment is {len(comment)} characters long; the limit is {_MAX_COMMENT}", comment)
    if request.get("comment_required_on_reject") and value is False and not comment:
        raise InvalidValueError(f"a comment is required to reject {request['event_name']!r}", value)
    return comment


_VOTE_FIELDS = ("identity", "value", "comment", "via", "transport", "client")


def _vote(store: Store, request: Record, answer: Record, slot: int) -> Record:
    """Store `answer` as its person's vote, then the decision if the stored votes now make one.

    Every voter lists the votes after storing its own, so the last voter to store sees every vote
    before it: some voter always decides, and the create-only decision keeps it to one decision.
    """
    request_id = str(request["request_id"])
    vote = {k: answer[k] for k in _VOTE_FIELDS if k in answer}
    vote["voted_at"] = answer["answered_at"]
    if not store.create_vote(request_id, _policy.vote_key(str(vote["identity"])), vote):
        raise AlreadyVotedError(request_id, vote)
    votes = store.list_votes(request_id)
    decision = decide(request, votes)
    if decision is None:
        approvals = sum(1 for v in votes if v.get("value") is True)
        return {
            "request_id": request_id,
            "status": "voted",
            **vote,
            "approvals": approvals,
            "quorum": _policy.quorum(request),
        }
    _wake.mark(store, request, decision)
    if not store.create_response(request_id, decision, slot):
        decision = store.read_response(request_id) or expired_record(request)
    if decision.get("status") != "completed":
        raise EventExpiredError(request_id, str(request["expires_at"]))
    mine = _policy.vote_key(str(vote["identity"]))
    if not any(_policy.vote_key(str(v.get("identity"))) == mine for v in decision.get("votes", ())):
        raise AlreadyAnsweredError(request_id, decision)  # decided before this vote counted
    return decision


def _vote_order(vote: Record) -> tuple[str, str]:
    return str(vote.get("voted_at")), _policy.normal(str(vote.get("identity")))


def decide(request: Record, votes: list[Record]) -> Record | None:
    """The decision `votes` make, in the order they were cast: the first rejection decides False (a
    veto), the quorum-th approval True; None while neither has come. The decision carries the votes
    it counted."""
    counted: list[Record] = []
    approvals = 0
    for vote in sorted(votes, key=_vote_order):
        counted.append(vote)
        if vote.get("value") is True:
            approvals += 1
        if vote.get("value") is False or approvals >= _policy.quorum(request):
            decision: Record = {
                "request_id": request["request_id"],
                "status": "completed",
                "value": vote.get("value") is True,
                "data_type": request["data_type"],
                "answered_at": utc_now(),
                **{k: vote[k] for k in _VOTE_FIELDS if k in vote and k != "value"},
                "quorum": _policy.quorum(request),
                "votes": counted,
            }
            return decision
    return None


def outcome(store: Store, request: Record) -> Outcome:
    """The event's stored state (`Store.read_outcome`), after settling a decision its votes already make.

    When the votes stored for an approval with a quorum decide it (the quorum of approvals, or a
    rejection, cast before the deadline) and no decision is stored (the voter's replica stopped, or
    storage failed, between the vote and the decision), this reader writes that decision, create-only,
    exactly as the voter would have: one decision, whoever settles it. Every reader that shows or
    waits on an outcome reads it here.
    """
    request_id = str(request["request_id"])
    found = store.read_outcome(request_id)
    if found.response is not None or _policy.quorum(request) <= 1:
        return found
    deadline = str(request.get("expires_at", ""))
    votes = [v for v in store.list_votes(request_id) if str(v.get("voted_at", "")) <= deadline]
    decision = decide(request, votes)
    if decision is None:
        return found
    store.create_response(request_id, decision, found.slot)
    return store.read_outcome(request_id)


def votes_of(store: Store, request: Record, response: Record | None) -> list[Record] | None:
    """The votes on an approval with a quorum, in the order cast (those the decision counted, once
    decided); None for any other event."""
    if _policy.quorum(request) <= 1:
        return None
    if response is not None and response.get("status") == "completed":
        return list(response.get("votes") or [])
    return sorted(store.list_votes(str(request["request_id"])), key=_vote_order)


def votes_note(store: Store, request: Record) -> str:
    """How many votes an approval with a quorum got ("1 vote came: 1 of 2 approvals"); "" for any
    other event, or when storage cannot say."""
    if _policy.quorum(request) <= 1:
        return ""
    try:
        votes = store.list_votes(str(request["request_id"]))
    except StorageError as e:
        return f"its votes could not be counted ({e})"
    approvals = sum(1 for v in votes if v.get("value") is True)
    came = f"{len(votes)} vote{'' if len(votes) == 1 else 's'} came"
    return f"{came}: {approvals} of {_policy.quorum(request)} approvals"
