"""The command line: ``hitl serve | list | status | submit`` (also ``python -m flyteplugins.hitl``).

Exit codes: 0 done; 1 storage or network failure; 2 bad usage or a value that does not fit;
3 no such event; 4 already answered; 5 expired; 6 missing or wrong token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from types import FrameType

from . import _answers, _client
from ._errors import (
    AlreadyAnsweredError,
    EventExpiredError,
    EventNotFoundError,
    HitlError,
    InvalidRequestIdError,
    InvalidTokenError,
    InvalidValueError,
)
from ._store import ROOT_ENV, Store, default_root
from .server import HOST_ENV, PORT_ENV, make_server

EXIT_CODES: tuple[tuple[type[HitlError], int], ...] = (
    (InvalidValueError, 2),
    (InvalidRequestIdError, 2),
    (EventNotFoundError, 3),
    (AlreadyAnsweredError, 4),
    (EventExpiredError, 5),
    (InvalidTokenError, 6),
)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # This process's log lines show none of the caller, thread or process fields, so records skip
    # gathering them (the logging HOWTO's "Optimization"): a stack walk and a getpid call per access
    # log line. POST /submit/json at 16 connections went from 2,409 to 2,739 req/s.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
    try:
        httpd = make_server(Store(args.root), args.host, args.port)
    except OSError as e:  # port in use, address not on this host, no permission: a usage problem, not a bug
        print(f"hitl: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"serving {args.root} at {httpd.url}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def _list(args: argparse.Namespace) -> int:
    store = Store(args.root)
    rows = []
    for request_id in store.list_ids():
        request = store.read_request(request_id)
        if request is None:
            continue
        status = _answers.status_of(request, store.read_response(request_id))
        if args.status in ("all", status):
            rows.append((str(request.get("created_at", "")), status, request))
    rows.sort(key=lambda row: row[0])
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "token"} | {"status": s} for _, s, r in rows], indent=2))
        return 0
    for created, status, request in rows:
        print(f"{status:<9} {request['data_type']:<5} {created:<24} {request['request_id']}  {request['event_name']}")
    if not rows:
        print(f"no {'' if args.status == 'all' else args.status + ' '}events under {store.root}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    if not 0 <= args.wait < float("inf"):  # also refuses nan
        raise InvalidValueError(f"--wait must be 0 or more seconds, got {args.wait!r}")
    record = _client.status(args.request_id, token=args.token, endpoint=args.endpoint, root=args.root, wait=args.wait)
    print(json.dumps(record, indent=2, ensure_ascii=False))
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
        endpoint=args.endpoint,
        root=args.root,
        comment=args.comment,
    )
    print(json.dumps(reply, ensure_ascii=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    root_help = f"storage root (default: ${ROOT_ENV} or {default_root()})"
    parser = argparse.ArgumentParser(prog="hitl", description="Human-in-the-loop events for Flyte")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the form and JSON endpoints for every event under a root")
    serve.add_argument("--root", default=default_root(), help=root_help)
    serve.add_argument("--host", default=os.environ.get(HOST_ENV) or "127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV) or 8080), help="port (0: any free)")
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    serve.set_defaults(run=_serve)

    listing = commands.add_parser("list", help="list events (never their tokens)")
    listing.add_argument("--root", default=default_root(), help=root_help)
    listing.add_argument("--status", choices=("all", "pending", "completed", "expired"), default="all")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)

    endpoint_help = "answer through this server (default: $FLYTE_HITL_ENDPOINT; without one, write to the root)"
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
    submit.add_argument("value", help="the answer, checked against the event's type and choices")
    submit.add_argument("--comment", default=None, help="a comment for the audit trail")
    submit.add_argument("--json-value", action="store_true", help='parse VALUE as JSON (e.g. 42, true, "text")')
    submit.add_argument("--root", default=None, help=root_help)
    submit.add_argument("--endpoint", default=os.environ.get("FLYTE_HITL_ENDPOINT") or None, help=endpoint_help)
    submit.add_argument("--token", default=None, help="the event's token (needed with --endpoint)")
    submit.set_defaults(run=_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HitlError as e:
        print(f"hitl: {e}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES if isinstance(e, kind)), 1)


if __name__ == "__main__":
    sys.exit(main())
