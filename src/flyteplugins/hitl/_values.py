"""Answer types, their names on the wire, and strict checking of answers.

Both sides use this module: `hitl.py` to declare an event's type (`declare`) and to turn the
stored answer into the type's instance (`build_value`); every writer (`_answers.submit`, and
`_endpoints` for forms) to check an answer before it is stored (`check_answer`, `value_from_form`).
An answer that does not fit is an error, never a silent guess: "ture" is not False and "4.5" is not 4.

The four scalar types (int, float, str, bool) keep their records as they always were: a
``data_type`` name and no schema. Every other type (Enum, Literal, list, date, datetime, dataclass,
TypedDict, pydantic model; see `_types`) also stores its ``schema``, from which a server without
the task's classes shows the form and checks answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

from . import _schema, _types
from ._errors import InvalidEventError, InvalidValueError, UnsupportedTypeError
from ._schema import _short
from ._types import Json, encode

Value = int | float | str | bool

TYPE_NAMES: dict[type, str] = _types.SCALARS
TYPES_BY_NAME: dict[str, type] = {name: tp for tp, name in TYPE_NAMES.items()}

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


#: Form fields of a structured answer are named with this prefix, apart from request_id, token, comment.
FIELD_PREFIX = "f."


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    """An answer type: its wire name, its schema (None for the four scalars) and its conversions.

    Example:
        >>> spec = spec_for(list[int])
        >>> spec.name, spec.check(["1", 2]), spec.build([1, 2])
        ('list[int]', [1, 2], [1, 2])
    """

    name: str
    schema: _schema.Schema | None
    node: _types._Node | None = dataclasses.field(default=None, repr=False, compare=False)

    def check(self, raw: object) -> Json:
        """`raw` checked against the schema (server side, no classes needed), as plain JSON."""
        if self.schema is None:
            return parse_value(raw, self.name)
        return _schema.check(self.schema, _plain(raw))

    def build(self, value: Json) -> Any:
        """The instance for a stored answer (task side): the type's own validation runs here."""
        if self.node is None:
            return parse_value(value, self.name)
        try:
            return self.node.build(value)
        except InvalidValueError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise InvalidValueError(f"answer {value!r} does not build a {self.name}: {e}", value) from None

    def encode(self, value: Any) -> Json:
        """An instance (or plain JSON) as plain JSON."""
        return encode(value) if self.node is None else self.node.encode(value)

    def example(self) -> Json:
        """A placeholder answer, for curl commands."""
        if self.schema is None:
            return {"int": 42, "float": 0.5, "bool": True, "str": "your answer"}[self.name]
        return _schema.example(self.schema)

    def describe(self) -> str:
        """The type as people read it: ``int``, ``list[str]``, ``Review {score: int (≥ 1, ≤ 5), ...}``."""
        return self.name if self.schema is None else _schema.describe(self.schema)


def spec_for(data_type: object) -> TypeSpec:
    """The `TypeSpec` of `data_type`; `UnsupportedTypeError` names a type (or field) that cannot be asked for.

    Example:
        >>> spec_for(int).name
        'int'
        >>> spec_for(Review).schema["fields"][0]["name"]
        'score'
    """
    if isinstance(data_type, type) and data_type in TYPE_NAMES:
        return TypeSpec(TYPE_NAMES[data_type], None)
    try:
        hash(data_type)
    except TypeError:  # unhashable metadata in an Annotated type: build it each time
        return _new_spec(data_type)
    return _cached_spec(data_type)


@functools.lru_cache(maxsize=256)
def _cached_spec(data_type: object) -> TypeSpec:
    # Every event of a type, and every answer its waits build, share one spec.
    return _new_spec(data_type)


def _new_spec(data_type: object) -> TypeSpec:
    try:
        node = _types.node_for(data_type)
    except RecursionError:
        raise UnsupportedTypeError(f"unsupported data_type {data_type!r}: it refers to itself") from None
    schema = node.schema
    name = schema["name"] if schema["kind"] == "object" else _schema.describe(schema)
    return TypeSpec(name, schema, node)


def type_name(data_type: object) -> str:
    """The wire name of `data_type` ('int', 'list[str]', 'Review'...); `UnsupportedTypeError` otherwise."""
    return spec_for(data_type).name


def declare(data_type: object, choices: object = None, default: object = None) -> dict[str, Any]:
    """The request fields for an event's type: ``data_type``, ``schema``, ``choices``, ``default``.

    Raises `UnsupportedTypeError` for the type and `InvalidEventError` for choices or a default
    that do not fit it, before anything is written.

    Example:
        >>> declare(Size, default=Size.M)
        {'data_type': 'Size', 'schema': {...}, 'default': 'M'}
    """
    spec = spec_for(data_type)
    fields: dict[str, Any] = {"data_type": spec.name}
    kind = "scalar" if spec.schema is None else spec.schema["kind"]
    if spec.schema is not None:
        fields["schema"] = spec.schema
    checked: list[Json] | None = None
    if choices is not None:
        if kind not in ("scalar", "choice") or spec.name == "bool":
            what = "a bool event already has two" if spec.name == "bool" else f"not for {spec.name} events"
            raise InvalidEventError(f"choices are for str, int, float, Enum and Literal events; {what}")
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise InvalidEventError(f"choices must be a list of values, got {choices!r}")
        try:
            checked = [spec.check(c) for c in choices]  # type: ignore[attr-defined]
        except InvalidValueError as e:
            raise InvalidEventError(f"choices must all be {spec.name}: {e}") from e
        if not checked or len({repr(c) for c in checked}) != len(checked):
            raise InvalidEventError(f"choices must be a non-empty list of distinct values, got {choices!r}")
        fields["choices"] = checked
        if spec.schema is not None:  # the form offers only the allowed ones
            fields["schema"] = _narrowed(spec.schema, checked)
    if default is not None:
        try:
            value = spec.check(default)
            if checked is not None and value not in checked:
                raise InvalidValueError(f"value {default!r} is not one of the allowed choices {checked!r}", default)
            spec.build(value)
        except InvalidValueError as e:
            raise InvalidEventError(f"default {default!r} does not fit the event: {e}") from e
        fields["default"] = value
    return fields


def _narrowed(schema: _schema.Schema, allowed: list[Json]) -> _schema.Schema:
    keep = [i for i, c in enumerate(schema["choices"]) if c in allowed]
    narrowed = {**schema, "choices": [schema["choices"][i] for i in keep]}
    if "labels" in schema:
        narrowed["labels"] = [schema["labels"][i] for i in keep]
    return narrowed


# Types of events created in this process, by request id: a server in this process (embedded, or
# `hitl.submit` straight to a root) runs the type's own validation before it stores an answer.
_remembered: dict[str, TypeSpec] = {}
_remembered_lock = threading.Lock()


def remember(request_id: str, spec: TypeSpec) -> None:
    """Let answers to `request_id` given in this process run `spec.build` before they are stored."""
    if spec.node is not None:
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
    if schema is None:
        return parse_value(raw, str(request["data_type"]), choices=request.get("choices"))
    if schema.get("kind") in ("object", "list") and isinstance(raw, str):
        # The command line passes its argument as text: '{"score": 4}' is read as the JSON it spells.
        with contextlib.suppress(ValueError, RecursionError):  # the check below says what was expected
            raw = json.loads(raw)
    value = _schema.check(schema, _plain(raw))
    if value == [] and schema.get("kind") == "list":
        raise InvalidValueError("the answer is a required list: it needs at least one item", raw)
    choices = request.get("choices")
    if choices is not None and value not in choices:
        raise InvalidValueError(f"value {_short(raw)!r} is not one of the allowed choices {choices!r}", raw)
    spec = _remembered.get(str(request.get("request_id")))
    if spec is not None and spec.schema == schema:
        spec.build(value)
    return value


def _plain(raw: object) -> Json:
    """`encode(raw)`; a value nested deeper than Python's recursion limit (no answer comes close: the
    deepest type is a list in an object) is an `InvalidValueError`."""
    try:
        return encode(raw)
    except RecursionError:
        raise InvalidValueError("value is nested too deeply: answers hold at most a list in an object") from None


def build_value(data_type: object, value: Json) -> Any:
    """The stored answer `value` as an instance of `data_type` (``Review(...)``, ``Size.M``, ``[1, 2]``)."""
    return spec_for(data_type).build(value)


def form_key(name: str) -> str:
    """The form field that carries a structured answer's field `name`."""
    return FIELD_PREFIX + name


def value_from_form(request: Mapping[str, Any], form: Mapping[str, Sequence[str]]) -> object:
    """The raw answer from a posted form (as ``parse_qs(body, keep_blank_values=True)`` returns it).

    A scalar event's answer is its ``value`` field. A structured one is built from its fields: an
    empty field is left out (so a required one is reported missing), or None when it may be empty;
    a list is its checked boxes or its lines.

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
            return [v for v in values if v]
        text = values[0] if values else ""
        return [line.strip() for line in text.splitlines() if line.strip()]
    text = values[0] if values else ""
    if text.strip():
        return text
    if nullable:
        return None
    return text if schema["kind"] == "str" and values else _MISSING


def parse_value(raw: object, name: str, *, choices: list[Value] | None = None) -> Value:
    """Check an answer and return it as the event's type.

    `raw` is what the client sent: a string from a form, or any JSON value.

    Example:
        >>> parse_value("42", "int")
        42
        >>> parse_value("Yes", "bool")
        True
    """
    value = cast(Value, _PARSERS[name](raw))
    if choices is not None and value not in choices:
        raise InvalidValueError(f"value {raw!r} is not one of the allowed choices {choices!r}", raw)
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
        return raw
    raise InvalidValueError(f"invalid value {raw!r}: expected str (a JSON string)", raw)


_PARSERS = {"int": _parse_int, "float": _parse_float, "bool": _parse_bool, "str": _parse_str}
