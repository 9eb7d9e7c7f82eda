"""Shared pieces of the benchmarks: paths, the two interpreters, child processes, medians.

Every benchmark compares this package (``.venv``) with the deprecated ``flyteplugins-hitl`` 2.12.1,
which has the same distribution name and import path and so lives in its own virtual environment
(``bench/.venv-old``). This module imports neither plugin.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
OLD_VENV = BENCH / ".venv-old"
OLD_SPEC = "flyteplugins-hitl==2.12.1"
NEW_PY = Path(sys.executable)
OLD_PY = OLD_VENV / "bin" / "python"

PYTHONS = {"new": NEW_PY, "old": OLD_PY}


def log(message: str) -> None:
    """One progress line on stderr (stdout is kept for the final table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark child: ours, minus anything that points the plugins elsewhere."""
    drop = ("FLYTE_HITL_", "RAW_DATA_PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # Bytecode is written and used, as it is for any installed package (pip compiles on install).
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers 200, or raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up within {timeout:g}s")
        time.sleep(0.05)


@contextlib.contextmanager
def process(argv: Sequence[str], *, env: dict[str, str], log_path: Path, cpus: str | None = None) -> Iterator[int]:
    """Run `argv` in the background (pinned to `cpus` if given) and stop it on exit; yields its pid."""
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=BENCH)
    try:
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_json(argv: Sequence[str], *, env: dict[str, str], timeout: float = 600) -> Any:
    """Run a child that prints one JSON document as its last stdout line, and return that document."""
    done = subprocess.run(list(argv), env=env, cwd=BENCH, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{argv[:3]} printed no JSON:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def cpu_split() -> tuple[str | None, str | None]:
    """CPUs for the server under test and for the load generator: one core for the server, the rest for wrk.

    The server gets one core, as both plugins' app environments ask for ``cpu=1``; on a one-core
    machine nothing is pinned.
    """
    n = os.cpu_count() or 1
    if n < 2:
        return None, None
    return "0", f"1-{n - 1}" if n > 2 else "1"


#: The bucket the benchmarks' S3 server (bench/_moto.py) holds.
BUCKET = "hitl-bench"


@contextlib.contextmanager
def moto(name: str) -> Iterator[int]:
    """A counting moto S3 server (bench/_moto.py) with the bench bucket; yields its port."""
    port = free_port()
    log_path = RESULTS / "logs" / f"{name}-moto.log"
    with process([str(NEW_PY), str(BENCH / "_moto.py"), str(port), BUCKET], env=child_env(), log_path=log_path):
        deadline = time.monotonic() + 60
        while "ready" not in log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the moto server did not start; see {log_path}")
            time.sleep(0.1)
        yield port


def s3_env(port: int) -> dict[str, str]:
    """Flyte's S3 settings for the bench's moto server on `port`."""
    from _moto import ACCESS_KEY, SECRET_KEY

    return {
        "FLYTE_AWS_ENDPOINT": f"http://127.0.0.1:{port}",
        "FLYTE_AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "FLYTE_AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
