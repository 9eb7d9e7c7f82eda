"""The server side of an answer type: checking an answer against the stored request, with no Python classes.

An event's request stores its type as ``data_type`` (the four scalars int, float, str, bool keep their
2.12.1 records: a name and no schema) and, for every other type, a plain-JSON ``schema`` that
`_task_types` makes from the Python type:

    {"kind": "object", "name": "Review", "model": "dataclass", "fields": [
        {"name": "score", "type": {"kind": "int", "ge": 1, "le": 5}, "required": true},
        {"name": "label", "type": {"kind": "choice", "name": "Label", "choices": ["cat", "dog"],
                                   "labels": ["CAT", "DOG"]}, "required": true},
        {"name": "tags", "type": {"kind": "list", "items": {"kind": "str", "max_length": 20}}, "required": false},
        {"name": "due", "type": {"kind": "date"}, "required": false, "nullable": true, "default": null}]}

Kinds: int, float, str, bool, date, datetime, choice, list and object. Rules: ``ge``, ``gt``, ``le``,
``lt``, ``multiple_of`` (numbers); ``min_length``, ``max_length`` (text, lists); ``pattern``,
``strip_whitespace``, ``to_lower``, ``to_upper`` (text). A field without ``default`` that is not
``required`` is left out of the stored answer when not given: the task's type fills it.

A server that has only the request runs `check_answer` on every answer and stores nothing unless every
field passes (all offending fields are named at once). An answer that does not fit is an error, never a
silent guess: "ture" is not False and "4.5" is not 4. Every check runs in time linear in the answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from ._errors import InvalidValueError

Json = Any
Schema = dict[str, Any]
Value = int | float | str | bool

#: Longest list answer, in items.
MAX_LIST_ITEMS = 1000
#: Deepest nesting of lists and objects in a value (an answer's deepest type is a list in an object;
#: an event's details may nest more).
MAX_DEPTH = 32
#: Form fields of a structured answer are named with this prefix, apart from request_id, token, comment.
FIELD_PREFIX = "f."

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
# Length caps keep every check linear and short: Python converts at most 4300 digits to an int, and a
# float needs far fewer than 1000 characters. No regular expression: a backtracking one took seconds
# on 20,000 digits, holding the GIL (and so the whole server) meanwhile.
_MAX_INT_DIGITS = 4000
_MAX_FLOAT_CHARS = 1000
_DIGITS = frozenset("0123456789")
_FLOAT_CHARS = frozenset("0123456789+-.eE")
_EXAMPLES = {"int": "42", "float": "0.5", "str": "any text", "bool": "true or false"}
_MAX_DATE_CHARS = 64
# Longer text cannot be a choice: it is refused without comparing it with each one.
_MAX_CHOICE_TEXT = 10_000
# The formats read the same on every Python this package supports and by pydantic (whose datetime takes no
# offset with seconds): date YYYY-MM-DD; datetime YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|±HH:MM].
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)", re.ASCII)
_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?(Z|[+-]\d\d:\d\d)?", re.ASCII
)
DATETIME_FORMAT = "YYYY-MM-DDTHH:MM[:SS[.ffffff]] with Z or ±HH:MM (no zone: UTC)"


# -- the four scalars -----------------------------------------------------------------------------


def parse_value(raw: object, name: str, *, choices: Sequence[Value] | None = None) -> Value:
    """Check a scalar answer (text from a form, or any JSON value) and return it as the event's type.

    Example:
        >>> parse_value("42", "int"), parse_value("Yes", "bool")
        (42, True)
    """
    value: Value = _PARSERS[name](raw)
    if choices is not None and value not in choices:
        raise not_an_option(raw, [wire(c) for c in choices])
    return value


def _fail(raw: object, name: str) -> InvalidValueError:
    return InvalidValueError(f"invalid value {_short(raw)!r}: expected {name} (for example {_EXAMPLES[name]})", raw)


def _parse_int(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and len(raw) <= _MAX_INT_DIGITS + 64:
        text = raw.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        if 0 < len(digits) <= _MAX_INT_DIGITS and _DIGITS.issuperset(digits):
            return int(text)
    raise _fail(raw, "int")


def _parse_float(raw: object) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:  # a JSON integer beyond float's range
            raise _fail(raw, "float") from None
    elif isinstance(raw, str) and len(raw) <= _MAX_FLOAT_CHARS and _FLOAT_CHARS.issuperset(raw.strip()):
        # Within these characters float() takes exactly decimal and exponent notation: no nan, inf,
        # hex or "1_000" (the underscore is not among them).
        try:
            value = float(raw.strip())
        except ValueError:
            raise _fail(raw, "float") from None
    else:
        raise _fail(raw, "float")
    if not math.isfinite(value):
        raise _fail(raw, "float")
    return value


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower() if isinstance(raw, (str, int)) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidValueError(f"invalid value {_short(raw)!r}: expected bool (true/false, yes/no, 1/0 or on/off)", raw)


def _parse_str(raw: object) -> str:
    if isinstance(raw, str):
        try:
            raw.encode()
        except UnicodeEncodeError:  # a lone surrogate, as JSON can write ("\ud800"): no text, and pydantic refuses it
            raise InvalidValueError(f"invalid value {_short(raw)!r}: not text (a lone surrogate)", raw) from None
        return raw
    raise InvalidValueError(f"invalid value {_short(raw)!r}: expected str (a JSON string)", raw)


_PARSERS: dict[str, Callable[[object], Value]] = {
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "str": _parse_str,
}


# -- dates ----------------------------------------------------------------------------------------


def parse_date(text: str) -> date:
    """A date written YYYY-MM-DD; ValueError otherwise."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not YYYY-MM-DD: {text!r}")
    return date(*map(int, match.groups()))


def parse_datetime(text: str) -> datetime:
    """An aware datetime in `DATETIME_FORMAT` (one without a zone is read as UTC); ValueError otherwise.

    Example:
        >>> parse_datetime("2026-12-01T14:30:00.123Z").isoformat()
        '2026-12-01T14:30:00.123000+00:00'
    """
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not {DATETIME_FORMAT}: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = timezone.utc
    if zone and zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:])
        if minutes > 59:
            raise ValueError(f"bad offset {zone!r}")
        tz = timezone((-1 if zone[0] == "-" else 1) * timedelta(hours=hours, minutes=minutes))
    micros = int((fraction or "0").ljust(6, "0"))
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, tz)


# -- checking against a schema --------------------------------------------------------------------


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
        if not isinstance(raw, list):
            raise InvalidValueError(f"expected a list (a JSON array), got {_short(raw)!r}", raw)
        if len(raw) > MAX_LIST_ITEMS:
            raise InvalidValueError(f"a list of {len(raw)} items is longer than the limit of {MAX_LIST_ITEMS}", None)
        value: Json = [check(schema["items"], item) for item in raw]
    elif kind == "choice":
        return _check_choice(schema, raw)
    elif kind in ("date", "datetime"):
        return _check_moment(kind, raw)
    else:
        value = parse_value(raw, kind)
        if isinstance(value, str):
            value = _transformed(schema, value)
    _check_rules(schema, value, raw)
    return value


def _transformed(schema: Schema, text: str) -> str:
    # In pydantic's order: strip, then change case, then check lengths and pattern.
    if schema.get("strip_whitespace"):
        text = text.strip()
    if schema.get("to_lower"):
        text = text.lower()
    if schema.get("to_upper"):
        text = text.upper()
    return text


def _check_rules(schema: Schema, value: Any, raw: object) -> None:
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
    if "multiple_of" in schema and not _is_multiple(value, schema["multiple_of"]):
        raise fail(f"is not a multiple of {schema['multiple_of']!r}")
    if "min_length" in schema and len(value) < schema["min_length"]:
        raise fail(f"is shorter than the minimum length {schema['min_length']}")
    if "max_length" in schema and len(value) > schema["max_length"]:
        raise fail(f"is longer than the maximum length {schema['max_length']}")
    if "pattern" in schema and not _passes(linear_pattern(str(schema["pattern"])), value):
        raise fail(f"does not match the pattern {schema['pattern']!r}")


def _is_multiple(value: int | float, step: int | float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    return _passes(_core_validator("float", multiple_of=step), value)  # pydantic's test, which allows rounding


def _check_choice(schema: Schema, raw: Json) -> Json:
    # Exact JSON values, or the text a form sends for them ("3" for 3): one scan, the text stripped once.
    text = raw.strip() if isinstance(raw, str) and len(raw) <= _MAX_CHOICE_TEXT else None
    for choice in schema["choices"]:
        if not isinstance(raw, bool) and raw == choice and type(raw) in (type(choice), int, float):
            return choice
        if text is not None and text == wire(choice):
            return choice
    # Else the label people see (an Enum member's name): labels are distinct, and a value wins over a label.
    labels = schema.get("labels") or []
    if text is not None and text in labels:
        return schema["choices"][labels.index(text)]
    raise not_an_option(raw, labels or [wire(c) for c in schema["choices"]])


def not_an_option(raw: object, shown: Sequence[str]) -> InvalidValueError:
    """The refusal of a value that is none of the options `shown` (as people see them), in the same
    words on the form and in JSON."""
    listed = ", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")
    return InvalidValueError(f"{_short(raw)!r} is not an option; choose one of {listed}", raw)


def _check_moment(kind: str, raw: Json) -> Json:
    if isinstance(raw, str) and len(raw) <= _MAX_DATE_CHARS:
        try:
            return (parse_date(raw) if kind == "date" else parse_datetime(raw)).isoformat()
        except ValueError:
            pass
    if kind == "date":
        raise InvalidValueError(f"invalid date {_short(raw)!r}: expected YYYY-MM-DD (ISO 8601)", raw)
    raise InvalidValueError(f"invalid datetime {_short(raw)!r}: expected {DATETIME_FORMAT}", raw)


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
            elif f["required"] or name in raw:
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
    """An `InvalidValueError` naming each offending field, with `field_errors` set."""
    listed = "; ".join(f"{name}: {why}" for name, why in errors.items())
    return InvalidValueError(f"invalid answer: {listed}", raw, field_errors=errors)


def _passes(validate: Callable[[Any], object], value: object) -> bool:
    try:
        validate(value)
    except ValueError:
        return False
    return True


def linear_pattern(pattern: str) -> Callable[[str], object]:
    """A check of `pattern` anywhere in a text (as pydantic reads patterns) by pydantic-core's Rust regex
    engine, which runs in linear time. ValueError for a pattern that engine refuses (look-around,
    back-references: the features that make a backtracking engine slow)."""
    return _core_validator("str", pattern=pattern)


@functools.lru_cache(maxsize=64)
def _core_validator(kind: str, **rules: object) -> Callable[[object], object]:
    from pydantic_core import SchemaError, SchemaValidator, core_schema

    make = core_schema.str_schema if kind == "str" else core_schema.float_schema
    try:
        return SchemaValidator(make(**rules)).validate_python  # type: ignore[arg-type]
    except SchemaError as e:
        raise ValueError(str(e).strip().splitlines()[-1]) from None


# -- a stored request -----------------------------------------------------------------------------


class Builder(Protocol):
    """What the task side gives `remember`: a type's schema and the build that runs its own validation."""

    @property
    def schema(self) -> Schema | None: ...

    def build(self, value: Json) -> Any: ...


# Types of events created in this process, by request id: a server in this process (embedded, or
# `hitl.submit` straight to a root) runs the type's own validation before it stores an answer.
_remembered: dict[str, Builder] = {}
_remembered_lock = threading.Lock()


def remember(request_id: str, spec: Builder) -> None:
    """Let answers to `request_id` given in this process run `spec.build` before they are stored."""
    if spec.schema is not None:
        with _remembered_lock:
            _remembered[request_id] = spec


def forget(request_id: str) -> None:
    """`request_id` has its outcome: no answer will be checked for it any more."""
    with _remembered_lock:
        _remembered.pop(request_id, None)


def check_answer(request: Mapping[str, Any], raw: object) -> Json:
    """Check an answer against the stored request: its type (schema), its choices and, when the
    event was created in this process, the type's own validation. Returns plain JSON to store.

    Example:
        >>> check_answer({"request_id": "x-1", "data_type": "int"}, "42")
        42
    """
    schema = request.get("schema")
    choices = request.get("choices")
    if schema is None:
        return parse_value(raw, str(request["data_type"]), choices=choices)
    if schema.get("kind") in ("object", "list") and isinstance(raw, str):
        # The command line passes its argument as text: '{"score": 4}' is read as the JSON it spells.
        with contextlib.suppress(ValueError, RecursionError):  # the check below says what was expected
            raw = json.loads(raw)
    value = check(schema, encode(raw))
    if value == [] and schema.get("kind") == "list":
        raise InvalidValueError("the answer is a required list: it needs at least one item", raw)
    if choices is not None and value not in choices:
        raise not_an_option(raw, [wire(c) for c in choices])
    spec = _remembered.get(str(request.get("request_id")))
    if spec is not None and spec.schema == schema:
        spec.build(value)
    return value


def form_key(name: str) -> str:
    """The form field that carries a structured answer's field `name`."""
    return FIELD_PREFIX + name


def value_from_form(request: Mapping[str, Any], form: Mapping[str, Sequence[str]]) -> object:
    """The raw answer from a posted form (as ``parse_qs(body, keep_blank_values=True)`` returns it).

    A scalar event's answer is its ``value`` field. A structured one is built from its fields, as the
    same answer in JSON would be: an empty field is None when it may be empty, else it is left out (a
    required one is then reported missing, an optional one gets its default); a list is its checked
    boxes or its lines.

    Example:
        >>> value_from_form(request, {"f.score": ["4"], "f.tags": ["a\nb"]})
        {'score': '4', 'tags': ['a', 'b']}
    """
    schema = request.get("schema")
    if schema is None or schema["kind"] != "object":
        got = _from_inputs(schema or {"kind": str(request["data_type"])}, form.get("value", []), False)
        return "" if got is _MISSING else got
    answer: dict[str, object] = {}
    for f in schema["fields"]:
        got = _from_inputs(f["type"], form.get(form_key(f["name"]), []), bool(f.get("nullable")))
        if got is not _MISSING:
            answer[f["name"]] = got
    return answer


_MISSING = object()


def _from_inputs(schema: Mapping[str, Any], values: Sequence[str], nullable: bool) -> object:
    if schema["kind"] == "list":
        if schema["items"]["kind"] == "choice":  # checkboxes: one form field per ticked box
            items = [v for v in values if v]
        else:
            text = values[0] if values else ""
            items = [line.strip() for line in text.splitlines() if line.strip()]
        return None if not items and nullable else items
    text = values[0] if values else ""
    if text.strip():
        return text
    if nullable:
        return None
    return text if schema["kind"] == "str" and values else _MISSING


# -- plain JSON of any answer ---------------------------------------------------------------------


def encode(value: Any, _depth: int = 0) -> Json:
    """Plain JSON for an answer of any supported type, for sending or storing it: a pydantic model's
    fields under the names it validates (its aliases). A value nested deeper than `MAX_DEPTH` lists
    and objects is an `InvalidValueError`: no answer comes close, and every check stays shallow.

    Example:
        >>> encode(Size.M), encode(date(2026, 12, 1)), encode(Review(score=4, label=Label.CAT))
        ('M', '2026-12-01', {'score': 4, 'label': 'cat'})
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if _depth >= MAX_DEPTH and not isinstance(value, (str, int, float, type(None))):
        raise InvalidValueError(f"value is nested too deeply: at most {MAX_DEPTH} levels of lists and objects")
    inner = _depth + 1
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name), inner) for f in dataclasses.fields(value) if f.init}
    fields = getattr(type(value), "model_fields", None)
    if isinstance(fields, dict) and hasattr(value, "model_dump"):
        return {alias_of(name, info) or name: encode(getattr(value, name), inner) for name, info in fields.items()}
    if isinstance(value, Mapping):
        return {str(k): encode(v, inner) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, inner) for v in value]
    return value


def alias_of(name: str, info: Any) -> str | None:
    """The key pydantic validates a model's field `name` (its `FieldInfo` is `info`) under: its alias, the
    first of its `AliasChoices`, or its name; None for an `AliasPath` (a path into nested data)."""
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    choices = getattr(alias, "choices", None)
    first = choices[0] if choices else alias
    if first is None:
        return name
    return first if isinstance(first, str) else None


# -- readable text --------------------------------------------------------------------------------


def wire(value: Json) -> str:
    """A value as a form sends it: text as is, numbers as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def _short(raw: object) -> object:
    return raw if not isinstance(raw, str) or len(raw) <= 80 else raw[:80] + "..."


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
    rules = (("ge", "≥ "), ("gt", "> "), ("le", "≤ "), ("lt", "< "), ("multiple_of", "multiple of "))
    bounds = [f"{op}{schema[key]}" for key, op in rules if key in schema]
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
    step = schema.get("multiple_of", 1 if kind == "int" else 0.5)
    low = schema["ge"] if "ge" in schema else schema["gt"] + step if "gt" in schema else None
    high = schema["le"] if "le" in schema else schema["lt"] - step if "lt" in schema else None
    if kind == "float" and "gt" in schema and "lt" in schema and "multiple_of" not in schema:
        low = high = (schema["gt"] + schema["lt"]) / 2  # a narrow open range: its middle
    value: int | float = 42 if kind == "int" else 0.5
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    if "multiple_of" in schema:
        value = math.ceil(value / step) * step
    return math.ceil(value) if kind == "int" else value
