"""The task side of an answer type (`_task_types`): every rule a type declares travels in its schema, so
a server with only the schema refuses what the task's build would refuse; what cannot travel is refused
at `new_event`; factory defaults run when the answer is built, never stored."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import annotated_types
import pydantic
import pytest
from typing_extensions import NotRequired, TypedDict

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidValueError, UnsupportedTypeError
from flyteplugins.hitl._schema import check_answer, value_from_form
from flyteplugins.hitl._task_types import declare, spec_for


@dataclasses.dataclass
class Review:
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
    fields = _fields(Review)
    assert fields["score"]["type"] == {"kind": "int", "ge": 1, "le": 5}
    assert fields["score"]["description"] == "1 to 5"
    assert fields["code"]["type"] == {"kind": "str", "pattern": "^[A-Z]{3}$", "max_length": 3}
    assert fields["share"]["type"] == {"kind": "float", "gt": 0, "lt": 1} and fields["share"]["nullable"]
    assert spec_for(Review).describe() == "Review {score: int (≥ 1, ≤ 5), code: str, share?: float (> 0, < 1) | None}"


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
    event = hitl.new_event("review-bounds", data_type=Review, timeout_seconds=60)
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
    assert event.wait() == Review(score=5, code="ABC")


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
    pytest.param(Lenient, {"n": None}, "n", {"m": None}, id="int = None takes no null"),
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
    assert spec.encode(Aliased(N=1, M=2, K=3)) == {"N": 1, "M": 2, "K": 3}
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
    opened: datetime.datetime = dataclasses.field(default_factory=lambda: datetime.datetime.now(datetime.UTC))


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
