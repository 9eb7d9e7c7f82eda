"""Every place this package relies on something flyte does not promise, in one module.

- `object_store`: ``_construct_store``, a private method of the obstore filesystem that
  ``flyte.storage.get_underlying_filesystem`` returns for s3/gs/abfs (flyte's own storage code calls it
  the same way). It gives an obstore store with Flyte's credentials and endpoints and our timeouts.
- `ObstoreErrors`: obstore's exception classes. obstore is not a declared dependency of this package:
  flyte requires it (``obstore>=0.7.3``) and builds every s3/gs/abfs filesystem from it, so it is
  present wherever ``flyte.storage`` works. Only this module imports it.
- `internal_app_endpoint`: the environment variable named by ``flyte.app._app_environment``'s
  ``INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR``, the cluster-internal URL pattern of apps.
- `occurrence`: ``TaskContext._call_counter``, which numbers calls per action attempt (a fresh one for
  every attempt, even when a reusable container runs many attempts in one process); Flyte's own
  controllers number sub-actions with it, and the n-th event of a name in an attempt gets the same id
  in every attempt from it.
- `current_report`: the running task's report, through public calls only (``flyte.ctx()`` and
  ``flyte.report.current_report()``); listed here because the report is read nowhere else.

tests/test_flyte_private.py checks each of them against the installed flyte, so that an upgrade that
changes one fails there, by name, rather than in a user's run; pyproject.toml bounds flyte below 3.
Nothing here is imported with the package: each function imports what it needs on first use.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import flyte.report


def occurrence(tctx: Any, key: str) -> int:
    """How many times `key` has been counted in this action attempt, this call included (1 for the first).

    Example:
        >>> occurrence(flyte.ctx(), "approve"), occurrence(flyte.ctx(), "approve")
        (1, 2)
    """
    return int(tctx._call_counter.next(f"\x1fhitl\x1f{key}"))


def current_report() -> flyte.report.Report | None:
    """The Flyte report of the task running in this context; None outside a task.

    Example:
        >>> report = current_report()
        >>> if report is not None:
        ...     report.get_tab("HITL: approve").replace("<p>waiting</p>")
    """
    import flyte

    if not flyte.ctx():
        return None
    import flyte.report

    return flyte.report.current_report()


def object_store(root: str, bucket: str, *, timeout: float, connect_timeout: float) -> Any:
    """An obstore store for `bucket` of the object-store URL `root` (``s3://``, ``gs://``, ``abfs[s]://``),
    configured by ``flyte.storage`` (``FLYTE_AWS_ENDPOINT``, Azure and GCS settings, the pod's identity).

    Flyte's defaults suit bulk transfers (3 retries from a 5 s back-off, no request timeout to speak
    of); a poll must fail fast and let the caller decide, so the store retries nothing itself and
    gives up on a request after `timeout` seconds (`connect_timeout` to connect).

    Example:
        >>> store = object_store("s3://bucket/hitl", "bucket", timeout=20, connect_timeout=5)
        >>> store.put("hitl/x/request.json", b"{}", mode="create")
    """
    import flyte.storage

    fs: Any = flyte.storage.get_underlying_filesystem(
        path=root,
        retry_config={
            "max_retries": 0,
            "backoff": {
                "base": 2,
                "init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=1),
            },
            "retry_timeout": datetime.timedelta(seconds=timeout),
        },
        client_options={
            "timeout": f"{timeout:g}s",
            "connect_timeout": f"{connect_timeout:g}s",
            # Flyte allows plain-HTTP endpoints (MinIO, local S3 servers); so do we.
            "allow_http": True,
        },
    )
    return fs._construct_store(bucket)


class ObstoreErrors(NamedTuple):
    """obstore's exception classes, as `obstore_errors` returns them."""

    #: Every error obstore raises (besides the builtins it also uses, such as FileNotFoundError).
    base: type[BaseException]
    #: 5xx answers and failed connections: worth retrying. obstore's other errors are final.
    transient: type[BaseException]
    #: A create-only write that found the object there already.
    exists: tuple[type[BaseException], ...]


def obstore_errors() -> ObstoreErrors:
    """obstore's exception classes (importing obstore's native module takes a few milliseconds, so
    only a store that meets an error pays for it)."""
    from obstore.exceptions import AlreadyExistsError, BaseError, GenericError, PreconditionError

    return ObstoreErrors(BaseError, GenericError, (AlreadyExistsError, PreconditionError))


def internal_app_endpoint(app_name: str) -> str | None:
    """The cluster-internal URL of the app `app_name`, from the pattern Flyte gives task pods; None
    when this process has no such pattern (outside a cluster).

    Example:
        >>> internal_app_endpoint("hitl-form-server")  # INTERNAL_APP_ENDPOINT_PATTERN="http://{app_fqdn}.svc"
        'http://hitl-form-server.svc'
    """
    from flyte.app._app_environment import INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR

    pattern = os.environ.get(INTERNAL_APP_ENDPOINT_PATTERN_ENV_VAR)
    return pattern.format(app_fqdn=app_name) if pattern else None
