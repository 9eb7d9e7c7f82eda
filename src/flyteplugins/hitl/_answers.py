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

import time
from datetime import datetime, timezone
from typing import Any

from . import _policy, _wake
from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    EventExpiredError,
    EventNotFoundError,
    InvalidValueError,
    StorageError,
)
from ._store import Outcome, Record, Store, check_request_id

#: How an answer arrived; recorded in the audit trail.
VIA = ("form", "json", "cli", "python", "slack", "batch")
_MAX_COMMENT = 4000


def utc_now() -> str:
    """The current time in UTC, ISO 8601 with milliseconds and a Z."""
    return utc(time.time())


def utc(ts: float) -> str:
    """`ts` (seconds since the epoch) in UTC, ISO 8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_left(request: Record) -> float:
    """Seconds until the event's deadline (negative once it has passed), on the wall clock."""
    return _timestamp(request["expires_at"]) - time.time()


def _timestamp(text: object) -> float:
    """An ISO 8601 time as this package writes it (``...Z``), in seconds since the epoch."""
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def status_of(request: Record, response: Record | None) -> str:
    """'pending', 'completed' or 'expired': the stored status (2.12.1's words)."""
    if response is not None:
        return str(response.get("status", "completed"))
    return "pending" if seconds_left(request) > 0 else "expired"


#: The stored statuses as people read them (pages, ``/status``, the command line).
STATES = {"pending": "waiting", "completed": "answered", "expired": "expired"}


def state_of(request: Record, response: Record | None) -> str:
    """'waiting', 'answered', 'expired' or 'withdrawn' (`status_of` in the words shown to people and
    programs; 'withdrawn': the waiting process was stopped, and nothing would take the answer)."""
    if response is not None and "withdrawn_at" in response:
        return "withdrawn"
    return STATES[status_of(request, response)]


def status_record(
    request: Record, response: Record | None, refusal: Record | None = None, votes: list[Record] | None = None
) -> Record:
    """What ``GET /status`` shows: the event without its token, its type as people read it
    (``Review {score: int (≥ 1, ≤ 5), label: Label, ...}``), its ``status`` in 2.12.1's words (pending,
    completed, expired: `status_of`) and its ``state`` in today's (`state_of`), its outcome, and the
    answer the waiting task last refused, with why, if it refused one."""
    from ._schema import describe  # the answer's rules: imported with the first answer, not the package

    schema = request.get("schema")
    record = {
        "request_id": request["request_id"],
        "status": status_of(request, response),
        "state": state_of(request, response),
        "type": describe(schema) if isinstance(schema, dict) else request.get("data_type"),
        "request": public_request(request),
        "response": public_response(response),
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
    """The request as anyone may see it: not its token, not where the waiting process takes wake-ups
    (an internal address), not its webhooks (their URLs often hold a secret)."""
    shown = {k: v for k, v in request.items() if k not in ("token", "wake", "webhooks")}
    shown.setdefault("group", request.get("request_id"))  # stored before groups: a group of its own
    return shown


def public_response(response: Record | None) -> Record | None:
    """The outcome as anyone may see it: not where its writer sent the wake-up (an internal address)."""
    return None if response is None else {k: v for k, v in response.items() if k != "woke"}


def store_outcome(
    store: Store, request: Record, record: Record, slot: int | None = None, *, wake: bool = False
) -> bool:
    """Store `record` as the event's outcome in `slot` (default: the current one), create-only; False
    if one is there. The writer that stores it sends the event's outcome notices (`_notify.outcome`),
    so each goes out once; with `wake`, `record` first notes where the writer will send its wake-up."""
    if wake:
        _wake.mark(store, request, record)
    if not store.create_response(str(request["request_id"]), record, slot):
        return False
    if request.get("webhooks"):
        from . import _notify

        _notify.outcome(request, record, slot)
    return True


def expired_record(request: Record) -> Record:
    """The expiry mark for `request`; it applies the event's default when there is one."""
    record: Record = {"request_id": request["request_id"], "status": "expired", "expired_at": utc_now()}
    if request.get("default") is not None:
        record.update(default_applied=True, value=request["default"])
    return record


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
    from . import _telemetry  # imported with the first answer, not the package

    with _telemetry.answer_span(request, via):
        return _submit(store, request, raw, via, client, comment, identity, transport, groups)


def _submit(
    store: Store,
    request: Record,
    raw: object,
    via: str,
    client: str,
    comment: object,
    identity: str | None,
    transport: str,
    groups: frozenset[str],
) -> Record:
    request_id = str(request["request_id"])
    who = _policy.Who(identity or "", groups)  # canonical, or InvalidIdentityError
    _policy.check_answerer(request, who)
    # The outcome is settled first: an answered or expired event's token must not buy a value check.
    existing, slot, refusal = outcome(store, request)
    if existing is None and seconds_left(request) <= 0:
        if store_outcome(store, request, expired_record(request), slot):
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
        if who.identity:
            response["identity"] = who.identity
        if refusal:  # the answer the task refused before this one, and why: in the audit trail and the reply
            response["refused_before"] = {
                k: refusal[k] for k in ("refused_at", "error", "field_errors") if k in refusal
            }
        if _policy.quorum(request) > 1:
            return _vote(store, request, response, slot)
        if store_outcome(store, request, response, slot, wake=True):
            return response
    return _decided(request, existing or store.read_response(request_id) or expired_record(request), who.identity)


def _decided(request: Record, decided: Record, identity: str) -> Record:
    """The reply to an answer or vote that finds the event `decided`: the decision itself to a voter it
    counted (their retry), else `AlreadyAnsweredError` (or `EventExpiredError`)."""
    request_id = str(request["request_id"])
    if decided.get("status") != "completed":
        raise EventExpiredError(request_id, str(request["expires_at"]))
    if identity and any(_policy.canonical_or_none(v.get("identity")) == identity for v in decided.get("votes", ())):
        return decided
    raise AlreadyAnsweredError(request_id, decided)


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
    before it: some voter always decides, and the create-only decision keeps it to one decision. A
    voter whose vote is stored already (their retry, after a reply or a decision was lost) settles the
    decision the same way: they get it if their vote counted, and only an undecided event refuses them
    as having voted.
    """
    request_id = str(request["request_id"])
    vote = {k: answer[k] for k in _VOTE_FIELDS if k in answer}
    vote["voted_at"] = answer["answered_at"]
    if _timestamp(vote["voted_at"]) > _timestamp(request["expires_at"]):
        raise EventExpiredError(request_id, str(request["expires_at"]))
    stored = store.create_vote(request_id, _policy.vote_key(str(vote["identity"])), vote)
    decision, votes = _settle(store, request, slot)
    if decision is not None:
        return _decided(request, decision, str(vote["identity"]))
    if not stored:
        raise AlreadyVotedError(request_id, vote)
    return {
        "request_id": request_id,
        "status": "voted",
        **vote,
        "approvals": sum(1 for v in votes if v.get("value") is True),
        "quorum": _policy.quorum(request),
    }


def _settle(store: Store, request: Record, slot: int) -> tuple[Record | None, list[Record]]:
    """The votes cast before the deadline, and the outcome stored in `slot` once they decide: the
    decision they make, written create-only, or whatever was stored there first. (None, votes) while
    they decide nothing."""
    request_id = str(request["request_id"])
    deadline = _timestamp(request["expires_at"])
    votes = [v for v in store.list_votes(request_id) if _timestamp(v.get("voted_at")) <= deadline]
    decision = decide(request, votes)
    if decision is not None and not store_outcome(store, request, decision, slot, wake=True):
        decision = store.read_response(request_id) or expired_record(request)
    return decision, votes


def _vote_order(vote: Record) -> tuple[str, str]:
    return str(vote.get("voted_at")), str(vote.get("identity"))


def decide(request: Record, votes: list[Record]) -> Record | None:
    """The decision `votes` make, in the order they were cast: the first rejection decides False (a
    veto), the quorum-th approval True; None while neither has come. The decision carries the votes
    it counted, each person's once."""
    counted: list[Record] = []
    voters: set[str] = set()
    approvals = 0
    for vote in sorted(votes, key=_vote_order):
        voter = _policy.canonical_or_none(vote.get("identity"))
        if voter is None or voter in voters:
            continue
        voters.add(voter)
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
    found = store.read_outcome(str(request["request_id"]))
    if found.response is not None or _policy.quorum(request) <= 1:
        return found
    decision, _ = _settle(store, request, found.slot)
    return found if decision is None else found._replace(response=decision)


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
