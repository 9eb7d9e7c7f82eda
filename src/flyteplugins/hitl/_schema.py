"""Checking answers against a stored schema, with no Python classes: what a form server runs.

The schema is the plain JSON that `_types` makes from an answer type and that the request record
carries (see `_types` for its shape). Every check runs in time linear in the answer: text is
capped per kind, choices are compared in one scan, and patterns run on a linear-time engine.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

from ._errors import InvalidValueError

Json = Any
Schema = dict[str, Any]

#: Longest list answer, in items.
MAX_LIST_ITEMS = 1000
_MAX_DATE_CHARS = 64
# Longer text cannot be a choice: it is refused without comparing it with each one.
_MAX_CHOICE_TEXT = 10_000


def build_datetime(value: str) -> datetime:
    """An ISO 8601 datetime; one without a zone is read as UTC."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def check(schema: Schema, raw: Json) -> Json:
    """Check `raw` (JSON, or text from a form) against `schema`; return the answer as plain JSON.

    Needs no Python classes. Raises `InvalidValueError`; for an object its `field_errors` names
    every offending field.

    Example:
        >>> check({"kind": "list", "items": {"kind": "int"}}, ["1", 2])
        [1, 2]
    """
    kind = schema["kind"]
    if kind == "object":
        return _check_object(schema, raw)
    if kind == "list":
        return _check_list(schema, raw)
    if kind == "choice":
        return _check_choice(schema, raw)
    if kind == "date":
        return _check_date(raw)
    if kind == "datetime":
        return _check_datetime(raw)
    from ._values import parse_value

    value = parse_value(raw, kind)
    _check_constraints(schema, value, raw)
    return value


def _check_constraints(schema: Schema, value: Any, raw: object) -> None:
    def fail(why: str) -> InvalidValueError:
        return InvalidValueError(f"{_short(raw)!r} {why}", raw)

    if "ge" in schema and value < schema["ge"]:
        raise fail(f"is less than the minimum {schema['ge']!r}")
    if "gt" in schema and value <= schema["gt"]:
        raise fail(f"must be greater than {schema['gt']!r}")
    if "le" in schema and value > schema["le"]:
        raise fail(f"is more than the maximum {schema['le']!r}")
    if "lt" in schema and value >= schema["lt"]:
        raise fail(f"must be less than {schema['lt']!r}")
    if "min_length" in schema and len(value) < schema["min_length"]:
        raise fail(f"is shorter than the minimum length {schema['min_length']}")
    if "max_length" in schema and len(value) > schema["max_length"]:
        raise fail(f"is longer than the maximum length {schema['max_length']}")
    if "pattern" in schema and not _matches(str(schema["pattern"]), value):
        raise fail(f"does not match the pattern {schema['pattern']!r}")


def _check_choice(schema: Schema, raw: Json) -> Json:
    # Exact JSON values, or the text a form sends for them ("3" for 3): one scan, the text stripped once.
    text = raw.strip() if isinstance(raw, str) and len(raw) <= _MAX_CHOICE_TEXT else None
    for choice in schema["choices"]:
        if not isinstance(raw, bool) and raw == choice and type(raw) in (type(choice), int, float):
            return choice
        if text is not None and text == wire(choice):
            return choice
    shown = ", ".join(repr(c) for c in schema["choices"][:20]) + (", ..." if len(schema["choices"]) > 20 else "")
    raise InvalidValueError(f"{_short(raw)!r} is not one of {shown}", raw)


def _check_list(schema: Schema, raw: Json) -> Json:
    if not isinstance(raw, list):
        raise InvalidValueError(f"expected a list (a JSON array), got {_short(raw)!r}", raw)
    if len(raw) > MAX_LIST_ITEMS:
        raise InvalidValueError(f"a list of {len(raw)} items is longer than the limit of {MAX_LIST_ITEMS}", None)
    value = [check(schema["items"], item) for item in raw]
    _check_constraints(schema, value, raw)
    return value


def _check_date(raw: Json) -> Json:
    if isinstance(raw, str) and len(raw) <= _MAX_DATE_CHARS:
        try:
            return date.fromisoformat(raw.strip()).isoformat()
        except ValueError:
            pass
    raise InvalidValueError(f"invalid date {_short(raw)!r}: expected YYYY-MM-DD (ISO 8601)", raw)


def _check_datetime(raw: Json) -> Json:
    # A datetime without a zone is read as UTC (the form's datetime-local field sends none).
    if isinstance(raw, str) and len(raw) <= _MAX_DATE_CHARS:
        try:
            return build_datetime(raw.strip()).isoformat()
        except ValueError:
            pass
    raise InvalidValueError(
        f"invalid datetime {_short(raw)!r}: expected ISO 8601 such as 2026-12-01T14:30:00+01:00 (no zone: UTC)", raw
    )


def _check_object(schema: Schema, raw: Json) -> Json:
    names = [f["name"] for f in schema["fields"]]
    if not isinstance(raw, dict):
        raise InvalidValueError(f"expected a JSON object with the fields {', '.join(names)}; got {_short(raw)!r}", raw)
    errors: dict[str, str] = {}
    value: dict[str, Json] = {}
    for f in schema["fields"]:
        name = f["name"]
        if raw.get(name) is None:
            if name in raw and f.get("nullable"):
                value[name] = None
            elif f["required"]:
                errors[name] = "a value is required" if name not in raw else "may not be empty (null)"
            elif "default" in f:
                value[name] = f["default"]
            continue
        try:
            value[name] = check(f["type"], raw[name])
        except InvalidValueError as e:
            errors[name] = str(e)
        if f["required"] and value.get(name) == []:
            errors[name] = "a required list needs at least one item"
    for key in list(raw)[:20]:
        if key not in names:
            errors[str(key)[:80]] = f"unknown field; the fields are {', '.join(names)}"
    if errors:
        raise field_failure(errors, raw)
    return value


def field_failure(errors: dict[str, str], raw: object) -> InvalidValueError:
    listed = "; ".join(f"{name}: {why}" for name, why in errors.items())
    return InvalidValueError(f"invalid answer: {listed}", raw, field_errors=errors)


def wire(value: Json) -> str:
    """A value as a form sends it: text as is, numbers as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def _short(raw: object) -> object:
    return raw if not isinstance(raw, str) or len(raw) <= 80 else raw[:80] + "..."


def _matches(pattern: str, text: str) -> bool:
    """Whether `text` matches `pattern` (anywhere, as pydantic reads patterns), in linear time.

    Without pydantic-core (flyte installs it) the pattern is left to the task's own validation.
    """
    try:
        validate = linear_pattern(pattern)
    except ImportError:
        return True
    try:
        validate(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def linear_pattern(pattern: str) -> Callable[[str], object]:
    """A check of `pattern` by pydantic-core's Rust regex engine, which runs in linear time.

    Raises ImportError without pydantic-core, and ValueError for a pattern that engine refuses
    (look-around, back-references: the features that make a backtracking engine slow).
    """
    from pydantic_core import SchemaError, SchemaValidator, core_schema

    try:
        return SchemaValidator(core_schema.str_schema(pattern=pattern)).validate_python
    except SchemaError as e:
        raise ValueError(str(e).strip().splitlines()[-1]) from None


# -- readable text --------------------------------------------------------------------------------


def describe(schema: Schema) -> str:
    """A readable one-line form of `schema`: ``Review {score: int (≥ 1, ≤ 5), label: Label, due?: date | None}``."""
    kind = schema["kind"]
    if kind == "object":
        parts = []
        for f in schema["fields"]:
            text = describe(f["type"]) + (" | None" if f.get("nullable") else "")
            parts.append(f"{f['name']}{'' if f['required'] else '?'}: {text}")
        return f"{schema['name']} {{{', '.join(parts)}}}"
    if kind == "list":
        return f"list[{describe(schema['items'])}]"
    if kind == "choice":
        if schema.get("name"):
            return str(schema["name"])
        return " | ".join(json.dumps(c) for c in schema["choices"][:8]) + (
            " | ..." if len(schema["choices"]) > 8 else ""
        )
    bounds = [
        f"{op} {schema[key]}" for key, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")) if key in schema
    ]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def example(schema: Schema) -> Json:
    """An answer for `schema`, for curl commands and docs: within its bounds and lengths (a pattern
    it cannot know; such an example may still be refused)."""
    kind = schema["kind"]
    if kind == "object":
        return {f["name"]: f.get("default", example(f["type"])) for f in schema["fields"]}
    if kind == "list":
        count = schema.get("min_length", 1)
        return [example(schema["items"])] * min(count, schema.get("max_length", count))
    if kind == "choice":
        return schema["choices"][0]
    if kind in ("int", "float"):
        return _number_example(schema, kind)
    if kind == "str":
        text = "text".ljust(schema.get("min_length", 0), "x")
        return text[: schema.get("max_length", len(text))]
    return {"bool": True, "date": "2026-12-01", "datetime": "2026-12-01T12:00:00+00:00"}[kind]


def _number_example(schema: Schema, kind: str) -> int | float:
    """42 (or 0.5) when the bounds allow it, else the value nearest to it that they allow."""
    step = 1 if kind == "int" else 0.5
    low = schema["ge"] if "ge" in schema else schema["gt"] + step if "gt" in schema else None
    high = schema["le"] if "le" in schema else schema["lt"] - step if "lt" in schema else None
    if kind == "float" and "gt" in schema and "lt" in schema:  # a narrow open range: its middle
        low = high = (schema["gt"] + schema["lt"]) / 2
    value = 42 if kind == "int" else 0.5
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return math.ceil(value) if kind == "int" else value
