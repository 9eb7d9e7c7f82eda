"""The README's example: a Flyte task that asks a person how many replicas should serve a model.

Run it locally (no cluster needed) with ``make demo`` or ``python examples/example.py``, then open the
printed form link, or run the printed curl command with your number in place of 42.
"""

import flyte

import flyteplugins.hitl as hitl

task_env = flyte.TaskEnvironment(name="my-hitl-workflow", image=hitl.env.image, depends_on=[hitl.env])


@task_env.task(report=True)
async def main() -> int:
    event = await hitl.new_event.aio("replicas", data_type=int, prompt="How many replicas should serve model v3?")
    return await event.wait.aio()


if __name__ == "__main__":
    flyte.init()
    run = flyte.with_runcontext(mode="local").run(main)
    print(f"model v3 will run on {run.outputs()[0]} replicas")
