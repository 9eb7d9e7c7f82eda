"""The task side of an answer type (`_task_types`): every rule a type declares travels in its schema, so
a server with only the schema refuses what the task's build would refuse; what cannot travel is refused
at `new_event`; factory defaults run when the answer is built, never stored."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import pydantic
import pydantic.v1
import pytest
from typing_extensions import NotRequired, TypedDict

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidEventError, InvalidValueError, UnsupportedTypeError, _schema
from flyteplugins.hitl._schema import (
    check_answer,
    encode,
    forget,
    remember,
    value_from_form,
)
from flyteplugins.hitl._task_types import TYPE_NAMES, declare, spec_for, type_name

# -- type names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tp, name", [(int, "int"), (float, "float"), (str, "str"), (bool, "bool")])
def test_type_name_of_the_four_types(tp: type, name: str) -> None:
    assert type_name(tp) == name
    assert TYPE_NAMES[tp] == name


@pytest.mark.parametrize("bad", [dict, bytes, complex, None, "int", object, set[int], tuple[int, str]])
def test_type_name_refuses_other_types_with_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError) as info:
        type_name(bad)
    assert isinstance(info.value, UnsupportedTypeError)
    assert "use int, float, str, bool, date, datetime, an Enum, a Literal" in str(info.value)
    assert repr(bad) in str(info.value)


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
    assert encode(Size.L) == "large" and spec.check(Size.L) == "large"
    with pytest.raises(InvalidValueError, match=r"^'huge' is not an option; choose one of S, M, L$"):
        spec.check("huge")


class Swapped(enum.Enum):
    """Each member's name is the other's value: a value wins over a label."""

    up = "down"
    down = "up"


def test_an_enum_answer_may_be_its_label_as_the_buttons_show_it() -> None:
    assert spec_for(Size).check("M") == "medium" and spec_for(Size).build(spec_for(Size).check(" L ")) is Size.L
    assert spec_for(Priority).check("HIGH") == 3 and spec_for(Priority).check("3") == 3
    assert spec_for(Swapped).check("up") == "up" and spec_for(Swapped).build("up") is Swapped.down
    with pytest.raises(InvalidValueError, match="choose one of S, M"):
        check_answer({"request_id": "q-narrow", **declare(Size, choices=[Size.S, Size.M])}, "L")


def test_the_form_says_what_a_missing_answer_becomes_by_its_label() -> None:
    from flyteplugins.hitl import _html

    request = {"request_id": "q-f", "event_name": "size", "prompt": "Size?", "token": "t" * 32}
    request["expires_at"] = "2999-01-01T00:00:00Z"
    page = _html.form_page({**request, **declare(Size, default=Size.M)}, 600)
    assert "the task goes on with M." in page and "goes on with medium" not in page


class OldModel(pydantic.v1.BaseModel):
    score: int


@dataclasses.dataclass
class HoldsOldModel:
    old: OldModel


def test_a_pydantic_v1_model_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(
        UnsupportedTypeError, match=r"pydantic v1 models are not supported; use pydantic v2's BaseModel"
    ):
        hitl.new_event("old", data_type=OldModel)
    with pytest.raises(UnsupportedTypeError, match=r"field 'old' .*pydantic v1 models are not supported"):
        spec_for(HoldsOldModel)


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
    assert encode(datetime.datetime(2026, 12, 1, 9, 0)) == "2026-12-01T09:00:00+00:00"
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
    assert encode(Review(score=2, size=Size.M)) == {
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
    assert built == Deploy(
        region="eu", owner="ann", at=datetime.datetime(2026, 12, 1, 10, tzinfo=datetime.timezone.utc)
    )
    with pytest.raises(InvalidValueError) as info:
        spec.build(spec.check({"region": "eu", "owner": "root"}))
    assert "root may not deploy" in info.value.field_errors["owner"]
    assert encode(built)["at"] == "2026-12-01T10:00:00+00:00"


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
    with pytest.raises(InvalidValueError, match=r"'large' is not an option; choose one of small$"):
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
    with pytest.raises(
        InvalidValueError, match=r"is not an option; choose one of choice-0, choice-1, .*, choice-19, \.\.\.$"
    ):
        many.check(long_text)
    assert many.check(" choice-999 ") == "choice-999"


def test_specs_are_shared_between_events_of_a_type() -> None:
    assert spec_for(Review) is spec_for(Review)
    assert spec_for(Annotated[int, {"unhashable": []}]).name == "int"


# -- pydantic Field inside Annotated -------------------------------------------------------------


@dataclasses.dataclass
class Graded:
    score: Annotated[int, pydantic.Field(ge=1, le=5, description="1 to 5")]
    code: Annotated[str, pydantic.Field(pattern=r"^[A-Z]{3}$", max_length=3)]
    share: Annotated[float, pydantic.Field(gt=0, lt=1)] | None = None


class Ticket(TypedDict):
    title: Annotated[str, pydantic.Field(min_length=3, description="A short summary")]
    priority: NotRequired[Annotated[int, pydantic.Field(ge=1, le=3)]]


def _fields(tp: object) -> dict[str, Any]:
    schema = spec_for(tp).schema
    assert schema is not None
    return {f["name"]: f for f in schema["fields"]}


def test_dataclass_fields_carry_the_bounds_pattern_and_description_of_a_pydantic_field() -> None:
    fields = _fields(Graded)
    assert fields["score"]["type"] == {"kind": "int", "ge": 1, "le": 5}
    assert fields["score"]["description"] == "1 to 5"
    assert fields["code"]["type"] == {"kind": "str", "pattern": "^[A-Z]{3}$", "max_length": 3}
    assert fields["share"]["type"] == {"kind": "float", "gt": 0, "lt": 1} and fields["share"]["nullable"]
    assert spec_for(Graded).describe() == "Graded {score: int (≥ 1, ≤ 5), code: str, share?: float (> 0, < 1) | None}"


def test_typed_dict_fields_carry_the_constraints_and_description_of_a_pydantic_field() -> None:
    fields = _fields(Ticket)
    assert fields["title"] == {
        "name": "title",
        "type": {"kind": "str", "min_length": 3},
        "required": True,
        "description": "A short summary",
    }
    assert fields["priority"]["type"] == {"kind": "int", "ge": 1, "le": 3} and not fields["priority"]["required"]
    with pytest.raises(InvalidValueError) as info:
        spec_for(Ticket).check({"title": "ab", "priority": 4})
    assert set(info.value.field_errors) == {"title", "priority"}


def test_a_top_level_type_carries_the_constraints_of_a_pydantic_field() -> None:
    spec = spec_for(Annotated[int, pydantic.Field(ge=1, le=5, description="1 to 5")])
    assert spec.schema == {"kind": "int", "ge": 1, "le": 5}
    assert spec.check("3") == 3
    with pytest.raises(InvalidValueError, match="more than the maximum 5"):
        spec.check(6)
    text = spec_for(Annotated[str, pydantic.Field(pattern=r"^[a-z]+$", max_length=4)])
    assert text.schema == {"kind": "str", "pattern": "^[a-z]+$", "max_length": 4}
    with pytest.raises(InvalidValueError, match="does not match the pattern"):
        text.check("ABC")


@pytest.mark.parametrize(
    ("tp", "field", "equivalent"),
    [
        (int, pydantic.Field(ge=1, le=5, description="doc"), (annotated_types.Interval(ge=1, le=5), "doc")),
        (float, pydantic.Field(gt=0.5, lt=9.5), (annotated_types.Gt(0.5), annotated_types.Lt(9.5))),
        (
            str,
            pydantic.Field(pattern=r"^x+$", min_length=1, max_length=8, description="doc"),
            (pydantic.StringConstraints(pattern=r"^x+$", min_length=1, max_length=8), "doc"),
        ),
        (list[int], pydantic.Field(min_length=2, max_length=3), (annotated_types.Len(2, 3),)),
    ],
)
def test_a_pydantic_field_is_read_like_its_annotated_types_equivalent(
    tp: type, field: Any, equivalent: tuple[Any, ...]
) -> None:
    with_field = dataclasses.make_dataclass("A", [("x", Annotated[tp, field])])
    with_equivalent = dataclasses.make_dataclass("A", [("x", Annotated[(tp, *equivalent)])])
    assert spec_for(with_field).schema == spec_for(with_equivalent).schema
    assert field.description is None or _fields(with_field)["x"]["description"] == "doc"
    assert spec_for(Annotated[tp, field]).schema == spec_for(Annotated[(tp, *equivalent)]).schema


def test_an_answer_outside_a_pydantic_fields_bounds_is_refused_naming_the_field(root: Path) -> None:
    event = hitl.new_event("review-bounds", data_type=Graded, timeout_seconds=60)
    assert event._request["schema"]["fields"][0]["type"] == {"kind": "int", "ge": 1, "le": 5}  # as stored
    with pytest.raises(InvalidValueError) as info:
        hitl.submit(event.form_url, {"score": 99, "code": "lowercase-and-long"})
    message = str(info.value)
    assert "score: 99 is more than the maximum 5" in message
    assert "code: 'lowercase-and-long' is longer than the maximum length 3" in message
    with pytest.raises(InvalidValueError, match=r"code: 'abc' does not match the pattern '\^\[A-Z\]\{3\}\$'"):
        hitl.submit(event.form_url, {"score": 3, "code": "abc"})
    with pytest.raises(InvalidValueError, match=r"share: 1\.5 must be less than 1"):
        hitl.submit(event.form_url, {"score": 3, "code": "ABC", "share": 1.5})
    assert hitl.submit(event.form_url, {"score": 5, "code": "ABC"})["status"] == "submitted"
    assert event.wait() == Graded(score=5, code="ABC")


def test_a_top_level_answer_outside_a_pydantic_fields_bounds_is_refused(root: Path) -> None:
    event = hitl.new_event("bounded", data_type=Annotated[int, pydantic.Field(ge=1, le=5)], timeout_seconds=60)
    with pytest.raises(InvalidValueError, match="0 is less than the minimum 1"):
        hitl.submit(event.form_url, 0)
    assert hitl.submit(event.form_url, 4)["status"] == "submitted"
    assert event.wait() == 4


def test_a_typed_dict_answer_outside_a_pydantic_fields_bounds_is_refused(root: Path) -> None:
    event = hitl.new_event("ticket", data_type=Ticket, timeout_seconds=60)
    with pytest.raises(InvalidValueError, match="title: 'ab' is shorter than the minimum length 3"):
        hitl.submit(event.form_url, {"title": "ab"})
    with pytest.raises(InvalidValueError, match="priority: 7 is more than the maximum 3"):
        hitl.submit(event.form_url, {"title": "abc", "priority": 7})
    assert hitl.submit(event.form_url, {"title": "abc", "priority": 2})["status"] == "submitted"
    assert event.wait() == {"title": "abc", "priority": 2}


_NO_PYDANTIC = """
import dataclasses, sys
from typing import Annotated
import annotated_types
from flyteplugins.hitl._task_types import spec_for

@dataclasses.dataclass
class A:
    x: Annotated[int, annotated_types.Ge(1), "doc"]

assert spec_for(A).schema["fields"][0]["type"] == {"kind": "int", "ge": 1}
print("pydantic" in sys.modules)
"""


def test_reading_annotated_metadata_does_not_import_pydantic() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_PYDANTIC], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- every declarative rule travels with the question ---------------------------------------------


class Steps(pydantic.BaseModel):
    n: int = pydantic.Field(multiple_of=5)
    share: float = pydantic.Field(0.5, multiple_of=0.1)


class Short(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(str_max_length=3, str_min_length=2)
    code: str
    codes: list[str] = []


class Trimmed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(str_strip_whitespace=True, str_to_lower=True)
    name: Annotated[str, pydantic.StringConstraints(min_length=2)]


class Lenient(pydantic.BaseModel):
    n: int = None  # type: ignore[assignment]  # pydantic takes it left out, and refuses null
    m: Optional[int] = None  # noqa: UP045


class Validated(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(validate_default=True)
    n: int = None  # type: ignore[assignment]  # pydantic checks the default too: n must be given
    m: Optional[int] = None  # noqa: UP045


class When(pydantic.BaseModel):
    at: datetime.datetime


class Aliased(pydantic.BaseModel):
    n: int = pydantic.Field(validation_alias="N")
    m: int = pydantic.Field(0, alias="M")
    k: int = pydantic.Field(0, validation_alias=pydantic.AliasChoices("K", "kay"))


@dataclasses.dataclass
class Fives:
    n: Annotated[int, annotated_types.MultipleOf(5)]
    label: Annotated[str, pydantic.StringConstraints(max_length=3, to_upper=True)] = "A"


RULES = [
    pytest.param(Steps, {"n": 7}, "n", {"n": 10}, id="Field(multiple_of=5)"),
    pytest.param(Steps, {"n": 5, "share": 0.35}, "share", {"n": 5, "share": 0.3}, id="float multiple_of"),
    pytest.param(Short, {"code": "abcd"}, "code", {"code": "abc"}, id="ConfigDict(str_max_length)"),
    pytest.param(Short, {"code": "a"}, "code", {"code": "ab"}, id="ConfigDict(str_min_length)"),
    pytest.param(Short, {"code": "ab", "codes": ["abcd"]}, "codes", {"code": "ab", "codes": ["ab"]}, id="list items"),
    pytest.param(Trimmed, {"name": " A "}, "name", {"name": " AB "}, id="strip then length"),
    pytest.param(Trimmed, {"name": "ab\ud800"}, "name", {"name": "ab\u00e9"}, id="lone surrogate"),
    pytest.param(Lenient, {"n": None}, "n", {"m": None}, id="int = None takes no null"),
    pytest.param(Validated, {"m": 1}, "n", {"n": 1}, id="validate_default: int = None must be given"),
    pytest.param(When, {"at": "2026-12-01T14:30:00+01:00:30"}, "at", {"at": "2026-12-01T14:30:00+01:00"}, id="offset"),
    pytest.param(Aliased, {"n": 1}, "N", {"N": 1, "M": 2, "K": 3}, id="aliases"),
    pytest.param(Fives, {"n": 7}, "n", {"n": 10}, id="dataclass MultipleOf"),
    pytest.param(Fives, {"n": 5, "label": "abcd"}, "label", {"n": 5, "label": "abc"}, id="dataclass max_length"),
]


@pytest.mark.parametrize(("tp", "bad", "field", "good"), RULES)
def test_a_server_with_only_the_schema_refuses_what_the_task_would_refuse(
    tp: Any, bad: dict[str, Any], field: str, good: dict[str, Any]
) -> None:
    request = {"request_id": "elsewhere-1", **declare(tp)}
    request = json.loads(json.dumps(request))  # as a separate server reads it from storage
    with pytest.raises(InvalidValueError) as info:
        check_answer(request, bad)  # nothing is stored
    assert field in info.value.field_errors, info.value
    with pytest.raises(InvalidValueError):
        spec_for(tp).build(bad)
    if issubclass(tp, pydantic.BaseModel):
        with pytest.raises(pydantic.ValidationError):  # pydantic itself agrees
            tp.model_validate_json(json.dumps(bad))
    stored = check_answer(request, good)
    built = spec_for(tp).build(stored)  # what the server stored, the task takes
    assert isinstance(built, tp)
    if issubclass(tp, pydantic.BaseModel):
        assert built == tp.model_validate_json(json.dumps(good))


def test_rules_are_carried_in_the_schema_and_applied_as_pydantic_applies_them() -> None:
    assert spec_for(Steps).schema["fields"][0]["type"] == {"kind": "int", "multiple_of": 5}  # type: ignore[index]
    fields = {f["name"]: f for f in spec_for(Short).schema["fields"]}  # type: ignore[index]
    assert fields["code"]["type"] == {"kind": "str", "min_length": 2, "max_length": 3}
    assert fields["codes"]["type"]["items"] == {"kind": "str", "min_length": 2, "max_length": 3}
    request = {"request_id": "elsewhere-2", **declare(Trimmed)}
    assert check_answer(request, {"name": "  AB "}) == {"name": "ab"}, "stored as pydantic would read it"
    assert spec_for(Fives).build(spec_for(Fives).check({"n": 5, "label": "ab"})) == Fives(n=5, label="AB")


def test_answers_use_the_names_pydantic_validates() -> None:
    spec = spec_for(Aliased)
    assert [f["name"] for f in spec.schema["fields"]] == ["N", "M", "K"]  # type: ignore[index]
    assert encode(Aliased(N=1, M=2, K=3)) == {"N": 1, "M": 2, "K": 3}
    assert declare(Aliased, default=Aliased(N=4))["default"] == {"N": 4, "M": 0, "K": 0}


def test_int_equals_none_is_left_out_when_empty_never_stored_as_null() -> None:
    request = {"request_id": "elsewhere-3", **declare(Lenient)}
    fields = {f["name"]: f for f in request["schema"]["fields"]}
    assert fields["n"] == {"name": "n", "type": {"kind": "int"}, "required": False}
    assert fields["m"]["nullable"] and fields["m"]["default"] is None
    raw = value_from_form(request, {"f.n": [""], "f.m": [""]})
    assert raw == {"m": None}
    stored = check_answer(request, raw)
    assert stored == {"m": None}
    assert spec_for(Lenient).build(stored) == Lenient()


class _NotCarried(pydantic.BaseModel):
    x: Annotated[int, annotated_types.Predicate(lambda v: v > 0)]


@dataclasses.dataclass
class _Bounded:
    when: Annotated[str, annotated_types.Ge(3)]


class _Digits(pydantic.BaseModel):
    x: float = pydantic.Field(max_digits=3)


class _Path(pydantic.BaseModel):
    x: int = pydantic.Field(validation_alias=pydantic.AliasPath("a", 0))


@dataclasses.dataclass
class _FloatStep:
    x: Annotated[int, annotated_types.MultipleOf(0.5)]


@pytest.mark.parametrize(
    ("tp", "field", "rule"),
    [
        (_NotCarried, "x", "Predicate"),
        (dataclasses.make_dataclass("_Not", [("x", Annotated[int, annotated_types.Not(bool)])]), "x", "Not"),
        (_Bounded, "when", "ge=3"),
        (_Digits, "x", "max_digits=3"),
        (_Path, "x", "AliasPath"),
        (_FloatStep, "x", "multiple_of=0.5"),
    ],
)
def test_a_rule_no_server_can_check_is_refused_at_new_event_naming_field_and_rule(
    root: Path, tp: Any, field: str, rule: str
) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        hitl.new_event("not-carried", data_type=tp)
    assert info.value.field == field
    assert f"field {field!r}" in str(info.value) and rule in str(info.value)
    assert not root.exists() or not any(root.iterdir()), "nothing is written"


def _not_13(value: int) -> int:
    if value == 13:
        raise ValueError("13 is unlucky")
    return value


class _Checked(pydantic.BaseModel):
    x: Annotated[int, pydantic.AfterValidator(_not_13)]


@dataclasses.dataclass
class _PostInit:
    x: int

    def __post_init__(self) -> None:
        if self.x == 13:
            raise ValueError("13 is unlucky")


def test_validators_are_left_to_the_task_whose_refusal_names_the_fields() -> None:
    assert spec_for(_Checked).schema["fields"][0]["type"] == {"kind": "int"}  # type: ignore[index]
    with pytest.raises(InvalidValueError) as info:
        spec_for(_Checked).build({"x": 13})
    assert list(info.value.field_errors) == ["x"]
    with pytest.raises(InvalidValueError) as info:
        spec_for(_PostInit).build({"x": 13})
    assert info.value.field_errors == {"": "_PostInit refused the answer: 13 is unlucky"}, "the answer as a whole"


# -- factory defaults -----------------------------------------------------------------------------

_ticks = itertools.count()


@dataclasses.dataclass
class Stamped:
    note: str
    tick: int = dataclasses.field(default_factory=lambda: next(_ticks))
    opened: datetime.datetime = dataclasses.field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


class StampedModel(pydantic.BaseModel):
    note: str
    tick: int = pydantic.Field(default_factory=lambda: next(_ticks))


@pytest.mark.parametrize("tp", [Stamped, StampedModel])
def test_a_factory_default_runs_each_time_an_answer_is_built(root: Path, tp: Any) -> None:
    built = []
    for name in ("first", "second"):
        event = hitl.new_event(name, data_type=tp, timeout_seconds=60)
        assert "default" not in event._request["schema"]["fields"][1], "a factory's value is not stored"
        hitl.submit(event.form_url, {"note": name})
        built.append(event.wait())
    assert built[0].tick != built[1].tick
    assert built[0].note == "first" and built[1].note == "second"


_RERUN = """
import dataclasses, datetime, sys

import flyte

import flyteplugins.hitl as hitl

env = flyte.TaskEnvironment(name="hitl-test-factory", depends_on=[hitl.env])


@dataclasses.dataclass
class Stamped:
    note: str
    opened: datetime.datetime = dataclasses.field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


@env.task
async def ask() -> str:
    event = await hitl.new_event.aio("stamp", data_type=Stamped, timeout_seconds=60)
    return event.request_id


if __name__ == "__main__":
    run = flyte.with_runcontext(mode="local", name=sys.argv[1]).run(ask)
    print("ID", run.outputs()[0], flush=True)
"""


@pytest.mark.flyte_run
def test_a_re_run_re_attaches_to_an_event_with_a_factory_default(root: Path, tmp_path: Path) -> None:
    import shutil
    import uuid

    script = tmp_path / "rerun_factory.py"
    script.write_text(_RERUN)
    run_name = f"hitl-test-{uuid.uuid4().hex[:12]}"
    env = {**__import__("os").environ, "FLYTE_HITL_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    try:
        ids = []
        for _ in range(2):  # the same run name: the same action, so the same request id
            done = subprocess.run(
                [sys.executable, str(script), run_name], env=env, capture_output=True, text=True, timeout=180
            )
            assert done.returncode == 0, done.stdout + done.stderr
            ids += [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ID ")]
        assert len(ids) == 2 and ids[0] == ids[1], ids
        assert [p.name for p in root.iterdir()] == [ids[0]]
    finally:
        for kind in ("metadata", "raw_data"):
            shutil.rmtree(Path("/tmp/flyte") / kind / run_name, ignore_errors=True)


class Remote(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(str_max_length=3)
    n: int = pydantic.Field(multiple_of=5, validation_alias="N")
    code: str
    at: datetime.datetime | None = None


@pytest.mark.usefixtures("remote")  # FLYTE_HITL_ENDPOINT names it: no server in this process
def test_a_separate_server_refuses_what_the_tasks_type_would_and_stores_nothing(root: Path) -> None:
    event = hitl.new_event("remote-rules", data_type=Remote, timeout_seconds=60)
    bad = {"N": 7, "code": "abcd", "at": "2026-12-01T14:30:00+01:00:30"}
    with pytest.raises(InvalidValueError) as info:
        hitl.submit(event.form_url, bad)
    for words in ("N: 7 is not a multiple of 5", "code: 'abcd' is longer than the maximum length 3", "at: invalid"):
        assert words in str(info.value)
    assert not (root / event.request_id / "response.json").exists()
    assert hitl.submit(event.form_url, {"N": 10, "code": "abc", "at": "2026-12-01T14:30:00.123Z"})["status"]
    at = datetime.datetime(2026, 12, 1, 14, 30, 0, 123000, tzinfo=datetime.timezone.utc)
    assert event.wait() == Remote(N=10, code="abc", at=at)
