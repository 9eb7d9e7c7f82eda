"""The command line: ``hitl serve | list | status | submit`` (also ``python -m flyteplugins.hitl``).

Exit codes: 0 done (``status``: answered); 1 storage or network failure; 2 bad usage, a bad setting
or a value that does not fit; 3 no such event; 4 already answered; 5 expired; 6 missing or wrong
token; 7 (``status``) still waiting; 130 interrupted. A failure is one line on stderr, never a
traceback. Every line printed escapes control characters, since names, prompts and replies come from
storage and servers that others can write to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar, cast

from . import _answers, _client, _policy
from ._client import HEADERS_ENV
from ._errors import (
    AlreadyAnsweredError,
    ConfigurationError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
    NotAllowedError,
    NotIdentifiedError,
    StorageError,
    UnsafeRootError,
)
from ._store import DEFAULT_LOCAL_ROOT, ROOT_ENV, Store, default_root
from ._text import printable, printable_json
from .hitl import ENDPOINT_ENV
from .server import GRACE_SECONDS, HOST_ENV, PORT_ENV, make_server

#: The exit code of each error (the first class that matches); any other HitlError exits with 1.
EXIT_CODES: tuple[tuple[type[HitlError], int], ...] = (
    (ConfigurationError, 2),
    (UnsafeRootError, 2),
    (InvalidValueError, 2),
    (InvalidRequestIdError, 2),
    (EventNotFoundError, 3),
    (AlreadyAnsweredError, 4),
    (EventExpiredError, 5),
    (InvalidTokenError, 6),
    (NotIdentifiedError, 6),
    (NotAllowedError, 6),
)
#: `hitl status`'s exit code for an event still waiting (after ``--wait``, if given).
STILL_WAITING = 7
METRICS_PORT_ENV = "FLYTE_HITL_METRICS_PORT"
#: Seconds `hitl submit` gives the notices of the outcome it stored before it exits.
NOTICE_SECONDS = 10.0
#: Each state as 2.12.1's ``status`` says it: the JSON the commands print carries both, as ``GET /status`` does.
_STATUS = {"waiting": "pending", "answered": "completed", "expired": "expired", "withdrawn": "expired"}
_T = TypeVar("_T")


def _print_json(value: Any, indent: int | None = None) -> None:
    print(printable_json(json.dumps(value, indent=indent, ensure_ascii=False)))


def _port(text: str, source: str = "--port") -> int:
    """`text` as a port number (0: any free port), or a ConfigurationError naming where it came from."""
    value = text.strip()
    if value.isdigit() and value.isascii() and int(value) < 65536:
        return int(value)
    raise ConfigurationError(f"{source} must be a port number from 0 to 65535, got {text!r}")


def _port_arg(text: str) -> int:
    try:
        return _port(text)
    except ConfigurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The format shows no caller, thread or process: records need not gather them (the logging
    # HOWTO's "Optimization"), which saves a stack walk per access-log line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    host = args.host or os.environ.get(HOST_ENV) or "127.0.0.1"
    port = args.port if args.port is not None else _port(os.environ.get(PORT_ENV) or "8080", PORT_ENV)
    metrics_port = args.metrics_port
    if metrics_port is None and os.environ.get(METRICS_PORT_ENV):
        metrics_port = _port(os.environ[METRICS_PORT_ENV], METRICS_PORT_ENV)
    root = args.root or default_root()
    store = Store(root)
    store.check_root()
    from . import _telemetry

    metrics_url = _telemetry.export(metrics_port, host)
    if metrics_url:
        print(printable(f"metrics at {metrics_url}"), flush=True)
    try:
        httpd = make_server(store, host, port)
    except OSError as e:  # port in use, address not on this host, no permission: a usage problem, not a bug
        print(printable(f"hitl: cannot listen on {host}:{port}: {e.strerror or e}"), file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(printable(f"serving {root} at {httpd.url}"), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        httpd.finish(GRACE_SECONDS)  # the requests being handled write their replies
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.endpoint:
        served = _client.list_events(args.endpoint, status=args.status, headers=_headers(args))
        rows = [(str(r.get("created_at", "")), _client.state(r), r) for r in served]
        return _print_events(rows, args, 0, "")
    store = Store(args.root or default_root())
    rows = []
    damaged = 0
    for listed in store.list_events():  # one listing, which also says which events have an outcome
        try:
            request = store.read_request(listed.request_id)
            response = store.read_response(listed.request_id) if request and listed.answered else None
        except StorageError as e:
            if e.transient:
                raise
            damaged += 1  # one damaged record leaves its event out, not the whole list
            print(printable(f"hitl: left out {listed.request_id}: {e}"), file=sys.stderr)
            continue
        if request is None:
            continue
        state = _answers.state_of(request, response)
        if args.status in ("all", state):
            rows.append((str(request.get("created_at", "")), state, request))
    rows.sort(key=lambda row: row[0], reverse=True)  # newest first, as on the index page
    return _print_events(rows, args, damaged, store.root)


def _print_events(rows: list[tuple[str, str, Any]], args: argparse.Namespace, damaged: int, where: str) -> int:
    if args.json:
        _print_json([_answers.public_request(r) | _states(s) for _, s, r in rows], indent=2)
        return 1 if damaged else 0
    table: list[tuple[str, ...]] = [("STATUS", "TYPE", "CREATED", "REQUEST_ID", "NAME")] if rows else []
    for created, state, request in rows:
        cells = (state, request.get("data_type"), created, request.get("request_id"), request.get("event_name"))
        table.append(tuple(printable(str(cell)) for cell in cells))
    widths = [max((len(row[i]) for row in table), default=0) for i in range(4)]
    for row in table:  # each column as wide as its longest cell, the name last
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4])
    if not rows:
        which = "" if args.status == "all" else args.status + " "
        print(printable(f"no {which}events" + (f" under {where}" if where else "")), file=sys.stderr)
    return 1 if damaged else 0


def _states(state: str) -> dict[str, str]:
    """An event's state under ``status`` in 2.12.1's words and under ``state`` in today's."""
    return {"status": _STATUS.get(state, state), "state": state}


def _needs_token(args: argparse.Namespace, endpoint: str | None, via: str) -> None:
    # A server behind a login knows the caller from the login's headers: an event that names its
    # respondents takes their answers without a token. Without a token or a header, nothing can work.
    if endpoint and not args.token and not args.header and not os.environ.get(HEADERS_ENV, "").strip():
        raise ConfigurationError(
            f"{via} needs the event's token: pass --token (it is in the form link), or the login's "
            "credentials with --header where the event names who answers"
        )


def _status(args: argparse.Namespace) -> int:
    if not 0 <= args.wait < float("inf"):  # also refuses nan
        raise InvalidValueError(f"--wait must be 0 or more seconds, got {args.wait!r}")
    _needs_token(args, args.endpoint, "--endpoint")
    headers = _headers(args)
    try:
        record = _waited(
            lambda: _client.status(
                args.request_id,
                token=args.token,
                endpoint=args.endpoint,
                root=args.root,
                wait=args.wait,
                headers=headers,
            )
        )
    except KeyboardInterrupt:
        raise _Interrupted(args.request_id) from None
    state = _client.state(record)
    record.update(_states(state))
    _print_json(record, indent=2)
    return {"answered": 0, "expired": 5, "withdrawn": 5, "waiting": STILL_WAITING}.get(state, 1)


def _waited(call: Callable[[], _T]) -> _T:
    """`call()`, run in a thread of its own while this (the main) thread only waits for it.

    Ctrl-C raises KeyboardInterrupt in the main thread at whatever it is doing: inside http.client's
    reply constructor, it leaves a half-built reply that prints "Exception ignored" when collected at
    exit. Here it can only interrupt this wait.
    """
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # handed to the main thread, which raises it
            outcome.append(e)
        finally:
            done.set()

    # A daemon: after Ctrl-C the program ends without waiting for the call to return.
    threading.Thread(target=run, name="hitl-status", daemon=True).start()
    done.wait()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return cast(_T, outcome[0])


def _submit(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return _submit_batch(args)
    try:
        value = json.loads(args.value) if args.json_value else args.value
    except ValueError as e:
        raise InvalidValueError(f"--json-value given but {args.value!r} is not JSON: {e}") from e
    endpoint = args.endpoint or os.environ.get(ENDPOINT_ENV) or None
    if not args.target.startswith(("http://", "https://")):  # a form URL carries its token
        _needs_token(args, endpoint, "--endpoint" if args.endpoint else f"answering through {ENDPOINT_ENV}")
    reply = _client.answer(
        args.target,
        value,
        via="cli",
        token=args.token,
        endpoint=endpoint,
        root=args.root,
        comment=args.comment,
        headers=_headers(args),
        identity=_identity(args),
        groups=frozenset(args.groups),
    )
    _print_json(reply)
    if (notify := sys.modules.get("flyteplugins.hitl._notify")) is not None:
        notify.flush(NOTICE_SECONDS)  # the notices of the outcome it stored, if it sent any, before it exits
    return 0


def _submit_batch(args: argparse.Namespace) -> int:
    """``hitl submit --batch FILE``: every answer in FILE; exit 0 only if all were stored, else the code of
    the first one refused (as ``hitl submit`` would exit for it alone)."""
    from . import _batch

    if args.target is not None:
        print("hitl submit: --batch takes no TARGET or VALUE (see 'hitl submit --help')", file=sys.stderr)
        return 2
    endpoint = args.endpoint or os.environ.get(ENDPOINT_ENV) or None
    # --token answers the lines without one (the items of one new_events call share a token).
    items = [{"token": args.token, **item} if args.token else item for item in _batch.read_file(args.batch)]
    results = _batch.answer_all(
        items, endpoint=endpoint, root=args.root, headers=_headers(args), identity=_identity(args), groups=args.groups
    )
    _print_json({"results": results}, indent=2)
    refused = [r.get("status") for r in results if r.get("status") != 200]
    if not refused:
        return 0
    codes = {400: 2, 401: 6, 403: 6, 404: 3, 409: 4, 410: 5}
    return codes.get(refused[0], 1) if isinstance(refused[0], int) else 1


def _identity(args: argparse.Namespace) -> str | None:
    if args.groups and args.identity is None:
        raise ConfigurationError("--groups says which groups the --as identity is in: give --as too")
    return None if args.identity is None else _policy.canonical(args.identity, "--as")


def _groups(text: str) -> list[str]:
    """``--groups ops,sre`` as its names; each is checked as a respondents entry's group is."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or len(names) > _policy.MAX_RESPONDENTS or any(len(n) > _policy.MAX_IDENTITY for n in names):
        raise argparse.ArgumentTypeError(
            f"--groups takes 1 to {_policy.MAX_RESPONDENTS} comma-separated group names of at most "
            f"{_policy.MAX_IDENTITY} characters, got {text[:80]!r}"
        )
    return names


def _headers(args: argparse.Namespace) -> dict[str, str]:
    return dict(_client.parse_header(line) for line in args.header)


class _Interrupted(Exception):
    """Ctrl-C during a wait for `request_id`."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.request_id = request_id


class _Batch(argparse.Action):
    """``--batch FILE``: the answers come from FILE, so TARGET and VALUE are no longer required."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, _: Any = None
    ) -> None:
        setattr(namespace, self.dest, values)
        for action in parser._actions:
            if action.dest in ("target", "value"):
                action.required = False


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, printable(f"{self.prog}: {message} (see '{self.prog} --help')") + "\n")


_EXIT_CODES_HELP = """\
exit codes:
  0    done (status: the event is answered)
  1    storage or network failure
  2    bad usage, a bad setting, or a value that does not fit the event
  3    no such event
  4    already answered
  5    expired
  6    missing or wrong token
  7    (status) the event is still waiting
  130  interrupted (Ctrl-C)"""

_EXAMPLES = {
    "hitl": "example:\n  hitl list --status waiting\n  hitl submit approve-1a2b true --comment LGTM",
    "serve": "example:\n  hitl serve --root s3://my-bucket/hitl --host 0.0.0.0 --port 8080",
    "list": (
        "example:\n  hitl list --status waiting\n  hitl list --json | jq -r '.[].request_id'\n"
        "  hitl list --endpoint https://hitl.example --header 'Authorization: Bearer ...'"
    ),
    "status": (
        "example:\n"
        "  hitl status approve-1a2b --wait 3600 --endpoint https://hitl.example --token TOKEN \\\n"
        "      --header 'Authorization: Bearer ...'\n"
        "  case $? in 0) echo answered;; 5) echo expired;; 7) echo still waiting;; esac"
    ),
    "submit": (
        "example:\n"
        "  hitl submit approve-1a2b true --comment LGTM\n"
        "  hitl submit 'https://hitl.example/form/approve-1a2b?token=TOKEN' true \\\n"
        "      --header 'Authorization: Bearer ...'"
    ),
}


def _parser() -> argparse.ArgumentParser:
    # Nothing here reads the environment: a bad variable must not break commands that do not use it.
    root_help = f"storage root (default: ${ROOT_ENV} or {DEFAULT_LOCAL_ROOT})"
    header_help = (
        f"a request header for the server, 'Name: value' (repeatable; after those of ${HEADERS_ENV}, one a line), "
        "e.g. the platform login's 'Authorization: Bearer ...'; never shown in errors"
    )
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="hitl",
        description="Human-in-the-loop events for Flyte",
        epilog=f"{_EXIT_CODES_HELP}\n\n{_EXAMPLES['hitl']}",
        formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, epilog=_EXAMPLES[name], formatter_class=raw)

    serve = command("serve", "serve the form and JSON endpoints for every event under a root")
    serve.add_argument("--root", default=None, help=root_help)
    serve.add_argument("--host", default=None, help=f"address to bind (default: ${HOST_ENV} or 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port_arg, default=None, help=f"port, 0 for any free one (default: ${PORT_ENV} or 8080)"
    )
    serve.add_argument(
        "--metrics-port",
        type=_port_arg,
        default=None,
        help=f"serve Prometheus /metrics on this port, never the form's (default: ${METRICS_PORT_ENV}; needs [otel])",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="logging level (default: INFO)",
    )
    serve.set_defaults(run=_serve)

    listing = command("list", "list events under a root, newest first (never their tokens)")
    listing.add_argument("--root", default=None, help=root_help)
    listing.add_argument(
        "--status", choices=("all", "waiting", "answered", "expired"), default="all", help="only events in this state"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--endpoint", default=None, help="ask this server (GET /events) instead of reading the root")
    listing.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help=header_help)
    listing.set_defaults(run=_list)

    token_help = "the event's token, needed with --endpoint unless the server's login (--header) names who answers"
    endpoint_help = f"answer through this server (default: ${ENDPOINT_ENV}; without one, write to the root)"
    status = command("status", "show one event and its outcome; exit 0 answered, 5 expired, 7 still waiting")
    status.add_argument("request_id")
    status.add_argument("--root", default=None, help=root_help)
    status.add_argument("--endpoint", default=None, help="ask this server instead of reading the root")
    status.add_argument("--token", default=None, help=token_help)
    status.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help=header_help)
    status.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="block up to SECONDS until it is answered or expires"
    )
    status.set_defaults(run=_status)

    submit = command("submit", "answer an event: first answer wins")
    submit.add_argument("target", help="the event's request id, or its form URL (which carries the token)")
    submit.add_argument(
        "value", help="the answer, checked against the event's type and choices (after -- if it starts with '-')"
    )
    submit.add_argument(
        "--batch",
        action=_Batch,
        default=None,
        metavar="FILE",
        help='answers, one JSON object a line: {"request_id", "token"?, "value", "comment"?} (- reads stdin); '
        "--token goes with the lines that have none",
    )
    submit.add_argument("--comment", default=None, help="a comment for the audit trail")
    submit.add_argument("--json-value", action="store_true", help='parse VALUE as JSON (e.g. 42, true, "text")')
    submit.add_argument("--root", default=None, help=root_help)
    submit.add_argument("--endpoint", default=None, help=endpoint_help)
    submit.add_argument("--token", default=None, help=token_help)
    submit.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help=header_help)
    submit.add_argument(
        "--as", dest="identity", default=None, help="who answers (with --root only), e.g. alice@example.com"
    )
    submit.add_argument(
        "--groups",
        type=_groups,
        default=[],
        metavar="NAME[,NAME...]",
        help="the groups the --as identity is in, for events whose respondents name a group:NAME",
    )
    submit.set_defaults(run=_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Example:
        >>> main(["list", "--status", "waiting"])
        0
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HitlError as e:
        print(printable(f"hitl: {e}"), file=sys.stderr)
        return next((code for kind, code in EXIT_CODES if isinstance(e, kind)), 1)
    except _Interrupted as e:
        print(printable(f"hitl: interrupted: {e.request_id!r} is still waiting; re-run to pick it up"), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("hitl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (hitl list | head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
