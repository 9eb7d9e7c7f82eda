"""Accepting an answer: the one rule every writer follows (server, CLI, `hitl.submit`).

Callers that take answers from clients check the token first (`check_token`). Then `submit` reads
the stored outcome (an answered or expired event refuses at once), refuses answers after the
deadline, checks the value, and stores the answer with a create-only write so the first answer wins.
Also builds the expiry mark, which takes the answer slot when the deadline passes (carrying the
default value when the event has one).
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone
from typing import Any

from ._errors import (
    AlreadyAnsweredError,
    EventExpiredError,
    EventNotFoundError,
    InvalidTokenError,
    InvalidValueError,
)
from ._schema import describe
from ._store import Record, Store, check_request_id
from ._values import check_answer

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


def status_record(request: Record, response: Record | None, refusal: Record | None = None) -> Record:
    """What ``GET /status`` shows: the event without its token, its type as people read it
    (``Review {score: int (≥ 1, ≤ 5), label: Label, ...}``), its status and its outcome, and the
    answer the waiting task last refused, with why, if it refused one."""
    schema = request.get("schema")
    record = {
        "request_id": request["request_id"],
        "status": status_of(request, response),
        "type": describe(schema) if isinstance(schema, dict) else request.get("data_type"),
        "request": public_request(request),
        "response": response,
    }
    if refusal is not None:
        record["refused"] = refusal
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
) -> Record:
    """Check `raw` against the event and store it as the answer; return the stored record.

    `via` is how the answer says it was given (form, json, cli, python): a claim, since a program
    can say anything. `transport` is what the writer saw: "form" or "json" for a server endpoint,
    "storage" for a write straight to the root (the CLI, `hitl.submit` without a server).

    The stored outcome is read first, so an answered or expired event refuses any answer before its
    value is looked at. Raises `AlreadyAnsweredError`, `EventExpiredError` or `InvalidValueError`
    (nothing written).
    """
    request_id = str(request["request_id"])
    # The outcome is settled first: an answered or expired event's token must not buy a value check.
    existing, slot, refusal = store.read_outcome(request_id)
    if existing is None and seconds_left(request) <= 0:
        if store.create_response(request_id, expired_record(request), slot):
            raise EventExpiredError(request_id, str(request["expires_at"]))
    elif existing is None:
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
