"""The cluster layout on one machine: form servers and the waiting task in separate processes.

    python bench/cluster.py [--quick] [--only wake,storage,start]

- ``wake``: answer accepted (the 200) → ``wait.aio()`` returns, in another process than the form
  server that took the answer: 1 replica; 2 replicas with the answer on the one not in the event's
  links; a local root and an S3 root (moto, counting). Answers come at random points of the
  default 5 s poll cycle. The old 2.12.1 plugin side by side when ``bench/.venv-old`` exists
  (``make bench`` makes it; skipped otherwise).
- ``storage``: storage requests a minute while 1,000 events wait on S3 in that layout.
- ``start``: the form server as a scale-to-zero app: process start → first 200 on ``/health`` and
  on a form page, and its RSS once idle.

Waiting task on 127.0.0.2 (``FLYTE_HITL_WAKE_HOST``), servers on 127.0.0.3 and 127.0.0.4. Prints a
Markdown table on stdout and writes the raw figures to ``bench/results/cluster.json``. These are
measurements, never tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    BUCKET,
    NEW_PY,
    OLD_PY,
    RESULTS,
    child_env,
    free_port,
    log,
    median,
    moto,
    process,
    run_json,
    s3_env,
    wait_http,
)

TASK_HOST = "127.0.0.2"
SERVER_HOSTS = ("127.0.0.3", "127.0.0.4")
POLL = 5.0


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank), or NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered) + 0.5) - 1))]


# -- the waiting task (a child process) --------------------------------------------------------------


def waiter_main(args: argparse.Namespace) -> int:
    """Create `n` events, wait for all of them (aio) and report each return on the monotonic clock.

    Prints ``EVENT {json}`` per event, ``READY <t>`` once every wait started, ``RET <id> <value> <t>``
    per return. With ``--counter``, also counts storage requests for ``--seconds`` before answers
    are expected and prints ``COUNT {json}``.
    """
    import flyteplugins.hitl as hitl

    async def main() -> None:
        async def one(i: int) -> Any:
            return await hitl.new_event.aio(f"cluster-{i}", data_type=int, prompt="How many?", timeout_seconds=7200)

        events = []
        for start in range(0, args.n, 50):
            events += await asyncio.gather(*(one(i) for i in range(start, min(args.n, start + 50))))
        for e in events:
            print("EVENT", json.dumps({"id": e.request_id, "token": e.token, "endpoint": e.endpoint}), flush=True)

        async def wait(e: Any) -> None:
            value = await e.wait.aio()
            print("RET", e.request_id, value, time.monotonic(), flush=True)

        tasks = [asyncio.ensure_future(wait(e)) for e in events]
        # Every wait has read once and registered; with a counter, the first timed polls are over too.
        await asyncio.sleep(0.5 if not args.counter else 2 * POLL + 1)
        if args.counter:
            before = _count(args.counter)
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            after = _count(args.counter)
            window = time.monotonic() - t0
            counts = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            print("COUNT", json.dumps({"n": args.n, "window_s": window, "requests": counts}), flush=True)
        print("READY", time.monotonic(), flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return 0


def _count(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


# -- the driver ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(root: str, replicas: int, env: dict[str, str], label: str) -> Iterator[list[str]]:
    """`replicas` form servers (``python -m flyteplugins.hitl serve``) for `root`; yields their URLs."""
    with contextlib.ExitStack() as stack:
        urls = []
        for host in SERVER_HOSTS[:replicas]:
            port = free_port()
            argv = [str(NEW_PY), "-m", "flyteplugins.hitl", "serve", "--root", root, "--host", host]
            argv += ["--port", str(port), "--log-level", "WARNING"]
            stack.enter_context(process(argv, env=env, log_path=RESULTS / "logs" / f"cluster-{label}-{host}.log"))
            urls.append(f"http://{host}:{port}")
        for url in urls:
            wait_http(f"{url}/health")
        yield urls


def _post(endpoint: str, request_id: str, token: str, value: int) -> int:
    body = json.dumps({"request_id": request_id, "token": token, "value": value}).encode()
    req = urllib.request.Request(f"{endpoint}/submit/json", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        return r.status


def run_waits(root: str, urls: list[str], env: dict[str, str], n: int, cycles: int) -> dict[str, Any]:
    """One waiting process with `n` events linked to urls[0]; answers posted to urls[-1] at random times."""
    argv = [str(NEW_PY), __file__, "_waiter", "-n", str(n)]
    wenv = child_env(FLYTE_HITL_ROOT=root, FLYTE_HITL_ENDPOINT=urls[0], FLYTE_HITL_WAKE_HOST=TASK_HOST, **env)
    proc = subprocess.Popen(argv, env=wenv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=BENCH)
    events: list[dict[str, str]] = []
    returned: dict[str, tuple[str, float]] = {}
    ready = threading.Event()
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "EVENT":
                events.append(json.loads(rest))
            elif kind == "READY":
                ready.set()
            elif kind == "RET":
                request_id, value, t = rest.split()
                returned[request_id] = (value, float(t))
                if len(returned) == n:
                    done.set()
        ready.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(300) or len(events) != n:
            raise RuntimeError(f"the waiting process did not start its {n} waits")
        start = time.monotonic()
        # Each answer at a random point of the waits' poll cycles (they began within the last second).
        plan = sorted((random.uniform(0.2, POLL * cycles - 0.2), i) for i in range(n))
        acked: dict[str, float] = {}
        for at, i in plan:
            time.sleep(max(0.0, start + at - time.monotonic()))
            e = events[i]
            status = _post(urls[-1], e["id"], e["token"], i)
            acked[e["id"]] = time.monotonic()
            if status != 200:
                raise RuntimeError(f"answer {i}: status {status}")
        if not done.wait(POLL * 3 + 60):
            raise RuntimeError(f"only {len(returned)} of {n} waits returned")
    finally:
        proc.wait(30) if proc.poll() is None and done.is_set() else proc.kill()
        reader.join(10)
    wrong = sum(1 for i, e in enumerate(events) if returned[e["id"]][0] != str(i))
    samples = [(returned[e["id"]][1] - acked[e["id"]]) * 1000 for e in events]
    return {"n": n, "from_ack_ms": samples, "wrong": wrong, "linked": urls[0], "answered_on": urls[-1]}


def bench_wake(n: int, cycles: int, old_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with moto("cluster") as port:
        for where in ("local", "s3"):
            for replicas in (1, 2):
                label = f"{where}-{replicas}"
                scratch = tempfile.mkdtemp(prefix="hitl-bench-cluster-")
                root = f"s3://{BUCKET}/wake-{label}" if where == "s3" else scratch
                env = s3_env(port) if where == "s3" else {}
                log(f"wake, cluster layout: {where} root, {replicas} replica(s), {n} answers, this package")
                with servers(root, replicas, child_env(**env), label) as urls:
                    out[f"new_{label}"] = run_waits(root, urls, env, n, cycles)
                if OLD_PY.exists():
                    out[f"old_{label}"] = old_wake(where, replicas, port, old_n)
    return out


def old_wake(where: str, replicas: int, port: int, n: int) -> dict[str, Any]:
    """The old plugin: its uvicorn app(s) on the root, its wait loop in another process, answers on the last."""
    raw = f"s3://{BUCKET}/old-wake-{where}-{replicas}" if where == "s3" else tempfile.mkdtemp(prefix="hitl-old-")
    env = child_env(RAW_DATA_PATH=raw, **(s3_env(port) if where == "s3" else {}))
    log(f"wake, cluster layout: {where} root, {replicas} replica(s), {n} answers, old plugin")
    with contextlib.ExitStack() as stack:
        urls = []
        for host in SERVER_HOSTS[:replicas]:
            p = free_port()
            argv = [str(OLD_PY), "-m", "uvicorn", "flyteplugins.hitl._app:app", "--host", host, "--port", str(p)]
            stack.enter_context(process(argv, env=env, log_path=RESULTS / "logs" / f"cluster-old-{host}.log"))
            urls.append(f"http://{host}:{p}")
        for url in urls:
            wait_http(f"{url}/health")
        argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "wake", "-n", str(n), "--endpoint", urls[-1]]
        return run_json(argv, env=env, timeout=600)


def bench_storage(n: int, seconds: float) -> dict[str, Any]:
    with moto("cluster") as port:
        root = f"s3://{BUCKET}/storage"
        env = s3_env(port)
        log(f"storage cost, cluster layout: {n} events waiting on s3:// (moto) for {seconds:g}s")
        with servers(root, 2, child_env(**env), "storage") as urls:
            argv = [
                str(NEW_PY),
                __file__,
                "_waiter",
                "-n",
                str(n),
                "--counter",
                f"http://127.0.0.1:{port}/__bench/count",
            ]
            argv += ["--seconds", str(seconds)]
            wenv = child_env(FLYTE_HITL_ROOT=root, FLYTE_HITL_ENDPOINT=urls[0], FLYTE_HITL_WAKE_HOST=TASK_HOST, **env)
            proc = subprocess.Popen(argv, env=wenv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            events, count = [], None
            for line in proc.stdout:
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind == "EVENT":
                    events.append(json.loads(rest))
                elif kind == "COUNT":
                    count = json.loads(rest)
                elif kind == "READY":
                    break
            # End every wait as in use: answers on the other replica, which wake them.
            for i, e in enumerate(events):
                _post(urls[-1], e["id"], e["token"], i)
            returned = sum(1 for line in proc.stdout if line.startswith("RET"))
            proc.wait(60)
        if count is None:
            raise RuntimeError("the waiting process printed no counts")
        count["returned"] = returned
        out = {"new": count}
        if OLD_PY.exists():
            log(f"storage cost: {n} events waiting on s3:// (moto) for {seconds:g}s, old plugin")
            env = child_env(RAW_DATA_PATH=f"s3://{BUCKET}/old-storage", **s3_env(port))
            argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "storage", "-n", str(n), "--seconds", str(seconds)]
            out["old"] = run_json([*argv, "--counter", f"http://127.0.0.1:{port}/__bench/count"], env=env, timeout=900)
    return out


def bench_start(rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"new": [], "old": []}
    impls = ["new", "old"] if OLD_PY.exists() else ["new"]
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            log(f"start: {impl}, round {r + 1}/{rounds}")
            out[impl].append(start_once(impl))
    return out


def start_once(impl: str) -> dict[str, float]:
    """Process start → first 200 on /health, then on a form page; RSS after 2 s idle."""
    root = Path(tempfile.mkdtemp(prefix="hitl-bench-start-"))
    port = free_port()
    if impl == "new":
        form = _new_form_path(root)
        argv = [str(NEW_PY), "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--port", str(port)]
        env = child_env()
    else:
        import throughput

        lines = root / "form.txt"
        throughput._old_events(root, 1, lines, None)
        form = lines.read_text().splitlines()[0]
        argv = [str(OLD_PY), "-m", "uvicorn", "flyteplugins.hitl._app:app", "--host", "127.0.0.1", "--port", str(port)]
        env = child_env(RAW_DATA_PATH=str(root))
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with process(argv, env=env, log_path=RESULTS / "logs" / f"cluster-start-{impl}.log") as pid:
        health = _first_200(f"{base}/health", t0)
        page = _first_200(f"{base}{form}", t0)
        time.sleep(2)
        with open(f"/proc/{pid}/status") as f:
            rss = int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) / 1024
    return {"health_ms": health, "form_ms": page, "idle_rss_mb": rss}


def _new_form_path(root: Path) -> str:
    code = (
        "import json, os, sys; os.environ['FLYTE_HITL_ROOT'] = sys.argv[1]; "
        "os.environ['FLYTE_HITL_ENDPOINT'] = 'http://127.0.0.1:9'; import flyteplugins.hitl as h; "
        "e = h.new_event('start', data_type=int, prompt='How many?'); "
        "print(json.dumps({'path': e.form_url.split('127.0.0.1:9', 1)[1]}))"
    )
    return run_json([str(NEW_PY), "-c", code, str(root)], env=child_env())["path"]


def _first_200(url: str, t0: float) -> float:
    deadline = t0 + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return (time.monotonic() - t0) * 1000
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} gave no 200 within 60 s")


# -- the table ----------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = []
    wake = results.get("wake", {})
    for where in ("local", "s3"):
        for replicas in (1, 2):
            label = f"{where}-{replicas}"
            new, old = wake.get(f"new_{label}"), wake.get(f"old_{label}")
            if not new:
                continue
            what = "1 replica" if replicas == 1 else "2 replicas, answer on the other"
            cells = []
            for x in (old, new):
                s = x["from_ack_ms"] if x else []
                cells.append(f"{median(s):,.1f} / {p99(s):,.1f} (n={len(s)})" if s else "–")
            rows.append(
                (f"wake, 200 → wait.aio() returns, {where} root, {what}: median / p99 ms", *cells, "≤ 50 / ≤ 250")
            )
    st = results.get("storage")
    if st:
        per_min = {k: v["requests"].get("total", 0) / v["window_s"] * 60 for k, v in st.items()}
        cells = [f"{per_min[k]:,.0f}" if k in per_min else "–" for k in ("old", "new")]
        rows.append((f"storage requests a minute, {st['new']['n']:,} waits on S3 (cluster layout)", *cells, "not more"))
    start = results.get("start")
    if start:
        for key, what in (
            ("health_ms", "start → first 200 on /health (ms)"),
            ("form_ms", "start → first form page 200 (ms)"),
            ("idle_rss_mb", "idle RSS (MB)"),
        ):
            cells = [f"{median([x[key] for x in start[impl]]):,.0f}" if start[impl] else "–" for impl in ("old", "new")]
            rows.append((f"form server app: {what}", *cells, ""))
    lines = ["| Measure | flyteplugins-hitl 2.12.1 | this package | target |", "|---|---:|---:|---|"]
    return "\n".join([*lines, *(f"| {' | '.join(r)} |" for r in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="wake,storage,start", help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter windows (a smoke run)")
    args = parser.parse_args()
    q = args.quick
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {"quick": q, "old_side": OLD_PY.exists()}
    if not OLD_PY.exists():
        log("bench/.venv-old is missing (make bench creates it): the old plugin's side is skipped")
    for section in args.only.split(","):
        t0 = time.monotonic()
        if section == "wake":
            results["wake"] = bench_wake(10 if q else 100, 1 if q else 4, 5 if q else 20)
        elif section == "storage":
            results["storage"] = bench_storage(200 if q else 1000, 10 if q else 60)
        elif section == "start":
            results["start"] = bench_start(3 if q else 11)
        else:
            parser.error(f"unknown section {section!r}")
        log(f"{section}: {time.monotonic() - t0:.0f}s")
    (RESULTS / "cluster.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_waiter":
        p = argparse.ArgumentParser()
        p.add_argument("_waiter")
        p.add_argument("-n", type=int, default=10)
        p.add_argument("--counter", default=None)
        p.add_argument("--seconds", type=float, default=10)
        sys.exit(waiter_main(p.parse_args()))
    sys.exit(main())
