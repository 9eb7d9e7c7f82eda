"""Strict answer checking (`_values`): what each of the four types accepts, and what it refuses."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import pydantic
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typing_extensions import NotRequired, TypedDict

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidEventError, InvalidValueError, UnsupportedTypeError, _schema
from flyteplugins.hitl._schema import check_answer, encode, forget, parse_value, remember, value_from_form
from flyteplugins.hitl._task_types import TYPE_NAMES, TYPES_BY_NAME, declare, spec_for, type_name

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


# -- structured types -----------------------------------------------------------------------------


class Size(enum.Enum):
    S = "small"
    M = "medium"
    L = "large"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 3


@dataclasses.dataclass
class Review:
    score: Annotated[int, annotated_types.Ge(1), annotated_types.Le(5), "How good, 1 to 5"]
    size: Size
    tags: list[str] = dataclasses.field(default_factory=list, metadata={"description": "one per line"})
    due: datetime.date | None = None
    note: Optional[str] = None  # noqa: UP045 (the typing spelling is supported too)
    pick: list[Literal["a", "b", "c"]] = dataclasses.field(default_factory=lambda: ["a"])

    def __post_init__(self) -> None:
        if "forbidden" in self.tags:
            raise ValueError("the tag 'forbidden' is not allowed")


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


def test_enum_is_a_choice_of_its_values_labelled_by_member_names() -> None:
    spec = spec_for(Size)
    assert spec.name == "Size"
    assert spec.schema == {
        "kind": "choice",
        "name": "Size",
        "choices": ["small", "medium", "large"],
        "labels": ["S", "M", "L"],
    }
    assert spec.check("medium") == "medium" and spec.build("medium") is Size.M
    assert spec.encode(Size.L) == "large" and spec.check(Size.L) == "large"
    with pytest.raises(InvalidValueError, match=r"'huge' is not one of 'small', 'medium', 'large'"):
        spec.check("huge")


def test_int_enum_and_int_literal_accept_the_text_a_form_sends() -> None:
    assert spec_for(Priority).check("3") == 3 and spec_for(Priority).build(3) is Priority.HIGH
    lit = spec_for(Literal[1, 2, 0.5])
    assert lit.check("2") == 2 and lit.check(0.5) == 0.5 and lit.build(1) == 1
    for bad in (True, "4", [1], None):
        with pytest.raises(InvalidValueError):
            lit.check(bad)


def test_literal_of_strings() -> None:
    spec = spec_for(Literal["low", "high"])
    assert spec.name == '"low" | "high"'
    assert spec.check("high") == "high" and spec.build("high") == "high"
    with pytest.raises(InvalidValueError):
        spec.check("HIGH")


@pytest.mark.parametrize(
    "tp, raw, expected",
    [
        (list[int], ["1", 2, " 3 "], [1, 2, 3]),
        (list[float], [0.5, "1e3"], [0.5, 1000.0]),
        (list[str], ["a", " b "], ["a", " b "]),
        (list[Size], ["small", "large"], [Size.S, Size.L]),
        (list[Literal["x", "y"]], ["y"], ["y"]),
        (list[int], [], []),
    ],
)
def test_lists_check_each_item_and_build_their_instances(tp: object, raw: list[object], expected: list[object]) -> None:
    spec = spec_for(tp)
    assert spec.build(spec.check(raw)) == expected


def test_lists_refuse_non_arrays_bad_items_and_too_many_items() -> None:
    spec = spec_for(list[int])
    with pytest.raises(InvalidValueError, match="expected a list"):
        spec.check("1,2")
    with pytest.raises(InvalidValueError, match="expected int"):
        spec.check([1, "two"])
    with pytest.raises(InvalidValueError, match="longer than the limit"):
        spec.check([1] * 1001)


def test_date_is_iso_8601() -> None:
    spec = spec_for(datetime.date)
    assert spec.check("2026-12-01") == "2026-12-01" and spec.build("2026-12-01") == datetime.date(2026, 12, 1)
    assert spec.check(datetime.date(2026, 1, 2)) == "2026-01-02"
    for bad in ("01/12/2026", "2026-13-01", "", 20261201, "2" * 100):
        with pytest.raises(InvalidValueError, match="expected YYYY-MM-DD"):
            spec.check(bad)


def test_datetime_keeps_its_zone_and_reads_no_zone_as_utc() -> None:
    spec = spec_for(datetime.datetime)
    assert spec.check("2026-12-01T14:30:00+01:00") == "2026-12-01T14:30:00+01:00"
    assert spec.check("2026-12-01T14:30") == "2026-12-01T14:30:00+00:00", "no zone: UTC"
    assert spec.check("2026-12-01T14:30:00Z") == "2026-12-01T14:30:00+00:00"
    built = spec.build("2026-12-01T14:30:00+01:00")
    assert built == datetime.datetime(2026, 12, 1, 13, 30, tzinfo=datetime.timezone.utc)
    assert spec.encode(datetime.datetime(2026, 12, 1, 9, 0)) == "2026-12-01T09:00:00+00:00"
    with pytest.raises(InvalidValueError, match="no zone: UTC"):
        spec.check("tomorrow")


def test_dataclass_schema_lists_fields_in_order_with_defaults_descriptions_and_constraints() -> None:
    spec = spec_for(Review)
    assert spec.name == "Review"
    assert spec.schema is not None and spec.schema["model"] == "dataclass"
    fields = {f["name"]: f for f in spec.schema["fields"]}
    assert list(fields) == ["score", "size", "tags", "due", "note", "pick"]
    assert fields["score"] == {
        "name": "score",
        "type": {"kind": "int", "ge": 1, "le": 5},
        "required": True,
        "description": "How good, 1 to 5",
    }
    assert fields["size"]["required"] and fields["size"]["type"]["labels"] == ["S", "M", "L"]
    assert fields["tags"]["description"] == "one per line"
    assert "default" not in fields["tags"] and not fields["tags"]["required"], "a factory runs when built"
    assert fields["due"]["nullable"] and fields["due"]["default"] is None and not fields["due"]["required"]
    assert "default" not in fields["pick"] and not fields["pick"]["required"]
    assert json.loads(json.dumps(spec.schema)) == spec.schema, "the schema is plain JSON"
    assert spec.describe() == (
        "Review {score: int (≥ 1, ≤ 5), size: Size, tags?: list[str], due?: date | None, note?: str | None, "
        'pick?: list["a" | "b" | "c"]}'
    )


def test_dataclass_answer_is_checked_filled_with_defaults_and_built() -> None:
    spec = spec_for(Review)
    value = spec.check({"score": "4", "size": "small", "due": "2026-12-01"})
    assert value == {"score": 4, "size": "small", "due": "2026-12-01", "note": None}, "factories run when built"
    assert spec.build(value) == Review(score=4, size=Size.S, due=datetime.date(2026, 12, 1))
    assert spec.encode(Review(score=2, size=Size.M)) == {
        "score": 2,
        "size": "medium",
        "tags": [],
        "due": None,
        "note": None,
        "pick": ["a"],
    }


def test_every_offending_field_is_named_at_once() -> None:
    with pytest.raises(InvalidValueError) as info:
        spec_for(Review).check({"score": 9, "size": "huge", "due": "soon", "colour": "red"})
    errors = info.value.field_errors
    assert set(errors) == {"score", "size", "due", "colour"}
    assert "maximum 5" in errors["score"] and "'huge'" in errors["size"] and "unknown field" in errors["colour"]
    for name in errors:
        assert f"{name}:" in str(info.value)


def test_missing_required_fields_and_null_for_non_nullable_fields_are_named() -> None:
    with pytest.raises(InvalidValueError) as info:
        spec_for(Review).check({"size": None})
    assert info.value.field_errors == {"score": "a value is required", "size": "may not be empty (null)"}
    with pytest.raises(InvalidValueError, match="expected a JSON object with the fields score, size"):
        spec_for(Review).check([1, 2])


def test_post_init_runs_when_the_instance_is_built() -> None:
    spec = spec_for(Review)
    value = spec.check({"score": 3, "size": "small", "tags": ["forbidden"]})  # the schema cannot know
    with pytest.raises(InvalidValueError, match="Review refused the answer: the tag 'forbidden' is not allowed"):
        spec.build(value)


def test_typed_dict_fields_and_not_required_keys() -> None:
    spec = spec_for(Movie)
    assert spec.schema is not None and [f["required"] for f in spec.schema["fields"]] == [True, True, False]
    assert spec.build(spec.check({"title": "Heat", "year": "1995"})) == {"title": "Heat", "year": 1995}
    assert spec.build(spec.check({"title": "Heat", "year": 1995, "rating": 8.3}))["rating"] == 8.3


def test_pydantic_model_constraints_descriptions_and_validators() -> None:
    import pydantic

    class Deploy(pydantic.BaseModel):
        replicas: int = pydantic.Field(3, ge=1, le=10, description="How many pods")
        region: Literal["us", "eu"]
        owner: str = pydantic.Field(pattern=r"^[a-z]+$")
        at: datetime.datetime | None = None

        @pydantic.field_validator("owner")
        @classmethod
        def not_root(cls, value: str) -> str:
            if value == "root":
                raise ValueError("root may not deploy")
            return value

    spec = spec_for(Deploy)
    fields = {f["name"]: f for f in spec.schema["fields"]}  # type: ignore[index]
    assert fields["replicas"] == {
        "name": "replicas",
        "type": {"kind": "int", "ge": 1, "le": 10},
        "required": False,
        "description": "How many pods",
        "default": 3,
    }
    assert fields["owner"]["type"] == {"kind": "str", "pattern": "^[a-z]+$"}
    with pytest.raises(InvalidValueError) as info:
        spec.check({"replicas": 11, "region": "asia", "owner": "Bob"})
    assert set(info.value.field_errors) == {"replicas", "region", "owner"}
    built = spec.build(spec.check({"region": "eu", "owner": "ann", "at": "2026-12-01T10:00"}))
    assert built == Deploy(region="eu", owner="ann", at=datetime.datetime(2026, 12, 1, 10, tzinfo=datetime.UTC))
    with pytest.raises(InvalidValueError) as info:
        spec.build(spec.check({"region": "eu", "owner": "root"}))
    assert "root may not deploy" in info.value.field_errors["owner"]
    assert spec.encode(built)["at"] == "2026-12-01T10:00:00+00:00"


def test_the_curl_example_of_a_constrained_type_is_an_answer_it_takes() -> None:
    import pydantic

    class Bounded(pydantic.BaseModel):
        count: int = pydantic.Field(gt=0)
        rating: int = pydantic.Field(ge=1, le=5)
        below: int = pydantic.Field(lt=0)
        share: float = pydantic.Field(gt=0, lt=0.1)
        code: str = pydantic.Field(min_length=10)
        tag: str = pydantic.Field(max_length=2)
        picks: list[int] = pydantic.Field(min_length=3)

    spec = spec_for(Bounded)
    example = spec.example()
    assert spec.build(spec.check(example)) == Bounded(**example)  # the server's check, then pydantic's own


_PATTERN_CHECK = """
import pydantic
from flyteplugins.hitl._errors import InvalidValueError
from flyteplugins.hitl._task_types import spec_for

class Name(pydantic.BaseModel):
    name: str = pydantic.Field(pattern=r"^(a+)+$")  # catastrophic for a backtracking engine

try:
    spec_for(Name).check({"name": "a" * 50_000 + "!"})
except InvalidValueError as e:
    print(e.field_errors["name"])
"""


def test_a_pattern_is_matched_in_linear_time() -> None:
    # In a child process, as above: a backtracking match would hold the GIL, and the bound stops it.
    done = subprocess.run([sys.executable, "-c", _PATTERN_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "does not match the pattern" in done.stdout

    @dataclasses.dataclass
    class Lookahead:  # a plain dataclass: pydantic never sees the pattern, so only this check refuses it
        name: Annotated[str, pydantic.StringConstraints(pattern=r"^(?=a)a+$")]

    with pytest.raises(UnsupportedTypeError, match=r"field 'name': its pattern .* cannot be checked in linear time"):
        spec_for(Lookahead)


def test_importing_the_package_does_not_import_pydantic_or_markdown_it() -> None:
    code = "import sys, flyteplugins.hitl; print('pydantic' in sys.modules, 'markdown_it' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False False", done.stderr


@dataclasses.dataclass
class Inner:
    x: int


@dataclasses.dataclass
class Outer:
    inner: Inner


@dataclasses.dataclass
class Linked:
    value: int
    next: Linked | None = None


@dataclasses.dataclass
class WithDict:
    name: str
    extra: dict[str, int]


class Thing:
    pass


@dataclasses.dataclass
class WithThing:
    thing: Thing


@dataclasses.dataclass
class WithUnion:
    either: int | str


class Mixed(enum.Enum):
    A = 1
    B = (1, 2)


@pytest.mark.parametrize(
    "tp, field, words",
    [
        (Outer, "inner", "nested models are not supported"),
        (Linked, "next", "nested models are not supported"),
        (WithDict, "extra", "dict[str, int]"),
        (WithThing, "thing", "Thing"),
        (WithUnion, "either", "X | None"),
        (list[list[int]], None, "lists hold int, float, str, an Enum or a Literal"),
        (list[bool], None, "lists hold"),
        (Mixed, None, "an Enum's values must be str, int or float"),
        (Literal[True, False], None, "a Literal's values must be str, int or float"),
        (int | None, None, "Optional is for the fields"),
        (dict, None, "unsupported data_type"),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v)[:30],
)
def test_types_that_cannot_be_a_form_are_refused_naming_the_field_and_type(
    tp: object, field: str | None, words: str
) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        spec_for(tp)
    assert words in str(info.value)
    assert info.value.field == field
    if field is not None:
        assert f"field {field!r}" in str(info.value)


# -- declare, check_answer, value_from_form -------------------------------------------------------


def test_declare_keeps_the_scalar_records_as_they_were() -> None:
    assert declare(int) == {"data_type": "int"}
    assert declare(str, choices=["S", "M"], default="M") == {"data_type": "str", "choices": ["S", "M"], "default": "M"}


def test_declare_narrows_enum_choices_and_encodes_defaults() -> None:
    declared = declare(Size, choices=[Size.S, Size.M], default=Size.M)
    assert declared["choices"] == ["small", "medium"] and declared["default"] == "medium"
    assert declared["schema"]["choices"] == ["small", "medium"] and declared["schema"]["labels"] == ["S", "M"]
    assert declare(Review, default=Review(score=5, size=Size.L))["default"]["size"] == "large"


@pytest.mark.parametrize(
    "tp, kwargs, words",
    [
        (Review, {"choices": [Review(score=1, size=Size.S)]}, "choices are for"),
        (list[int], {"choices": [[1]]}, "choices are for"),
        (Size, {"choices": ["tiny"]}, "choices must all be Size"),
        (Size, {"default": "tiny"}, "default 'tiny' does not fit"),
        (Size, {"choices": [Size.S], "default": Size.M}, "not one of the allowed choices"),
        (Review, {"default": Review(score=9, size=Size.S)}, "maximum 5"),
        (Review, {"default": {"score": 1, "size": "small", "tags": ["forbidden"]}}, "forbidden"),
    ],
)
def test_declare_refuses_choices_and_defaults_that_do_not_fit(tp: object, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidEventError, match=re.escape(words)):
        declare(tp, **kwargs)


def _request(tp: object, **extra: Any) -> dict[str, Any]:
    return {"request_id": "q-1", **declare(tp), **extra}


def test_check_answer_applies_schema_and_choices() -> None:
    request = _request(Size, choices=["small"])
    assert check_answer(request, "small") == "small"
    with pytest.raises(InvalidValueError, match="allowed choices"):
        check_answer(request, "large")


def test_check_answer_runs_the_types_own_validation_for_events_of_this_process() -> None:
    request = _request(Review, request_id="q-remembered")
    answer = {"score": 3, "size": "small", "tags": ["forbidden"]}
    assert check_answer(request, answer)["tags"] == ["forbidden"], "another process only has the schema"
    remember("q-remembered", spec_for(Review))
    with pytest.raises(InvalidValueError, match="forbidden"):
        check_answer(request, answer)
    forget("q-remembered")  # the event has its outcome
    assert check_answer(request, answer)["tags"] == ["forbidden"]


def test_a_settled_event_of_this_process_is_forgotten(root: Path) -> None:
    event = hitl.new_event("kept-until-settled", data_type=Review, timeout_seconds=60)
    assert event.request_id in _schema._remembered
    hitl.submit(event.form_url, {"score": 3, "size": "small"})
    assert event.wait().score == 3
    assert event.request_id not in _schema._remembered  # one entry per event would grow for ever


def test_value_from_form_reads_every_field() -> None:
    request = _request(Review)
    form = {
        "f.score": ["4"],
        "f.size": ["large"],
        "f.tags": ["one\r\n two \n\n"],
        "f.due": [""],
        "f.note": ["  "],
        "f.pick": ["a", "c"],
        "token": ["t"],
    }
    raw = value_from_form(request, form)
    assert raw == {"score": "4", "size": "large", "tags": ["one", "two"], "due": None, "note": None, "pick": ["a", "c"]}
    assert spec_for(Review).build(check_answer(request, raw)) == Review(
        score=4, size=Size.L, tags=["one", "two"], pick=["a", "c"]
    )


def test_value_from_form_leaves_empty_required_fields_out_so_they_are_named() -> None:
    request = _request(Review)
    raw = value_from_form(request, {"f.score": [""], "f.size": [""]})
    assert raw == {"tags": [], "due": None, "note": None, "pick": []}
    with pytest.raises(InvalidValueError) as info:
        check_answer(request, raw)
    assert set(info.value.field_errors) == {"score", "size"}


def test_value_from_form_for_scalar_and_top_level_types() -> None:
    assert value_from_form({"data_type": "int"}, {"value": ["42"]}) == "42"
    assert value_from_form({"data_type": "int"}, {}) == ""
    assert value_from_form(_request(list[int]), {"value": ["1\n2\n"]}) == ["1", "2"]
    assert value_from_form(_request(list[Size]), {"value": ["small", "large"]}) == ["small", "large"]
    assert value_from_form(_request(datetime.date), {"value": ["2026-12-01"]}) == "2026-12-01"


def test_encode_turns_instances_into_plain_json() -> None:
    assert encode([Size.S, datetime.date(2026, 1, 2), {"r": Review(score=1, size=Size.M)}]) == [
        "small",
        "2026-01-02",
        {"r": {"score": 1, "size": "medium", "tags": [], "due": None, "note": None, "pick": ["a"]}},
    ]
    assert encode(42) == 42 and encode("x") == "x"


def test_structured_answers_given_as_json_text_are_read_as_json() -> None:
    # `hitl submit ID '{"score": 4, ...}'` passes text; so does a program that sends a string.
    request = _request(Review)
    assert check_answer(request, '{"score": 4, "size": "small"}')["score"] == 4
    assert check_answer(_request(list[int]), "[1, 2]") == [1, 2]
    with pytest.raises(InvalidValueError, match="expected a JSON object"):
        check_answer(request, "{not json")


def test_a_long_text_is_refused_as_a_choice_without_comparing_it_with_each_one() -> None:
    many = spec_for(Literal[tuple(f"choice-{i}" for i in range(1000))])  # type: ignore[misc]
    long_text = "x" * (1 << 20)
    with pytest.raises(InvalidValueError, match="is not one of 'choice-0'"):
        many.check(long_text)
    assert many.check(" choice-999 ") == "choice-999"


def test_specs_are_shared_between_events_of_a_type() -> None:
    assert spec_for(Review) is spec_for(Review)
    assert spec_for(Annotated[int, {"unhashable": []}]).name == "int"
