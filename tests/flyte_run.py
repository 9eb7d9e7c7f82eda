"""A real Flyte local run in a subprocess, its console read line by line with deadlines.

The script gets two arguments, a run name and a raw-data directory, and should run its task with
``flyte.with_runcontext(mode="local", name=argv[1], raw_data_path=argv[2])``. Flyte keeps a local
run's metadata, the report included, under ``/tmp/flyte/metadata/<run name>/``; the run name is
unique per test and that directory is removed afterwards.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

from conftest import run_python

FLYTE_METADATA = Path("/tmp/flyte/metadata")


class FlyteRun:
    """Start ``python script <run name> <raw dir>`` and read its output.

    Example:
        >>> run = FlyteRun(script, tmp_path)
        >>> url = run.expect(r"form: (\\S+)").group(1)
    """

    def __init__(self, script: Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.name = f"hitl-test-{uuid.uuid4().hex[:16]}"
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] = run_python(str(script), self.name, str(tmp / "raw"), env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first new output line matching `pattern`; fails with the whole output if none comes in time."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; output:\n" + self.output
                ) from None
            if line is None:
                self._queue.put(None)  # later calls see the end too
                raise AssertionError(f"the run ended without a line matching {pattern!r}; output:\n" + self.output)
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 60) -> int:
        """Wait for the run to end, collecting the rest of its output; returns its exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        self._queue.put(None)
        return code

    def report(self) -> str | None:
        """The report.html the run wrote last, or None if it wrote none yet."""
        reports = sorted((FLYTE_METADATA / self.name).glob("**/report.html"), key=lambda p: p.stat().st_mtime)
        return reports[-1].read_text(encoding="utf-8") if reports else None

    def close(self) -> None:
        """Stop the run if it is still going and remove its metadata directory."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)  # it ends at the end of the output; closing the pipe under it would fail
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(FLYTE_METADATA / self.name, ignore_errors=True)
