"""A Flyte task that asks COUNT questions in a row, run locally under a chosen run name.

Usage: ``python tests/flyte_app.py RUN_NAME COUNT``. The crash/re-run tests start it, kill it, and
start it again with the same run name: the events must be the same ones. It calls no
``flyte.init()`` and reads no Flyte config: a local run needs neither.
"""

from __future__ import annotations

import json
import sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-test-app", depends_on=[hitl.env])


@env.task
async def ask(count: int) -> str:
    """Create `count` events named alike, print their ids, then wait for each in turn."""
    events = [
        await hitl.new_event.aio("question", data_type=int, prompt=f"Number {i + 1}?", poll_interval_seconds=0.2)
        for i in range(count)
    ]
    print("[app] ids:", " ".join(event.request_id for event in events), flush=True)
    values = [await event.wait.aio() for event in events]
    return ",".join(str(v) for v in values)


if __name__ == "__main__":
    run_name, count = sys.argv[1], int(sys.argv[2])
    run = flyte.with_runcontext(mode="local", name=run_name).run(ask, count=count)
    print("[app] result:", json.dumps(run.outputs()[0]), flush=True)
