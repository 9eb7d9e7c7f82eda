"""Azurite (Azure's Blob storage emulator, from npm) on 127.0.0.1 for the ``abfs://`` tests.

``make emulators`` (part of ``make test``) installs it under ``.emulators/``; ``AZURITE_BLOB`` names
another ``azurite-blob`` executable. Without one the tests fail and say how to install it.

Azurite serves one account of our own (``AZURITE_ACCOUNTS``), in memory, on a port it picks. The
store reaches it with Flyte's Azure settings (``AZURE_STORAGE_ACCOUNT_NAME``/``_KEY``) and obstore's
``AZURE_STORAGE_ENDPOINT``, as a deployment with a custom endpoint would; the test reads and lists
blobs with Azure's own SDK, outside the code under test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO, Proc

ACCOUNT = "hitltest"
ACCOUNT_KEY = base64.b64encode(b"hitl-azurite-test-key-0123456789").decode()
AZURITE_VERSION = "3.37.0"  # keep in step with the Makefile
LOCAL_AZURITE = REPO / ".emulators" / "node_modules" / ".bin" / "azurite-blob"
LISTENING = re.compile(r"successfully listens on (http://127\.0\.0\.1:(\d+))")


def azurite_executable() -> str:
    """The ``azurite-blob`` to run: ``$AZURITE_BLOB``, the project's own (``make emulators``), or on PATH."""
    for candidate in (os.environ.get("AZURITE_BLOB"), str(LOCAL_AZURITE), shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"azurite-blob not found (looked at $AZURITE_BLOB, {LOCAL_AZURITE}, PATH): run `make emulators` "
        f"(`make test` does; it needs npm) or `npm install --prefix .emulators azurite@{AZURITE_VERSION}`",
        pytrace=False,
    )


class Azurite:
    """An azurite-blob process serving account `ACCOUNT` in memory on 127.0.0.1, port chosen by Azurite."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: Proc | None = None
        self._workspace: tempfile.TemporaryDirectory[str] | None = None

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint (path style, as Azurite serves accounts)."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def start(self) -> Azurite:
        self._workspace = tempfile.TemporaryDirectory(prefix="hitl-azurite-")
        argv = [
            azurite_executable(),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",  # obstore may send a newer x-ms-version than this Azurite knows
            "--silent",
        ]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{ACCOUNT_KEY}"}
        popen = subprocess.Popen(
            argv,
            cwd=self._workspace.name,  # Azurite writes its debug/lock files into the working directory
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._proc = Proc(popen)
        self.port = int(self._proc.expect(LISTENING, timeout=60).group(2))
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._workspace is not None:
            self._workspace.cleanup()
            self._workspace = None


class AzureContainer:
    """A container on an `Azurite` and the settings ``flyte.storage``/obstore read to reach it."""

    def __init__(self, azurite: Azurite, name: str | None = None) -> None:
        from azure.storage.blob import BlobServiceClient

        self.azurite = azurite
        self.name = name or f"hitl-{uuid.uuid4().hex[:12]}"
        service = BlobServiceClient(azurite.endpoint, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY})
        self.client = service.get_container_client(self.name)
        self.client.create_container()

    def env(self) -> dict[str, str]:
        """Flyte's Azure account settings plus the endpoint obstore reads from the environment."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY,
            "AZURE_STORAGE_ENDPOINT": self.azurite.endpoint,
        }

    def new_root(self, label: str = "root", scheme: str = "abfs") -> str:
        """A fresh ``abfs://`` root (a prefix nobody else uses)."""
        return f"{scheme}://{self.name}/{label}-{uuid.uuid4().hex[:8]}"

    def key(self, root: str, *parts: str) -> str:
        prefix = root.split("://", 1)[1].removeprefix(f"{self.name}/")
        return "/".join((prefix, *parts))

    def get_json(self, root: str, *parts: str) -> Any:
        """Read one blob with Azure's SDK and parse it as JSON."""
        return json.loads(self.client.download_blob(self.key(root, *parts)).readall())

    def keys(self, root: str) -> list[str]:
        prefix = self.key(root, "")
        return sorted(b.name.removeprefix(prefix) for b in self.client.list_blobs(name_starts_with=prefix))


def azurite_server() -> Iterator[Azurite]:
    """Start Azurite for a fixture and stop it afterwards."""
    azurite = Azurite()
    try:
        yield azurite.start()
    finally:
        with contextlib.suppress(OSError):
            azurite.stop()
