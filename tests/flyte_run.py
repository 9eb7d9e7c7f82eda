"""A real Flyte local run in a subprocess, its console read line by line with deadlines.

The script gets two arguments, a run name and a raw-data directory, and should run its task with
``flyte.with_runcontext(mode="local", name=argv[1], raw_data_path=argv[2])``. Flyte keeps a local
run's metadata, the report included, under ``/tmp/flyte/metadata/<run name>/``; the run name is
unique per test and that directory is removed afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from conftest import Proc, run_python

FLYTE_METADATA = Path("/tmp/flyte/metadata")


class FlyteRun(Proc):
    """Start ``python script <run name> <raw dir>`` and read its output.

    Example:
        >>> run = FlyteRun(script, tmp_path)
        >>> url = run.expect(r"form: (\\S+)").group(1)
    """

    def __init__(self, script: Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.name = f"hitl-test-{uuid.uuid4().hex[:16]}"
        super().__init__(run_python(str(script), self.name, str(tmp / "raw"), env=env))

    def report(self) -> str | None:
        """The report.html the run wrote last, or None if it wrote none yet."""
        reports = sorted((FLYTE_METADATA / self.name).glob("**/report.html"), key=lambda p: p.stat().st_mtime)
        return reports[-1].read_text(encoding="utf-8") if reports else None

    def close(self) -> None:
        """Stop the run if it is still going and remove its metadata directory."""
        super().close()
        shutil.rmtree(FLYTE_METADATA / self.name, ignore_errors=True)
