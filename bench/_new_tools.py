"""Benchmark children that run with this package (``.venv``). Each prints one JSON line last.

    python _new_tools.py events --root R --endpoint URL -n N --form FILE --submit FILE
    python _new_tools.py wake -n N --mode sync|aio
    python _new_tools.py scale -n N --mode sync|aio
    python _new_tools.py create -n N --root ROOT
    python _new_tools.py storage -n N --seconds S --counter URL      (root from FLYTE_HITL_ROOT)
    python _new_tools.py answer --lines FILE --endpoint URL --connections C

Waits print their console lines ([hitl] ...) on stdout; the JSON line comes last.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit


def _hitl(root: str, endpoint: str | None = None) -> Any:
    os.environ["FLYTE_HITL_ROOT"] = root
    if endpoint:
        os.environ["FLYTE_HITL_ENDPOINT"] = endpoint
    else:
        os.environ.pop("FLYTE_HITL_ENDPOINT", None)
    import flyteplugins.hitl as hitl

    return hitl


def _create_many(hitl: Any, n: int, prefix: str) -> list[Any]:
    def one(i: int) -> Any:
        return hitl.new_event(f"{prefix}-{i}", data_type=int, prompt="How many?", timeout_seconds=7200)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def _connect(endpoint: str) -> http.client.HTTPConnection:
    parts = urlsplit(endpoint)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)


def _post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/submit/json", body=body, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    return reply.status


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


def events(args: argparse.Namespace) -> dict[str, Any]:
    """Create `n` pending int events through the public API and write wrk input lines for them."""
    hitl = _hitl(args.root, args.endpoint)  # the server under test answers; no embedded server here
    start = time.perf_counter()
    made = _create_many(hitl, args.n, "bench")
    elapsed = time.perf_counter() - start
    with open(args.form, "w") as form, open(args.submit, "w") as submit:
        for i, event in enumerate(made):
            form.write(f"/form/{event.request_id}?token={quote(event.token, safe='')}\n")
            submit.write(json.dumps({"request_id": event.request_id, "token": event.token, "value": i}) + "\n")
    return {"n": args.n, "seconds": elapsed}


def wake(args: argparse.Namespace) -> dict[str, Any]:
    """Wake latency with the embedded server at the default 5 s poll: answer accepted -> wait() returns."""
    hitl = _hitl(tempfile.mkdtemp(prefix="hitl-wake-"))
    warm = hitl.new_event("warm", data_type=int)  # starts the embedded server
    conn = _connect(warm.endpoint)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    from_ack, from_send = [], []
    for i in range(args.n):
        event = hitl.new_event(f"wake-{i}", data_type=int, prompt="How many?")
        box: dict[str, Any] = {}
        if args.mode == "sync":

            def waiter(event: Any = event, box: dict[str, Any] = box) -> None:
                box["value"] = event.wait()
                box["t"] = time.perf_counter()

            thread = threading.Thread(target=waiter)
            thread.start()
        else:

            async def waiter_aio(event: Any = event) -> tuple[Any, float]:
                value = await event.wait.aio()
                return value, time.perf_counter()

            future = asyncio.run_coroutine_threadsafe(waiter_aio(), loop)
        # Answer while the wait is parked between polls (its first storage read is long done).
        time.sleep(random.uniform(0.03, 0.08))
        body = json.dumps({"request_id": event.request_id, "token": event.token, "value": i}).encode()
        sent = time.perf_counter()
        status = _post(conn, body)
        acked = time.perf_counter()
        if args.mode == "sync":
            thread.join(10)
            value, returned = box.get("value"), box.get("t", float("nan"))
        else:
            value, returned = future.result(10)
        if status != 200 or value != i:
            raise SystemExit(f"wake {i}: status {status}, value {value!r}")
        from_ack.append((returned - acked) * 1000)
        from_send.append((returned - sent) * 1000)
    return {"mode": args.mode, "from_ack_ms": from_ack, "from_send_ms": from_send}


def threads(args: argparse.Namespace) -> dict[str, Any]:
    """The floor under `scale --mode sync`: `n` bare threads parked on one threading.Event, no wait at all.

    What a program pays for its own threads, whatever they block on; the rest is the waits' share.
    """
    import flyteplugins.hitl  # noqa: F401 - the same modules loaded as in `scale`

    threading.stack_size(args.stack_kib * 1024)
    rss_before = _current_rss_mb()
    gate = threading.Event()
    parked = [threading.Thread(target=gate.wait, daemon=True) for _ in range(args.n)]
    for t in parked:
        t.start()
    time.sleep(args.settle)
    rss_parked = _current_rss_mb()
    gate.set()
    for t in parked:
        t.join()
    return {"n": args.n, "rss_before_mb": rss_before, "rss_parked_mb": rss_parked, "peak_rss_mb": _peak_rss_mb()}


def scale(args: argparse.Namespace) -> dict[str, Any]:
    """`n` concurrent waits in this process, answered through the embedded server by another process."""
    hitl = _hitl(tempfile.mkdtemp(prefix="hitl-scale-"))
    made = _create_many(hitl, args.n, "scale")
    endpoint = made[0].endpoint
    lines = os.path.join(tempfile.mkdtemp(prefix="hitl-scale-lines-"), "answers.txt")
    with open(lines, "w") as f:
        for i, event in enumerate(made):
            f.write(json.dumps({"request_id": event.request_id, "token": event.token, "value": i}) + "\n")
    rss_before = _current_rss_mb()
    results: list[Any] = [None] * args.n
    returned: list[float] = [0.0] * args.n
    start = time.monotonic()
    if args.mode == "sync":
        threading.stack_size(args.stack_kib * 1024)

        def waiter(i: int) -> None:
            results[i] = made[i].wait()
            returned[i] = time.monotonic()

        threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(args.n)]
        for t in threads:
            t.start()
        started = time.monotonic() - start
        time.sleep(args.settle)
        rss_parked, hwm_parked = _current_rss_mb(), _peak_rss_mb()
        answer = _answerer(lines, endpoint)
        for t in threads:
            t.join()
        answered = json.loads(answer.communicate()[0].splitlines()[-1])
    else:

        async def waiter_aio(i: int) -> None:
            results[i] = await made[i].wait.aio()
            returned[i] = time.monotonic()

        async def main() -> tuple[float, float, dict[str, Any]]:
            tasks = [asyncio.ensure_future(waiter_aio(i)) for i in range(args.n)]
            started = time.monotonic() - start
            await asyncio.sleep(args.settle)
            rss_parked, hwm_parked = _current_rss_mb(), _peak_rss_mb()
            answer = _answerer(lines, endpoint)
            await asyncio.gather(*tasks)
            out = await asyncio.to_thread(answer.communicate)
            return started, rss_parked, hwm_parked, json.loads(out[0].splitlines()[-1])

        started, rss_parked, hwm_parked, answered = asyncio.run(main())
    wrong = sum(1 for i, value in enumerate(results) if value != i)
    return {
        "mode": args.mode,
        "n": args.n,
        "wrong": wrong,
        "answers_ok": answered["ok"],
        "start_seconds": started,
        "last_answer_to_last_return_ms": (max(returned) - answered["last_ack"]) * 1000,
        "first_answer_to_last_return_s": max(returned) - answered["first_sent"],
        "rss_before_mb": rss_before,
        "rss_parked_mb": rss_parked,
        "peak_rss_while_starting_mb": hwm_parked,  # the peak before any answer came
        "peak_rss_mb": _peak_rss_mb(),
        "stack_kib": args.stack_kib if args.mode == "sync" else None,
    }


def _answerer(lines: str, endpoint: str) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "answer", "--lines", lines, "--endpoint", endpoint, "--connections", "8"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def answer(args: argparse.Namespace) -> dict[str, Any]:
    """POST every line of `lines` to `endpoint` over `connections` keep-alive connections."""
    with open(args.lines) as f:
        bodies = [line.strip().encode() for line in f if line.strip()]
    ok = 0
    lock = threading.Lock()
    first_sent = time.monotonic()

    def worker(k: int) -> float:
        nonlocal ok
        conn = _connect(args.endpoint)
        last = 0.0
        for body in bodies[k :: args.connections]:
            status = _post(conn, body)
            last = time.monotonic()
            if status == 200:
                with lock:
                    ok += 1
        return last

    with ThreadPoolExecutor(args.connections) as pool:
        last_ack = max(pool.map(worker, range(args.connections)))
    return {"ok": ok, "n": len(bodies), "first_sent": first_sent, "last_ack": last_ack}


def create(args: argparse.Namespace) -> dict[str, Any]:
    """Events created per second, one after another, with the default (embedded server) set-up."""
    hitl = _hitl(args.root)
    hitl.new_event("warm", data_type=int)  # the embedded server starts once per process; not counted
    start = time.perf_counter()
    for i in range(args.n):
        hitl.new_event(f"create-{i}", data_type=int, prompt="How many?")
    elapsed = time.perf_counter() - start
    return {"n": args.n, "seconds": elapsed, "per_second": args.n / elapsed}


def storage(args: argparse.Namespace) -> dict[str, Any]:
    """Storage requests while `n` events wait (aio) at the default interval, counted at the object store."""
    hitl = _hitl(os.environ["FLYTE_HITL_ROOT"])
    made = _create_many(hitl, args.n, "storage")
    endpoint = made[0].endpoint

    async def main() -> dict[str, Any]:
        tasks = [asyncio.ensure_future(event.wait.aio()) for event in made]
        await asyncio.sleep(6)  # every wait has made its first read and settled into its interval
        before = await asyncio.to_thread(_count, args.counter)
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        after = await asyncio.to_thread(_count, args.counter)
        window = time.monotonic() - t0
        # End every wait the way it ends in use: an answer through the embedded server.
        conn = _connect(endpoint)
        statuses = [
            await asyncio.to_thread(
                _post, conn, json.dumps({"request_id": e.request_id, "token": e.token, "value": i}).encode()
            )
            for i, e in enumerate(made)
        ]
        values = await asyncio.gather(*tasks)
        return {
            "n": args.n,
            "window_s": window,
            "requests": {k: after.get(k, 0) - before.get(k, 0) for k in after},
            "answers_ok": sum(s == 200 for s in statuses),
            "wrong": sum(1 for i, v in enumerate(values) if v != i),
        }

    return asyncio.run(main())


def _count(url: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("events")
    p.add_argument("--root", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--form", required=True)
    p.add_argument("--submit", required=True)
    p = commands.add_parser("wake")
    p.add_argument("-n", type=int, default=50)
    p.add_argument("--mode", choices=("sync", "aio"), default="sync")
    p = commands.add_parser("scale")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--mode", choices=("sync", "aio"), default="sync")
    p.add_argument("--stack-kib", type=int, default=256)
    p.add_argument("--settle", type=float, default=3.0)
    p = commands.add_parser("threads")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--stack-kib", type=int, default=256)
    p.add_argument("--settle", type=float, default=3.0)
    p = commands.add_parser("create")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--root", required=True)
    p = commands.add_parser("storage")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--counter", required=True)
    p = commands.add_parser("answer")
    p.add_argument("--lines", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    handlers = {
        "events": events,
        "wake": wake,
        "scale": scale,
        "threads": threads,
        "create": create,
        "storage": storage,
        "answer": answer,
    }
    result = handlers[args.command](args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
