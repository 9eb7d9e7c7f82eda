"""Hostile input: property tests over the whole HTTP surface of a real server, sent over raw sockets.

Whatever arrives (any method, target, header, body, encoding or length), the server must answer
with less than 500, log no traceback and nothing at warning level or above, write nothing but
legitimate answers inside its root, and never change an answer already given. Names, prompts and
values shown on pages must stay text: the pages keep the template's tags and attributes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flyteplugins.hitl as hitl
from flyteplugins.hitl._store import Store
from flyteplugins.hitl._text import visible
from flyteplugins.hitl.server import HitlHandler, HitlServer, make_server, stop_server

from ._util import ServerProcess, assert_clean_log, event_record, start_server_process

EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Hypothesis also draws text from the constants in this module, so these ids do come up by chance.
FIXED_IDS = {"pending-int", "pending-float", "pending-str", "pending-bool", "answered", "expired"}
TRAVERSAL = [
    "..",
    "../..",
    "../outside",
    "..%2F..%2Foutside",
    "%2e%2e%2foutside",
    "..\\outside",
    "/etc/passwd",
    "....//outside",
    "a/../../outside",
    "pending-int/../../outside",
    "pending-int%00",
    "pending-int\x00x",
    ".",
    "",
    "~",
    "x" * 129,
    "ünïcödé",
    "outside/response.json",
]


class ShortTimeout(HitlHandler):
    # A stuck connection shows up as a slow example instead of a 30-second stall.
    timeout = 5


class Site:
    """The server under attack and what must not change."""

    def __init__(self, base: Path, root: Path, httpd: HitlServer, events: dict[str, dict[str, Any]]) -> None:
        self.base, self.root, self.httpd, self.events = base, root, httpd, events
        self.answered = (root / "answered" / "response.json").read_bytes()
        self.records: list[logging.LogRecord] = []
        self.tried: dict[str, int] = {}
        self.outcomes: dict[Path, bytes] = {}

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def __repr__(self) -> str:
        # Hypothesis prints the fixture with every failing example: keep it to one line.
        return f"Site({self.root})"


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.into.append(record)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    (base / "outside").mkdir()  # where a traversal would land
    store = Store(str(root))
    events: dict[str, dict[str, Any]] = {}
    for data_type in ("int", "float", "str", "bool"):
        events[f"pending-{data_type}"] = event_record(f"pending-{data_type}", data_type=data_type)
    events["answered"] = event_record("answered", data_type="str")
    events["expired"] = event_record("expired", data_type="int", timeout_seconds=-60)
    for record in events.values():
        assert store.create_request(record)
    assert store.create_response(
        "answered", {"request_id": "answered", "status": "completed", "value": "the <first> & only", "data_type": "str"}
    )
    httpd = make_server(store)
    httpd.RequestHandlerClass = ShortTimeout
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    site = Site(base, root, httpd, events)
    logger = logging.getLogger("flyteplugins.hitl")
    handler, level = _Collect(site.records), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield site
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        stop_server(httpd, thread)
        print(f"\nhostile: {sum(site.tried.values())} raw requests tried: {site.tried}")


@pytest.fixture(autouse=True)
def no_traceback_on_stderr(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    # What escapes the loggers (an exception in a server thread, the standard library's own error
    # printing) lands on stderr.
    yield
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-4000:]


def exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send `data` and half-close, then read everything until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server refused the rest (413, 400) and closed first: its reply may still be there
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


_LOGGED_STATUS = re.compile(r'" (\d{3}) \S+$')


def check_after(site: Site, kind: str, sent: bytes, reply: bytes) -> None:
    """The invariants every request must leave intact."""
    site.tried[kind] = site.tried.get(kind, 0) + 1
    statuses = [int(m.group(1)) for r in list(site.records) if (m := _LOGGED_STATUS.search(r.getMessage()))]
    first = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    if first:
        statuses.append(int(first.group(1)))
    bad = [r for r in site.records if r.exc_info is not None or r.levelno >= logging.WARNING]
    site.records.clear()
    assert not bad, (sent[:300], [r.getMessage() for r in bad])
    assert all(s < 500 for s in statuses), (sent[:300], statuses, reply[:300])
    assert (site.root / "answered" / "response.json").read_bytes() == site.answered
    for path in site.base.rglob("*"):
        rel = path.relative_to(site.base)
        if path.is_dir():
            assert (
                rel == Path("outside")
                or rel == Path("root")
                or (rel.parent == Path("root") and rel.name in site.events)
            )
            continue
        assert rel.parent.parent == Path("root") and rel.parent.name in site.events, rel
        assert rel.name in ("request.json", "response.json"), rel
        # A legitimate first answer to a pending event may appear; after that it never changes.
        if rel.name == "response.json":
            assert site.outcomes.setdefault(rel, path.read_bytes()) == path.read_bytes(), rel
    assert not any((site.base / "outside").iterdir())


# -- strategies ---------------------------------------------------------------------------------

latin1 = st.text(st.characters(max_codepoint=255), max_size=40)
anything_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def request_ids(draw: st.DrawFn) -> Any:
    return draw(
        st.sampled_from([*sorted(FIXED_IDS), "nope"])
        | st.sampled_from(TRAVERSAL)
        | st.from_regex(r"[A-Za-z0-9_-]{1,130}", fullmatch=True)
        | st.text(max_size=50)
        | anything_json
    )


@st.composite
def tokens(draw: st.DrawFn, request_id: Any, site: Site) -> Any:
    real = site.events.get(request_id, {}).get("token") if isinstance(request_id, str) else None
    choices = [st.text(max_size=40), anything_json, st.just("\ud800"), st.just("")]
    if real:
        choices += [st.just(real), st.just(real + "x"), st.just(real[:-1]), st.just(real.upper())]
    return draw(st.one_of(*choices))


@st.composite
def answer_payloads(draw: st.DrawFn, site: Site) -> dict[str, Any]:
    request_id = draw(request_ids())
    payload: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        payload["request_id"] = request_id
    if draw(st.integers(0, 4)):
        payload["token"] = draw(tokens(request_id, site))
    if draw(st.integers(0, 5)):
        payload["value"] = draw(
            anything_json
            | st.sampled_from(["42", "4.5", "true", "ture", "1e999", "nan", "-0", " 7 ", "\ud800", "x" * 5000])
            | st.integers(min_value=-(10**50), max_value=10**50)
        )
    for key in draw(st.lists(st.sampled_from(["data_type", "comment", "via", "extra", "__proto__"]), max_size=3)):
        payload[key] = draw(anything_json | st.sampled_from(["int", "str", "cli", "python", "\ud800"]))
    return payload


def encode_json(payload: Any, how: str) -> bytes:
    text = json.dumps(payload, ensure_ascii=how == "ascii")
    if how == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn, site: Site) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "form", "binary", "bad-utf8", "empty", "huge", "deep", "bigint"]))
    if kind == "json":
        return kind, encode_json(draw(answer_payloads(site)), draw(st.sampled_from(["ascii", "utf-8", "utf-16"])))
    if kind == "form":
        payload = draw(answer_payloads(site))
        if draw(st.booleans()):
            pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in payload.items()]
            return kind, urlencode(pairs, errors="surrogatepass").encode("ascii")
        return kind, "&".join(f"{k}={v}" for k, v in payload.items()).encode("utf-8", "surrogatepass")
    if kind == "binary":
        return kind, draw(st.binary(max_size=2000))
    if kind == "bad-utf8":
        return kind, b'{"request_id": "pending-str", "token": "\xff\xfe", "value": "\xed\xa0\x80\xc3"}'
    if kind == "empty":
        return kind, b""
    if kind == "huge":
        return kind, b"x" * (HitlHandler.max_body_bytes + draw(st.integers(1, 1000)))
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return kind, b"[" * depth + b"]" * draw(st.integers(0, depth))
    return kind, b'{"request_id": "pending-int", "value": ' + b"9" * draw(st.integers(4000, 100_000)) + b"}"


@st.composite
def targets(draw: st.DrawFn, site: Site) -> str:
    request_id = draw(request_ids())
    rid = request_id if isinstance(request_id, str) else json.dumps(request_id)
    path = draw(
        st.sampled_from(["/", "/health", "/submit", "/submit/json", "/form/", "/status/", "/nope", "*", ""])
        | st.builds(lambda p, r: p + r, st.sampled_from(["/form/", "/status/", "/", "//", "/submit/"]), st.just(rid))
        | st.builds(
            lambda p, r: p + quote(r, safe="", errors="surrogatepass"),
            st.sampled_from(["/form/", "/status/"]),
            st.just(rid),
        )
        | st.sampled_from(["http://[", "http://x/health", "//[::1", "http://[::1]:0/form/x", "/%", "/%zz", "/\x7f"])
        | st.text(max_size=60)
    )
    query = draw(
        st.sampled_from(["", "?"])
        | st.builds(lambda t: "?token=" + quote(str(t), safe="", errors="surrogatepass"), tokens(request_id, site))
        | st.builds(lambda q: "?" + q, st.text(max_size=60))
        | st.just("?" + "&".join(f"k{i}=v" for i in range(50)))
    )
    return path + query


CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "multipart/form-data; boundary=x",
    "text/plain",
    "application/json; charset=utf-16",
    "",
    ";;;",
]


@st.composite
def raw_requests(draw: st.DrawFn, site: Site) -> tuple[str, bytes]:
    method = draw(
        st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW", "get"])
        | st.text(st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=12)
    )
    target = draw(targets(site))
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1.1", "HTTP/x", "", "X"])
    )
    kind, body = draw(bodies(site))
    headers: list[tuple[str, str]] = []
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    length_mode = draw(st.sampled_from(["exact", "exact", "exact", "missing", "short", "long", "junk", "two"]))
    if length_mode == "exact":
        headers.append(("Content-Length", str(len(body))))
    elif length_mode == "short":
        headers.append(("Content-Length", str(max(0, len(body) - draw(st.integers(1, 50))))))
    elif length_mode == "long":
        headers.append(("Content-Length", str(len(body) + draw(st.integers(1, 10**6)))))
    elif length_mode == "junk":
        headers.append(
            ("Content-Length", draw(st.sampled_from(["-1", "abc", "1e3", "0x10", "+5", " 5 ", "9" * 5000, "1_0"])))
        )
    elif length_mode == "two":
        headers += [("Content-Length", str(len(body))), ("Content-Length", "3")]
    for _ in range(draw(st.integers(0, 3))):
        headers.append(
            draw(
                st.sampled_from(
                    [
                        ("Transfer-Encoding", "chunked"),
                        ("Expect", "100-continue"),
                        ("Connection", "keep-alive"),
                        ("Connection", "close"),
                        ("Content-Encoding", "gzip"),
                        ("Host", "\xff"),
                        ("X-Forwarded-For", "<script>"),
                    ]
                )
                | st.tuples(latin1, latin1)
            )
        )
    line = f"{method} {target} {version}".rstrip() if version else f"{method} {target}"
    head = line.encode("utf-8", "surrogatepass") + b"\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
    return kind, head + b"\r\n" + body


# -- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_any_raw_request_gets_a_4xx_or_less_and_changes_nothing(site: Site, data: st.DataObject) -> None:
    kind, sent = data.draw(raw_requests(site))
    check_after(site, f"raw-{kind}", sent, exchange(site.port, sent))


@SETTINGS
@given(data=st.data())
def test_any_answer_body_is_checked_before_anything_is_stored(site: Site, data: st.DataObject) -> None:
    payload = data.draw(answer_payloads(site))
    form = data.draw(st.booleans())
    if form:
        pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in payload.items()]
        body, path, ctype = (
            urlencode(pairs, errors="surrogatepass").encode(),
            "/submit",
            "application/x-www-form-urlencoded",
        )
    else:
        body, path, ctype = encode_json(payload, "utf-8"), "/submit/json", "application/json"
    sent = f"POST {path} HTTP/1.1\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    reply = exchange(site.port, sent)
    check_after(site, "form-answer" if form else "json-answer", sent, reply)
    status = int(reply[9:12] or 0)
    request_id, token = payload.get("request_id"), payload.get("token")
    event = site.events.get(request_id) if isinstance(request_id, str) else None
    if event is None or token != event["token"]:
        assert status in (400, 403, 411, 413, 415), (payload, reply[:300])
    if status == 200:
        stored = json.loads((site.root / request_id / "response.json").read_bytes())
        assert stored["status"] == "completed"


@SETTINGS
@given(
    request_id=(st.sampled_from(TRAVERSAL) | st.text(max_size=40)).filter(lambda s: s not in FIXED_IDS),
    where=st.sampled_from(["form", "status", "json"]),
)
def test_request_ids_never_become_paths(site: Site, request_id: str, where: str) -> None:
    token = site.events["pending-int"]["token"]
    if where == "json":
        body = json.dumps({"request_id": request_id, "token": token, "value": 1}).encode()
        head = b"POST /submit/json HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        sent = head % len(body) + body
    else:
        target = f"/{where}/{quote(request_id, safe='/')}?token={token}"
        sent = f"GET {target} HTTP/1.1\r\n\r\n".encode()
    reply = exchange(site.port, sent)
    check_after(site, f"traversal-{where}", sent, reply)
    assert reply[9:12] in (b"400", b"403"), reply[:300]  # an unknown id is refused like a wrong token


@SETTINGS
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "BREW"]),
    path=st.sampled_from(["/", "/health", "/nope", "/form/pending-int", "/status/x", "/submit", "/submit/json"]),
    ctype=st.sampled_from([None, "application/json", "application/x-www-form-urlencoded", "text/plain"]),
    inner=st.sampled_from(["health", "answer"]),
    pad=st.binary(max_size=20),
)
def test_a_request_body_is_never_run_as_a_request(
    site: Site, method: str, path: str, ctype: str | None, inner: str, pad: bytes
) -> None:
    # The body is itself a request. A server that leaves a body unread on a kept-alive connection
    # runs it as the next request: behind a proxy sharing connections, a smuggled request.
    if inner == "health":
        smuggled = b"GET /health?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    else:
        body = json.dumps({"request_id": "pending-bool", "token": site.events["pending-bool"]["token"], "value": True})
        smuggled = f"POST /submit/json?smuggled=1 HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    payload = pad + smuggled
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(payload)}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    sent = head.encode() + b"\r\n" + payload
    reply = exchange(site.port, sent)
    smuggled_lines = [r.getMessage() for r in site.records if "smuggled=1" in r.getMessage()]
    check_after(site, "smuggling", sent, reply)
    assert smuggled_lines == [], (sent, reply[-500:])
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1, reply[-1000:]


def pipelined(site: Site) -> list[tuple[str, bytes, int]]:
    """Requests that keep the connection open, each with the status it gets on its own."""
    t = {k: quote(v["token"]) for k, v in ((k, site.events[k]) for k in ("pending-int", "answered"))}
    bad = b"{not json"
    late = json.dumps({"request_id": "answered", "token": site.events["answered"]["token"], "value": "again"}).encode()
    post = (
        "POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    )
    return [
        ("GET", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
        ("HEAD", b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
        ("HEAD", b"HEAD /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
        ("HEAD", f"HEAD /form/pending-int?token={t['pending-int']} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 200),
        ("GET", f"GET /form/pending-int?token={t['pending-int']} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 200),
        ("GET", f"GET /status/answered?token={t['answered']} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 200),
        ("GET", b"GET /status/answered?token=wrong HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 403),
        ("GET", b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
        ("OPTIONS", b"OPTIONS /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
        ("POST", post.format(len(bad)).encode() + bad, 400),
        ("POST", post.format(len(late)).encode() + late, 409),
    ]


@SETTINGS
@given(data=st.data())
def test_pipelined_requests_get_their_replies_in_order(site: Site, data: st.DataObject) -> None:
    # Several requests sent in one go on one connection: every reply must be framed exactly
    # (Content-Length, no body after HEAD), or the client reads the wrong bytes as the next reply.
    chosen = data.draw(st.lists(st.sampled_from(pipelined(site)), min_size=1, max_size=8))
    sent = b"".join(raw for _, raw, _ in chosen)
    reply = exchange(site.port, sent)
    check_after(site, "pipelined", sent, reply)
    statuses, rest = [], reply
    for method, _, _ in chosen:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, (chosen, reply[-500:])
        status = int(head[9:12])
        length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body_length = 0 if method == "HEAD" else length
        assert len(rest) >= body_length, (chosen, reply[-500:])
        rest = rest[body_length:]
        statuses.append(status)
    assert statuses == [expected for _, _, expected in chosen]
    assert rest == b""


# -- escaping -----------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(min_size=1, max_size=60),
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            '"><img src=x onerror=alert(1)>',
            "'><svg onload=alert(1)>",
            "</title><script>x</script>",
            "</p></div><form action=//evil>",
            "&lt;already&gt; &amp; &#60;",
            "<!-- -->",
            "<![CDATA[x]]>",
            "javascript:alert(1)",
            "\u202e<b>rtl</b>",
        ]
    ),
).flatmap(lambda s: st.builds(lambda a, b: a + s + b, st.sampled_from(["", "x", "<", '"']), st.sampled_from(["", ">"])))


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, tuple[str, ...]]] = []
        self.values: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, tuple(name for name, _ in attrs)))
        self.values += [value or "" for _, value in attrs]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(reply: bytes) -> _Page:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Content-Type: text/html; charset=utf-8" in head
    page = _Page()
    page.feed(body.decode("utf-8"))
    page.close()
    return page


def fenced(text: str) -> str:
    """`text` as a Markdown code block, which pages show verbatim: this test is about escaping, not
    Markdown's own syntax (tests/test_html.py checks what rendered Markdown may hold)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def as_markdown_shows(text: str) -> str:
    """The text a code block shows for `text`: CommonMark turns CR and CRLF into LF, and NUL into U+FFFD."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


# A page shows an invisible character as a marker: <span class="cf">&lt;U+202E&gt;</span>.
_MARKER = ("span", ("class",))


def check_page(reply: bytes, twin: bytes, shown: list[str]) -> _Page:
    """`reply` has exactly the elements and attributes of `twin` (the same page for plain text) and shows `shown`."""
    page, plain = parse_page(reply), parse_page(twin)
    elements = [e for e in page.elements if e != _MARKER]
    assert elements == [e for e in plain.elements if e != _MARKER], [e for e in elements if e not in plain.elements]
    text = "".join(page.text)
    for value in shown:
        assert visible(value) in text, (value, text[:2000])
    return page


@pytest.fixture(scope="module")
def pages(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A second server, for events made the way a task makes them (its log goes to `site` as well)."""
    root = tmp_path_factory.mktemp("pages") / "root"
    httpd = make_server(Store(str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    saved = {k: os.environ.get(k) for k in ("FLYTE_HITL_ROOT", "FLYTE_HITL_ENDPOINT")}
    os.environ["FLYTE_HITL_ROOT"] = str(root)
    os.environ["FLYTE_HITL_ENDPOINT"] = httpd.url  # no embedded server: this one serves the events
    try:
        yield root, int(httpd.server_address[1])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_server(httpd, thread)


@settings(SETTINGS, max_examples=100)
@given(name=HOSTILE_TEXT.filter(lambda s: s.strip() and len(s) <= 200), prompt=HOSTILE_TEXT, value=HOSTILE_TEXT)
def test_names_prompts_and_values_stay_text_on_every_page(
    site: Site, pages: tuple[Path, int], name: str, prompt: str, value: str
) -> None:
    root, port = pages
    if value.strip().lstrip("+-").isdigit():
        value = "not a number " + value
    # Each page is compared with its twin for plain text (blank where the hostile text is blank, in
    # case a template leaves out an empty part): hostile text may add no element and no attribute.
    plain = {k: ("plain" if v.strip() else v) for k, v in (("name", name), ("prompt", prompt), ("value", value))}
    hostile: dict[str, hitl.Event[Any]] = {}
    twin: dict[str, hitl.Event[Any]] = {}
    for events, text in ((hostile, {"name": name, "prompt": prompt}), (twin, plain)):
        md: dict[str, Any] = {"prompt": fenced(text["prompt"]), "prompt_type": "markdown"}
        events["int"] = hitl.new_event(text["name"], data_type=int, **md)
        events["str"] = hitl.new_event(text["name"], data_type=str, **md)
        events["gone"] = hitl.new_event(text["name"], data_type=int, **md, timeout_seconds=0.001)

    def get(event: hitl.Event[Any]) -> bytes:
        return exchange(port, f"GET /form/{event.request_id}?token={quote(event.token)} HTTP/1.1\r\n\r\n".encode())

    def post_form(event: hitl.Event[Any], answer: str) -> bytes:
        body = urlencode({"request_id": event.request_id, "token": event.token, "value": answer}).encode()
        head = "POST /submit HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        head += f"Content-Length: {len(body)}"
        return exchange(port, head.encode() + b"\r\n\r\n" + body)

    shown = as_markdown_shows(prompt)
    try:
        check_page(get(hostile["int"]), get(twin["int"]), [name, shown])
        check_page(get(hostile["gone"]), get(twin["gone"]), [name, shown])
        refused = post_form(hostile["int"], value)
        assert refused[9:12] == b"400"
        page = check_page(refused, post_form(twin["int"], plain["value"]), [name, shown])
        assert value in page.values  # the typed value is given back, as an attribute value
        accepted = post_form(hostile["str"], value)
        assert accepted[9:12] == b"200"
        page = check_page(accepted, post_form(twin["str"], plain["value"]), [name, shown])
        shown_value = "".join(page.text)
        assert visible(value) in shown_value or visible(json.dumps(value, ensure_ascii=False)) in shown_value
        both = parse_page(exchange(port, b"GET / HTTP/1.1\r\n\r\n"))
        assert visible(name) in "".join(both.text)
        for event in hostile.values():
            shutil.rmtree(root / event.request_id)
        alone = parse_page(exchange(port, b"GET / HTTP/1.1\r\n\r\n"))
        assert set(both.elements) == set(alone.elements)
    finally:
        for event in (*hostile.values(), *twin.values()):  # keep the index small for the next example
            shutil.rmtree(root / event.request_id, ignore_errors=True)
    check_after(site, "escaping", b"", b"")


# -- the framing, header and cross-site corpus: fixed cases, each with the one reply it must get ------------

_JSON = "Content-Type: application/json\r\n"
_FORM = "Content-Type: application/x-www-form-urlencoded\r\n"
_SMUGGLED = "GET /health?smuggled=1 HTTP/1.1\r\n\r\n"
_BIG = "".join(f"X-Filler-{i}: {'f' * 8000}\r\n" for i in range(9))
# (name, endpoint, extra header lines, body template, expected status). In the body, {answer} is a valid
# answer to a fresh event: the refusal alone keeps it from being stored.
CORPUS = [
    ("two-lengths", "/submit/json", _JSON + "Content-Length: {n}\r\nContent-Length: 5\r\n", "{answer}", 400),
    ("identical-lengths", "/submit/json", _JSON + "Content-Length: {n}\r\nContent-Length: {n}\r\n", "{answer}", 400),
    ("gzip-with-length", "/submit/json", _JSON + "Transfer-Encoding: gzip\r\nContent-Length: {n}\r\n", "{answer}", 400),
    (
        "chunked-with-length",
        "/submit/json",
        _JSON + "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n",
        "{answer}",
        400,
    ),
    ("chunked", "/submit/json", _JSON + "Transfer-Encoding: chunked\r\n", "{chunked}", 411),
    ("length-1_0", "/submit/json", _JSON + "Content-Length: 1_0\r\n", "{answer}", 400),
    ("length-plus", "/submit/json", _JSON + "Content-Length: +{n}\r\n", "{answer}", 400),
    ("length-vtab", "/submit/json", _JSON + "Content-Length: \x0b{n}\r\n", "{answer}", 400),
    ("bare-cr", "/submit/json", _JSON + "X-A: 1\rContent-Length: {n}\r\n", "{answer}", 400),
    ("bare-lf", "/submit/json", _JSON + "X-A: 1\nContent-Length: {n}\r\n", "{answer}", 400),
    ("nul", "/submit/json", _JSON + "X-A: 1\x00\r\nContent-Length: {n}\r\n", "{answer}", 400),
    ("header-budget", "/submit/json", _JSON + _BIG + "Content-Length: {n}\r\n", "{answer}", 431),
    ("text-plain", "/submit/json", "Content-Type: text/plain\r\nContent-Length: {n}\r\n", "{answer}", 415),
    (
        "cross-site-json",
        "/submit/json",
        _JSON + "Sec-Fetch-Site: cross-site\r\nContent-Length: {n}\r\n",
        "{answer}",
        403,
    ),
    (
        "foreign-origin-json",
        "/submit/json",
        _JSON + "Origin: https://evil.example\r\nContent-Length: {n}\r\n",
        "{answer}",
        403,
    ),
    ("cross-site-form", "/submit", _FORM + "Sec-Fetch-Site: cross-site\r\nContent-Length: {n}\r\n", "{form}", 403),
    ("foreign-origin-form", "/submit", _FORM + "Origin: http://127.0.0.1:1\r\nContent-Length: {n}\r\n", "{form}", 403),
    (
        "two-identities",
        "/submit/json",
        _JSON + "X-Forwarded-Email: a@x\r\nX-Forwarded-Email: b@x\r\nContent-Length: {n}\r\n",
        "{answer}",
        400,
    ),
    ("duplicate-json-token", "/submit/json", _JSON + "Content-Length: {n}\r\n", "{duplicate}", 400),
]


# Cases whose framing is broken: a request follows in the same bytes, and must never be read. The others
# are well framed and ask to close, so a single reply is all there is.
FRAMING = {case[0] for case in CORPUS[:12]}


@pytest.mark.parametrize("name, endpoint, headers, body, status", CORPUS, ids=[case[0] for case in CORPUS])
def test_the_corpus_gets_one_refusal_each_and_nothing_is_stored(
    site: Site, name: str, endpoint: str, headers: str, body: str, status: int
) -> None:
    request_id = f"corpus-{name}"
    record = event_record(request_id)
    site.events[request_id] = record
    assert Store(str(site.root)).create_request(record)
    answer = {"request_id": request_id, "token": record["token"], "value": 1}
    text = json.dumps(answer)
    bodies = {
        "{answer}": text,
        "{form}": urlencode(answer),
        "{chunked}": f"{len(text):x}\r\n{text}\r\n0\r\n\r\n",
        "{duplicate}": text.replace('"token"', '"token": "wrong", "token"', 1),
    }
    payload = bodies[body]
    head = f"POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{site.port}\r\n{headers.format(n=len(payload))}"
    if name in FRAMING:
        sent = (head + "\r\n" + payload + _SMUGGLED).encode("latin-1")
    else:
        sent = (head + "Connection: close\r\n\r\n" + payload).encode("latin-1")
    saved = site.httpd.site.identity_header
    site.httpd.site.identity_header = "X-Forwarded-Email"
    try:
        reply = exchange(site.port, sent)
    finally:
        site.httpd.site.identity_header = saved
    smuggled = [r.getMessage() for r in site.records if "smuggled=1" in r.getMessage()]
    check_after(site, "corpus", sent, reply)
    assert reply[9:12] == str(status).encode(), reply[:300]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1, reply[-500:]
    assert smuggled == []
    assert not (site.root / request_id / "response.json").exists()


@pytest.fixture(scope="module")
def lone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, dict[str, Any]]]]:
    """A standalone server in its own process: a value check that never ends (a backtracking pattern
    holds the GIL) freezes that process, not this one, so the test fails instead of hanging."""
    base = tmp_path_factory.mktemp("long-values")
    store = Store(str(base / "root"))
    events = {name: event_record(name, data_type=name.rsplit("-", 1)[-1]) for name in ("pending-float", "pending-int")}
    events["answered"] = event_record("answered", data_type="str")
    for record in events.values():
        assert store.create_request(record)
    assert store.create_response("answered", {"request_id": "answered", "status": "completed", "value": "kept"})
    server = start_server_process(base / "root", base / "server.log")
    try:
        yield server, events
    finally:
        server.kill()
    assert_clean_log(server.log_text())


LONG_VALUE_SECONDS = 60  # for the whole exchange; a linear check takes well under a second


@pytest.mark.parametrize(
    ("event", "value"),
    [
        ("pending-float", "1" * 20_000 + "x"),  # a backtracking float pattern took 10 s on this
        ("pending-float", "1" * 500_000 + "e"),
        ("pending-int", "9" * 500_000 + "x"),
        ("answered", "1" * 500_000 + "x"),  # settled: refused before its value is looked at
    ],
)
def test_a_long_value_is_refused_while_health_stays_prompt(
    lone_server: tuple[ServerProcess, dict[str, dict[str, Any]]], event: str, value: str
) -> None:
    server, events = lone_server
    record = events[event]
    body = json.dumps({"request_id": record["request_id"], "token": record["token"], "value": value}).encode()
    raw = (
        f"POST /submit/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    replies: list[bytes] = []
    poster = threading.Thread(target=lambda: replies.append(exchange(server.port, raw)), daemon=True)
    poster.start()
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + LONG_VALUE_SECONDS
    while poster.is_alive():  # /health on other connections while the value is checked
        assert time.monotonic() < deadline, f"no reply to a {len(value):,}-character value in {LONG_VALUE_SECONDS} s"
        assert exchange(server.port, health, timeout=10).startswith(b"HTTP/1.1 200 "), "the server stopped serving"
    assert replies and re.match(rb"HTTP/1\.1 (400|409) ", replies[0]), replies[:1]
    root = server.log.parent / "root"
    if event == "answered":
        assert json.loads((root / "answered" / "response.json").read_text())["value"] == "kept"
    else:
        assert not (root / record["request_id"] / "response.json").exists()
