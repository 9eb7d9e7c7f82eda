"""Human-in-the-loop events for Flyte 2.

Pause a task until a person answers through a web form, or a program answers through a JSON
endpoint; answers are typed (scalars, enums, dates, lists, dataclasses, ...) and kept in storage,
so a re-run task finds its question and any answer given meanwhile.

Example:
    >>> import flyteplugins.hitl as hitl
    >>> event = hitl.new_event("approve", data_type=bool, prompt="Ship it?")
    >>> approved = event.wait()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    AlreadyAnsweredError,
    AlreadyVotedError,
    BadHeaderError,
    ConfigurationError,
    EventExpiredError,
    EventNotFoundError,
    EventTimeoutError,
    HitlError,
    InvalidEventError,
    InvalidIdentityError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
    NotAllowedError,
    NotIdentifiedError,
    ServerReplyError,
    ServerUnavailableError,
    StorageError,
    UnsafeRootError,
    UnsupportedTypeError,
)
from ._fanout import as_completed, new_events
from .hitl import Event, EventScope, PromptType, approve, new_event

if TYPE_CHECKING:
    import flyte
    import flyte.app

    from ._client import submit
    from ._slack import Slack

    env: flyte.TaskEnvironment
    event_task_env: flyte.TaskEnvironment  # 2.12.1's name for `env`
    app_env: flyte.app.AppEnvironment

__all__ = [
    "AlreadyAnsweredError",
    "AlreadyVotedError",
    "BadHeaderError",
    "ConfigurationError",
    "Event",
    "EventExpiredError",
    "EventNotFoundError",
    "EventScope",
    "EventTimeoutError",
    "HitlError",
    "InvalidEventError",
    "InvalidIdentityError",
    "InvalidRequestIdError",
    "InvalidTokenError",
    "InvalidValueError",
    "NotAllowedError",
    "NotIdentifiedError",
    "PromptType",
    "ServerReplyError",
    "ServerUnavailableError",
    "Slack",
    "StorageError",
    "UnsafeRootError",
    "UnsupportedTypeError",
    "app_env",
    "approve",
    "as_completed",
    "env",
    "new_event",
    "new_events",
    "submit",
]


def __getattr__(name: str) -> Any:
    # The Flyte environments import flyte.app (a quarter of a second): build them on first use only.
    if name in ("env", "app_env", "event_task_env"):
        from . import _deploy

        return getattr(_deploy, "env" if name == "event_task_env" else name)
    if name == "Slack":  # Slack's module is imported when Slack is used
        from ._slack import Slack

        return Slack
    if name == "submit":  # so is the client's, with its HTTP code
        from ._client import submit

        return submit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
