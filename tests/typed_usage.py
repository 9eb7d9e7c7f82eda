"""Typed use of the public API, for mypy (`tests/test_typing.py`); never run.

Each ``reveal_type`` line ends with the type a checker must see.
"""

from __future__ import annotations

from typing_extensions import reveal_type

import flyteplugins.hitl as hitl


async def main() -> None:
    event = hitl.new_event("x", data_type=int)
    reveal_type(event)  # Event[int]
    reveal_type(event.wait())  # int
    reveal_type(await event.wait.aio())  # int
    reveal_type(hitl.approve("deploy", prompt="Ship it?"))  # bool
    reveal_type(await hitl.approve.aio("deploy"))  # bool
    reveal_type(await hitl.new_event.aio("y", data_type=str))  # Event[str]
    reveal_type(hitl.Event.create("z", data_type=float))  # Event[float]
    reveal_type(await hitl.Event.create("z", data_type=float))  # Event[float]
    reveal_type(await hitl.Event.create.aio("b", data_type=bool))  # Event[bool]
    reveal_type(hitl.submit(event.form_url, 3))  # dict[str, Any]
    reveal_type(hitl.approve("d", notify=[hitl.Slack("#deploys"), "https://hooks.example.com/x"]))  # bool
