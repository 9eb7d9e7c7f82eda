"""Benchmarks of this package side by side with the deprecated flyteplugins-hitl 2.12.1: ``make bench``.

    python bench/run.py [--only throughput,wake,import,scale,storage,create] [--rounds N] [--quick]

Sets itself up on a fresh machine: installs wrk (Debian's package, when root) and the old plugin
into ``bench/.venv-old``. Prints the comparison table (Markdown) on stdout and writes every raw
figure to ``bench/results/results.json``; progress goes to stderr. These are measurements, never
tests: nothing here passes or fails on a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput
from _common import (
    BENCH,
    BUCKET,
    NEW_PY,
    OLD_PY,
    OLD_SPEC,
    OLD_VENV,
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

SECTIONS = ("throughput", "wake", "import", "scale", "storage", "create")


# -- set-up -----------------------------------------------------------------------------------------


def ensure_wrk() -> None:
    """Install wrk from the distribution's packages when it is missing (needs root and apt-get)."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: install it (Debian/Ubuntu: apt-get install wrk) and run again")
    log("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_old_venv() -> None:
    """Create bench/.venv-old with the old plugin and uvicorn, unless it already has them."""
    probe = [str(OLD_PY), "-c", "import importlib.metadata as m, uvicorn; print(m.version('flyteplugins-hitl'))"]
    if OLD_PY.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == OLD_SPEC.split("==")[1]:
            return
    log(f"creating {OLD_VENV.relative_to(BENCH.parent)} with {OLD_SPEC} and uvicorn")
    venv.EnvBuilder(with_pip=True, clear=True).create(OLD_VENV)
    subprocess.run([str(OLD_PY), "-m", "pip", "install", "-q", OLD_SPEC, "uvicorn"], check=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for name, py in (("new", NEW_PY), ("old", OLD_PY)):
        code = "import importlib.metadata as m; print(m.version('flyteplugins-hitl'), m.version('flyte'))"
        out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout.split()
        versions[name] = {"flyteplugins-hitl": out[0], "flyte": out[1]}
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_average_at_start": os.getloadavg(),
    }


# -- sections ----------------------------------------------------------------------------------------


def bench_throughput(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    # Both servers' roots under /tmp, the default local root's home: on this machine a disk (ext4).
    root = Path(tempfile.mkdtemp(prefix="hitl-bench-throughput-", dir="/tmp"))
    try:
        records, stored = throughput.run(rounds, seconds, (16, 256), root / "throughput")
        stall, _ = throughput.run(1, min(seconds, 2.0), (1,), root / "stall", ("old", "new"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"records": records, "single_connection": stall, "stored": stored, "root_filesystem": _fs_type(root)}


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` (e.g. tmpfs, ext4), from /proc/mounts."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def bench_wake(work: Path, samples: int, old_samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("sync", "aio"):
        log(f"wake latency: this package, {mode}, {samples} samples")
        argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "wake", "-n", str(samples), "--mode", mode]
        out[f"new_{mode}"] = run_json(argv, env=child_env(), timeout=300)
    log(f"wake latency: old plugin, {old_samples} samples (its own server writes the answers)")
    raw = work / "wake-old"
    raw.mkdir(parents=True)
    port = free_port()
    env = child_env(RAW_DATA_PATH=str(raw))
    server = [str(OLD_PY), "-m", "uvicorn", "flyteplugins.hitl._app:app", "--host", "127.0.0.1", "--port", str(port)]
    with process(server, env=env, log_path=RESULTS / "logs" / "wake-old-server.log"):
        wait_http(f"http://127.0.0.1:{port}/health")
        argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "wake", "-n", str(old_samples)]
        out["old_aio"] = run_json([*argv, "--endpoint", f"http://127.0.0.1:{port}"], env=env, timeout=300)
    return out


def bench_import(rounds: int) -> dict[str, Any]:
    code = (
        "import time; import flyte; t = time.perf_counter(); import flyteplugins.hitl; "
        "print('{\"seconds\": %r}' % (time.perf_counter() - t))"
    )
    flyte_only = (
        "import time; t = time.perf_counter(); import flyte; print('{\"seconds\": %r}' % (time.perf_counter() - t))"
    )
    out: dict[str, list[float]] = {"new": [], "old": [], "flyte": []}
    for py in (NEW_PY, OLD_PY):  # a first run of each fills the page cache and writes .pyc files
        run_json([str(py), "-c", code], env=child_env())
    log(f"import cost: {rounds} fresh processes each, alternating")
    for r in range(rounds):
        order = (("new", NEW_PY), ("old", OLD_PY)) if r % 2 == 0 else (("old", OLD_PY), ("new", NEW_PY))
        for name, py in order:
            out[name].append(run_json([str(py), "-c", code], env=child_env())["seconds"] * 1000)
        out["flyte"].append(run_json([str(NEW_PY), "-c", flyte_only], env=child_env())["seconds"] * 1000)
    return out


def bench_scale(n: int, runs: int) -> dict[str, Any]:
    # The sizing the wait engine is built for: 1,000 blocking waits (a thread each) and `n` `.aio` waits.
    out: dict[str, Any] = {}
    sizes = {"sync": min(n, 1_000), "aio": n}
    for mode, size in sizes.items():
        out[f"new_{mode}"] = []
        for r in range(runs):
            log(f"scale: {size} concurrent waits, this package, {mode}, run {r + 1}/{runs}")
            argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "scale", "-n", str(size), "--mode", mode]
            out[f"new_{mode}"].append(run_json(argv, env=child_env(), timeout=600))
    log(f"scale: {n} concurrent waits, old plugin, aio")
    raw = tempfile.mkdtemp(prefix="hitl-bench-scale-old-")
    argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "scale", "-n", str(n)]
    out["old_aio"] = run_json(argv, env=child_env(RAW_DATA_PATH=raw), timeout=600)
    shutil.rmtree(raw, ignore_errors=True)
    return out


def bench_storage(n: int, seconds: float) -> dict[str, Any]:
    with moto("storage") as port:
        counter = f"http://127.0.0.1:{port}/__bench/count"
        log(f"storage cost: {n} events waiting on s3:// (moto) for {seconds:g}s, this package")
        env = child_env(FLYTE_HITL_ROOT=f"s3://{BUCKET}/new", **s3_env(port))
        argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "storage", "-n", str(n), "--seconds", str(seconds)]
        new = run_json([*argv, "--counter", counter], env=env, timeout=600)
        log(f"storage cost: {n} events waiting on s3:// (moto) for {seconds:g}s, old plugin")
        env = child_env(RAW_DATA_PATH=f"s3://{BUCKET}/old", **s3_env(port))
        argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "storage", "-n", str(n), "--seconds", str(seconds)]
        old = run_json([*argv, "--counter", counter], env=env, timeout=600)
    return {"new": new, "old": old}


def bench_create(rounds: int, n_local: int, n_s3: int) -> dict[str, Any]:
    # Local roots are on the disk (under /tmp here). "new_local_fsync" is this package with every
    # record synced to disk (FLYTE_HITL_FSYNC=1), to show what surviving a power loss costs.
    out: dict[str, list[float]] = {"new_local": [], "old_local": [], "new_s3": [], "old_s3": [], "new_local_fsync": []}
    with moto("create") as port:
        for r in range(rounds):
            log(f"event creation round {r + 1}/{rounds}: {n_local} to a local root, {n_s3} to s3:// (moto)")
            for impl in ("new", "old") if r % 2 == 0 else ("old", "new"):
                places = [("local", n_local), ("s3", n_s3)] + ([("local_fsync", n_local)] if impl == "new" else [])
                for where, n in places:
                    scratch = tempfile.mkdtemp(prefix="hitl-bench-create-")
                    root = f"s3://{BUCKET}/{impl}-create-{r}" if where == "s3" else scratch
                    extra = s3_env(port) if where == "s3" else {}
                    if where == "local_fsync":
                        extra = {"FLYTE_HITL_FSYNC": "1"}
                    if impl == "new":
                        argv = [str(NEW_PY), str(BENCH / "_new_tools.py"), "create", "-n", str(n), "--root", root]
                        env = child_env(**extra)
                    else:
                        argv = [str(OLD_PY), str(BENCH / "_old_tools.py"), "create", "-n", str(n)]
                        env = child_env(RAW_DATA_PATH=root, **extra)
                    out[f"{impl}_{where}"].append(run_json(argv, env=env, timeout=600)["per_second"])
                    shutil.rmtree(scratch, ignore_errors=True)
    return out


# -- the table ---------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "–"
    return f"{value:,.{digits}f}"


def _paired_ratios(recs: list[dict[str, Any]], endpoint: str, c: int) -> list[float]:
    """new ÷ old within each round: the two ran minutes apart, so drift in the machine's speed cancels."""
    by_round: dict[int, dict[str, float]] = {}
    for x in recs:
        if x["endpoint"] == endpoint and x["connections"] == c and x["impl"] in ("old", "new"):
            by_round.setdefault(x["round"], {})[x["impl"]] = x["rps"]
    return [r["new"] / r["old"] for _, r in sorted(by_round.items()) if len(r) == 2 and r["old"]]


def table(results: dict[str, Any]) -> str:
    """The Markdown comparison table: old plugin, this package, ratio, target."""
    rows: list[tuple[str, str, str, str, str]] = []

    def ratio_row(label: str, old: float, new: float, target: str, digits: int = 0, invert: bool = False) -> None:
        ratio = (old / new if invert else new / old) if old and new else float("nan")
        shown = f"{ratio:,.1f}×" if ratio == ratio else "–"
        rows.append((label, _fmt(old, digits), _fmt(new, digits), shown, target))

    tp = results.get("throughput")
    if tp:
        recs = tp["records"]
        for endpoint, label in (("health", "GET /health"), ("form", "GET /form/<id>"), ("submit", "POST /submit/json")):
            for c in (16, 256):
                med = {
                    impl: median(
                        [
                            x["rps"]
                            for x in recs
                            if x["impl"] == impl and x["endpoint"] == endpoint and x["connections"] == c
                        ]
                    )
                    for impl in ("old", "new")
                }
                ratio_row(f"{label}, {c} connections (req/s)", med["old"], med["new"], "≥ 1× at 16" if c == 16 else "")
                paired = _paired_ratios(recs, endpoint, c)
                if len(paired) > 1:
                    rows.append(
                        (
                            "↳ ratio in each round (old and new run back to back)",
                            "",
                            "",
                            ", ".join(f"{x:.1f}×" for x in paired),
                            "",
                        )
                    )
        errors = {impl: sum(x["errors"] for x in recs if x["impl"] == impl) for impl in ("old", "new")}
        short = sum(x["exhausted"] for x in recs)
        if short:
            rows.append(("POSTs that found no fresh event (list too short: rerun)", "", str(short), "", "0"))
        rows.append(
            ("errors in all load runs (non-200, timeouts, socket)", str(errors["old"]), str(errors["new"]), "", "0")
        )
        for endpoint in ("health", "form", "submit"):
            one = {
                impl: next(x for x in tp["single_connection"] if x["impl"] == impl and x["endpoint"] == endpoint)
                for impl in ("old", "new")
            }
            rows.append(
                (
                    f"{endpoint}, 1 connection: req/s, p50 / p99 ms (a Nagle stall caps this at ~25 req/s)",
                    f"{one['old']['rps']:,.0f}, {one['old']['p50_us'] / 1000:.2f} / {one['old']['p99_us'] / 1000:.2f}",
                    f"{one['new']['rps']:,.0f}, {one['new']['p50_us'] / 1000:.2f} / {one['new']['p99_us'] / 1000:.2f}",
                    "",
                    "no 40 ms stalls",
                )
            )
        checked = tp.get("stored", {})
        if checked:
            rows.append(
                (
                    "POSTs answered 200 / answers found stored",
                    f"{checked['old']['accepted']:,} / {checked['old']['stored']:,}",
                    f"{checked['new']['accepted']:,} / {checked['new']['stored']:,}",
                    "",
                    "every 200 stored",
                )
            )
    wake = results.get("wake")
    if wake:
        old = median(wake["old_aio"]["from_ack_ms"])
        for mode in ("sync", "aio"):
            new = median(wake[f"new_{mode}"]["from_ack_ms"])
            label = f"wake latency, answer accepted → wait{'.aio' if mode == 'aio' else ''}() returns (median ms)"
            ratio_row(label, old, new, "≤ 5 ms", 2, invert=True)
    imp = results.get("import")
    if imp:
        ratio_row(
            "import flyteplugins.hitl after import flyte (median ms)",
            median(imp["old"]),
            median(imp["new"]),
            "≤ 15 ms",
            1,
            invert=True,
        )
    scale = results.get("scale")
    if scale:
        old = scale.get("old_aio", {})
        bare = scale.get("threads")
        if bare:
            rows.append(
                (
                    f"{bare['n']:,} bare threads parked on an Event, no waits (the floor under sync; MB)",
                    "",
                    _fmt(bare["rss_parked_mb"]),
                    "",
                    "",
                )
            )
        for mode in ("sync", "aio"):
            runs = scale[f"new_{mode}"]
            runs = runs if isinstance(runs, list) else [runs]
            n = runs[0]["n"]
            kind = f"{n:,} waits ({mode}{', threads' if mode == 'sync' else ''})"
            each = f" (median of {len(runs)} runs)" if len(runs) > 1 else ""
            for key, what in (("rss_parked_mb", "RSS while parked"), ("peak_rss_mb", "peak RSS")):
                old_rss = old.get(key, float("nan")) if mode == "aio" else float("nan")
                mine = median([x[key] for x in runs])
                ratio_row(f"{kind}: {what}{each} (MB)", old_rss, mine, "≤ 300 MB", 0, invert=True)
                if len(runs) > 1:
                    rows.append(("↳ each run", "", ", ".join(_fmt(x[key]) for x in runs), "", ""))
            for key, what, digits in (
                ("last_answer_to_last_return_ms", "last answer → last return (ms)", 1),
                ("first_answer_to_last_return_s", "first answer → last return (s)", 1),
            ):
                # The old plugin's answers are written to its storage, not sent over HTTP: its time
                # from the first answer measures a different thing and is not set beside ours.
                comparable = mode == "aio" and key.startswith("last")
                old_value = old.get(key, float("nan")) if comparable else float("nan")
                values = [x[key] for x in runs]
                ratio_row(f"{n:,} waits ({mode}): {what}{each}", old_value, median(values), "", digits, invert=True)
                if len(runs) > 1:
                    listed = ", ".join(_fmt(v, digits) for v in values)
                    rows.append(("↳ each run", "", listed, "", ""))
            wrong_old = str(old.get("wrong", "–")) if mode == "aio" else "–"
            wrong = sum(x["wrong"] for x in runs)
            rows.append((f"{n:,} waits ({mode}): wrong or missing results", wrong_old, str(wrong), "", "0"))
    st = results.get("storage")
    if st:
        per_min = {k: st[k]["requests"].get("total", 0) / st[k]["window_s"] * 60 for k in ("old", "new")}
        ratio_row(
            f"storage requests per minute, {st['new']['n']:,} events waiting on S3",
            per_min["old"],
            per_min["new"],
            "report",
            0,
            invert=True,
        )
    cr = results.get("create")
    if cr:
        ratio_row("event creation, local root (events/s)", median(cr["old_local"]), median(cr["new_local"]), "report")
        if cr.get("new_local_fsync"):
            ratio_row(
                "↳ same, this package with FLYTE_HITL_FSYNC=1 (each record synced to disk)",
                median(cr["old_local"]),
                median(cr["new_local_fsync"]),
                "",
            )
        ratio_row("event creation, S3 (moto) root (events/s)", median(cr["old_s3"]), median(cr["new_s3"]), "report")
    lines = [
        "| Measure | flyteplugins-hitl 2.12.1 | this package | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the load and creation runs")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer samples (a smoke run)")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    q = args.quick
    ensure_old_venv()
    if "throughput" in only:
        ensure_wrk()
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "quick": q}
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    try:
        for section in only:
            t0 = time.monotonic()
            if section == "throughput":
                results[section] = bench_throughput(work, 1 if q else args.rounds, 2 if q else 3)
            elif section == "wake":
                results[section] = bench_wake(work, 10 if q else 50, 5 if q else 20)
            elif section == "import":
                results[section] = bench_import(5 if q else 21)
            elif section == "scale":
                results[section] = bench_scale(1000 if q else 10_000, 1 if q else args.rounds)
            elif section == "storage":
                results[section] = bench_storage(200 if q else 1000, 10 if q else 30)
            elif section == "create":
                results[section] = bench_create(1 if q else args.rounds, 200 if q else 1000, 50 if q else 200)
            log(f"{section}: {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (RESULTS / "table.md").write_text(text + "\n")
    print(text)
    m = results["machine"]
    print(
        f"\n{m['nproc']} × {m['cpu']}, {m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, {m['wrk']}; "
        f"load average {m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end; "
        f"{results['seconds'] / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
