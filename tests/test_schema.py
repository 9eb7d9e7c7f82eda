"""Examples for curl commands (`_schema.example`, `Event.curl_command`): an answer the event takes,
its first allowed choice whenever `choices=` narrows it."""

from __future__ import annotations

import enum
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl import _schema
from flyteplugins.hitl._schema import encode
from flyteplugins.hitl._task_types import declare


class C(enum.Enum):
    A = "a-value"
    B = "b-value"


CASES = [
    pytest.param(str, ["a", "b"], "a", id="str"),
    pytest.param(int, [5, 6], 5, id="int"),
    pytest.param(float, [0.1, 0.2], 0.1, id="float"),
    pytest.param(C, [C.B], C.B, id="enum"),
    pytest.param(Literal["x", "y"], ["y"], "y", id="literal"),
]


@pytest.mark.parametrize(("data_type", "choices", "first"), CASES[3:])
def test_the_example_of_a_narrowed_schema_is_its_first_choice(data_type: Any, choices: list[Any], first: Any) -> None:
    # Enum and Literal events store their schema narrowed to the choices; the scalars store none.
    declared = declare(data_type, choices)
    assert _schema.example(declared["schema"]) == declared["choices"][0] == encode(first)


@pytest.mark.parametrize(("data_type", "choices", "first"), CASES)
def test_the_printed_curl_command_of_an_event_with_choices_is_taken_as_is(
    root: Path, data_type: Any, choices: list[Any], first: Any
) -> None:
    event = hitl.new_event(f"choose-{id(data_type)}", data_type=data_type, choices=choices, timeout_seconds=60)
    argv = shlex.split(event.curl_command)
    assert json.loads(argv[argv.index("-d") + 1])["value"] in event._request["choices"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "submitted", done.stdout
    assert event.wait() == first
