"""Type checkers see the answer's type: mypy on a small typed use of the public API (`typed_usage.py`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import flyteplugins.hitl as hitl

USAGE = Path(__file__).resolve().parent / "typed_usage.py"


def test_mypy_sees_the_type_of_each_answer(tmp_path: Path) -> None:
    src = Path(hitl.__file__).resolve().parents[2]  # the editable install's source root
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path), str(USAGE)],
        env={**os.environ, "MYPYPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert [line for line in output.splitlines() if ": error:" in line] == [], output
    revealed = dict(re.findall(r":(\d+): note: Revealed type is \"([^\"]+)\"", output))
    expected = {
        str(n): line.split("# ", 1)[1]
        for n, line in enumerate(USAGE.read_text().splitlines(), 1)
        if line.strip().startswith("reveal_type(")
    }
    assert len(expected) >= 10 and set(revealed) == set(expected), output
    # mypy writes `builtins.int` or `int` depending on its version; both are the same type.
    shown = {n: re.sub(r"\b(builtins|flyteplugins\.hitl\.hitl)\.", "", t) for n, t in revealed.items()}
    assert shown == expected


def test_the_package_itself_type_checks(tmp_path: Path) -> None:
    # Its annotations are what users' checkers read (py.typed); they must agree with the code.
    src = Path(hitl.__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "-p", "flyteplugins.hitl"],
        env={**os.environ, "MYPYPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
