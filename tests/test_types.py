"""Schemas from Python types (`_types`): pydantic's `Field(...)` inside `Annotated` is read like
annotated_types and `StringConstraints`, in a dataclass, a TypedDict and a top-level type."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pydantic
import pytest
from typing_extensions import NotRequired, TypedDict

import flyteplugins.hitl as hitl
from flyteplugins.hitl import InvalidValueError
from flyteplugins.hitl._task_types import spec_for


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
