"""Structured answer types: from a Python type to a plain-JSON schema, and back to an instance.

An event's type is stored with its request as a schema of plain JSON, because the server that
shows the form and checks answers may run in another process, without the task's classes:

    {"kind": "object", "name": "Review", "model": "dataclass", "fields": [
        {"name": "score", "type": {"kind": "int", "ge": 1, "le": 5}, "required": true},
        {"name": "label", "type": {"kind": "choice", "name": "Label", "choices": ["cat", "dog"],
                                   "labels": ["CAT", "DOG"]}, "required": true},
        {"name": "tags", "type": {"kind": "list", "items": {"kind": "str"}}, "required": false,
         "default": [], "description": "one per line"},
        {"name": "due", "type": {"kind": "date"}, "required": false, "nullable": true, "default": null}]}

Kinds: int, float, str, bool, date, datetime, choice (an Enum or a Literal), list (of int, float,
str or a choice) and object (a dataclass, TypedDict or pydantic model whose fields are any of the
others, optionally ``| None``). Nested models are refused, naming the field.

What runs where:
- `_schema.check(schema, raw)` needs the schema only: the server runs it on every answer and stores
  nothing unless every field passes (all offending fields are named at once).
- `TypeSpec.build(json)` needs the Python type: the waiting task runs it on the stored answer,
  so the type's own validation runs there (pydantic validators, a dataclass's ``__post_init__``).
  A server in the task's own process runs it before storing, too (see `_values.remember`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import Any

import typing_extensions

from ._errors import InvalidValueError, UnsupportedTypeError
from ._schema import Json, Schema, build_datetime, check, field_failure, linear_pattern

SCALARS: dict[type, str] = {int: "int", float: "float", str: "str", bool: "bool"}
_NUMERIC = ("ge", "gt", "le", "lt")
_LENGTHS = ("min_length", "max_length")
_MAX_FIELDS = 100
_MAX_CHOICES = 1000


@dataclasses.dataclass(frozen=True)
class _Node:
    """One type, as its schema (for the server) plus what rebuilds an instance (for the task)."""

    schema: Schema
    build: Callable[[Json], Any]
    encode: Callable[[Any], Json]


# -- from a Python type to a node -----------------------------------------------------------------


def node_for(data_type: object) -> _Node:
    """The node of a top-level answer type; `UnsupportedTypeError` names what cannot be shown."""
    if _model_kind(data_type) is not None:
        return _object_node(data_type)
    if _split_optional(_strip_annotated(data_type)[0])[1]:
        raise UnsupportedTypeError(
            f"unsupported data_type {data_type!r}: Optional is for the fields of a dataclass, TypedDict or "
            "pydantic model; a top-level answer is always given (use default= for no answer)"
        )
    return _value_node(data_type, None)


def _value_node(tp: object, field: str | None, constraints: Mapping[str, Any] | None = None) -> _Node:
    tp, _, more = _strip_annotated(tp)
    constraints = {**(constraints or {}), **more}
    where = f"field {field!r} of type {tp!r}" if field else f"data_type {tp!r}"
    if tp in SCALARS:
        return _scalar_node(SCALARS[tp], constraints, field)  # type: ignore[index]
    if tp is datetime:
        return _Node({"kind": "datetime"}, build_datetime, _encode_datetime)
    if tp is date:
        return _Node({"kind": "date"}, date.fromisoformat, _encode_date)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_node(tp, where)
    if typing_extensions.get_origin(tp) in (typing.Literal, typing_extensions.Literal):
        return _literal_node(tp, where)
    if typing_extensions.get_origin(tp) is list:
        (item_type,) = typing_extensions.get_args(tp) or (None,)
        try:
            item = _value_node(item_type, field) if item_type is not None else None
        except UnsupportedTypeError:
            item = None
        if item is None or item.schema["kind"] not in ("int", "float", "str", "choice"):
            raise UnsupportedTypeError(f"unsupported {where}: lists hold int, float, str, an Enum or a Literal", field)
        schema = {"kind": "list", "items": item.schema, **_pick(constraints, _LENGTHS)}
        return _Node(schema, lambda v: [item.build(x) for x in v], lambda v: [item.encode(x) for x in v])
    if _model_kind(tp) is not None:
        raise UnsupportedTypeError(
            f"unsupported {where}: nested models are not supported; make its fields fields of the outer type",
            field,
        )
    raise UnsupportedTypeError(
        f"unsupported {where}: use int, float, str, bool, date, datetime, an Enum, a Literal, list[...] of those, "
        "or a dataclass, TypedDict or pydantic model of those",
        field,
    )


def _scalar_node(kind: str, constraints: Mapping[str, Any], field: str | None) -> _Node:
    from ._values import parse_value

    allowed = (_NUMERIC if kind in ("int", "float") else ()) + (("pattern", *_LENGTHS) if kind == "str" else ())
    schema = {"kind": kind, **_pick(constraints, allowed)}
    if "pattern" in schema:
        try:
            linear_pattern(str(schema["pattern"]))
        except ImportError:
            pass
        except ValueError as e:
            raise UnsupportedTypeError(
                f"field {field!r}: its pattern {schema['pattern']!r} cannot be checked in linear time: {e}", field
            ) from None
    return _Node(schema, lambda v: parse_value(v, kind), lambda v: v)


def _enum_node(tp: type[enum.Enum], where: str) -> _Node:
    members = list(tp)
    values = [m.value for m in members]
    if not members or len(members) > _MAX_CHOICES or not all(_is_choice_value(v) for v in values):
        raise UnsupportedTypeError(f"unsupported {where}: an Enum's values must be str, int or float", None)
    schema = {"kind": "choice", "name": tp.__name__, "choices": values, "labels": [m.name for m in members]}
    return _Node(schema, tp, lambda v: v.value if isinstance(v, enum.Enum) else v)


def _literal_node(tp: object, where: str) -> _Node:
    values = list(typing_extensions.get_args(tp))
    if not values or len(values) > _MAX_CHOICES or not all(_is_choice_value(v) for v in values):
        raise UnsupportedTypeError(f"unsupported {where}: a Literal's values must be str, int or float", None)
    return _Node({"kind": "choice", "choices": values}, lambda v: v, lambda v: v)


def _is_choice_value(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _object_node(tp: Any) -> _Node:
    model = _model_kind(tp)
    fields: list[Schema] = []
    nodes: dict[str, _Node] = {}
    for name, annotation, required, default, description in _model_fields(tp, model):
        # Annotated may sit outside the Optional, inside it, or both.
        outer, docs, constraints = _strip_annotated(annotation)
        try:
            inner, nullable = _split_optional(outer)
        except UnsupportedTypeError as e:
            raise UnsupportedTypeError(f"unsupported field {name!r} of type {outer!r}: {e}", name) from None
        inner, more_docs, more = _strip_annotated(inner)
        node = _value_node(inner, name, {**constraints, **more})
        entry: Schema = {"name": name, "type": node.schema, "required": required}
        text = description or " ".join(docs + more_docs) or None
        if text:
            entry["description"] = str(text)
        if default is None:
            nullable = True
            entry["default"] = None
        elif default is not dataclasses.MISSING:
            try:
                entry["default"] = check(node.schema, node.encode(default))
            except (InvalidValueError, TypeError, ValueError, AttributeError) as e:
                raise UnsupportedTypeError(f"field {name!r}: its default {default!r} does not fit: {e}", name) from e
        if nullable:
            entry["nullable"] = True
        fields.append(entry)
        nodes[name] = node
    if not fields:
        raise UnsupportedTypeError(f"unsupported data_type {tp!r}: it has no fields to ask for")
    if len(fields) > _MAX_FIELDS:
        raise UnsupportedTypeError(f"unsupported data_type {tp!r}: more than {_MAX_FIELDS} fields")
    schema = {"kind": "object", "name": tp.__name__, "model": model, "fields": fields}
    nullable_names = {f["name"] for f in fields if f.get("nullable")}

    def build_fields(value: Mapping[str, Json]) -> dict[str, Any]:
        return {
            k: (None if v is None and k in nullable_names else nodes[k].build(v))
            for k, v in value.items()
            if k in nodes
        }

    def encode(value: Any) -> Json:
        return _encode_model(value, nodes)

    return _Node(schema, functools.partial(_build_model, tp, model, build_fields), encode)


def _model_kind(tp: object) -> str | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "dataclass"
    if typing_extensions.is_typeddict(tp):
        return "typeddict"
    pydantic = sys.modules.get("pydantic")  # a model's module imported pydantic already; we never do first
    if pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return "pydantic"
    return None


def _model_fields(tp: Any, model: str | None) -> list[tuple[str, object, bool, Any, str | None]]:
    """(name, annotation, required, default or MISSING, description) per field, in declaration order."""
    out = []
    if model == "pydantic":
        for name, info in tp.model_fields.items():
            if info.alias not in (None, name):
                raise UnsupportedTypeError(f"field {name!r} has an alias ({info.alias!r}); aliases are not supported")
            annotation = info.annotation
            if info.metadata:
                annotation = typing_extensions.Annotated[(annotation, *info.metadata)]
            default = dataclasses.MISSING if info.is_required() else info.get_default(call_default_factory=True)
            out.append((name, annotation, info.is_required(), default, info.description))
        return out
    try:
        hints = typing_extensions.get_type_hints(tp, include_extras=True)
    except Exception as e:  # a forward reference that does not resolve, from the user's module
        raise UnsupportedTypeError(f"cannot read the field types of {tp!r}: {e}") from e
    if model == "typeddict":
        required_keys = getattr(tp, "__required_keys__", frozenset(hints))
        for name, annotation in hints.items():
            origin = typing_extensions.get_origin(annotation)
            required = origin is typing_extensions.Required or (
                origin is not typing_extensions.NotRequired and name in required_keys
            )
            out.append((name, _strip_required(annotation), required, dataclasses.MISSING, None))
        return out
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        meta = f.metadata
        description = meta.get("description") or meta.get("doc") or meta.get("help")
        out.append((f.name, hints[f.name], default is dataclasses.MISSING, default, description))
    return out


def _strip_required(tp: object) -> object:
    while typing_extensions.get_origin(tp) in (
        typing_extensions.Required,
        typing_extensions.NotRequired,
        typing_extensions.ReadOnly,
    ):
        tp = typing_extensions.get_args(tp)[0]
    return tp


def _strip_annotated(tp: object) -> tuple[object, list[str], dict[str, Any]]:
    """The bare type, the strings in its Annotated metadata (docs), and its constraints (ge, pattern...)."""
    docs: list[str] = []
    constraints: dict[str, Any] = {}
    while typing_extensions.get_origin(tp) is typing_extensions.Annotated:
        tp, *metadata = typing_extensions.get_args(tp)
        for item in _unpack_field_info(metadata):
            if isinstance(item, str):
                docs.append(item)
                continue
            for name in (*_NUMERIC, *_LENGTHS, "pattern"):
                value = getattr(item, name, None)
                if value is not None and not callable(value):
                    constraints[name] = value if name != "pattern" else str(getattr(value, "pattern", value))
    return tp, docs, constraints


def _unpack_field_info(metadata: list[Any]) -> list[Any]:
    """`metadata` with each pydantic ``Field(...)`` replaced by what it holds: its constraints (annotated_types
    objects, and pydantic's own metadata carrying ``pattern``) and its description, read like a doc string."""
    fields = sys.modules.get("pydantic.fields")  # a FieldInfo exists only once pydantic is imported (not here)
    if fields is None:
        return metadata
    out = []
    for item in metadata:
        if isinstance(item, fields.FieldInfo):
            out += [*item.metadata, *([item.description] if item.description else [])]
        else:
            out.append(item)
    return out


def _split_optional(tp: object) -> tuple[object, bool]:
    origin = typing_extensions.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing_extensions.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing_extensions.get_args(tp)) == 2:
            return args[0], True
        raise UnsupportedTypeError("a union other than X | None cannot be asked for")
    return tp, False


def _pick(constraints: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    picked = {}
    for name in names:
        value = constraints.get(name)
        if value is None:
            continue
        if name == "pattern" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            picked[name] = value
    return picked


# -- building and encoding ------------------------------------------------------------------------


def _encode_date(value: object) -> Json:
    if isinstance(value, datetime):
        raise InvalidValueError(f"expected a date, got the datetime {value!r}", value)
    return value.isoformat() if isinstance(value, date) else value


def _encode_datetime(value: object) -> Json:
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def _build_model(
    tp: Any, model: str | None, build_fields: Callable[[Mapping[str, Json]], dict[str, Any]], value: Json
) -> Any:
    if model == "pydantic":
        from pydantic import ValidationError

        try:
            return tp.model_validate_json(json.dumps(value))
        except ValidationError as e:
            errors = {str(err["loc"][0]) if err["loc"] else "": err["msg"] for err in e.errors()}
            raise field_failure(errors, value) from None
    kwargs = build_fields(value)
    if model == "typeddict":
        return kwargs
    try:
        return tp(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ refused it
        raise InvalidValueError(f"{tp.__name__} refused the answer: {e}", value) from None


def _encode_model(value: Any, nodes: Mapping[str, _Node]) -> Json:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name in nodes}
    elif hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        items = {name: getattr(value, name) for name in nodes}
    elif isinstance(value, Mapping):
        items = dict(value)
    else:
        return value
    return {k: (nodes[k].encode(v) if k in nodes and v is not None else v) for k, v in items.items()}


def encode(value: Any) -> Json:
    """Plain JSON for an answer of any supported type, for sending or storing it.

    Example:
        >>> encode(Size.M), encode(date(2026, 12, 1)), encode(Review(score=4, label=Label.CAT))
        ('M', '2026-12-01', {'score': 4, 'label': 'cat'})
    """
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return _encode_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        return {name: encode(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value
