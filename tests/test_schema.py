"""The server side of an answer type (`_schema`): what each of the four scalars accepts and refuses, the
datetimes every server reads alike on every Python, how a form maps to an answer, and curl examples."""

from __future__ import annotations

import datetime
import enum
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidValueError, _schema
from flyteplugins.hitl._schema import (
    check,
    check_answer,
    encode,
    parse_datetime,
    parse_value,
    value_from_form,
)
from flyteplugins.hitl._task_types import declare

# Property tests run without hypothesis' per-example deadline: on a busy machine one example may take
# longer than 200 ms, and that says nothing about the parser.
BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}


def _refused(raw: object, name: str) -> InvalidValueError:
    with pytest.raises(InvalidValueError) as info:
        parse_value(raw, name)
    return info.value


# -- int ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected", [(42, 42), (-3, -3), (0, 0), ("42", 42), ("-3", -3), ("+7", 7), (" 12 ", 12), (10**30, 10**30)]
)
def test_int_accepts_json_ints_and_integer_strings(raw: object, expected: int) -> None:
    value = parse_value(raw, "int")
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    "raw", ["4.5", "abc", "", " ", "1e3", "0x10", "4 2", "٤٢", "1_000", "--1", 4.5, 4.0, True, False, None, [1], {}]
)
def test_int_refuses_everything_else(raw: object) -> None:
    error = _refused(raw, "int")
    assert repr(raw) in str(error), "the message names the bad value"
    assert "expected int" in str(error), "the message names the expected type"
    assert error.value == raw


def test_int_refuses_absurdly_long_digit_strings_without_crashing() -> None:
    # Python refuses to convert more than 4300 digits; the check must refuse first, with our message.
    error = _refused("9" * 5000, "int")
    assert "expected int" in str(error)
    assert len(str(error)) < 300, "a huge value is shortened in the message"


@settings(deadline=None)
@given(st.integers())
def test_int_round_trips_every_integer(n: int) -> None:
    assert parse_value(n, "int") == n
    assert parse_value(str(n), "int") == n


@settings(deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))
def test_int_refuses_every_fractional_number(x: float) -> None:
    _refused(x, "int")
    _refused(repr(x), "int")


# -- float ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [(0.5, 0.5), (3, 3.0), (-2, -2.0), ("0.5", 0.5), ("-1.25", -1.25), ("1e3", 1000.0), (".5", 0.5), ("7", 7.0)],
)
def test_float_accepts_numbers_and_numeric_strings(raw: object, expected: float) -> None:
    value = parse_value(raw, "float")
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize(
    "raw",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e999",
        "-1e999",
        math.nan,
        math.inf,
        -math.inf,
        10**400,  # a JSON integer too large for a float
        "abc",
        "",
        "1.2.3",
        "0x1p3",
        True,
        None,
        [0.5],
    ],
    ids=lambda v: repr(v)[:24],
)
def test_float_refuses_non_numbers_and_non_finite_values(raw: object) -> None:
    error = _refused(raw, "float")
    assert "expected float" in str(error)
    if isinstance(raw, str):
        assert repr(raw) in str(error)


@settings(deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trips_every_finite_float(x: float) -> None:
    assert parse_value(x, "float") == x
    assert parse_value(repr(x), "float") == x


# -- bool -----------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.sampled_from(sorted(BOOL_WORDS)), st.data())
def test_bool_accepts_its_words_in_any_case(word: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    spelled = "".join(c.upper() if up else c for c, up in zip(word, flips, strict=True))
    assert parse_value(spelled, "bool") is BOOL_WORDS[word]
    assert parse_value(f"  {spelled}\n", "bool") is BOOL_WORDS[word]


@pytest.mark.parametrize("raw, expected", [(True, True), (False, False), (1, True), (0, False)])
def test_bool_accepts_json_booleans_and_one_zero(raw: object, expected: bool) -> None:
    assert parse_value(raw, "bool") is expected


@pytest.mark.parametrize("raw", ["ture", "flase", "y", "n", "t", "f", "", "2", "-1", "nope", 2, -1, 1.0, 0.0, None, []])
def test_bool_refuses_unknown_words_instead_of_guessing_false(raw: object) -> None:
    error = _refused(raw, "bool")
    assert repr(raw) in str(error)
    assert "expected bool" in str(error)


@settings(deadline=None)
@given(st.text(max_size=20).filter(lambda s: s.strip().lower() not in BOOL_WORDS))
@example("ture")
@example("TRUE!")
def test_bool_refuses_every_other_text(text: str) -> None:
    _refused(text, "bool")


# -- str ------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.text())
@example("  leading and trailing spaces  ")
@example("<script>alert(1)</script>")
@example("line one\nline two\r\n")
@example("")
def test_str_keeps_the_text_exactly(text: str) -> None:
    assert parse_value(text, "str") == text


@pytest.mark.parametrize("raw", [42, 0.5, True, None, ["a"], {"a": 1}])
def test_str_refuses_non_strings(raw: object) -> None:
    error = _refused(raw, "str")
    assert repr(raw) in str(error)
    assert "expected str" in str(error)


def test_str_refuses_a_lone_surrogate_that_json_can_spell() -> None:
    assert "lone surrogate" in str(_refused(json.loads('"ab\\ud800"'), "str"))


# -- messages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["int", "float", "bool"])
def test_long_bad_values_are_shortened_in_messages(name: str) -> None:
    raw = "x" * 10_000
    message = str(_refused(raw, name))
    assert f"expected {name}" in message
    assert len(message) < 300


def test_messages_give_an_example_of_a_valid_answer() -> None:
    assert re.search(r"42", str(_refused("abc", "int")))
    assert re.search(r"true", str(_refused("ture", "bool")))


# -- linear time (hostile input) ------------------------------------------------------------------


_LINEAR_CHECK = """
from flyteplugins.hitl import InvalidValueError
from flyteplugins.hitl._schema import parse_value
for name in ("int", "float"):
    for tail in ("x", "e", ".", "e+x"):
        for size in (20_000, 1 << 20):
            try:
                parse_value("1" * size + tail, name)
            except InvalidValueError:
                continue
            raise SystemExit(f"{name} accepted {size} digits + {tail!r}")
print("refused all")
"""


def test_a_megabyte_of_digits_is_refused_in_linear_time() -> None:
    # A backtracking pattern took about 10 s for 20,000 digits and hours for a megabyte, holding the
    # GIL all along: so the checks run in a child process, which the bound can stop (a hang guard).
    done = subprocess.run([sys.executable, "-c", _LINEAR_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused all"


def test_numbers_past_the_length_caps_are_refused_with_the_usual_message() -> None:
    assert "expected float" in str(_refused("1" * 1001, "float"))
    assert parse_value("0." + "1" * 990, "float") == pytest.approx(0.1111111111)
    assert "expected int" in str(_refused("1" * 4001, "int"))
    assert parse_value("-" + "9" * 4000, "int") == -int("9" * 4000)


@pytest.mark.parametrize("depth", [_schema.MAX_DEPTH + 1, 600])
def test_a_value_nested_past_the_limit_is_refused_as_too_deep_on_every_python(depth: int) -> None:
    # Not left to the recursion limit: how deep Python recurses per level differs between versions.
    nested: Any = []
    for _ in range(depth - 1):
        nested = [nested]
    request = {"request_id": "q-deep", **declare(list[int])}
    with pytest.raises(InvalidValueError, match=r"^value is nested too deeply: at most 32 levels"):
        check_answer(request, nested)
    with pytest.raises(InvalidValueError, match="nested too deeply"):
        check_answer(request, json.dumps(nested))
    shallow: Any = [1]
    for _ in range(_schema.MAX_DEPTH - 1):
        shallow = [shallow]
    assert encode(shallow) == shallow


def test_a_wrong_choice_is_refused_in_the_same_words_as_the_form_shows() -> None:
    from flyteplugins.hitl import _html

    for request in (
        {"request_id": "q-c", **declare(str, ["a", "b"])},
        {"request_id": "q-l", **declare(Literal["a", "b"])},
    ):
        with pytest.raises(InvalidValueError) as info:
            check_answer(request, "c")
        assert str(info.value) == "'c' is not an option; choose one of a, b"
        assert _html.fix_message(request.get("schema"), str(info.value)) == str(info.value)


# -- examples for curl commands ------------------------------------------------------------------


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
    raw = value_from_form(request, {"f.tags": ["\n \n"], "f.required": ["one"]})  # no box ticked for picks
    assert raw == {"tags": None, "picks": None, "required": ["one"]}
    assert (
        check_answer(request, raw)
        == check_answer(request, {"required": ["one"]})
        == {
            "tags": None,
            "picks": None,
            "required": ["one"],
        }
    )
    with pytest.raises(InvalidValueError, match="a required list needs at least one item"):
        check_answer(request, value_from_form(request, {"f.required": [""]}))
