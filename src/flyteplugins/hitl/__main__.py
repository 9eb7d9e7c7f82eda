"""The command line: ``hitl serve | list | status | submit`` (also ``python -m flyteplugins.hitl``).

Exit codes: 0 done; 1 storage or network failure; 2 bad usage, a bad setting or a value that does
not fit; 3 no such event; 4 already answered; 5 expired; 6 missing or wrong token. A failure is one
line on stderr, never a traceback. Every line printed escapes control characters, since names,
prompts and replies come from storage and servers that others can write to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from types import FrameType
from typing import Any, NoReturn

from . import _answers, _client, _policy
from ._errors import (
    AlreadyAnsweredError,
    ConfigurationError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
    StorageError,
    UnsafeRootError,
)
from ._store import DEFAULT_LOCAL_ROOT, ROOT_ENV, Store, default_root
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
    (_policy.NotIdentifiedError, 6),
    (_policy.NotAllowedError, 6),
)

# C0 and C1 controls, DEL, line and paragraph separators and bidirectional overrides: each could move
# the cursor, erase lines, or make the terminal show text in another order than it is.
_WIDE_CONTROLS = "\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL_RE = re.compile(f"[\\x00-\\x1f{_WIDE_CONTROLS}]")
# json.dumps escapes C0 controls inside strings already; the others stay raw with ensure_ascii=False.
_JSON_CONTROL_RE = re.compile(f"[{_WIDE_CONTROLS}]")


def printable(text: str) -> str:
    """`text` with control characters shown as escapes (``\\x1b``, ``\\u202e``), fit for one terminal line.

    Example:
        >>> printable("ok\\x1b[2K\\nfake line")
        'ok\\\\x1b[2K\\\\nfake line'
    """
    return _CONTROL_RE.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _print_json(value: Any, indent: int | None = None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    print(_JSON_CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


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
    logging._srcfile = None  # type: ignore[attr-defined]
    host = args.host or os.environ.get(HOST_ENV) or "127.0.0.1"
    port = args.port if args.port is not None else _port(os.environ.get(PORT_ENV) or "8080", PORT_ENV)
    root = args.root or default_root()
    store = Store(root)
    store.check_root()
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
        status = _answers.status_of(request, response)
        if args.status in ("all", status):
            rows.append((str(request.get("created_at", "")), status, request))
    rows.sort(key=lambda row: row[0])
    if args.json:
        _print_json([_answers.public_request(r) | {"status": s} for _, s, r in rows], indent=2)
        return 1 if damaged else 0
    for created, status, request in rows:
        line = f"{status:<9} {request.get('data_type')!s:<5} {created:<24} {request['request_id']}  "
        print(printable(line + str(request.get("event_name"))))
    if not rows:
        which = "" if args.status == "all" else args.status + " "
        print(printable(f"no {which}events under {store.root}"), file=sys.stderr)
    return 1 if damaged else 0


def _status(args: argparse.Namespace) -> int:
    if not 0 <= args.wait < float("inf"):  # also refuses nan
        raise InvalidValueError(f"--wait must be 0 or more seconds, got {args.wait!r}")
    record = _client.status(args.request_id, token=args.token, endpoint=args.endpoint, root=args.root, wait=args.wait)
    _print_json(record, indent=2)
    return 0


def _submit(args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.value) if args.json_value else args.value
    except ValueError as e:
        raise InvalidValueError(f"--json-value given but {args.value!r} is not JSON: {e}") from e
    reply = _client.answer(
        args.target,
        value,
        via="cli",
        token=args.token,
        endpoint=args.endpoint or os.environ.get(ENDPOINT_ENV) or None,
        root=args.root,
        comment=args.comment,
        identity=args.identity,
    )
    _print_json(reply)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, printable(f"{self.prog}: {message} (see '{self.prog} --help')") + "\n")


def _parser() -> argparse.ArgumentParser:
    # Nothing here reads the environment: a bad variable must not break commands that do not use it.
    root_help = f"storage root (default: ${ROOT_ENV} or {DEFAULT_LOCAL_ROOT})"
    parser = _Parser(prog="hitl", description="Human-in-the-loop events for Flyte")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve the form and JSON endpoints for every event under a root")
    serve.add_argument("--root", default=None, help=root_help)
    serve.add_argument("--host", default=None, help=f"address to bind (default: ${HOST_ENV} or 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port_arg, default=None, help=f"port, 0 for any free one (default: ${PORT_ENV} or 8080)"
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="logging level (default: INFO)",
    )
    serve.set_defaults(run=_serve)

    listing = commands.add_parser("list", help="list events (never their tokens)")
    listing.add_argument("--root", default=None, help=root_help)
    listing.add_argument("--status", choices=("all", "pending", "completed", "expired"), default="all")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)

    endpoint_help = f"answer through this server (default: ${ENDPOINT_ENV}; without one, write to the root)"
    status = commands.add_parser("status", help="show one event and its outcome")
    status.add_argument("request_id")
    status.add_argument("--root", default=None, help=root_help)
    status.add_argument("--endpoint", default=None, help="ask this server instead of reading the root")
    status.add_argument("--token", default=None, help="the event's token (needed with --endpoint)")
    status.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="block up to SECONDS until it is answered or expires"
    )
    status.set_defaults(run=_status)

    submit = commands.add_parser("submit", help="answer an event: first answer wins")
    submit.add_argument("target", help="the event's request id, or its form URL (which carries the token)")
    submit.add_argument(
        "value", help="the answer, checked against the event's type and choices (after -- if it starts with '-')"
    )
    submit.add_argument("--comment", default=None, help="a comment for the audit trail")
    submit.add_argument("--json-value", action="store_true", help='parse VALUE as JSON (e.g. 42, true, "text")')
    submit.add_argument("--root", default=None, help=root_help)
    submit.add_argument("--endpoint", default=None, help=endpoint_help)
    submit.add_argument("--token", default=None, help="the event's token (needed with --endpoint)")
    submit.add_argument(
        "--as", dest="identity", default=None, help="who answers (with --root only), e.g. alice@example.com"
    )
    submit.set_defaults(run=_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Example:
        >>> main(["list", "--status", "pending"])
        0
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HitlError as e:
        print(printable(f"hitl: {e}"), file=sys.stderr)
        return next((code for kind, code in EXIT_CODES if isinstance(e, kind)), 1)
    except KeyboardInterrupt:
        print("hitl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (hitl list | head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
