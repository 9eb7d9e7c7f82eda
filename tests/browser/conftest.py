"""Headless Chromium from Debian's package, driven by Playwright's sync API, for the browser tests.

Nothing is downloaded: the browser is ``/usr/bin/chromium`` (``apt-get install chromium``; ``make test``
installs it) and the tests skip with the reason when it or Playwright's Python package is missing.
Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flyteplugins.hitl.server import HitlServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = (390, 844)
#: The narrowest phone the pages are made for.
NARROW = (360, 740)
DESKTOP = (1024, 760)
#: Milliseconds Playwright waits for a page or an element before failing the test.
TIMEOUT_MS = 15_000


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole package (starting one takes about a second)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (make test does) to run browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed: pip install -e '.[test]'")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@dataclass
class Tab:
    """One page in a fresh browser context, with everything its console said."""

    page: Page
    scheme: str
    size: str
    console: list[str] = field(default_factory=list)

    def goto(self, url: str) -> Response:
        response = self.page.goto(url)
        assert response is not None, f"no response for {url}"
        return response

    def submit(self, action: Callable[[], Any]) -> Response:
        """Run `action` (a click or a key press that submits the form) and return the page it led to."""
        with self.page.expect_navigation() as navigation:
            action()
        response = navigation.value
        assert response is not None
        return response

    def until(self, done: Callable[[], bool], what: str, timeout: float = 15) -> None:
        """Let the page run until `done()` holds (console messages arrive meanwhile); fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"never happened: {what}; console: {self.console}"
            self.page.wait_for_timeout(50)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Content-Security-Policy" in m]

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than the viewport (0 when nothing sticks out)."""
        return int(self.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))

    def style(self, selector: str, prop: str) -> str:
        """The computed value of CSS property `prop` on the first element matching `selector`."""
        return str(self.page.eval_on_selector(selector, "(el, p) => getComputedStyle(el).getPropertyValue(p)", prop))

    def shot(self, name: str) -> Path:
        """Save a screenshot of the page's content as tests/artifacts/<name>-<scheme>-<size>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}-{self.scheme}-{self.size}.png"
        width = self.page.evaluate("document.documentElement.clientWidth")
        # The page may be scrolled (a filled field scrolls into view): measure from the document's top.
        bottom = self.page.evaluate(
            "Math.ceil(document.querySelector('main').getBoundingClientRect().bottom + scrollY)"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": bottom}
        self.page.screenshot(path=str(path), full_page=True, clip=clip)
        return path


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Open tabs: ``open_tab(scheme="dark", size=PHONE, zone="Asia/Kolkata")``; each has its own context
    (no shared cookies); other keywords go to ``browser.new_context``."""
    contexts = []

    def make(
        scheme: str = "light", size: tuple[int, int] = PHONE, scale: float = 1, zone: str | None = None, **extra: Any
    ) -> Tab:
        context = browser.new_context(
            viewport={"width": size[0], "height": size[1]},
            color_scheme=scheme,  # type: ignore[arg-type]
            device_scale_factor=scale,
            is_mobile=size != DESKTOP,
            has_touch=size != DESKTOP,
            timezone_id=zone,
            **extra,
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page, scheme, "desktop" if size == DESKTOP else "phone")
        page.on("console", lambda message: tab.console.append(message.text))
        page.on("pageerror", lambda error: tab.console.append(f"page error: {error}"))
        return tab

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def make_event(server: HitlServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Make events with the public API, served by the test's server (``FLYTE_HITL_ENDPOINT``)."""
    import flyteplugins.hitl as hitl

    monkeypatch.setenv("FLYTE_HITL_ENDPOINT", server.url)

    def make(name: str = "question", data_type: type = int, **kwargs: Any) -> hitl.Event[Any]:
        kwargs.setdefault("prompt", "Please provide a value")
        return hitl.Event.create(name, data_type, **kwargs)

    return make
