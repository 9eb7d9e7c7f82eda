"""The endpoints (`_endpoints.py`) without a socket: a `Request` in, a `Response` out, a real store.

Also `Store.list_events`, the one listing the index reads per visit, on each kind of backend.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import annotated_types
import pytest
from conftest import until
from s3_helpers import MotoS3, S3Bucket, use_root

from flyteplugins.hitl import _answers, _policy
from flyteplugins.hitl._endpoints import (
    MAX_LISTED,
    PAGE_SIZE,
    Replies,
    Request,
    Response,
    Site,
    _headers,
    handle,
    trusted_proxies,
)
from flyteplugins.hitl._errors import ConfigurationError
from flyteplugins.hitl._store import Listed, Record, Store, _LocalBackend
from flyteplugins.hitl._task_types import declare
from flyteplugins.hitl.server import make_server, start_server, stop_server

JSON_TYPE = {"Content-Type": "application/json"}
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


def make_event(
    store: Store, name: str = "question", *, data_type: str = "int", created: float | None = None, **extra: Any
) -> Record:
    """A stored request as `new_event` writes it, created `created` seconds since the epoch (default now)."""
    created = time.time() if created is None else created
    record: Record = {
        "request_id": f"{name}-{uuid.uuid4().hex[:24]}",
        "event_name": name,
        "scope": "run",
        "prompt": f"Prompt of {name}",
        "data_type": data_type,
        "token": uuid.uuid4().hex,
        "created_at": _answers.utc(created),
        "expires_at": _answers.utc(created + 3600),
        **extra,
    }
    assert store.create_request(record)
    if store.is_local:
        path = Path(store.root) / record["request_id"] / "request.json"
        os.utime(path, (created, created))
    return record


def call(site: Site, method: str, target: str, body: bytes | None = None, **headers: str) -> Response:
    request = Request(method, target, _headers((k.replace("_", "-"), v) for k, v in headers.items()), body, "10.0.0.9")
    return handle(site, request)


def post(site: Site, target: str, body: bytes, headers: dict[str, str], extra: list[tuple[str, str]] = ()) -> Response:
    request = Request("POST", target, _headers([*headers.items(), *extra]), body, "10.0.0.9")
    return handle(site, request)


def answer_json(event: Record, value: object = 1, **extra: object) -> bytes:
    return json.dumps({"request_id": event["request_id"], "token": event["token"], "value": value, **extra}).encode()


def answer_form(event: Record, value: str = "1", **extra: str) -> bytes:
    return urlencode({"request_id": event["request_id"], "token": event["token"], "value": value, **extra}).encode()


def detail(response: Response) -> str:
    return str(json.loads(response.body)["detail"])


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k.lower() == name.lower()), None)


@pytest.fixture
def site(store: Store) -> Site:
    return Site(store)


# -- routing -----------------------------------------------------------------------------------------


def test_health_is_json_with_the_security_headers(site: Site) -> None:
    response = call(site, "GET", "/health")
    assert (response.status, json.loads(response.body)["status"]) == (200, "healthy")
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "X-Content-Type-Options") == "nosniff"
    assert header(response, "Cache-Control") == "no-store"
    assert header(response, "Referrer-Policy") == "no-referrer"


def test_health_says_whether_the_server_identifies_people_and_takes_slack(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    assert json.loads(call(Site(store), "GET", "/health").body) == {
        "status": "healthy",
        "identifies": False,
        "slack": False,
    }
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cret")
    both = json.loads(call(Site(store, identity_header="X-Forwarded-Email"), "GET", "/health").body)
    assert both == {"status": "healthy", "identifies": True, "slack": True}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get"])
def test_other_methods_are_405_with_allow(site: Site, method: str) -> None:
    for path, allow in (
        ("/health", "GET, HEAD"),
        ("/submit/json", "POST"),
        ("/form/x", "GET, HEAD"),
        ("/", "GET, HEAD"),
    ):
        response = call(site, method, path)
        assert response.status == 405, (method, path)
        assert header(response, "Allow") == allow
        assert method in detail(response)


def test_head_is_routed_as_get(site: Site) -> None:
    assert call(site, "HEAD", "/health").body == call(site, "GET", "/health").body


def test_unknown_paths_are_404(site: Site) -> None:
    for method, path in (("GET", "/nope"), ("POST", "/nope"), ("DELETE", "/x/y"), ("GET", "/form")):
        assert call(site, method, path).status == 404


def test_a_malformed_target_is_400(site: Site) -> None:
    assert call(site, "GET", "http://[/").status == 400


def test_a_query_that_is_not_utf8_is_400(site: Site, store: Store) -> None:
    event = make_event(store)
    response = call(site, "GET", f"/status/{event['request_id']}?token=%E9")
    assert response.status == 400 and "not valid UTF-8" in detail(response)


# -- Host --------------------------------------------------------------------------------------------


def test_a_server_bound_to_loopback_answers_only_loopback_names(store: Store) -> None:
    site = Site(store, loopback_only=True)
    for host in ("127.0.0.1:8000", "LOCALHOST:8000", "localhost", "127.1.2.3:1", "[::1]:8080"):
        assert call(site, "GET", "/health", Host=host).status == 200, host
    assert call(site, "GET", "/health").status == 200, "no Host at all: not a browser"
    for host in (
        "attacker.example:8000",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "[::1",
        "10.0.0.1",
    ):
        refused = call(site, "GET", "/", Host=host)
        assert refused.status == 421, host
        assert host in detail(refused)
    assert call(Site(store), "GET", "/", Host="attacker.example").status == 200, "bound elsewhere: any name"


def test_two_host_headers_are_400_and_close(site: Site) -> None:
    request = Request("GET", "/health", _headers([("Host", "a"), ("Host", "b")]))
    response = handle(site, request)
    assert (response.status, response.close) == (400, True)


def test_a_server_whose_names_are_unknown_answers_any_host(site: Site) -> None:
    assert call(site, "GET", "/health", Host="anything.example").status == 200


# -- /submit/json ------------------------------------------------------------------------------------


def test_a_json_answer_is_stored_and_handed_over_after_the_reply(site: Site, store: Store) -> None:
    event = make_event(store)
    response = post(site, "/submit/json", answer_json(event, 7), JSON_TYPE)
    assert response.status == 200
    assert json.loads(response.body)["value"] == 7
    assert response.answered is not None
    assert response.answered[0] == event
    stored = store.read_response(event["request_id"])
    assert stored is not None
    assert response.answered[1] == stored
    assert (stored["value"], stored["via"], stored["transport"], stored["client"]) == (7, "json", "json", "10.0.0.9")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"])
def test_json_answers_need_the_json_content_type(site: Site, store: Store, ctype: str) -> None:
    event = make_event(store)
    headers = {"Content-Type": ctype} if ctype else {}
    response = post(site, "/submit/json", answer_json(event), headers)
    assert response.status == 415
    assert store.read_response(event["request_id"]) is None


def test_json_content_type_with_a_charset_is_fine(site: Site, store: Store) -> None:
    event = make_event(store)
    response = post(site, "/submit/json", answer_json(event), {"Content-Type": "Application/JSON; charset=utf-8"})
    assert response.status == 200


@dataclasses.dataclass
class _Pick:
    score: Annotated[int, annotated_types.Le(5)]
    tags: list[Literal["a", "b"]]


def test_a_refused_json_answer_keeps_its_detail_and_adds_each_fields_message(site: Site, store: Store) -> None:
    event = make_event(store, "pick", **declare(_Pick))
    response = post(site, "/submit/json", answer_json(event, {"score": 9, "tags": []}), JSON_TYPE)
    assert response.status == 400
    body = json.loads(response.body)
    assert body["detail"].startswith("invalid answer: score: 9 is more than the maximum 5")
    assert body["field_errors"] == {
        "score": "9 is more than the maximum 5",
        "tags": "a required list needs at least one item",
    }
    assert store.read_response(event["request_id"]) is None


def test_a_list_answer_needs_at_least_one_item(site: Site, store: Store) -> None:
    event = make_event(store, "tags", **declare(list[Literal["a", "b"]]))
    response = post(site, "/submit/json", answer_json(event, []), JSON_TYPE)
    assert response.status == 400 and "at least one item" in detail(response)
    assert "field_errors" not in json.loads(response.body)
    assert post(site, "/submit/json", answer_json(event, ["b"]), JSON_TYPE).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"request_id": "R", "token": "wrong", "token": "T", "value": 1}',
        b'{"request_id": "R", "token": "T", "value": 1, "value": 2}',
        b'{"request_id": "R", "token": "T", "value": {"a": 1, "a": 2}}',
    ],
    ids=["token", "value", "nested"],
)
def test_duplicate_json_keys_are_400_and_write_nothing(site: Site, store: Store, body: bytes) -> None:
    event = make_event(store)
    body = body.replace(b'"R"', json.dumps(event["request_id"]).encode()).replace(
        b'"T"', json.dumps(event["token"]).encode()
    )
    response = post(site, "/submit/json", body, JSON_TYPE)
    assert response.status == 400
    assert "duplicate key" in detail(response)
    assert store.read_response(event["request_id"]) is None


def test_a_post_without_a_body_is_411(site: Site) -> None:
    assert post(site, "/submit/json", None, JSON_TYPE).status == 411  # type: ignore[arg-type]
    assert post(site, "/submit", None, FORM_TYPE).status == 411  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        [("Sec-Fetch-Site", "cross-site")],
        [("Origin", "https://attacker.example")],
        [("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
        [("Origin", "http://127.0.0.1:9999")],
        [("Origin", "http://127.0.0.1:8000"), ("Origin", "https://attacker.example")],
        [("Origin", "http://127.0.0.1:8000"), ("Sec-Fetch-Site", "cross-site")],
        [("Origin", "null")],
        [("Origin", "null"), ("Sec-Fetch-Site", "same-site")],
        [("Origin", "http://127.0.0.1:9999"), ("Sec-Fetch-Site", "same-site")],
        [("Sec-Fetch-Site", "none")],
        [("Origin", "https://127.0.0.1:8000")],
        [("Origin", "https://hitl.example.com"), ("X-Forwarded-Host", "hitl.example.com")],
    ],
    ids=[
        "sec-fetch-site",
        "foreign-origin",
        "null-origin-cross-site",
        "other-port",
        "two-origins",
        "own-origin-cross-site",
        "null-origin",
        "null-origin-same-site",
        "other-port-same-site",
        "no-origin-typed-url",
        "other-scheme",
        "untrusted-forwarded-host",
    ],
)
@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_cross_site_answers_are_403_and_write_nothing(
    site: Site, store: Store, headers: list[tuple[str, str]], endpoint: str
) -> None:
    event = make_event(store)
    body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
    response = post(site, endpoint, body, {**ctype, "Host": "127.0.0.1:8000"}, headers)
    assert response.status == 403
    assert "cross-" in (detail(response) if endpoint == "/submit/json" else response.body.decode())
    assert store.read_response(event["request_id"]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Origin", "http://127.0.0.1:8000")],
        [("Origin", "https://127.0.0.1:8000"), ("Sec-Fetch-Site", "same-origin")],
        [("Sec-Fetch-Site", "same-origin")],
        [("Origin", "http://127.0.0.1:8000"), ("Sec-Fetch-Site", "none")],
        [("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
        [("Origin", "HTTP://127.0.0.1:8000")],
    ],
    ids=[
        "program",
        "own-origin",
        "own-origin-https",
        "same-origin",
        "own-origin-user-initiated",
        "null-origin-same-origin",
        "own-origin-upper-case",
    ],
)
@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_same_site_answers_and_programs_are_accepted(
    site: Site, store: Store, headers: list[tuple[str, str]], endpoint: str
) -> None:
    event = make_event(store)
    body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
    assert post(site, endpoint, body, {**ctype, "Host": "127.0.0.1:8000"}, headers).status == 200


@pytest.mark.parametrize("origin", ["null", "junk", "http://"])
def test_an_origin_that_is_no_origin_is_refused_without_a_host_too(site: Site, store: Store, origin: str) -> None:
    event = make_event(store)
    assert post(site, "/submit/json", answer_json(event), JSON_TYPE, [("Origin", origin)]).status == 403
    assert store.read_response(event["request_id"]) is None


@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_a_sibling_subdomain_is_refused(site: Site, store: Store, endpoint: str) -> None:
    # Same site, so the browser sends the platform's session cookie: only the origin tells them apart.
    event = make_event(store)
    body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
    headers = {**ctype, "Host": "hitl-form-server.apps.corp.test"}
    sibling = [("Origin", "https://other-app.apps.corp.test"), ("Sec-Fetch-Site", "same-site")]
    assert post(site, endpoint, body, headers, sibling).status == 403
    assert store.read_response(event["request_id"]) is None
    own = [("Origin", "https://hitl-form-server.apps.corp.test"), ("Sec-Fetch-Site", "same-origin")]
    assert post(site, endpoint, body, headers, own).status == 200


@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_behind_a_trusted_proxy_the_forwarded_origin_is_ours(store: Store, endpoint: str) -> None:
    # A TLS proxy in front: the browser's Origin is https and the proxy's public name, and an old
    # browser (or plain HTTP off loopback) sends no Sec-Fetch-Site to go by.
    site = Site(store, trust_forwarded=True)
    proxied = {"Host": "10.0.0.5:8080", "X-Forwarded-Host": "hitl.example.com", "X-Forwarded-Proto": "https"}
    for origin, status in (("https://hitl.example.com", 200), ("https://other.example.com", 403)):
        event = make_event(store)
        body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
        assert post(site, endpoint, body, {**ctype, **proxied}, [("Origin", origin)]).status == status, origin


@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_the_identity_header_is_recorded_once_and_refused_twice(store: Store, endpoint: str) -> None:
    site = Site(store, identity_header="X-Forwarded-Email", trusted_proxies=trusted_proxies("10.0.0.0/24"))
    event = make_event(store)
    body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
    twice = [("X-Forwarded-Email", "mallory@example.com"), ("X-Forwarded-Email", "ann@example.com")]
    assert post(site, endpoint, body, ctype, twice).status == 400
    assert store.read_response(event["request_id"]) is None
    assert post(site, endpoint, body, ctype, twice[1:]).status == 200
    stored = store.read_response(event["request_id"])
    assert stored is not None
    assert stored["identity"] == "ann@example.com"


def test_the_identity_header_is_ignored_unless_configured(site: Site, store: Store) -> None:
    event = make_event(store)
    twice = [("X-Forwarded-Email", "a@example.com"), ("X-Forwarded-Email", "b@example.com")]
    assert post(site, "/submit/json", answer_json(event), JSON_TYPE, twice).status == 200
    stored = store.read_response(event["request_id"])
    assert stored is not None
    assert "identity" not in stored


def test_a_submit_is_tracked_until_the_handler_ends_it(site: Site, store: Store) -> None:
    event = make_event(store)
    request = Request("POST", "/submit/json", _headers(JSON_TYPE.items()), answer_json(event))
    assert handle(site, request).status == 200
    assert request.replying == [event["request_id"]]
    assert not site.replies.wait(event["request_id"], 0.01), "open until the reply is written"
    site.replies.end(event["request_id"])
    assert site.replies.wait(event["request_id"], 0.01)


@pytest.mark.parametrize("endpoint", ["/submit/json", "/submit"])
def test_refused_submits_are_tracked_too(site: Site, store: Store, endpoint: str) -> None:
    event = make_event(store)
    body, ctype = (answer_json(event), JSON_TYPE) if endpoint == "/submit/json" else (answer_form(event), FORM_TYPE)
    post(site, endpoint, body, ctype)
    request = Request("POST", endpoint, _headers(ctype.items()), body)
    assert handle(site, request).status == 409
    assert request.replying == [event["request_id"]]


def test_replies_wait_for_every_open_reply_of_an_id() -> None:
    replies = Replies()
    replies.begin("a")
    replies.begin("a")
    replies.begin("b")
    assert replies.wait("c", 0)
    done = threading.Event()

    def waiter() -> None:
        replies.wait("a", 30)
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    replies.end("a")
    assert not done.wait(0.05)
    replies.end("a")
    assert done.wait(30)
    thread.join()
    assert not replies.wait("b", 0)


# -- /submit -----------------------------------------------------------------------------------------


def test_a_form_answer_is_stored_with_its_comment(site: Site, store: Store) -> None:
    event = make_event(store, data_type="bool")
    response = post(site, "/submit", answer_form(event, "yes", comment="LGTM"), FORM_TYPE)
    assert response.status == 200
    assert header(response, "Content-Security-Policy")
    stored = store.read_response(event["request_id"])
    assert stored is not None
    assert (stored["value"], stored["comment"], stored["via"], stored["transport"]) == (True, "LGTM", "form", "form")


@pytest.mark.parametrize("field", ["token", "request_id", "comment"])
def test_a_form_with_a_repeated_single_field_is_400(site: Site, store: Store, field: str) -> None:
    event = make_event(store)
    body = answer_form(event) + f"&{field}=other&{field}=more".encode()
    response = post(site, "/submit", body, FORM_TYPE)
    assert response.status == 400
    assert field in response.body.decode()
    assert store.read_response(event["request_id"]) is None


def test_a_bad_form_value_shows_the_form_again(site: Site, store: Store) -> None:
    event = make_event(store)
    response = post(site, "/submit", answer_form(event, "4.5"), FORM_TYPE)
    assert response.status == 400
    assert "4.5" in response.body.decode()
    assert store.read_response(event["request_id"]) is None


@pytest.mark.parametrize("encoded", [b"caf%E9", b"%ED%A0%80", b"caf\xe9"], ids=["latin-1", "surrogate", "raw"])
def test_a_form_value_that_is_not_utf8_is_400_and_stores_nothing(site: Site, store: Store, encoded: bytes) -> None:
    # Percent-encoded or raw, a byte that is not UTF-8 is refused, never stored as U+FFFD.
    event = make_event(store, data_type="str")
    body = answer_form(event, "x").replace(b"value=x", b"value=" + encoded)
    assert b"value=" + encoded in body
    response = post(site, "/submit", body, FORM_TYPE)
    assert response.status == 400
    assert "not valid UTF-8" in response.body.decode()
    assert store.read_response(event["request_id"]) is None


def test_a_form_with_too_many_fields_is_400(site: Site) -> None:
    response = post(site, "/submit", b"&".join([b"a=1"] * 400), FORM_TYPE)
    assert response.status == 400


# -- /form and /status -------------------------------------------------------------------------------


def test_events_lists_what_the_index_shows_as_json_without_tokens(site: Site, store: Store) -> None:
    event = make_event(store)
    reply = call(site, "GET", "/events")
    assert reply.status == 200
    [listed] = json.loads(reply.body)["events"]
    assert (
        listed["request_id"] == event["request_id"] and listed["state"] == "waiting" and listed["status"] == "pending"
    )
    assert "token" not in listed and event["token"] not in reply.body.decode()
    assert json.loads(call(site, "GET", "/events?status=answered").body)["events"] == []
    assert call(site, "GET", "/events?status=pending").status == 400, "one vocabulary: waiting"


def test_form_and_status(site: Site, store: Store) -> None:
    event = make_event(store)
    rid, token = event["request_id"], event["token"]
    assert call(site, "GET", f"/form/{rid}?token={token}").status == 200
    assert call(site, "GET", f"/form/{rid}?token=wrong").status == 403
    assert call(site, "GET", "/form/missing-x?token=t").status == 403
    status = call(site, "GET", f"/status/{rid}?token={token}")
    assert json.loads(status.body)["state"] == "waiting"
    assert token not in status.body.decode()
    assert call(site, "GET", f"/status/{rid}?token=wrong").status == 403


# -- the index ---------------------------------------------------------------------------------------


class Counted(_LocalBackend):
    """A real local backend that counts the storage requests made of it."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.listings = self.reads = self.vote_listings = 0

    def read(self, key: str) -> bytes | None:
        self.reads += 1
        return super().read(key)

    def list_events(self) -> list[Listed]:
        self.listings += 1
        return super().list_events()

    def vote_names(self, request_id: str) -> list[str]:
        self.vote_listings += 1
        return super().vote_names(request_id)

    def requests(self) -> int:
        return self.listings + self.reads + self.vote_listings


class CountingStore(Store):
    """A real local store whose backend counts the storage requests made of it (`counted`)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._backend_instance = self.counted = Counted(root)

    @property
    def reads(self) -> int:
        return self.counted.reads

    @reads.setter
    def reads(self, value: int) -> None:
        self.counted.reads = value

    @property
    def listings(self) -> int:
        return self.counted.listings

    @listings.setter
    def listings(self, value: int) -> None:
        self.counted.listings = value


def names_in(page: str, prefix: str = "ev-") -> list[str]:
    import re

    return re.findall(rf'<p class="caption">({prefix}[0-9]+)</p>', page)


@pytest.fixture
def many(root: Path) -> tuple[CountingStore, list[Record]]:
    """130 events created a second apart, newest last; every third one answered."""
    store = CountingStore(str(root))
    start = time.time() - 1000
    events = [make_event(store, f"ev-{i:03d}", created=start + i) for i in range(130)]
    for event in events[::3]:
        _answers.submit(store, event, "1", via="json", client="x")
    store.reads = store.listings = 0  # count what the visits do, not the set-up
    return store, events


def test_the_index_shows_waiting_events_first_newest_first_a_page_at_a_time(
    many: tuple[CountingStore, list[Record]],
) -> None:
    store, events = many
    site = Site(store)
    waiting = [e["event_name"] for e in reversed(events) if events.index(e) % 3 != 0]
    done = [e["event_name"] for e in reversed(events) if events.index(e) % 3 == 0]
    order = waiting + done
    seen: list[str] = []
    page = 1
    while True:
        response = call(site, "GET", f"/?page={page}" if page > 1 else "/")
        assert response.status == 200
        text = response.body.decode()
        seen += names_in(text)
        if f'name="page" value="{page + 1}"' not in text:
            break
        page += 1
    assert page == -(-len(order) // PAGE_SIZE)
    assert seen == order
    for event in events:
        assert event["token"] not in text


def test_the_index_filters_by_status(many: tuple[CountingStore, list[Record]]) -> None:
    store, events = many
    site = Site(store)
    pending = call(site, "GET", "/?status=pending").body.decode()
    assert names_in(pending) == [e["event_name"] for e in reversed(events) if events.index(e) % 3 != 0][:PAGE_SIZE]
    assert '<input type="hidden" name="status" value="pending"><button type="submit" name="page" value="2"' in pending
    done = call(site, "GET", "/?status=done").body.decode()
    assert names_in(done) == [e["event_name"] for e in reversed(events) if events.index(e) % 3 == 0]
    assert 'name="page"' not in done


@pytest.mark.parametrize("record", ["request.json", "response.json"])
def test_a_damaged_record_leaves_its_event_out_of_the_index_and_is_logged_once(
    site: Site, store: Store, root: Path, record: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = [make_event(store, f"ev-{i}") for i in range(3)]
    for event in events:
        _answers.submit(store, event, "1", via="json", client="x")
    (root / events[1]["request_id"] / record).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.server"):
        for _ in range(2):
            response = call(site, "GET", "/")
            assert response.status == 200
            assert sorted(names_in(response.body.decode())) == ["ev-0", "ev-2"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert events[1]["request_id"] in warning and "not valid JSON" in warning


@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=x", "page=1234567", "status=all", "status=<b>"])
def test_bad_index_queries_are_400(site: Site, query: str) -> None:
    response = call(site, "GET", f"/?{query}")
    assert response.status == 400
    assert header(response, "Content-Type") == "application/json"


def test_an_event_past_its_deadline_without_an_outcome_shows_as_expired(site: Site, store: Store) -> None:
    make_event(store, "ev-001")
    gone = make_event(store, "ev-002", created=time.time() - 7200)  # expired an hour ago, never marked
    page = call(site, "GET", "/").body.decode()
    waiting, done = page.split("Answered or expired")
    assert names_in(waiting) == ["ev-001"]
    assert '<span class="count">1</span>' in waiting
    assert names_in(done) == ["ev-002"]
    assert ">expired<" in done
    assert names_in(call(site, "GET", "/?status=done").body.decode()) == [gone["event_name"]]


def test_a_page_past_the_end_is_empty(many: tuple[CountingStore, list[Record]]) -> None:
    store, _ = many
    response = call(Site(store), "GET", "/?page=99")
    assert response.status == 200
    assert names_in(response.body.decode()) == []


def test_a_visit_lists_once_and_reads_only_records_not_read_before(many: tuple[CountingStore, list[Record]]) -> None:
    store, events = many
    site = Site(store)
    site.listing.seconds = 0  # no sharing of listings between visits
    finished, unanswered = len(events[::3]), len(events) - len(events[::3])
    call(site, "GET", "/?status=done")
    assert store.listings == 1
    # The request of each event without an outcome (its deadline), request and outcome of each finished one shown.
    assert store.reads == unanswered + 2 * finished
    store.reads = 0
    call(site, "GET", "/?status=done")
    assert (store.listings, store.reads) == (2, 0), "requests and outcomes in their slot never change: kept"
    call(site, "GET", "/")
    call(site, "GET", "/?page=2")
    assert (store.listings, store.reads) == (4, 0)


def test_an_answer_shows_once_the_shared_listing_is_old(site: Site, store: Store) -> None:
    event = make_event(store, "ev-001")
    site.listing.seconds = 3600
    assert "left" in call(site, "GET", "/").body.decode()
    _answers.submit(Store(store.root), event, "5", via="cli", client="x")  # another writer
    assert "left" in call(site, "GET", "/").body.decode(), "the listing is shared for a while"
    site.listing.seconds = 0
    page = call(site, "GET", "/").body.decode()
    assert "answered" in page
    assert "Nothing is waiting" in page


# -- Store.list_events -------------------------------------------------------------------------------


@pytest.fixture
def any_store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "root"))


def test_list_events_lists_newest_first_with_whether_answered(any_store: Store) -> None:
    assert any_store.list_events() == []
    now = time.time()
    events = [make_event(any_store, f"e{i}", created=now - 100 + i) for i in range(5)]
    if not any_store.is_local:
        time.sleep(0.01)  # distinct modification times
    _answers.submit(any_store, events[1], "3", via="json", client="x")
    listed = any_store.list_events()
    assert [e.request_id for e in listed] == [e["request_id"] for e in reversed(events)]
    assert [e.answered for e in listed] == [False, False, False, True, False]
    assert all(isinstance(e.created, float) and e.created > 0 for e in listed)


def test_list_events_skips_what_is_not_an_event(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    event = make_event(store)
    (tmp_path / "root" / "no-request-yet").mkdir()
    (tmp_path / "root" / "not an id").mkdir()
    (tmp_path / "root" / "not an id" / "request.json").write_text("{}")
    (tmp_path / "root" / "a-file").write_text("x")
    assert [e.request_id for e in store.list_events()] == [event["request_id"]]


def test_list_events_sees_answers_given_after_an_earlier_listing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    event = make_event(store)
    assert [e.answered for e in store.list_events()] == [False]
    other = Store(str(tmp_path / "root"))  # another process answers
    _answers.submit(other, event, "1", via="json", client="x")
    assert [e.answered for e in store.list_events()] == [True]


def test_list_events_on_s3_is_one_listing_newest_first(moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(use_root(S3Bucket(moto), monkeypatch))
    assert store.list_events() == []
    first = make_event(store, "first")
    time.sleep(1.1)  # S3 stamps objects to the second
    second = make_event(store, "second")
    _answers.submit(store, first, "2", via="json", client="x")
    listed = store.list_events()
    assert [(e.request_id, e.answered) for e in listed] == [(second["request_id"], False), (first["request_id"], True)]
    assert listed[0].created > listed[1].created


def test_via_is_the_clients_claim_and_transport_what_the_server_saw(site: Site, store: Store) -> None:
    event = make_event(store)
    claim = json.loads(answer_json(event, 7))
    claim["via"] = "cli"  # any program may say it is the command line
    assert post(site, "/submit/json", json.dumps(claim).encode(), JSON_TYPE).status == 200
    stored = store.read_response(event["request_id"])
    assert stored is not None
    assert (stored["via"], stored["transport"]) == ("cli", "json")


# -- the token comes first ----------------------------------------------------------------------------


def test_the_token_is_checked_before_the_form_is_decoded(site: Site, store: Store) -> None:
    event = make_event(store)
    # Either would be a 400 once decoded: too many fields, a byte that is not UTF-8.
    for extra in ("&x=1" * 2000, "&comment=%E9"):
        body = f"request_id={event['request_id']}&token=wrong&value=1{extra}".encode()
        assert post(site, "/submit", body, FORM_TYPE).status == 403
        good = f"request_id={event['request_id']}&token={event['token']}&value=1{extra}".encode()
        assert post(site, "/submit", good, FORM_TYPE).status == 400
    assert store.read_response(event["request_id"]) is None


def test_the_token_is_checked_before_the_json_value_is(site: Site, store: Store) -> None:
    event = make_event(store)
    # A repeated key inside the value is refused (400), but only once the token is known good.
    body = '{"request_id": "%s", "token": "%s", "value": {"a": 1, "a": 2}}'
    assert post(site, "/submit/json", (body % (event["request_id"], "wrong")).encode(), JSON_TYPE).status == 403
    assert post(site, "/submit/json", (body % (event["request_id"], event["token"])).encode(), JSON_TYPE).status == 400
    assert store.read_response(event["request_id"]) is None


def test_the_internal_error_log_never_shows_a_token(site: Site, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # A request record whose schema is not one (written by hand) fails inside the endpoint: logged as ours.
    record = make_event(store, "damaged")
    record.update(request_id="damaged-" + uuid.uuid4().hex[:24], schema={"type": 5})
    assert store.create_request(record)
    with caplog.at_level(logging.ERROR, logger="flyteplugins"):
        response = call(site, "GET", f"/status/{record['request_id']}?token={record['token']}&wait=0")
    assert response.status == 500
    assert "internal error on GET /status/damaged-" in caplog.text
    assert record["token"] not in caplog.text


# -- long-polls on an object store --------------------------------------------------------------------


def test_a_few_long_polls_read_their_events_and_many_list_the_root(
    moto: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(use_root(S3Bucket(moto), monkeypatch))
    site = Site(store)
    site.watch.poll_seconds = 0.05
    events = [make_event(store, f"watched{i}") for i in range(3)]

    def listings() -> int:
        return sum("list-type" in query for query in list(moto.queries))

    def reads() -> int:
        return moto.count("GET", "/response.json")

    polls = [
        threading.Thread(target=call, args=(site, "GET", f"/status/{e['request_id']}?token={e['token']}&wait=60"))
        for e in events
    ]
    listed, read = listings(), reads()
    for poll in polls:
        poll.start()
    try:
        # Three watched events: each poll reads their three outcomes, whatever else the root holds.
        until(lambda: reads() - read >= 30, "ten polls reading the watched events")
        assert listings() == listed
        site.watch.list_from = 3  # as many as are watched: one listing per poll instead
        listed = listings()
        until(lambda: listings() - listed >= 3, "polls listing the root")
    finally:
        for e in events:
            _answers.submit(store, e, "1", via="json", client="x")
        for poll in polls:
            poll.join(30)
    assert not any(poll.is_alive() for poll in polls)


# -- proxy headers only from the proxy ----------------------------------------------------------------

ALICE = "alice@example.com"


def ask_from(source: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST on a new connection from the loopback address `source` (another address plays another peer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def test_identity_headers_count_only_from_a_trusted_proxy(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLYTE_HITL_TRUSTED_PROXIES", "127.0.0.1/32")
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    port = httpd.server_address[1]
    event = make_event(store, respondents=[ALICE])
    body = json.dumps({"request_id": event["request_id"], "value": 3}).encode()
    headers = {**JSON_TYPE, "X-Forwarded-Email": ALICE}
    try:
        with caplog.at_level(logging.WARNING, logger="flyteplugins.hitl.server"):
            for _ in range(3):
                assert ask_from("127.0.0.2", port, "/submit/json", body, headers) == 401, "anonymous: sign in"
        assert store.read_response(event["request_id"]) is None
        [warning] = [r.getMessage() for r in caplog.records if "trusted proxy" in r.getMessage()]
        assert "127.0.0.2" in warning and "FLYTE_HITL_TRUSTED_PROXIES" in warning, "once a minute at most"
        assert ask_from("127.0.0.1", port, "/submit/json", body, headers) == 200
    finally:
        stop_server(httpd, thread)
    stored = store.read_response(event["request_id"])
    assert stored is not None and stored["identity"] == ALICE


@pytest.mark.parametrize(
    ("peer", "believed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.9", False),
        ("::ffff:10.0.0.9", False),
        ("fe80::1%eth0", False),
        ("", False),
    ],
)
def test_by_default_identity_comes_from_loopback_peers_only(store: Store, peer: str, believed: bool) -> None:
    site = Site(store, identity_header="X-Forwarded-Email")
    event = make_event(store, respondents=[ALICE])
    body = json.dumps({"request_id": event["request_id"], "value": 1}).encode()
    headers = _headers([*JSON_TYPE.items(), ("X-Forwarded-Email", ALICE)])
    assert handle(site, Request("POST", "/submit/json", headers, body, peer)).status == (200 if believed else 401)
    assert (store.read_response(event["request_id"]) is not None) is believed


def test_a_trusted_proxys_forwarded_origin_is_ours_and_no_one_elses(store: Store) -> None:
    site = Site(store, trusted_proxies=trusted_proxies("10.0.0.0/24"))
    proxied = [("X-Forwarded-Host", "hitl.example.com"), ("X-Forwarded-Proto", "https")]
    for peer, status in (("10.0.0.9", 200), ("10.0.1.9", 403)):
        event = make_event(store)
        headers = _headers([*JSON_TYPE.items(), ("Host", "10.0.0.5:8080"), ("Origin", "https://hitl.example.com")])
        for name, value in proxied:
            headers[name] = value
        assert handle(site, Request("POST", "/submit/json", headers, answer_json(event), peer)).status == status


def test_trusted_proxies_are_addresses_and_ranges_of_both_families(monkeypatch: pytest.MonkeyPatch) -> None:
    assert trusted_proxies("10.0.0.1, 10.1.0.0/16 ,fd00::/8") == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    monkeypatch.delenv("FLYTE_HITL_TRUSTED_PROXIES", raising=False)
    assert trusted_proxies() == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))


@pytest.mark.parametrize("entry", ["10.0.0.300", "proxy.example.com", "10.0.0.0/33", ""])
def test_a_bad_trusted_proxy_entry_stops_the_server_from_starting(
    store: Store, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("FLYTE_HITL_TRUSTED_PROXIES", f"127.0.0.1, {entry}")
    with pytest.raises(ConfigurationError, match=f"FLYTE_HITL_TRUSTED_PROXIES holds {entry!r}"):
        make_server(store)


# -- an event a person may not see looks unknown --------------------------------------------------------


@pytest.mark.parametrize("who", [None, "bob@example.com"])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_an_event_a_person_may_not_see_is_refused_as_an_unknown_id(
    store: Store, who: str | None, token: str | None
) -> None:
    site = Site(store, identity_header="X-Forwarded-Email", trusted_proxies=trusted_proxies("10.0.0.0/24"))
    event = make_event(store, respondents=[ALICE])
    headers = [("X-Forwarded-Email", who)] if who else []
    query = f"?token={token}" if token else ""

    def replies(rid: str) -> list[tuple[int, str]]:
        fields = {"request_id": rid, "value": 1, **({"token": token} if token else {})}
        shown = [
            call(site, "GET", f"/form/{rid}{query}", **dict(headers)),
            call(site, "GET", f"/status/{rid}{query}", **dict(headers)),
            post(site, "/submit/json", json.dumps(fields).encode(), JSON_TYPE, headers),
            post(site, "/submit", urlencode(fields).encode(), FORM_TYPE, headers),
        ]
        return [(r.status, r.body.decode().replace(rid, "ID")) for r in shown]

    seen = replies(event["request_id"])
    assert seen == replies(f"question-{uuid.uuid4().hex[:24]}")
    assert seen == replies(make_event(store)["request_id"]), "nor from an event that asks no one by name"
    assert [status for status, _ in seen] == [401 if who is token is None else 403] * 4
    # A server that identifies no one: every request is anonymous, and without the token refused as unknown.
    plain, unknown = Site(store), f"question-{uuid.uuid4().hex[:24]}"
    ids = (event["request_id"], unknown)
    shown = [call(plain, "GET", f"/{kind}/{rid}{query}") for kind in ("form", "status") for rid in ids]
    assert [r.status for r in shown] == [403] * 4
    assert shown[0].body.replace(event["request_id"].encode(), b"ID") == shown[1].body.replace(unknown.encode(), b"ID")
    assert store.read_response(event["request_id"]) is None
    assert call(site, "GET", f"/form/{event['request_id']}", X_Forwarded_Email=ALICE).status == 200


# -- no outcome outlives a refusal ------------------------------------------------------------------------


def test_a_refused_answer_reopens_the_event_in_every_view_of_every_server(store: Store) -> None:
    trusted = trusted_proxies("10.0.0.0/24")
    sites = [Site(Store(store.root), identity_header="X-Forwarded-Email", trusted_proxies=trusted) for _ in range(2)]
    event = make_event(store, "ev-001", respondents=[ALICE])
    rid = event["request_id"]

    def views(site: Site) -> tuple[Record, str, str]:
        [listed] = json.loads(call(site, "GET", "/events").body)["events"]
        inbox = call(site, "GET", "/inbox", X_Forwarded_Email=ALICE).body.decode()
        return listed, call(site, "GET", "/").body.decode(), inbox

    answer = json.dumps({"request_id": rid, "value": 5}).encode()
    assert post(sites[0], "/submit/json", answer, JSON_TYPE, [("X-Forwarded-Email", ALICE)]).status == 200
    for site in sites:
        listed, index, inbox = views(site)
        assert (listed["status"], listed["state"]) == ("completed", "answered")
        assert "Nothing is waiting" in index and f"/form/{rid}" not in inbox
    # The waiting task's own type refuses the answer, as `_wait` records it: the event takes answers again.
    found = store.read_outcome(rid)
    assert found.response is not None
    error = "5 is more than the maximum 3"
    assert store.create_refusal(rid, found.slot, _answers.refusal_record(rid, found.slot, found.response, error, {}))

    def reopened(site: Site) -> bool:
        listed, index, inbox = views(site)
        if listed["state"] != "waiting":
            return False
        assert (listed["status"], listed["refused"]["error"]) == ("pending", error)
        assert names_in(index.split("Answered or expired")[0]) == ["ev-001"]
        return f"/form/{rid}" in inbox

    for site in sites:
        until(lambda s=site: reopened(s), "the views saying the event waits again")


def test_a_stranded_quorum_decision_is_settled_by_the_listing_that_reads_its_votes(store: Store) -> None:
    event = make_event(store, "ship", data_type="bool", quorum=2)
    rid = event["request_id"]
    for who in (ALICE, "bob@example.com"):  # both votes stored, the decision never written
        vote = {"identity": who, "value": True, "via": "json", "voted_at": _answers.utc_now()}
        assert store.create_vote(rid, _policy.vote_key(who), vote)
    [listed] = json.loads(call(Site(store), "GET", "/events").body)["events"]
    assert listed["state"] == "answered"
    decided = store.read_response(rid)
    assert decided is not None and decided["value"] is True and len(decided["votes"]) == 2


# -- reads bounded by the page ------------------------------------------------------------------------------


def test_events_reads_the_records_of_the_events_it_lists_whatever_the_root_holds(root: Path) -> None:
    store = CountingStore(str(root))
    start = time.time() - 1000
    events = [make_event(store, f"ev-{i:05d}", created=start + i / 20) for i in range(12_000)]
    for event in events[-5:]:
        _answers.submit(store, event, "1", via="json", client="x")
    site = Site(store)
    store.reads = 0
    listed = json.loads(call(site, "GET", "/events").body)["events"]
    assert len(listed) == MAX_LISTED
    assert [e["event_name"] for e in listed[:6]] == [f"ev-{i:05d}" for i in range(11_999, 11_993, -1)]
    assert [e["state"] for e in listed[:6]] == ["answered"] * 5 + ["waiting"]
    # One read per listed event's request, one per listed outcome: nothing of the other 11,000.
    assert store.reads <= MAX_LISTED + 5
    store.reads = 0
    call(site, "GET", "/events")
    assert store.reads == 0, "requests, and outcomes in their slot, never change"


def test_the_index_and_inbox_read_each_vote_once(root: Path) -> None:
    store = CountingStore(str(root))
    approvals = [
        make_event(store, f"ev-{i:03d}", data_type="bool", quorum=2, respondents=[ALICE, "bob@example.com"])
        for i in range(60)
    ]
    for event in approvals:
        bob = {"identity": "bob@example.com", "value": True, "via": "json", "voted_at": _answers.utc_now()}
        store.create_vote(event["request_id"], _policy.vote_key("bob@example.com"), bob)
    site = Site(store, identity_header="X-Forwarded-Email", trusted_proxies=trusted_proxies("10.0.0.0/24"))
    site.listing.seconds = 0  # a listing per view
    site.seen.votes_seconds = 0  # a listing of the votes per view
    counted = store.counted
    before = counted.requests()
    assert "1 of 2" in call(site, "GET", "/").body.decode()
    index = counted.requests() - before
    before = counted.requests()
    assert "1 of 2" in call(site, "GET", "/inbox", X_Forwarded_Email=ALICE).body.decode()
    inbox = counted.requests() - before
    # A listing, each request once, then each shown approval's votes: a listing each, and a read of each vote
    # not read before.
    assert (index, inbox) == (1 + 60 + 2 * PAGE_SIZE, 1 + 60 + (60 - PAGE_SIZE))
    for path in ("/", "/inbox", "/"):
        before = counted.reads, counted.vote_listings, counted.listings
        page = call(site, "GET", path, X_Forwarded_Email=ALICE).body.decode()
        assert "1 of 2" in page
        # No vote is read twice: a later view lists the root, and the votes of each approval it shows.
        assert counted.reads == before[0] and counted.listings == before[2] + 1
        assert counted.vote_listings - before[1] == (PAGE_SIZE if path == "/" else 60)
    site.seen.votes_seconds = 60  # within the second (here a minute) after a listing, none again
    for path in ("/", "/inbox", "/"):
        before = counted.vote_listings
        assert "1 of 2" in call(site, "GET", path, X_Forwarded_Email=ALICE).body.decode()
        assert counted.vote_listings == before
