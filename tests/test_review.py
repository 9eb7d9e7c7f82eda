"""The review page (`_review`): a group's waiting items, who may answer them, the index's group rows."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import request

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _review
from flyteplugins.hitl._endpoints import Request, Site, handle
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer, start_server, stop_server


def rows(page: str) -> list[str]:
    return re.findall(r'<tr data-id="([\w-]+)"', page)


def test_the_review_page_lists_the_groups_waiting_items_with_controls(root: Path, server: HitlServer) -> None:
    items = [{"image": f"img-{n}.png", "label": "cat", f"only-{n}": n} for n in range(5)]
    events = hitl.new_events("label-ok", items, data_type=bool, group="labels <b>")
    other = hitl.new_event("label-ok", data_type=bool, group="other")
    sizes = hitl.new_events(
        "size", [{"image": "i.png", "label": "S"}], data_type=str, choices=["S", "M"], group="labels <b>"
    )
    assert {e.token for e in events} == {events[0].token}  # one token answers the fan-out

    anonymous = request(server.url, "GET", _review.link("labels <b>"))
    assert anonymous.status == 200
    page = anonymous.text
    assert "<h1>labels &lt;b&gt;</h1>" in page and "<b>" not in page.split("<main>", 1)[-1].split("<style>")[0]
    # Oldest first (items written at once are in any order, the same on every visit).
    assert sorted(rows(page)) == sorted([*(e.request_id for e in events), sizes[0].request_id])
    assert other.request_id not in page
    assert page.count("open its own link to answer") == 6 and 'data-answer="a"' not in page
    assert '<th scope="col">image</th><th scope="col">label</th>' in page and "only-1" not in page
    assert "0 of 6 answered" in page

    with_token = request(server.url, "GET", _review.link("labels <b>", events[0].token)).text
    assert with_token.count('data-answer="a"') == 5 and "open its own link to answer" in with_token  # sizes: own token
    csp = anonymous.headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp

    # Answered items leave the page; the progress line counts them.
    batch = [{"request_id": e.request_id, "token": e.token, "value": True} for e in events[:2]]
    body = json.dumps(batch).encode()
    assert request(server.url, "POST", "/submit/batch", body, {"Content-Type": "application/json"}).status == 200
    page = request(server.url, "GET", _review.link("labels <b>", events[0].token)).text
    assert sorted(rows(page)) == sorted([*(e.request_id for e in events[2:]), sizes[0].request_id])
    assert "2 of 6 answered" in page


def test_an_identified_respondent_gets_controls_without_a_token(root: Path, store: Store) -> None:
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    try:
        events = hitl.new_events("ok", [{"n": n} for n in range(3)], data_type=bool, respondents=["a@example.com"])
        path = _review.link(events[0].group)
        mine = request(httpd.url, "GET", path, headers={"X-Forwarded-Email": "a@example.com"}).text
        assert mine.count('data-answer="a"') == 3 and "Signed in as a@example.com" in mine
        # The token is no credential where the event names respondents.
        theirs = request(httpd.url, "GET", _review.link(events[0].group, events[0].token)).text
        assert 'data-answer="a"' not in theirs
    finally:
        stop_server(httpd, thread)


def test_the_inbox_shows_a_group_of_questions_as_one_row(root: Path, store: Store) -> None:
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    try:
        events = hitl.new_events("ok", [{"n": n} for n in range(3)], data_type=bool, respondents=["a@example.com"])
        alone = hitl.new_event("deploy", data_type=bool, respondents=["a@example.com"])
        inbox = request(httpd.url, "GET", "/inbox", headers={"X-Forwarded-Email": "a@example.com"}).text
        assert f'href="{_review.link("ok")}"' in inbox and "ok · 3 waiting for you · soonest deadline" in inbox
        assert f'href="/form/{alone.request_id}"' in inbox and f"/form/{events[0].request_id}" not in inbox
    finally:
        stop_server(httpd, thread)


@pytest.mark.parametrize("path", ["/review/", "/review/%0A", "/review/" + "x" * 201, "/review/%FF"])
def test_a_bad_group_is_404(server: HitlServer, path: str) -> None:
    assert request(server.url, "GET", path).status == 404


def test_the_form_links_to_its_group_and_the_index_shows_a_group_as_one_row(root: Path, server: HitlServer) -> None:
    events = hitl.new_events("label-ok", [{"n": n} for n in range(3)], data_type=bool)
    alone = hitl.new_event("deploy", data_type=bool)
    form = request(server.url, "GET", f"/form/{events[0].request_id}?token={quote(events[0].token)}").text
    assert f'href="{_review.link("label-ok", events[0].token)}"' in form.replace("&amp;", "&")
    body = json.dumps([{"request_id": events[0].request_id, "token": events[0].token, "value": True}]).encode()
    request(server.url, "POST", "/submit/batch", body, {"Content-Type": "application/json"})
    index = request(server.url, "GET", "/").text
    assert "label-ok · 2 waiting · 1 answered · soonest deadline 1h 00m left" in index
    assert f'href="{_review.link("label-ok")}"' in index and "?token" not in index
    assert '<p class="caption">deploy</p>' in index  # a group of one is listed as before
    assert '<p class="caption">label-ok</p>' not in index.split("Answered or expired")[0]
    assert alone.group == "deploy"


def test_a_page_of_100_from_1000_waiting_items(root: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    events = hitl.new_events("label-ok", [{"n": n, "text": f"item {n}"} for n in range(1000)], data_type=bool)
    site = Site(store)
    path = _review.link("label-ok", events[0].token)
    started = time.perf_counter()
    handle(site, Request("GET", path))  # the first visit reads the records; later ones find them cached
    first = time.perf_counter() - started
    took, seen = [], []
    for number in range(1, 11):
        started = time.perf_counter()
        reply = handle(site, Request("GET", f"{path}&page={number}"))
        took.append(time.perf_counter() - started)
        assert reply.status == 200
        shown = rows(reply.body.decode())
        assert len(shown) == 100
        seen += shown
    assert sorted(seen) == sorted(e.request_id for e in events)
    with capsys.disabled():
        print(f"\nreview page of 100 of 1,000 waiting (server time): first visit {first * 1000:.0f} ms, then")
        print(f"{max(took) * 1000:.0f} ms at most")


def test_reviewers_see_who_is_on_which_item(root: Path, store: Store) -> None:
    httpd, thread = start_server(store, identity_header="X-Forwarded-Email")
    try:
        events = hitl.new_events("ok", [{"n": n} for n in range(3)], data_type=bool, respondents=["a@x.org", "b@x.org"])
        ids = [e.request_id for e in events]
        path = _review.link(events[0].group)

        def claim(who: str | None, viewer: str, item: str | None) -> dict[str, str]:
            headers = {"Content-Type": "application/json", **({"X-Forwarded-Email": who} if who else {})}
            body = json.dumps({"viewer": viewer, "claim": item, "ids": ids}).encode()
            reply = request(httpd.url, "POST", path, body, headers)
            assert reply.status == 200, reply.text
            return reply.json()["claims"]

        assert claim("a@x.org", "page-aaaaaaaa", ids[1]) == {}
        assert claim("b@x.org", "page-bbbbbbbb", ids[2]) == {ids[1]: "a@x.org"}
        assert claim("a@x.org", "page-aaaaaaaa", ids[0]) == {ids[2]: "b@x.org"}  # a moved on: item 1 is free
        assert claim(None, "page-cccccccc", None) == {ids[0]: "a@x.org", ids[2]: "b@x.org"}
        assert claim(None, "page-dddddddd", ids[1]) == {ids[0]: "a@x.org", ids[2]: "b@x.org"}
        assert claim("a@x.org", "page-aaaaaaaa", ids[0]) == {ids[1]: "someone", ids[2]: "b@x.org"}
        bad = request(httpd.url, "POST", path, b'{"viewer": "x", "ids": []}', {"Content-Type": "application/json"})
        assert bad.status == 400 and "viewer" in bad.json()["detail"]
        cross = request(
            httpd.url, "POST", path, b"{}", {"Content-Type": "application/json", "Origin": "https://evil.example"}
        )
        assert cross.status == 403
    finally:
        stop_server(httpd, thread)


def test_a_claim_expires() -> None:
    now = [0.0]
    claims = _review.Claims(clock=lambda: now[0])
    claims.claim("item-1", "id:a", "a@x.org")
    assert claims.others(["item-1"], "id:b") == {"item-1": "a@x.org"}
    now[0] = _review.CLAIM_SECONDS + 1
    assert claims.others(["item-1"], "id:b") == {}
