"""Server throughput: wrk against GET /health, GET /form/<id> and POST /submit/json, both plugins.

Each plugin's server runs as deployed (ours: ``python -m flyteplugins.hitl serve``; the old one:
``uvicorn flyteplugins.hitl._app:app``), both with their default logging, pinned to one core (both
app environments ask for ``cpu=1``) while wrk runs on the other cores. Every POST answers a
different pending event exactly once (``walk.lua`` walks a prepared list); form GETs cycle over
2,000 pending events. Rounds alternate the order of the servers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _common import BENCH, NEW_PY, OLD_PY, child_env, cpu_split, free_port, log, process, run_json, wait_http

ENDPOINTS = ("health", "form", "submit")
#: The servers compared, and the endpoints each one is measured on.
IMPLS = {"old": ENDPOINTS, "new": ENDPOINTS}
FORM_EVENTS = 2000


def _old_events(raw: Path, n: int, form: Path | None, submit: Path | None) -> None:
    """Pending events in the old plugin's layout, and wrk lines as its own links and curl body have them."""
    base = raw / "hitl-requests"
    form_lines, submit_lines = [], []
    for i in range(n):
        request_id = str(uuid.uuid4())
        request_path = f"{base}/{request_id}/request.json"
        response_path = f"{base}/{request_id}/response.json"
        record = {
            "request_id": request_id,
            "event_name": f"bench-{i}",
            "scope": "run",
            "prompt": "How many?",
            "data_type": "int",
            "status": "pending",
            "app_endpoint": "http://127.0.0.1",
            "request_path": request_path,
            "response_path": response_path,
        }
        (base / request_id).mkdir(parents=True)
        (base / request_id / "request.json").write_text(json.dumps(record))
        form_lines.append(f"/form/{request_id}?{urlencode({'request_path': request_path})}\n")
        body = {"request_id": request_id, "response_path": response_path, "value": str(i), "data_type": "int"}
        submit_lines.append(json.dumps(body) + "\n")
    if form is not None:
        form.write_text("".join(form_lines))
    if submit is not None:
        submit.write_text("".join(submit_lines))


def _new_events(root: Path, endpoint: str, n: int, form: Path, submit: Path) -> None:
    argv = [
        str(NEW_PY),
        str(BENCH / "_new_tools.py"),
        "events",
        "--root",
        str(root),
        "--endpoint",
        endpoint,
    ]
    run_json([*argv, "-n", str(n), "--form", str(form), "--submit", str(submit)], env=child_env())


def _prepare(impl: str, work: Path, endpoint: str, n_submit: int) -> tuple[Path, Path]:
    """Make the form pool and `n_submit` fresh pending events; returns (form lines, submit lines)."""
    form, submit = work / f"{impl}-form.txt", work / f"{impl}-submit.txt"
    scratch = work / f"{impl}-unused.txt"
    if impl == "old":
        if not form.exists():
            _old_events(work / "old-root", FORM_EVENTS, form, None)
        _old_events(work / "old-root", n_submit, None, submit)
    else:
        if "form" in IMPLS[impl] and not form.exists():
            _new_events(work / "new-root", endpoint, FORM_EVENTS, form, scratch)
        _new_events(work / "new-root", endpoint, n_submit, scratch, submit)
    return form, submit


def _server_argv(impl: str, work: Path, port: int) -> tuple[list[str], dict[str, str]]:
    if impl == "old":
        argv = [str(OLD_PY), "-m", "uvicorn", "flyteplugins.hitl._app:app", "--host", "127.0.0.1", "--port", str(port)]
        return argv, child_env(RAW_DATA_PATH=str(work / "old-root"))
    argv = [str(NEW_PY), "-m", "flyteplugins.hitl", "serve", "--root", str(work / "new-root")]
    return [*argv, "--host", "127.0.0.1", "--port", str(port)], child_env()


def wrk(
    url: str, lines: Path, method: str, connections: int, seconds: float, cpus: str | None, path: str = ""
) -> dict[str, Any]:
    """One wrk run walking `lines`; returns wrk's figures (see walk.lua) plus requests per second."""
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "2s"]
    argv += ["-s", str(BENCH / "walk.lua"), url, "--", str(lines), method, str(threads), path]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "timeout")) + result["non200"]
    return result


def run(
    rounds: int, seconds: float, connections: tuple[int, ...], work: Path, impls: tuple[str, ...] = tuple(IMPLS)
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """All rounds: one record per (round, server, endpoint, connections), and the answers check.

    The check, per server: POSTs answered 200, and answers found stored afterwards. Every 200
    must have left an answer; a few more may be stored, for requests in flight when wrk stopped.
    """
    records: list[dict[str, Any]] = []
    stored = {impl: {"accepted": 0, "stored": 0} for impl in impls}
    guess = {"old": 3000.0, "new": 7000.0}  # POST rates, above those seen on a 2-core VM; then the best seen
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            log(f"throughput round {r + 1}/{rounds}: {impl}")
            rwork = work / f"round{r}-{impl}"
            for res in _round(impl, rwork, seconds, connections, guess):
                res.update(round=r, impl=impl)
                records.append(res)
                if res["endpoint"] == "submit":
                    stored[impl]["accepted"] += res["requests"] - res["non200"]
                log(
                    f"  {impl} {res['endpoint']:6} c={res['connections']:<3} {res['rps']:8.0f} req/s"
                    f"  p99 {res['p99_us'] / 1000:7.1f} ms  max {res['max_us'] / 1000:7.1f} ms"
                    f"  errors {res['errors']}  exhausted {res['exhausted']}"
                )
            pattern = "old-root/hitl-requests/*/response.json" if impl == "old" else "new-root/*/response.json"
            stored[impl]["stored"] += sum(1 for _ in rwork.glob(pattern))
            shutil.rmtree(rwork, ignore_errors=True)  # tens of thousands of files: not left for the end
            _settle_disk()
    return records, stored


def _round(
    impl: str, work: Path, seconds: float, connections: tuple[int, ...], guess: dict[str, float]
) -> Iterator[dict[str, Any]]:
    """One plugin's server, freshly started on a fresh root, under every endpoint and connection count."""
    server_cpus, wrk_cpus = cpu_split()
    work.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv, env = _server_argv(impl, work, port)
    # Enough fresh events for every POST of every submit run, with a margin.
    n_submit = int(guess[impl] * seconds * 1.6) + 500
    form, submit = _prepare(impl, work, url, n_submit * len(connections))
    submit_all = submit.read_text().splitlines(keepends=True)
    health = work / "health.txt"
    health.write_text("/health\n" * 8)
    with process(argv, env=env, log_path=work / "server.log", cpus=server_cpus):
        wait_http(f"{url}/health")
        wrk(url, health, "GET", 4, 1.0, wrk_cpus)  # warm-up, not recorded
        for c_index, c in enumerate(connections):
            chunk = work / f"submit-{c}.txt"
            chunk.write_text("".join(submit_all[c_index * n_submit : (c_index + 1) * n_submit]))
            for endpoint in IMPLS[impl]:
                _settle_disk()
                if endpoint == "health":
                    res = wrk(url, health, "GET", c, seconds, wrk_cpus)
                    res["exhausted"] = 0  # the same path every time is the point here
                elif endpoint == "form":
                    res = wrk(url, _cycle(form, work), "GET", c, seconds, wrk_cpus)
                    res["exhausted"] = 0  # a GET changes nothing: the pool is walked round and round
                else:
                    res = wrk(url, chunk, "POST", c, seconds, wrk_cpus, "/submit/json")
                    guess[impl] = max(guess[impl], res["rps"])
                res.update(endpoint=endpoint, connections=c)
                yield res


def _settle_disk() -> None:
    """Write back what earlier steps left dirty (set-up files, deleted roots, the last run's answers).

    Otherwise that writeback lands in the next measured run, whichever server it is: the kernel
    then creates each new file behind a busy journal, and one server's figures depend on what ran
    before it (POST rates swung from 750 to 1,450 req/s between rounds).
    """
    os.sync()


def _cycle(form: Path, work: Path) -> Path:
    """The form pool repeated, so form GETs never run out of lines (a GET changes nothing)."""
    cycled = work / "form-cycled.txt"
    if not cycled.exists():
        text = form.read_text()
        cycled.write_text(text * 100)
    return cycled


# -- the index page ------------------------------------------------------------------------------------

INDEX_EVENTS = 6000
#: One event in ten still waiting; the rest answered (events pile up answered over time).
INDEX_WAITING_EVERY = 10


def _index_events(root: Path, n: int) -> None:
    """`n` events in our layout, created a second apart, every `INDEX_WAITING_EVERY`-th still waiting."""
    start = time.time() - n - 60
    for i in range(n):
        request_id = f"index-{i:06d}-{uuid.uuid4().hex[:12]}"
        created = start + i
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(created))
        record = {
            "request_id": request_id,
            "event_name": f"index-{i}",
            "scope": "run",
            "prompt": f"Question number {i}?",
            "data_type": "int",
            "token": uuid.uuid4().hex,
            "created_at": stamp,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(created + 86400)),
        }
        event = root / request_id
        event.mkdir(parents=True)
        (event / "request.json").write_text(json.dumps(record))
        os.utime(event / "request.json", (created, created))
        if i % INDEX_WAITING_EVERY:
            answer = {"request_id": request_id, "status": "completed", "value": i, "data_type": "int", "via": "json"}
            (event / "response.json").write_text(json.dumps(answer))


def run_index(seconds: float, connections: int, work: Path) -> dict[str, Any]:
    """``GET /`` (first page) and ``GET /?status=pending`` on a local root of `INDEX_EVENTS` events."""
    server_cpus, wrk_cpus = cpu_split()
    work.mkdir(parents=True, exist_ok=True)
    root = work / "index-root"
    if not root.exists():
        _index_events(root, INDEX_EVENTS)
    _settle_disk()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(NEW_PY), "-m", "flyteplugins.hitl", "serve", "--root", str(root), "--host", "127.0.0.1"]
    results: dict[str, Any] = {"events": INDEX_EVENTS, "waiting": INDEX_EVENTS // INDEX_WAITING_EVERY}
    with process([*argv, "--port", str(port)], env=child_env(), log_path=work / "index.log", cpus=server_cpus):
        wait_http(f"{url}/health")
        for name, path in (("index", "/"), ("index_pending", "/?status=pending")):
            lines = work / f"{name}.txt"
            lines.write_text(f"{path}\n" * 8)
            wrk(url, lines, "GET", 2, 1.0, wrk_cpus)  # warm-up: the first visit reads the records it shows
            res = wrk(url, lines, "GET", connections, seconds, wrk_cpus)
            results[name] = {k: res[k] for k in ("rps", "p99_us", "errors")}
            log(f"  {name:14} c={connections:<3} {res['rps']:8.0f} req/s  p99 {res['p99_us'] / 1000:7.1f} ms")
    return results


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="The index page benchmark: GET / with 6,000 events.")
    parser.add_argument("--quick", action="store_true", help="a 2-second smoke run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hitl-index-") as tmp:
        print(json.dumps(run_index(2.0 if args.quick else 10.0, args.connections, Path(tmp))))
