"""The four answer types, their names on the wire, and strict checking of answers.

Both sides use this module: `hitl.py` to declare an event's type, `server.py` (and any other
writer) to check an answer before it is stored. An answer that does not fit is an error,
never a silent guess: "ture" is not False and "4.5" is not 4.
"""

from __future__ import annotations

import math

from ._errors import InvalidValueError, UnsupportedTypeError

Value = int | float | str | bool

TYPE_NAMES: dict[type, str] = {int: "int", float: "float", str: "str", bool: "bool"}
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


def type_name(data_type: object) -> str:
    """Return the wire name of `data_type`, raising `UnsupportedTypeError` for anything but the four types."""
    if isinstance(data_type, type) and data_type in TYPE_NAMES:
        return TYPE_NAMES[data_type]
    raise UnsupportedTypeError(f"unsupported data_type {data_type!r}: use int, float, str or bool")


def example(name: str) -> str:
    """A short example of a valid answer for type `name`, for messages and forms."""
    return _EXAMPLES[name]


def parse_value(raw: object, name: str, *, choices: list[Value] | None = None) -> Value:
    """Check an answer and return it as the event's type.

    `raw` is what the client sent: a string from a form, or any JSON value.

    Example:
        >>> parse_value("42", "int")
        42
        >>> parse_value("Yes", "bool")
        True
    """
    value = _PARSERS[name](raw)
    if choices is not None and value not in choices:
        raise InvalidValueError(f"value {raw!r} is not one of the allowed choices {choices!r}", raw)
    return value


def _short(raw: object) -> object:
    # A client may send a megabyte of text; the message names the value without echoing all of it.
    return raw if not isinstance(raw, str) or len(raw) <= 80 else raw[:80] + "..."


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
