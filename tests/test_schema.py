"""The server side of an answer type (`_schema`): what a server with only the stored request accepts (the
same on every Python), how a form maps to an answer, and examples for curl commands."""

from __future__ import annotations

import datetime
import enum
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidValueError, _schema
from flyteplugins.hitl._schema import check, check_answer, encode, parse_datetime, value_from_form
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


# -- dates and times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("2026-12-01T14:30:00.123Z", "2026-12-01T14:30:00.123000+00:00"),  # JavaScript's toISOString()
        ("2026-12-01T14:30", "2026-12-01T14:30:00+00:00"),  # a datetime-local field: no zone, so UTC
        ("2026-12-01 14:30:05-05:00", "2026-12-01T14:30:05-05:00"),
        (" 2026-12-01T14:30:00.123456+01:00 ", "2026-12-01T14:30:00.123456+01:00"),
    ],
)
def test_datetimes_in_the_documented_format_are_taken_on_every_python_and_by_pydantic(text: str, stored: str) -> None:
    # Parsed by the package itself, not by datetime.fromisoformat (which reads more on 3.11 than on 3.10).
    assert check({"kind": "datetime"}, text) == stored
    assert pydantic.TypeAdapter(datetime.datetime).validate_json(json.dumps(stored)) == parse_datetime(stored)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T14:30:00+01:00:30",  # an offset with seconds: pydantic refuses it
        "2026-12-01T14:30:00.1234567Z",
        "20261201T143000",
        "2026-12-01T14",
        "2026-12-01T24:00",
        "2026-12-01T14:30+01:60",
        "2026-12-01",
        "2026-12-01T14:30:00.Z",
    ],
)
def test_datetimes_outside_the_documented_format_are_refused(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"expected YYYY-MM-DDTHH:MM\[:SS\[\.ffffff\]\] with Z or ±HH:MM"):
        check({"kind": "datetime"}, text)


@pytest.mark.parametrize("text", ["20261201", "2026-W48-1", "2026-12-1", "2026-02-30"])
def test_dates_are_yyyy_mm_dd_only(text: str) -> None:
    with pytest.raises(InvalidValueError, match="expected YYYY-MM-DD"):
        check({"kind": "date"}, text)


# -- forms ----------------------------------------------------------------------------------------


class Tagged(pydantic.BaseModel):
    tags: list[str] | None = None
    picks: list[Literal["a", "b"]] | None = None
    required: list[str]


def test_an_empty_optional_list_from_the_form_is_what_json_without_it_gives() -> None:
    request = {"request_id": "r-1", **declare(Tagged)}
    raw = value_from_form(request, {"f.tags": ["\n \n"], "f.required": [""]})  # no box ticked for picks
    assert raw == {"tags": None, "picks": None, "required": []}
    assert (
        check_answer(request, raw)
        == check_answer(request, {"required": []})
        == {
            "tags": None,
            "picks": None,
            "required": [],
        }
    )
