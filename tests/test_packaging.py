"""The declared runtime dependencies (and the ``otel`` extra) are exactly the distributions the package imports."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import sys

import pytest
from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "flyteplugins" / "hitl"


def imported_distributions() -> dict[str, set[str]]:
    """Distribution name -> the package's modules that import it (at any level, lazily or not)."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "flyteplugins":
                    continue
                for dist in _providers(name, providers.get(top, [top])):
                    found.setdefault(Requirement(dist).name.lower().replace("_", "-"), set()).add(path.name)
    return found


def _providers(module: str, candidates: list[str]) -> list[str]:
    """The distributions that hold `module`: of a namespace several share (``opentelemetry``), the one
    with its files."""
    if len(candidates) == 1:
        return candidates
    parts = module.split(".")
    for end in range(len(parts), 1, -1):  # `from a.b import C`: a/b/C, else a/b
        prefix = "/".join(parts[:end])
        holding = [
            dist
            for dist in candidates
            if any(str(f).startswith(prefix) for f in importlib.metadata.distribution(dist).files or ())
        ]
        if holding:
            return holding
    return candidates


def declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["otel"]
    return {Requirement(r).name.lower() for r in [*project["dependencies"], *extra]}


def test_every_imported_distribution_is_declared_and_every_declared_one_imported() -> None:
    imported = imported_distributions()
    assert set(imported) == declared(), imported
