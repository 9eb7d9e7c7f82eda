"""The task side of an answer type: from a Python type to the schema its request stores, and from a
stored answer back to an instance of the type.

Every rule of the type that a server can check travels in the schema (see `_schema`, the server side,
which needs no Python classes); a rule that cannot travel is refused here, at `new_event`, with an
`UnsupportedTypeError` naming the field and the rule. Building an instance checks the schema again and
then runs the type's own code (pydantic validators, a dataclass's ``__post_init__``); a factory default
(``default_factory``) is never stored: it runs each time an instance is built.

Supported: int, float, str, bool, date, datetime, an Enum or a Literal (of str, int or float),
``list[...]`` of int, float, str or a choice, and a dataclass, TypedDict or pydantic model whose fields
are any of those, optionally ``| None``.
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
from datetime import date, datetime
from typing import Any

import typing_extensions

from . import _schema
from ._errors import InvalidEventError, InvalidValueError, UnsupportedTypeError
from ._schema import Json, Schema

TYPE_NAMES: dict[type, str] = {int: "int", float: "float", str: "str", bool: "bool"}

_MAX_FIELDS = 100
_MAX_CHOICES = 1000
# The rules each kind carries (see `_schema`), and pydantic settings that leave a server nothing to check:
# what it stores is already of the exact JSON type (strict), finite (allow_inf_nan), and never a union.
_RULES = {
    "int": ("ge", "gt", "le", "lt", "multiple_of"),
    "float": ("ge", "gt", "le", "lt", "multiple_of"),
    "str": ("min_length", "max_length", "pattern", "strip_whitespace", "to_lower", "to_upper"),
    "list": ("min_length", "max_length"),
}
_HARMLESS = frozenset({"strict", "allow_inf_nan", "coerce_numbers_to_str", "fail_fast", "union_mode"})
_CONFIG_STR_RULES = {
    "str_min_length": "min_length",
    "str_max_length": "max_length",
    "str_strip_whitespace": "strip_whitespace",
    "str_to_lower": "to_lower",
    "str_to_upper": "to_upper",
}


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    """An answer type: its wire name, its schema (None for the four scalars) and its conversions.

    Example:
        >>> spec = spec_for(list[int])
        >>> spec.name, spec.check(["1", 2]), spec.build([1, 2])
        ('list[int]', [1, 2], [1, 2])
    """

    name: str
    schema: Schema | None
    make: Callable[[Json], Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    def check(self, raw: object) -> Json:
        """`raw` (an instance, or plain JSON) checked against the schema as a server does, as plain JSON."""
        if self.schema is None:
            return _schema.parse_value(raw, self.name)
        return _schema.check(self.schema, _schema.encode(raw))

    def build(self, value: Json) -> Any:
        """The instance for a stored answer: the schema's rules, then the type's own validation.

        Raises `InvalidValueError`, with `field_errors` naming each field the type refused ("" for
        the answer as a whole).
        """
        if self.schema is None or self.make is None:
            return _schema.parse_value(value, self.name)
        checked = _schema.check(self.schema, value)
        try:
            return self.make(checked)
        except InvalidValueError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            why = f"{self.name} refused the answer: {e}"
            errors = {"": why} if self.schema["kind"] == "object" else None
            raise InvalidValueError(why, value, field_errors=errors) from None

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
        if _model_kind(data_type) is not None:
            schema, make = _object_node(data_type)
        elif _split_optional(_strip_annotated(data_type, None)[0])[1]:
            raise UnsupportedTypeError(
                f"unsupported data_type {data_type!r}: Optional is for the fields of a dataclass, TypedDict or "
                "pydantic model; a top-level answer is always given (use default= for no answer)"
            )
        else:
            schema, make = _value_node(data_type, None, {}, {})
    except RecursionError:
        raise UnsupportedTypeError(f"unsupported data_type {data_type!r}: it refers to itself") from None
    return TypeSpec(schema["name"] if schema["kind"] == "object" else _schema.describe(schema), schema, make)


def type_name(data_type: object) -> str:
    """The wire name of `data_type` ('int', 'list[str]', 'Review'...); `UnsupportedTypeError` otherwise."""
    return spec_for(data_type).name


def build_value(data_type: object, value: Json) -> Any:
    """The stored answer `value` as an instance of `data_type` (``Review(...)``, ``Size.M``, ``[1, 2]``)."""
    return spec_for(data_type).build(value)


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
            checked = [spec.check(c) for c in choices]
        except InvalidValueError as e:
            raise InvalidEventError(f"choices must all be {spec.name}: {e}") from e
        if not checked or len({repr(c) for c in checked}) != len(checked):
            raise InvalidEventError(f"choices must be a non-empty list of distinct values, got {choices!r}")
        fields["choices"] = checked
        if spec.schema is not None:  # the form offers only the allowed ones
            keep = [i for i, c in enumerate(spec.schema["choices"]) if c in checked]
            fields["schema"] = narrowed = {**spec.schema, "choices": [spec.schema["choices"][i] for i in keep]}
            if "labels" in spec.schema:
                narrowed["labels"] = [spec.schema["labels"][i] for i in keep]
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


# -- from a Python type to a schema and a build ---------------------------------------------------

_Node = tuple[Schema, Callable[[Json], Any]]


def _value_node(tp: object, field: str | None, rules: Mapping[str, Any], str_rules: Mapping[str, Any]) -> _Node:
    """The schema and build of a value type; `rules` come from Annotated metadata around it."""
    tp, _, more = _strip_annotated(tp, field)
    rules = {**rules, **more}
    where = f"field {field!r} of type {tp!r}" if field else f"data_type {tp!r}"
    kind: str | None = None
    schema: Schema
    make: Callable[[Json], Any] = _same
    if tp in TYPE_NAMES:
        kind = TYPE_NAMES[tp]  # type: ignore[index]
        schema = {"kind": kind}
        rules = {**str_rules, **rules} if kind == "str" else rules  # a field's own rule wins over the model's
    elif tp is datetime or tp is date:
        schema, make = {"kind": tp.__name__}, (_schema.parse_datetime if tp is datetime else _schema.parse_date)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        _check_choices([m.value for m in members], f"unsupported {where}: an Enum's values must be str, int or float")
        schema = {"kind": "choice", "name": tp.__name__, "choices": [m.value for m in members]}
        schema["labels"], make = [m.name for m in members], tp
    elif typing_extensions.get_origin(tp) in (typing.Literal, typing_extensions.Literal):
        values = list(typing_extensions.get_args(tp))
        _check_choices(values, f"unsupported {where}: a Literal's values must be str, int or float")
        schema = {"kind": "choice", "choices": values}
    elif typing_extensions.get_origin(tp) is list:
        (item_type,) = typing_extensions.get_args(tp) or (None,)
        try:
            item_schema, item_make = _value_node(item_type, field, {}, str_rules) if item_type else ({}, _same)
        except UnsupportedTypeError:
            item_schema = {}
        if item_schema.get("kind") not in ("int", "float", "str", "choice"):
            raise UnsupportedTypeError(f"unsupported {where}: lists hold int, float, str, an Enum or a Literal", field)
        schema, kind = {"kind": "list", "items": item_schema}, "list"
        make = functools.partial(_build_list, item_make)
    elif _model_kind(tp) is not None:
        raise UnsupportedTypeError(
            f"unsupported {where}: nested models are not supported; make its fields fields of the outer type", field
        )
    elif _is_pydantic_v1(tp):
        raise UnsupportedTypeError(
            f"unsupported {where}: pydantic v1 models are not supported; use pydantic v2's BaseModel "
            "(from pydantic import BaseModel)",
            field,
        )
    else:
        raise UnsupportedTypeError(
            f"unsupported {where}: use int, float, str, bool, date, datetime, an Enum, a Literal, list[...] of "
            "those, or a dataclass, TypedDict or pydantic model of those",
            field,
        )
    for name, value in rules.items():
        value = getattr(value, "pattern", value) if name == "pattern" else value  # a compiled pattern
        if name not in _RULES.get(kind or "", ()) or not _fits_rule(name, value, kind):
            raise UnsupportedTypeError(f"unsupported {where}: the rule {name}={value!r} cannot be checked on it", field)
        schema[name] = value
    if "pattern" in schema:
        try:
            _schema.linear_pattern(schema["pattern"])
        except ValueError as e:
            raise UnsupportedTypeError(
                f"field {field!r}: its pattern {schema['pattern']!r} cannot be checked in linear time: {e}", field
            ) from None
    return schema, make


def _same(value: Json) -> Any:
    return value


def _build_list(item: Callable[[Json], Any], value: list[Json]) -> list[Any]:
    return [item(x) for x in value]


def _fits_rule(name: str, value: object, kind: str | None) -> bool:
    """Whether `value` is plain JSON a server can check rule `name` with."""
    if name == "pattern":
        return isinstance(value, str)
    if name in ("strip_whitespace", "to_lower", "to_upper"):
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int if name.endswith("length") else (int, float)):
        return False
    if name.endswith("length"):
        return value >= 0
    if name == "multiple_of":
        return value > 0 and math.isfinite(value) and (kind != "int" or isinstance(value, int))
    return math.isfinite(value)


def _check_choices(values: list[Any], message: str) -> None:
    def ok(value: object) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        return isinstance(value, (str, int)) and not isinstance(value, bool)

    if not values or len(values) > _MAX_CHOICES or not all(ok(v) for v in values):
        raise UnsupportedTypeError(message, None)


def _object_node(tp: Any) -> _Node:
    model = _model_kind(tp)
    config = (getattr(tp, "model_config", None) if model == "pydantic" else None) or {}
    if model == "dataclass":
        config = getattr(tp, "__pydantic_config__", None) or {}  # a pydantic dataclass validates with it
    str_rules = {rule: config[key] for key, rule in _CONFIG_STR_RULES.items() if config.get(key) not in (None, False)}
    fields: list[Schema] = []
    makers: dict[str, Callable[[Json], Any]] = {}
    for name, annotation, required, default, description in _model_fields(tp, model):
        # Annotated may sit outside the Optional, inside it, or both.
        outer, docs, rules = _strip_annotated(annotation, name)
        try:
            inner, nullable = _split_optional(outer)
        except UnsupportedTypeError as e:
            raise UnsupportedTypeError(f"unsupported field {name!r} of type {outer!r}: {e}", name) from None
        inner, more_docs, more = _strip_annotated(inner, name)
        schema, makers[name] = _value_node(inner, name, {**rules, **more}, str_rules)
        entry: Schema = {"name": name, "type": schema, "required": required}
        text = description or " ".join(docs + more_docs) or None
        if text:
            entry["description"] = str(text)
        if default is None and nullable:
            entry["default"] = None
        elif default is not None and default is not dataclasses.MISSING:
            try:
                entry["default"] = _schema.check(schema, _schema.encode(default))
            except (InvalidValueError, TypeError, ValueError, AttributeError) as e:
                raise UnsupportedTypeError(f"field {name!r}: its default {default!r} does not fit: {e}", name) from e
        if nullable:
            entry["nullable"] = True
        fields.append(entry)
    if not fields:
        raise UnsupportedTypeError(f"unsupported data_type {tp!r}: it has no fields to ask for")
    if len(fields) > _MAX_FIELDS:
        raise UnsupportedTypeError(f"unsupported data_type {tp!r}: more than {_MAX_FIELDS} fields")
    schema = {"kind": "object", "name": tp.__name__, "model": model, "fields": fields}
    return schema, functools.partial(_build_model, tp, model, makers)


def _build_model(tp: Any, model: str | None, makers: Mapping[str, Callable[[Json], Any]], value: Json) -> Any:
    if model == "pydantic":
        from pydantic import ValidationError

        try:
            return tp.model_validate_json(json.dumps(value))
        except ValidationError as e:
            errors = {str(err["loc"][0]) if err["loc"] else "": err["msg"] for err in e.errors()}
            raise _schema.field_failure(errors, value) from None
    kwargs = {k: (None if v is None else makers[k](v)) for k, v in value.items()}
    return kwargs if model == "typeddict" else tp(**kwargs)


def _model_kind(tp: object) -> str | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "dataclass"
    if typing_extensions.is_typeddict(tp):
        return "typeddict"
    pydantic = sys.modules.get("pydantic")  # a model's module imported pydantic already; we never do first
    if pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return "pydantic"
    return None


def _is_pydantic_v1(tp: object) -> bool:
    v1 = sys.modules.get("pydantic.v1")  # imported only by a module that defines such a model
    try:
        return v1 is not None and isinstance(tp, type) and issubclass(tp, v1.BaseModel)
    except TypeError:  # a generic alias (set[int]), which Python 3.10 counts as a type
        return False


def _model_fields(tp: Any, model: str | None) -> list[tuple[str, object, bool, Any, str | None]]:
    """(name, annotation, required, default or MISSING, description) per field, in declaration order.

    The name is the key an answer uses: for pydantic, the one it validates (an alias). A factory
    default counts as MISSING: it is not stored, and runs when the instance is built.
    """
    out = []
    if model == "pydantic":
        from pydantic_core import PydanticUndefined

        for name, info in tp.model_fields.items():
            key = _schema.alias_of(name, info)
            if key is None:
                raise UnsupportedTypeError(
                    f"field {name!r}: its alias {info.validation_alias!r} is a path into nested data; "
                    "an answer's fields are flat",
                    name,
                )
            annotation = info.annotation
            if info.metadata:
                arguments = (annotation, *info.metadata)  # one tuple: a starred subscript needs Python 3.11
                annotation = typing_extensions.Annotated[arguments]
            default = dataclasses.MISSING if info.default is PydanticUndefined else info.default
            required = info.is_required()
            validated = info.validate_default
            if validated is None:
                validated = tp.model_config.get("validate_default")
            if validated and default is None and type(None) not in typing_extensions.get_args(info.annotation):
                required, default = True, dataclasses.MISSING  # pydantic refuses its own default None
            out.append((key, annotation, required, default, info.description))
        if len({row[0] for row in out}) != len(out):
            raise UnsupportedTypeError(f"unsupported data_type {tp!r}: two fields are answered under one name")
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
        if f.init:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            meta = f.metadata
            description = meta.get("description") or meta.get("doc") or meta.get("help")
            out.append((f.name, hints[f.name], required, f.default, description))
    return out


def _strip_required(tp: object) -> object:
    while typing_extensions.get_origin(tp) in (
        typing_extensions.Required,
        typing_extensions.NotRequired,
        typing_extensions.ReadOnly,
    ):
        tp = typing_extensions.get_args(tp)[0]
    return tp


def _strip_annotated(tp: object, field: str | None) -> tuple[object, list[str], dict[str, Any]]:
    """The bare type, the strings in its Annotated metadata (docs), and its rules (ge, pattern...).

    Metadata that pydantic would apply and no server can (a `Predicate`, an unknown constraint) is an
    `UnsupportedTypeError`; pydantic's validators run in the task (`TypeSpec.build`) and are passed by.
    """
    docs: list[str] = []
    rules: dict[str, Any] = {}
    while typing_extensions.get_origin(tp) is typing_extensions.Annotated:
        tp, *metadata = typing_extensions.get_args(tp)
        for item in _flat_metadata(metadata):
            if isinstance(item, str):
                docs.append(item)
                continue
            for name, value in _rules_of(item, field).items():
                if value is not None and name not in _HARMLESS:
                    rules[name] = value
    return tp, docs, rules


def _flat_metadata(metadata: list[Any]) -> list[Any]:
    """`metadata` with each pydantic ``Field(...)`` replaced by what it holds (its constraints, and its
    description read like a doc string) and each group (``Interval``, ``StringConstraints``) by its parts."""
    fields = sys.modules.get("pydantic.fields")  # a FieldInfo exists only once pydantic is imported (not here)
    annotated_types = sys.modules.get("annotated_types")
    out = []
    for item in metadata:
        if fields is not None and isinstance(item, fields.FieldInfo):
            out += _flat_metadata([*item.metadata, *([item.description] if item.description else [])])
        elif annotated_types is not None and isinstance(item, annotated_types.GroupedMetadata):
            out += _flat_metadata(list(item))
        else:
            out.append(item)
    return out


def _rules_of(item: object, field: str | None) -> dict[str, Any]:
    """The rules an annotated_types or pydantic metadata object sets; {} for other objects (pydantic
    ignores them too) and for pydantic's validators."""
    annotated_types = sys.modules.get("annotated_types")
    pydantic_fields = sys.modules.get("pydantic._internal._fields")
    at = annotated_types
    known = at is not None and isinstance(item, (at.Gt, at.Ge, at.Lt, at.Le, at.MultipleOf, at.MinLen, at.MaxLen))
    if known or (pydantic_fields is not None and isinstance(item, pydantic_fields.PydanticMetadata)):
        if dataclasses.is_dataclass(item):
            return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
        return dict(vars(item))
    if annotated_types is not None and isinstance(item, (annotated_types.BaseMetadata, annotated_types.Not)):
        raise UnsupportedTypeError(f"field {field!r}: the rule {item!r} cannot be checked by a server", field)
    return {}


def _split_optional(tp: object) -> tuple[object, bool]:
    origin = typing_extensions.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing_extensions.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing_extensions.get_args(tp)) == 2:
            return args[0], True
        raise UnsupportedTypeError("a union other than X | None cannot be asked for")
    return tp, False
