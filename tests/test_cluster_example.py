"""examples/cluster.py, the README's path to a cluster: its environments build and plan a deployment
without a cluster (what `flyte deploy examples/cluster.py task_env` would deploy), in a fresh interpreter."""

from __future__ import annotations

import json

from conftest import REPO, python

EXAMPLE = REPO / "examples" / "cluster.py"

_PLAN = """
import json, runpy
from flyte._deploy import plan_deploy
from flyte.models import SerializationContext
import flyteplugins.hitl as hitl

example = runpy.run_path({path!r})
task_env = example["task_env"]
[plan] = plan_deploy(task_env)
print(json.dumps({{
    "envs": sorted(plan.envs),
    "root": task_env.env_vars["FLYTE_HITL_ROOT"],
    "depends_on_hitl": hitl.env in task_env.depends_on,
    "same_image": task_env.image is hitl.env.image,
    "tasks": sorted(task_env.tasks),
    "app_args": hitl.app_env.container_args(SerializationContext(version="v1")),
}}))
"""


def _plan(root: str) -> dict[str, object]:
    proc = python("-c", _PLAN.format(path=str(EXAMPLE)), env={"FLYTE_HITL_ROOT": root})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_the_cluster_example_plans_its_tasks_and_the_form_server_app_on_one_shared_root() -> None:
    plan = _plan("s3://my-bucket/hitl")
    assert plan["envs"] == ["hitl", "hitl-form-server", "hitl-release"]
    assert plan["depends_on_hitl"] is True and plan["same_image"] is True
    assert plan["tasks"] == ["hitl-release.release"]
    assert plan["root"] == "s3://my-bucket/hitl"
    assert plan["app_args"][-2:] == ["--root", "s3://my-bucket/hitl"]


def test_the_cluster_example_documents_the_commands_to_type() -> None:
    text = EXAMPLE.read_text()
    for command in (
        "export FLYTE_HITL_ROOT=",
        "flyte deploy examples/cluster.py task_env",
        "flyte run examples/cluster.py release",
    ):
        assert command in text, command
    readme = (REPO / "README.md").read_text()
    assert "examples/cluster.py" in readme and "pip install flyteplugins-hitl" in readme
