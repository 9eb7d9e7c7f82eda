"""The README's example: a Flyte task that waits for a person to type a number.

Run it locally (no cluster needed) with ``make demo`` or ``python examples/example.py``, then
open the printed form link, or run the printed curl command with your value.
"""

import flyte

import flyteplugins.hitl as hitl

task_env = flyte.TaskEnvironment(
    name="my-hitl-workflow",
    image=flyte.Image.from_debian_base(python_version=(3, 12)),
    resources=flyte.Resources(cpu=1, memory="512Mi"),
    depends_on=[hitl.env],
)


@task_env.task(report=True)
async def main() -> int:
    event = await hitl.new_event.aio(
        "integer_input_event", data_type=int, scope="run", prompt="What should I add to x?"
    )
    return await event.wait.aio()


if __name__ == "__main__":
    flyte.init()
    print(flyte.with_runcontext(mode="local").run(main).outputs())
