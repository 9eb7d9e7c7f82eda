"""Answers posted from another page, in headless Chromium: refused, and nothing stored.

The attacker holds a leaked form link (request id and token) and serves a page from another port of
127.0.0.1, the same site as the form server, so the browser sends the site's cookies with the post.
With ``<meta name="referrer" content="no-referrer">`` that page's post carries ``Origin: null`` and
``Sec-Fetch-Site: same-site``. The server's own form must still work, and its post must carry its
true origin (the pages' ``Referrer-Policy: same-origin``).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl.server import HitlServer

from .conftest import Tab

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]

ATTACK = """<!doctype html>
<html><head><meta charset="utf-8">{referrer}<title>Cat pictures</title></head>
<body><form method="post" action="{action}">
<input type="hidden" name="request_id" value="{request_id}">
<input type="hidden" name="token" value="{token}">
<input type="hidden" name="value" value="666">
</form><script>document.forms[0].submit()</script></body></html>
"""


@pytest.fixture
def event(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> hitl.Event[Any]:
    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", server.url)
    return hitl.new_event("approve_budget", data_type=int, prompt="Budget for Q3?")


@pytest.fixture
def attacker(server: HitlServer, event: hitl.Event[Any]) -> Iterator[Callable[[str], str]]:
    """``attacker(referrer_meta)``: the URL of a page on another port that posts the leaked answer at once."""
    pages: dict[str, bytes] = {}

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def page(referrer: str) -> str:
        path = f"/attack-{len(pages)}.html"
        pages[path] = ATTACK.format(
            referrer=referrer,
            action=html.escape(f"{server.url}/submit"),
            request_id=html.escape(event.request_id),
            token=html.escape(event.token),
        ).encode()
        return f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    yield page
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


@pytest.mark.parametrize(
    "referrer",
    ['<meta name="referrer" content="no-referrer">', ""],
    ids=["origin-null", "origin-other-port"],
)
def test_a_page_on_another_port_cannot_answer_with_a_leaked_link(
    open_tab: OpenTab, attacker: Callable[[str], str], event: hitl.Event[Any], root: Path, referrer: str
) -> None:
    tab, url = open_tab(), attacker(referrer)
    with tab.page.expect_response(lambda r: r.url.endswith("/submit")) as posted:
        tab.goto(url)
    reply = posted.value
    sent = reply.request.all_headers()
    assert sent.get("sec-fetch-site") == "same-site", sent
    assert sent.get("origin") == ("null" if referrer else url.rsplit("/", 1)[0]), sent
    assert reply.status == 403
    assert "cross-origin request refused" in reply.text()
    assert not (root / event.request_id / "response.json").exists()


def test_the_servers_own_form_still_answers(
    open_tab: OpenTab, server: HitlServer, event: hitl.Event[Any], root: Path
) -> None:
    tab = open_tab()
    tab.goto(event.form_url)
    tab.page.get_by_label("Your answer").fill("12")
    with tab.page.expect_response(lambda r: r.url.endswith("/submit")) as posted:
        tab.submit(lambda: tab.page.keyboard.press("Enter"))
    reply = posted.value
    sent = reply.request.all_headers()
    assert sent.get("origin") == server.url, "Referrer-Policy: same-origin lets the post carry its origin"
    assert sent.get("sec-fetch-site") == "same-origin"
    assert reply.status == 200
    assert tab.page.locator("h1").inner_text() == "Answer received"
    assert (root / event.request_id / "response.json").exists()
