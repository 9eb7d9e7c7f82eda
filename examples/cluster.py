"""The same kind of question on a cluster: a release that waits for one person's approval.

The task and the form server are different pods sharing only object storage, so both need the
same root. Type, from a shell whose flyte config points at your cluster:

    export FLYTE_HITL_ROOT=s3://my-bucket/hitl        # or gs://…, abfs://…; the app and the task share it
    flyte deploy examples/cluster.py task_env          # builds the image; deploys the tasks and the form server app
    flyte run examples/cluster.py release --version v7

The run's log and its report show the form link on the app's public URL; open it and approve.
"""

import os

import flyte

import flyteplugins.hitl as hitl

task_env = flyte.TaskEnvironment(
    name="hitl-release",
    image=hitl.env.image,  # carries flyteplugins.hitl
    # The root the task writes questions to; `flyte deploy` gives the app the same one.
    env_vars={"FLYTE_HITL_ROOT": os.environ.get("FLYTE_HITL_ROOT", "")},
    depends_on=[hitl.env],  # deploys the form server app with these tasks
)


@task_env.task(report=True)
async def release(version: str = "v7") -> str:
    approved = await hitl.approve.aio(
        "release",
        prompt=f"Release {version} to production?",
        details={"version": version},
        timeout_seconds=4 * 3600,
    )
    return f"{version} released" if approved else f"{version} held back"


if __name__ == "__main__":
    flyte.init_from_config()
    run = flyte.run(release, version="v7")
    print(run.url)
