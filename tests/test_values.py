"""Strict answer checking (`_values`): what each of the four types accepts, and what it refuses."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flyteplugins.hitl import InvalidValueError, UnsupportedTypeError
from flyteplugins.hitl._values import TYPE_NAMES, TYPES_BY_NAME, parse_value, type_name

# Property tests run without hypothesis' per-example deadline: on a busy machine one example may take
# longer than 200 ms, and that says nothing about the parser.
BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}


def _refused(raw: object, name: str) -> InvalidValueError:
    with pytest.raises(InvalidValueError) as info:
        parse_value(raw, name)
    return info.value


# -- type names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tp, name", [(int, "int"), (float, "float"), (str, "str"), (bool, "bool")])
def test_type_name_of_the_four_types(tp: type, name: str) -> None:
    assert type_name(tp) == name
    assert TYPES_BY_NAME[name] is tp
    assert TYPE_NAMES[tp] == name


@pytest.mark.parametrize("bad", [dict, bytes, complex, None, "int", object, set[int], tuple[int, str]])
def test_type_name_refuses_other_types_with_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError) as info:
        type_name(bad)
    assert isinstance(info.value, UnsupportedTypeError)
    assert "use int, float, str, bool, date, datetime, an Enum, a Literal" in str(info.value)
    assert repr(bad) in str(info.value)


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
from flyteplugins.hitl._values import parse_value
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
