"""The command line: ``python -m flyteplugins.hitl serve --root ROOT --host HOST --port PORT``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from ._store import Store, default_root
from .server import HOST_ENV, PORT_ENV, make_server


def _serve(args: argparse.Namespace) -> int:
    httpd = make_server(Store(args.root), args.host, args.port)

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


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    import os

    parser = argparse.ArgumentParser(prog="hitl", description="Human-in-the-loop events for Flyte")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the form and JSON endpoints for every event under a root")
    serve.add_argument("--root", default=default_root(), help="storage root (default: $FLYTE_HITL_ROOT)")
    serve.add_argument("--host", default=os.environ.get(HOST_ENV) or "127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV) or 8080), help="port (0: any free)")
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
