"""The exception hierarchy: every error this package raises is a `HitlError`.

Each specific error also subclasses the matching builtin, so callers can catch either
`hitl.HitlError` or the builtin they already know (`TimeoutError`, `ValueError`, ...).
"""

from __future__ import annotations


class HitlError(Exception):
    """Base class of every error raised by flyteplugins.hitl."""


class InvalidEventError(HitlError, ValueError):
    """An event was declared with a bad argument (empty name, bad scope, non-positive timeout...)."""


class UnsupportedTypeError(HitlError, TypeError):
    """An event was declared with a `data_type` this package cannot show as a form (or a field of one).

    `field` names the offending field of a structured type (None for the type itself).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequestIdError(HitlError, ValueError):
    """A request id does not have the shape this package gives ids; it is never used as a path."""

    def __init__(self, request_id: object) -> None:
        shown = request_id if not isinstance(request_id, str) or len(request_id) <= 80 else request_id[:80] + "..."
        super().__init__(f"invalid request_id {shown!r}: expected 1-128 characters of A-Z, a-z, 0-9, '-' or '_'")
        self.request_id = request_id


class InvalidValueError(HitlError, ValueError):
    """An answer does not fit the event's type (or its allowed choices).

    For a structured type, `field_errors` maps each offending field's name to why it was refused
    (all of them at once); it is empty otherwise.
    """

    def __init__(self, message: str, value: object = None, field_errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.value = value
        self.field_errors: dict[str, str] = dict(field_errors or {})


class EventNotFoundError(HitlError, LookupError):
    """No event with this request id exists under the storage root."""

    def __init__(self, request_id: str, root: str) -> None:
        super().__init__(f"no event with request_id {request_id!r} under {root!r}")
        self.request_id = request_id
        self.root = root


class InvalidTokenError(HitlError, PermissionError):
    """The token presented with an answer or a status query is missing or wrong."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"missing or wrong token for request_id {request_id!r}")
        self.request_id = request_id


class AlreadyAnsweredError(HitlError):
    """The event already has an answer: the first answer wins and later ones change nothing."""

    def __init__(self, request_id: str, response: dict[str, object]) -> None:
        super().__init__(
            f"event with request_id {request_id!r} was already answered with {response.get('value')!r}; "
            "the first answer wins"
        )
        self.request_id = request_id
        self.response = response


class AlreadyVotedError(AlreadyAnsweredError):
    """This person has voted on the event already: each person votes once, and a second vote changes nothing."""

    def __init__(self, request_id: str, vote: dict[str, object]) -> None:
        HitlError.__init__(
            self,
            f"{vote.get('identity')!r} has already voted on the event with request_id {request_id!r}; "
            "each person votes once",
        )
        self.request_id = request_id
        self.response = vote


class EventExpiredError(HitlError):
    """The event's timeout passed, so it no longer takes answers."""

    def __init__(self, request_id: str, expires_at: str) -> None:
        super().__init__(f"event with request_id {request_id!r} expired at {expires_at}; it takes no more answers")
        self.request_id = request_id
        self.expires_at = expires_at


class EventTimeoutError(HitlError, TimeoutError):
    """`Event.wait()` saw no answer within the event's timeout."""

    def __init__(self, name: str, request_id: str, timeout_seconds: float) -> None:
        super().__init__(f"event {name!r} (request_id {request_id!r}) got no answer within {timeout_seconds:g} seconds")
        self.name = name
        self.request_id = request_id
        self.timeout_seconds = timeout_seconds


class StorageError(HitlError, OSError):
    """The storage root could not be read or written, even after retries.

    `transient` says whether the last failure was one that retrying may fix (a timeout, a refused
    connection, a 5xx), as opposed to denied access or a missing bucket.
    """

    def __init__(self, message: str, root: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.root = root
        self.transient = transient


class ConfigurationError(HitlError, ValueError):
    """A setting (an environment variable such as ``FLYTE_HITL_ROOT``, or the argument that stands for
    it) has a value this package cannot use; nothing was read or written."""


class UnsafeRootError(StorageError, PermissionError):
    """A local storage root (or a directory above it) that another user could change, so the answers
    found in it could be forged; nothing was read or written."""


class ServerUnavailableError(HitlError, ConnectionError):
    """A form server could not be reached, did not reply in time, or is temporarily unable to answer
    (429, 5xx)."""


class ServerReplyError(HitlError):
    """A form server (or something in front of it, such as a login proxy) replied with something other
    than this package's JSON API: a redirect, an HTML page, or a status the API never uses."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotIdentifiedError(HitlError, PermissionError):
    """The event may be answered only by an identified person, and no identity is known (HTTP 401)."""

    status = 401

    def __init__(self, request_id: str, why: str) -> None:
        super().__init__(f"event with request_id {request_id!r} is answered only by an identified person: {why}")
        self.request_id = request_id


class NotAllowedError(HitlError, PermissionError):
    """The identified person may not answer this event (HTTP 403). The message names the event and the
    person, never who may answer."""

    status = 403

    def __init__(self, request_id: str, identity: str, why: str) -> None:
        super().__init__(f"{identity!r} may not answer the event with request_id {request_id!r}: {why}")
        self.request_id = request_id
        self.identity = identity


class BadHeaderError(HitlError, ValueError):
    """A trusted header came more than once, or holds too much: the request is refused (HTTP 400)."""


class InvalidIdentityError(HitlError, ValueError):
    """An identity or group name has no canonical form (see `_policy.canonical`): it is empty, too long,
    or holds a control, bidi or invisible character. It is refused, never cut."""

    def __init__(self, value: object, label: str, rule: str) -> None:
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "..."
        super().__init__(f"{label} {shown!r} is refused: {rule}")
        self.value = value
        self.label = label
