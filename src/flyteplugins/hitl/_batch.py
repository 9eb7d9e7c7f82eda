"""``POST /submit/batch``: many answers in one request, each checked and stored as if sent alone.

The body is a JSON array of ``{"request_id", "token"?, "value", "comment"?, "data_type"?}`` (at most
`MAX_ITEMS`). Each item passes the JSON endpoint's gate (`_policy.check_credentials`: its token, or the
respondent's identity from the trusted proxy) and the one rule `_answers.submit` (policies, quorum
votes, first answer wins), and is handed on (long-polls, the waiting task, wake-ups) as soon as it is
stored. The reply is 200 once the array was read, ``{"results": [{"request_id", "status", "detail"}]}``
in the array's order, each item with the HTTP status and detail it would have had alone: one item's
refusal never undoes another's answer.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from . import _answers, _client, _wait, _wake
from ._endpoints import (
    JSON,
    Request,
    Response,
    Site,
    _answerable,
    _answered,
    _body,
    _check_same_origin,
    _media_type,
    _refusal,
    _refuse,
    _track,
    _unique_keys,
    _who,
    json_reply,
)
from ._errors import ConfigurationError, EventNotFoundError, HitlError, InvalidValueError, StorageError
from ._store import Record, Store, default_root

logger = logging.getLogger("flyteplugins.hitl.server")

#: Most answers in one batch.
MAX_ITEMS = 1000
#: The fields an item may have.
_FIELDS = frozenset({"request_id", "token", "value", "comment", "data_type", "via"})


def submit_batch(site: Site, request: Request) -> Response:
    """``POST /submit/batch``: a JSON array of answers; 200 with each item's own status and detail."""
    _check_same_origin(site, request)
    if _media_type(request) != JSON:
        raise _refuse(415, f"expected {JSON}, got {_media_type(request) or 'nothing'!r}")
    items = _items(_body(request))
    who = _who(site, request)
    return json_reply(200, {"results": [_one(site, request, who.identity, item) for item in items]})


def _items(body: bytes) -> list[Any]:
    try:
        items = json.loads(body, object_pairs_hook=_unique_keys)
        if not body.isascii() or b"\\u" in body:  # an unpaired surrogate is not text (see `_json_object`)
            json.dumps(items, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _refuse(400, "malformed JSON body: it holds an unpaired surrogate (\\ud800-\\udfff)") from None
    except (ValueError, RecursionError) as e:
        raise _refuse(400, f"malformed JSON body: {e}") from None
    if not isinstance(items, list):
        raise _refuse(400, f"expected a JSON array of answers, got {type(items).__name__}")
    if not 1 <= len(items) <= MAX_ITEMS:
        raise _refuse(400, f"a batch holds 1 to {MAX_ITEMS} answers, got {len(items)}")
    return items


def _row(request_id: object, status: int, detail: str) -> Record:
    return {"request_id": request_id if isinstance(request_id, str) else None, "status": status, "detail": detail}


def _one(site: Site, request: Request, identity: str, item: object) -> Record:
    """One item's result: checked, stored and handed on as `submit_json` does for one answer."""
    if not isinstance(item, dict):
        return _row(None, 400, f"expected a JSON object, got {type(item).__name__}")
    request_id = item.get("request_id")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        return _row(request_id, 400, f"unknown field {unknown[0][:40]!r}; an answer has {sorted(_FIELDS)}")
    try:
        event, who = _answerable(site, request, request_id, item.get("token"))
        if "value" not in item:
            return _row(request_id, 400, "missing field 'value'")
        claimed = item.get("data_type")
        if claimed is not None and claimed != event["data_type"]:
            wrong = f"data_type {claimed!r} does not match the event's type {event['data_type']!r}"
            return _row(request_id, 400, wrong)
        _track(site, request, event["request_id"])
        response = _answers.submit(
            site.store,
            event,
            item["value"],
            via=str(item["via"]) if item.get("via") in ("cli", "python") else "batch",
            transport="json",
            client=request.client,
            comment=item.get("comment"),
            identity=who.identity,
            groups=who.groups,
        )
    except StorageError as e:
        logger.error("storage error on a batch answer to %r: %s", str(request_id)[:200], e)
        if e.transient:
            return _row(request_id, 503, "storage is unavailable; try again later")
        return _row(request_id, 500, "storage refused this answer; the server's log says why")
    except HitlError as e:
        refusal = _refusal(e)
        if refusal is None:
            logger.exception("internal error on a batch answer to %r", str(request_id)[:200])
            return _row(request_id, 500, "internal server error")
        return _row(request_id, refusal.response.status, json.loads(refusal.response.body)["detail"])
    name = event["event_name"]
    if response.get("status") == "voted":  # a vote that did not decide: nothing to hand on yet
        _answered(site, event, response)  # but Slack shows the tally
        tally = f"{response['approvals']} of {response['quorum']} approvals"
        return _row(request_id, 200, f"vote on {name!r} recorded: {tally}")
    _hand_on(site, event, response)
    return _row(request_id, 200, f"answer for {name!r} accepted")


def _hand_on(site: Site, event: Record, response: Record) -> None:
    """Tell whoever waits for this item that it is stored, without waiting for the rest of the batch:
    Slack, this server's long-polls, the waiting task in this process and, by a wake-up, elsewhere."""
    request_id = event["request_id"]
    _answered(site, event, response)
    site.watch.stored(request_id)
    if site.on_answer is not None:
        try:
            site.on_answer(request_id, response)
        except Exception:
            logger.exception("handing the answer to %s to its waiter failed", request_id)
    _wake.poke(site.store, event, response)


# -- the command line: hitl submit --batch FILE ------------------------------------------------------


def read_file(path: str) -> list[Record]:
    """The answers in `path` (``-``: standard input), one JSON object a line; blank lines are skipped.
    A line that is not an object is an `InvalidValueError` naming it, before anything is sent."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidValueError(f"cannot read the answers in {path!r}: {e}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise InvalidValueError(f"{path}:{number}: not JSON: {e}") from None
        if not isinstance(item, dict):
            raise InvalidValueError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        items.append(item)
    if not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidValueError(f"{path} holds {len(items)} answers; a batch holds 1 to {MAX_ITEMS}")
    return items


def answer_all(
    items: list[Record],
    *,
    endpoint: str | None,
    root: str | None,
    headers: Mapping[str, str],
    identity: str | None,
    groups: Sequence[str] = (),
) -> list[Record]:
    """Each item's result: through the server's ``POST /submit/batch``, or straight to the root, where
    each answer goes through `_answers.submit` as ``hitl submit`` sends one."""
    if endpoint and (identity is not None or groups):
        raise ConfigurationError(
            "an identity is named only on a write straight to the storage root (--root); a server takes "
            "identities from the proxy in front of it, never from the request"
        )
    if endpoint:
        sent = [{**item, "via": "cli"} for item in items]
        url = f"{_client.check_endpoint(endpoint)}/submit/batch"
        body = json.dumps(sent).encode()
        reply = _client._call("POST", url, "", "", body=body, headers=_client.request_headers(headers))
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(items):
            raise InvalidValueError(f"{url} did not answer with one result per answer")
        return results
    store = Store(root or default_root())
    import getpass

    client = f"{getpass.getuser()}@{socket.gethostname()}"
    return [_store_one(store, item, client, identity, frozenset(groups)) for item in items]


def _store_one(store: Store, item: Record, client: str, identity: str | None, groups: frozenset[str]) -> Record:
    request_id = item.get("request_id")
    try:
        event = _answers.load(store, request_id)
        if "value" not in item:
            return _row(request_id, 400, "missing field 'value'")
        response = _answers.submit(
            store,
            event,
            item["value"],
            via="cli",
            client=client,
            comment=item.get("comment"),
            identity=identity,
            groups=groups,
        )
    except EventNotFoundError:
        return _row(request_id, 404, f"not_found: no event with request_id {request_id!r}")
    except StorageError:
        raise  # the root is unreachable: every other answer would fail too
    except HitlError as e:
        refusal = _refusal(e)
        if refusal is None:
            raise
        return _row(request_id, refusal.response.status, json.loads(refusal.response.body)["detail"])
    if response.get("status") == "voted":
        return _row(request_id, 200, f"vote on {event['event_name']!r} recorded")
    _wait.hand_over(store.root, event["request_id"], response)
    _wake.poke(store, event, response)
    return _row(request_id, 200, f"answer for {event['event_name']!r} accepted")
