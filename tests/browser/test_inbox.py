"""Each person's inbox in headless Chromium, for two people signed in through a proxy.

The server trusts ``X-Forwarded-Email``; each browser context sends it on every request, as the
sign-in proxy in front of the server would.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl._store import Store
from flyteplugins.hitl.server import HitlServer, make_server, stop_server

from .conftest import TIMEOUT_MS

pytestmark = pytest.mark.browser

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def proxied(store: Store) -> Iterator[HitlServer]:
    httpd = make_server(store, identity_header="X-Forwarded-Email")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    stop_server(httpd, thread)


@pytest.fixture
def signed_in(browser: Any) -> Iterator[Any]:
    """``signed_in(identity)``: a page in its own context whose requests carry the proxy's identity header."""
    contexts = []

    def make(identity: str | None) -> Any:
        headers = {"X-Forwarded-Email": identity} if identity else {}
        context = browser.new_context(extra_http_headers=headers)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.errors = errors
        return page

    yield make
    for context in contexts:
        context.close()


def names(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#inbox a").all_inner_texts()]


def test_each_person_sees_their_own_questions_soonest_first_and_answers_with_the_keyboard(
    root: Any, proxied: HitlServer, signed_in: Any
) -> None:
    base = f"http://127.0.0.1:{proxied.server_address[1]}"
    later = hitl.new_event("later", data_type=int, respondents=[ALICE, BOB], timeout_seconds=900)
    soon = hitl.new_event("soon", data_type=int, respondents=[ALICE], timeout_seconds=300)
    vote = hitl.Event.create("release", bool, quorum=2, respondents=[ALICE, BOB], timeout_seconds=600)
    hitl.new_event("bobs", data_type=int, respondents=[BOB], timeout_seconds=400)
    hitl.new_event("own", data_type=bool, respondents=[ALICE, BOB], requester=ALICE, timeout_seconds=500)
    hitl.new_event("open-link", data_type=int, timeout_seconds=200)  # no respondents: in nobody's inbox

    alice = signed_in(ALICE)
    alice.goto(f"{base}/inbox")
    assert names(alice) == ["soon", "release", "later"]
    assert alice.evaluate("document.activeElement.textContent") == "soon"
    alice.keyboard.press("j")
    alice.keyboard.press("j")
    alice.keyboard.press("k")
    assert alice.evaluate("document.activeElement.textContent") == "release"
    with alice.expect_navigation():
        alice.keyboard.press("Enter")
    assert alice.url == f"{base}/form/{vote.request_id}"  # no token: the identity opens it
    assert alice.inner_text("#votes") == "2 approvals needed; one rejection decides. No votes yet."
    with alice.expect_navigation():
        alice.click("button.yes")
    assert "Vote received" in alice.content()
    assert alice.inner_text("#more") == "2 more waiting for you"
    with alice.expect_navigation():
        alice.click("#more a")
    assert names(alice) == ["soon", "later"]
    assert alice.errors == []

    bob = signed_in(BOB)
    bob.goto(f"{base}/inbox")
    assert names(bob) == ["bobs", "own", "release", "later"]
    assert "1 of 2 approvals: alice@example.com" in bob.inner_text("#inbox")
    with bob.expect_navigation():
        bob.click("text=release")
    with bob.expect_navigation():
        bob.click("button.yes")
    assert "Answer received" in bob.content() and bob.inner_text("#more") == "3 more waiting for you"
    assert vote.wait() is True
    assert [v["identity"] for v in vote.response["votes"]] == [ALICE, BOB]  # type: ignore[index]

    alice.goto(f"{base}/form/{soon.request_id}")
    alice.fill("input[name=value]", "4")
    with alice.expect_navigation():
        alice.press("input[name=value]", "Enter")
    assert alice.inner_text("#more") == "1 more waiting for you"
    assert soon.wait() == 4 and later.request_id


def test_without_an_identity_the_inbox_says_how_to_sign_in_and_lists_nothing(
    root: Any, proxied: HitlServer, signed_in: Any
) -> None:
    hitl.new_event("n", data_type=int, respondents=[ALICE], timeout_seconds=300)
    base = f"http://127.0.0.1:{proxied.server_address[1]}"
    page = signed_in(None)
    page.goto(f"{base}/inbox")
    assert "sign-in proxy" in page.inner_text("main")
    assert page.locator("#inbox a").count() == 0 and page.locator("a").count() == 0


def test_the_requester_gets_no_buttons_and_a_refused_vote_leads_back_to_the_question(
    root: Any, proxied: HitlServer, signed_in: Any
) -> None:
    base = f"http://127.0.0.1:{proxied.server_address[1]}"
    event = hitl.Event.create(
        "release",
        bool,
        prompt="Release **v7**?",
        prompt_type="markdown",
        respondents=[ALICE, BOB, "carol@example.com"],
        requester="carol@example.com",
        quorum=2,
        timeout_seconds=600,
    )
    form = f"{base}/form/{event.request_id}"
    carol = signed_in("carol@example.com")
    carol.goto(form)
    assert carol.inner_html("h1") == "Release <strong>v7</strong>?"
    assert carol.inner_text("#standing") == "You asked for this approval; someone else must approve it."
    assert carol.inner_text("#votes") == "2 approvals needed; one rejection decides. No votes yet."
    assert carol.get_by_role("button").count() == 0 and carol.locator("form").count() == 0

    # Alice has the form open in two tabs and votes in the first; the second's button is refused.
    first, second = signed_in(ALICE), signed_in(ALICE)
    first.goto(form)
    second.goto(form)
    with first.expect_navigation():
        first.get_by_role("button", name="Approve").click()
    assert "Vote received" in first.inner_text("h1")
    with second.expect_navigation() as refused:
        second.get_by_role("button", name="Approve").click()
    assert refused.value is not None and refused.value.status == 409
    assert second.inner_text("h1") == "Already voted"
    assert second.get_by_role("link", name="Your questions").get_attribute("href") == "/inbox"
    with second.expect_navigation():
        second.get_by_role("link", name="Back to the question").click()
    assert second.url == form
    assert re.fullmatch(r"You approved at .+ · 1 of 2 approvals", second.inner_text("#standing"))
    assert second.get_by_role("button").count() == 0
    assert carol.errors == [] and [e for e in second.errors if "status of 409" not in e] == []
