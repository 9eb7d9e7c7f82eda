"""The Flyte environments: the form server as an app, and the task environment users depend on.

In a cluster the waiting task and the form server are different pods that share only the storage
root (``FLYTE_HITL_ROOT``, an ``s3://``, ``gs://`` or ``abfs://`` URL)::

    person / program ──HTTPS + cluster auth──> app "hitl-form-server" (N replicas)
                                                 │ create-only PUT of <id>/response.json
                                                 v
    task pod ── create <id>/request.json ──> object storage <── one GET per poll ── task pod

`app_env` runs this package's standard-library server (``python -m flyteplugins.hitl serve``)
in an image that carries this very package (its files are copied in, so the image never picks up
another version of ``flyteplugins-hitl`` from PyPI). A task that depends on `env` prints form links
on the app's public URL; run locally, the same code serves forms from the waiting process itself.

The app's root is ``FLYTE_HITL_ROOT`` as the deploying process has it when it deploys (not when it
imports this module), passed as ``serve --root``; a deployment without a shared object-store root
fails with a `ConfigurationError` before anything is sent.

The app sits behind the platform's login (``requires_auth=True``) unless ``FLYTE_HITL_APP_AUTH=0``
(read when the app is first used) or ``app_env.requires_auth = False``: then programs reach it
without platform credentials, and each event's token alone guards it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import flyte
import flyte.app

from . import _flyte
from ._errors import ConfigurationError, HitlError
from ._store import ROOT_ENV, Store, parse_root
from .server import HOST_ENV

logger = logging.getLogger("flyteplugins.hitl.deploy")

APP_NAME = "hitl-form-server"
APP_PORT_ENV = "FLYTE_HITL_APP_PORT"
APP_AUTH_ENV = "FLYTE_HITL_APP_AUTH"
#: Where the image keeps this package (put first on PYTHONPATH).
IMAGE_PACKAGE_ROOT = "/opt/flyteplugins-hitl"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _app_port() -> int:
    text = os.environ.get(APP_PORT_ENV) or "8080"
    try:
        port = int(text)
    except ValueError:
        raise HitlError(f"{APP_PORT_ENV} must be a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise HitlError(f"{APP_PORT_ENV} must be a port number, got {text!r}")
    return port


def _app_auth() -> bool:
    """Whether the app requires the platform's login: ``FLYTE_HITL_APP_AUTH``, on unless it says 0."""
    text = (os.environ.get(APP_AUTH_ENV) or "1").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{APP_AUTH_ENV} must be 1 or 0 (or true/false, yes/no, on/off), got {text!r}")


def _package_files() -> list[Path]:
    # Sources only: no __pycache__, so the image (and its tag, a hash of its layers) depends on the code alone.
    return sorted(p for p in _PACKAGE_DIR.iterdir() if p.is_file() and (p.suffix == ".py" or p.name == "py.typed"))


def _image() -> flyte.Image:
    """Flyte's Debian base image plus this package's files, first on PYTHONPATH.

    Its dependencies (flyte, fsspec, typing-extensions) are already in the base image.
    """
    return (
        flyte.Image.from_debian_base(name="flyteplugins-hitl")
        .with_source_file(_package_files(), dst=f"{IMAGE_PACKAGE_ROOT}/flyteplugins/hitl/")
        .with_env_vars({"PYTHONPATH": f"{IMAGE_PACKAGE_ROOT}:$PYTHONPATH"})
    )


def deploy_root() -> str:
    """The root the deployed app serves: ``FLYTE_HITL_ROOT`` of this process, now, if it is shared storage.

    Raises:
        ConfigurationError: it is unset, not a storage root, or a local path (which the app's pod
            cannot see: every form link would be a 404).

    Example:
        >>> os.environ["FLYTE_HITL_ROOT"] = "gcs://bucket/hitl"
        >>> deploy_root()
        'gs://bucket/hitl'
    """
    text = os.environ.get(ROOT_ENV)
    if not text:
        raise ConfigurationError(
            f"deploying the form server app {APP_NAME!r} needs {ROOT_ENV} set, in the deploying process, to the "
            "object storage your tasks use (s3://, gs:// or abfs://): the app serves the events under it"
        )
    root = parse_root(text)
    if Store(root).is_local:
        raise ConfigurationError(
            f"{ROOT_ENV}={root!r} is a local path, which the form server app's pod cannot see; deploy with "
            f"{ROOT_ENV} set to the object storage your tasks use (s3://, gs:// or abfs://)"
        )
    return root


class _FormServerApp(flyte.app.AppEnvironment):
    """The app, with ``--root`` added to its command when it is deployed (served locally, the
    server takes ``FLYTE_HITL_ROOT`` from its environment instead)."""

    def container_args(self, serialize_context: Any) -> list[str]:
        return [*super().container_args(serialize_context), "--root", deploy_root()]


APP_PORT = _app_port()

image = _image()
"""The image of the form server app and of `env`: Flyte's base image with this package in it."""

app_env = _FormServerApp(
    name=APP_NAME,
    description="Human-in-the-loop form server (flyteplugins.hitl, standard-library HTTP)",
    image=image,
    # No --host: it comes from FLYTE_HITL_HOST, 0.0.0.0 in the cluster (env_vars) and the
    # default 127.0.0.1 when served locally, where flyte does not apply env_vars.
    args=["python", "-m", "flyteplugins.hitl", "serve", "--port", str(APP_PORT)],
    port=APP_PORT,
    requires_auth=_app_auth(),
    env_vars={HOST_ENV: "0.0.0.0"},
    resources=flyte.Resources(cpu=1, memory="256Mi"),
)
"""The form server as a Flyte app; it serves every event under ``FLYTE_HITL_ROOT`` (read when deployed).

For N replicas set ``app_env.scaling = flyte.app.Scaling(replicas=(N, N))`` before deploying. Without
the platform's login in front of it: ``app_env.requires_auth = False`` (or ``FLYTE_HITL_APP_AUTH=0``).
"""

env = flyte.TaskEnvironment(
    name="hitl",
    image=image,
    resources=flyte.Resources(cpu=1, memory="256Mi"),
    depends_on=[app_env],
)
"""Put this in your task environment's ``depends_on`` so the form server is deployed with it."""


_endpoint_lock = threading.Lock()
_endpoint: str | None = None

#: How long the control plane may take to name the app's public URL. A control plane that accepts
#: the connection and never answers would otherwise hold event creation (and this lock) for ever.
LOOKUP_SECONDS = 30.0


def served_endpoint(store: Store) -> str:
    """The form server app's URL for an event created inside a cluster task.

    The public URL of the deployed app (asked of the Flyte control plane once per process), since
    it is a person's browser that opens the form; failing that, the cluster-internal URL.

    Raises:
        HitlError: the root is not shared storage, or the app's URL cannot be found (then set
            ``FLYTE_HITL_ENDPOINT``).
    """
    global _endpoint
    if store.is_local:
        raise HitlError(
            f"{ROOT_ENV}={store.root!r} is local to this pod, so the form server cannot see its events; "
            f"set {ROOT_ENV} to shared object storage (s3://, gs:// or abfs://) for the task and the app"
        )
    with _endpoint_lock:
        if _endpoint is None:
            _endpoint = _find_app_endpoint().rstrip("/")
        return _endpoint


def _find_app_endpoint() -> str:
    try:
        return _public_endpoint()
    except Exception as e:
        internal = _flyte.internal_app_endpoint(app_env.name)
        if internal:
            logger.warning("cannot look up the public URL of app %r (%s); using %s", app_env.name, e, internal)
            return internal
        raise HitlError(
            f"cannot find the URL of the form server app {app_env.name!r}: {e}; "
            "set FLYTE_HITL_ENDPOINT to the app's URL"
        ) from e


def _public_endpoint() -> str:
    """`_ask_control_plane` with a deadline of `LOOKUP_SECONDS`. Flyte's client gives its call none,
    so the call runs in a daemon thread that is left behind if it never returns."""
    found: list[str] = []
    failed: list[Exception] = []

    def look_up() -> None:
        try:
            found.append(_ask_control_plane())
        except Exception as e:
            failed.append(e)

    thread = threading.Thread(target=look_up, name="hitl-app-lookup", daemon=True)
    thread.start()
    thread.join(LOOKUP_SECONDS)
    if failed:
        raise failed[0]
    if not found:
        raise HitlError(f"the Flyte control plane did not answer within {LOOKUP_SECONDS:g} s")
    return found[0]


def _ask_control_plane() -> str:
    import flyte.remote
    from flyte.errors import InitializationError

    try:
        app = flyte.remote.App.get(name=app_env.name)
    except InitializationError:
        # Task pods carry the control plane's address and credentials; connect with them.
        flyte.init_in_cluster()
        app = flyte.remote.App.get(name=app_env.name)
    endpoint = app.endpoint
    if not endpoint:
        raise HitlError(f"app {app_env.name!r} has no public URL yet")
    return endpoint


__all__ = [
    "APP_AUTH_ENV",
    "APP_NAME",
    "APP_PORT",
    "ROOT_ENV",
    "app_env",
    "deploy_root",
    "env",
    "image",
    "served_endpoint",
]
