"""Helpers for the scale-out tests: a real S3-protocol server (moto's, on 127.0.0.1, port 0) and processes.

Two adjustments, both outside the code under test:

- moto checks ``If-None-Match: *`` and then writes, without a lock, so two simultaneous
  conditional PUTs to one key can both succeed (seen about once in a hundred rounds of 32
  racers). S3, GCS and Azure make that check and the write one atomic step; a lock around
  conditional PUTs gives moto the same behaviour, so a race test checks our code, not moto's.
- every request is recorded (method, path), so tests can count what a poll costs.

A `Door` is a TCP relay in front of the server: closing it drops every open connection and
refuses new ones (an outage for whoever goes through it), while the server itself stays up.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import pytest
from conftest import Proc, post_json, python, request, run_python
from moto.server import ThreadedMotoServer

ACCESS_KEY = "hitl-test-key"
SECRET_KEY = "hitl-test-secret"
REGION = "us-east-1"


class _Recorder:
    """WSGI middleware: conditional PUTs run one at a time; every request is recorded."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []
        self.queries: list[str] = []  # the query string of each request, in the same order
        self._lock = threading.Lock()
        self._put_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            self.queries.append(environ.get("QUERY_STRING", ""))
        if environ["REQUEST_METHOD"] == "PUT" and environ.get("HTTP_IF_NONE_MATCH"):
            with self._put_lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


class MotoS3:
    """moto's S3 server in this process, with conditional PUTs made atomic and requests recorded."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None
        self._recorder: _Recorder | None = None
        self.requests: list[tuple[str, str]] = []
        self.queries: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        wsgi = server._server  # werkzeug's server: the only place to put middleware in front of moto
        assert wsgi is not None
        self._recorder = _Recorder(wsgi.app)
        self._recorder.requests = self.requests
        self._recorder.queries = self.queries
        wsgi.app = self._recorder
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            assert self._server._server is not None
            self._server._server.server_close()
            self._server = None

    def count(self, method: str, path_contains: str) -> int:
        """How many `method` requests had `path_contains` in their path."""
        return sum(1 for m, p in list(self.requests) if m == method and path_contains in p)


class S3Bucket:
    """A bucket on a `MotoS3` door and the settings Flyte's storage layer reads to reach it."""

    def __init__(self, door: MotoS3, name: str | None = None) -> None:
        import boto3

        self.door = door
        self.name = name or f"hitl-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client(
            "s3",
            endpoint_url=door.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        self.client.create_bucket(Bucket=self.name)

    def env(self, door: Door | None = None) -> dict[str, str]:
        """Flyte's S3 settings (as ``flyte.storage`` reads them) for this bucket, optionally through `door`."""
        return {
            "FLYTE_AWS_ENDPOINT": (door or self.door).endpoint,
            "FLYTE_AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "FLYTE_AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def new_root(self, label: str = "root") -> str:
        """A fresh ``s3://`` root (a prefix nobody else uses)."""
        return f"s3://{self.name}/{label}-{uuid.uuid4().hex[:8]}"

    def key(self, root: str, *parts: str) -> str:
        prefix = root.removeprefix(f"s3://{self.name}/")
        return "/".join((prefix, *parts))

    def get_json(self, root: str, *parts: str) -> Any:
        """Read one object with boto3 and parse it as JSON."""
        body = self.client.get_object(Bucket=self.name, Key=self.key(root, *parts))["Body"].read()
        return json.loads(body)

    def keys(self, root: str) -> list[str]:
        prefix = self.key(root, "")
        listing = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"].removeprefix(prefix) for o in listing.get("Contents", []))


def closed_port() -> int:
    """A local port that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Door:
    """A TCP relay to 127.0.0.1:`target_port` that can be closed (dropping every connection) and reopened."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Door:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        for sock in [*conns, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            src.close()


# -- processes ----------------------------------------------------------------------------------------

FORM_LINE = re.compile(r"\[hitl\] form: (?P<endpoint>http://[^/\s]+)/form/(?P<id>[A-Za-z0-9_-]+)\?token=(?P<token>\S+)")


def start_server(procs: list[Proc], root: str, env: dict[str, str] | None = None) -> str:
    """A standalone form server (``python -m flyteplugins.hitl serve``) for `root`; returns its URL."""
    proc = Proc(python("-m", "flyteplugins.hitl", "serve", "--root", root, "--port", "0", env=env))
    procs.append(proc)
    return proc.expect(r"^serving (\S+) at (http://\S+)$").group(2)


WAITER = """
import json, os, sys
from flyteplugins.hitl._store import Store
for name in ("attempts", "backoff_seconds", "max_backoff_seconds"):
    if os.environ.get("T_" + name.upper()):
        setattr(Store, name, type(getattr(Store, name))(os.environ["T_" + name.upper()]))
import flyteplugins.hitl as hitl
event = hitl.new_event("replicas", data_type=int, prompt="How many replicas?", poll_interval_seconds=0.2,
                       timeout_seconds=120)
try:
    print("RESULT", json.dumps(event.wait()), flush=True)
except hitl.StorageError as e:
    print("STORAGE_ERROR", json.dumps({"root": e.root, "message": str(e)}), flush=True)
    sys.exit(3)
"""


def start_waiter(procs: list[Proc], endpoint: str, env: dict[str, str] | None = None) -> tuple[Proc, str, str]:
    """A process waiting on a new event (polling only; its form server is `endpoint`): (proc, id, token)."""
    proc = Proc(run_python(WAITER, env={"FLYTE_HITL_ENDPOINT": endpoint, **(env or {})}))
    procs.append(proc)
    match = proc.expect(FORM_LINE)
    assert match.group("endpoint") == endpoint
    return proc, match.group("id"), match.group("token")


# -- fixture bodies ---------------------------------------------------------------------------------


def moto_server() -> Iterator[MotoS3]:
    """Start moto for a fixture and stop it afterwards."""
    server = MotoS3().start()
    yield server
    server.stop()


class Place(Protocol):
    """An S3 bucket, an Azure container or a GCS bucket on its emulator, as the tests use them."""

    def new_root(self) -> str: ...
    def env(self) -> dict[str, str]: ...
    def get_json(self, root: str, *parts: str) -> Any: ...


def use_root(place: Place, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh root in `place`, set as FLYTE_HITL_ROOT along with the settings that reach it."""
    root = place.new_root()
    for key, value in place.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLYTE_HITL_ROOT", root)
    monkeypatch.delenv("FLYTE_HITL_ENDPOINT", raising=False)
    return root


# -- scenarios shared by every object store ----------------------------------------------------------


def check_round_trip(procs: list[Proc], root: str, place: Place, timeout: float) -> None:
    """Waiter and form server in separate processes: form, 403, 200, then 409 for a second answer."""
    server = start_server(procs, root)
    assert request(server, "GET", "/health").json()["status"] == "healthy"
    waiter, request_id, token = start_waiter(procs, server)

    form = request(server, "GET", f"/form/{request_id}?token={token}")
    assert form.status == 200
    assert "How many replicas?" in form.text
    assert request(server, "GET", f"/form/{request_id}?token=wrong").status == 403

    reply = post_json(server, {"request_id": request_id, "token": token, "value": 5})
    assert reply.status == 200, reply.text
    assert reply.json()["value"] == 5
    again = post_json(server, {"request_id": request_id, "token": token, "value": 6})
    assert again.status == 409, again.text

    waiter.expect(r"^RESULT 5$", timeout=timeout)
    waiter.finish()
    assert waiter.proc.returncode == 0

    stored = place.get_json(root, request_id, "response.json")
    assert stored["status"] == "completed" and stored["value"] == 5 and stored["via"] == "json"
    assert place.get_json(root, request_id, "request.json")["prompt"] == "How many replicas?"
    status = request(server, "GET", f"/status/{request_id}?token={token}").json()
    assert status["state"] == "answered" and status["response"]["value"] == 5


def check_race_over_two_replicas(procs: list[Proc], root: str, place: Place, timeout: float) -> None:
    """32 answers released together over two server replicas: exactly one 200, and it is stored."""
    replicas = [start_server(procs, root), start_server(procs, root)]
    waiter, request_id, token = start_waiter(procs, replicas[0])
    barrier = threading.Barrier(32)
    statuses: dict[int, int] = {}

    def answer(i: int) -> None:
        barrier.wait()
        statuses[i] = post_json(replicas[i % 2], {"request_id": request_id, "token": token, "value": 100 + i}).status

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, status in statuses.items() if status == 200]
    assert len(statuses) == 32
    assert len(winners) == 1, statuses
    assert sorted(statuses.values()) == [200] + [409] * 31
    value = 100 + winners[0]
    waiter.expect(rf"^RESULT {value}$", timeout=timeout)
    stored = place.get_json(root, request_id, "response.json")  # one whole document: the winner's
    assert stored["status"] == "completed" and stored["value"] == value
    for replica in replicas:
        status = request(replica, "GET", f"/status/{request_id}?token={token}").json()
        assert status["response"]["value"] == value
