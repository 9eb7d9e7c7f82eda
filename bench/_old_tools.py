"""Benchmark children that run with the deprecated flyteplugins-hitl 2.12.1 (``bench/.venv-old``).

The old plugin's ``Event.create`` first serves its FastAPI app on a Flyte cluster, so these children
use its pieces that need no cluster: its storage paths (``$RAW_DATA_PATH/hitl-requests/<id>/``), its
request record, its storage calls and its wait loop (``wait_for_input_event``), unchanged.

    python _old_tools.py wake -n N --endpoint URL        (an old server at URL writes the answers)
    python _old_tools.py create -n N                     (root from RAW_DATA_PATH)
    python _old_tools.py storage -n N --seconds S --counter URL
    python _old_tools.py scale -n N

Each prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import urllib.request
import uuid
from typing import Any

import flyte.storage as storage
from flyteplugins.hitl._event import wait_for_input_event
from flyteplugins.hitl._helpers import _get_request_path, _get_response_path


def _record(request_id: str, name: str) -> dict[str, Any]:
    """The request record as the old ``Event.create`` writes it."""
    return {
        "request_id": request_id,
        "event_name": name,
        "scope": "run",
        "prompt": "How many?",
        "data_type": "int",
        "status": "pending",
        "app_endpoint": "http://127.0.0.1",
        "request_path": _get_request_path(request_id),
        "response_path": _get_response_path(request_id),
    }


async def _create_one(name: str) -> str:
    """The storage part of the old ``Event.create``: one put of the request record."""
    request_id = str(uuid.uuid4())
    path = _get_request_path(request_id)
    if "://" not in path:  # its local file system writes no parent directories (the old plugin fails here)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    await storage.put_stream(json.dumps(_record(request_id, name)).encode(), to_path=path)
    return request_id


def _wait(request_id: str, name: str) -> Any:
    return wait_for_input_event(
        name=name,
        request_id=request_id,
        response_path=_get_response_path(request_id),
        timeout_seconds=3600,
        poll_interval_seconds=5,
    )


def _post(endpoint: str, request_id: str, value: int) -> int:
    body = {"request_id": request_id, "response_path": _get_response_path(request_id), "value": str(value)}
    body["data_type"] = "int"
    req = urllib.request.Request(
        f"{endpoint}/submit/json", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        return r.status


def wake(args: argparse.Namespace) -> dict[str, Any]:
    """Answer accepted by the old server -> the old wait loop returns, at its default 5 s poll."""

    async def one(i: int) -> tuple[float, float]:
        request_id = await _create_one(f"wake-{i}")
        waiting = asyncio.ensure_future(_wait(request_id, f"wake-{i}"))
        await asyncio.sleep(random.uniform(0.2, 4.8))  # an answer at any point of the poll interval
        sent = time.perf_counter()
        status = await asyncio.to_thread(_post, args.endpoint, request_id, i)
        acked = time.perf_counter()
        value = await waiting
        returned = time.perf_counter()
        if status != 200 or value != i:
            raise SystemExit(f"wake {i}: status {status}, value {value!r}")
        return (returned - acked) * 1000, (returned - sent) * 1000

    async def main() -> list[tuple[float, float]]:
        return await asyncio.gather(*(one(i) for i in range(args.n)))

    samples = asyncio.run(main())
    return {"mode": "aio", "from_ack_ms": [a for a, _ in samples], "from_send_ms": [s for _, s in samples]}


def create(args: argparse.Namespace) -> dict[str, Any]:
    """Request records written per second, one after another."""

    async def main() -> float:
        await _create_one("warm")
        start = time.perf_counter()
        for i in range(args.n):
            await _create_one(f"create-{i}")
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    return {"n": args.n, "seconds": elapsed, "per_second": args.n / elapsed}


def storage_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Storage requests while `n` old wait loops poll at the default interval, counted at the object store."""

    async def main() -> dict[str, Any]:
        ids = [await _create_one(f"storage-{i}") for i in range(args.n)]
        tasks = [asyncio.ensure_future(_wait(request_id, "storage")) for request_id in ids]
        await asyncio.sleep(6)
        before = await asyncio.to_thread(_count, args.counter)
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        after = await asyncio.to_thread(_count, args.counter)
        window = time.monotonic() - t0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"n": args.n, "window_s": window, "requests": {k: after.get(k, 0) - before.get(k, 0) for k in after}}

    return asyncio.run(main())


def scale(args: argparse.Namespace) -> dict[str, Any]:
    """`n` concurrent old wait loops (aio) on a local root; answers written as its server writes them."""

    async def main() -> dict[str, Any]:
        ids = [str(uuid.uuid4()) for _ in range(args.n)]
        for request_id in ids:
            os.makedirs(os.path.dirname(_get_response_path(request_id)), exist_ok=True)
        rss_before = _current_rss_mb()
        start = time.monotonic()
        tasks = [asyncio.ensure_future(_wait(request_id, f"scale-{i}")) for i, request_id in enumerate(ids)]
        started = time.monotonic() - start
        await asyncio.sleep(3)
        rss_parked = _current_rss_mb()
        first = time.monotonic()
        for i, request_id in enumerate(ids):
            body = {"value": i, "status": "completed", "request_id": request_id, "data_type": "int"}
            with open(_get_response_path(request_id), "w") as f:
                json.dump(body, f)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the loops run while answers arrive, as they would
        last_answer = time.monotonic()
        returned: list[float] = []

        async def timed(task: asyncio.Future[Any]) -> Any:
            value = await task
            returned.append(time.monotonic())
            return value

        values = await asyncio.gather(*(timed(t) for t in tasks))
        return {
            "mode": "aio",
            "n": args.n,
            "wrong": sum(1 for i, v in enumerate(values) if v != i),
            "start_seconds": started,
            "last_answer_to_last_return_ms": (max(returned) - last_answer) * 1000,
            "first_answer_to_last_return_s": max(returned) - first,
            "rss_before_mb": rss_before,
            "rss_parked_mb": rss_parked,
            "peak_rss_mb": _peak_rss_mb(),
        }

    return asyncio.run(main())


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process's memory map; ru_maxrss would also count the parent's RSS
    # from before exec.
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _count(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("wake")
    p.add_argument("-n", type=int, default=10)
    p.add_argument("--endpoint", required=True)
    p = commands.add_parser("create")
    p.add_argument("-n", type=int, default=500)
    p = commands.add_parser("storage")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--counter", required=True)
    p = commands.add_parser("scale")
    p.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args()
    handlers = {"wake": wake, "create": create, "storage": storage_cost, "scale": scale}
    print(json.dumps(handlers[args.command](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
