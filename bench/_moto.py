"""An S3-protocol test server (moto) on loopback that counts the requests it serves.

    python _moto.py PORT BUCKET...

Prints ``ready`` once it serves and the buckets exist. ``GET /__bench/count`` answers the
counts so far as JSON: ``total`` and one entry per S3 operation kind (GET, HEAD, PUT, LIST, ...);
the count requests themselves are not counted.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import ThreadedMotoServer

ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret"
REGION = "us-east-1"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class Counting:
    """WSGI middleware: counts every request by kind, then hands it to moto."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/__bench/count":
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        method = environ.get("REQUEST_METHOD", "")
        # A GET of the bucket itself (/bucket?list-type=2...) is a listing; /bucket/key is an object.
        kind = "LIST" if method == "GET" and path.rstrip("/").count("/") <= 1 else method
        with self.lock:
            self.counts["total"] += 1
            self.counts[kind] += 1
        return self.app(environ, start_response)


def main() -> int:
    port, buckets = int(sys.argv[1]), sys.argv[2:]
    import boto3

    server = ThreadedMotoServer("127.0.0.1", port, verbose=False)
    server.start()
    wsgi = server._server  # werkzeug's server: the place to put middleware in front of moto
    assert wsgi is not None
    wsgi.app = Counting(wsgi.app)
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    wsgi.app.counts.clear()  # the bucket set-up is not part of any measurement
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
