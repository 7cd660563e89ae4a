"""Serializing rendered template fields for the API, after Airflow's
``serialize_template_field``, and truncating them to ``max_templated_field_length``."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from itertools import count, repeat
from typing import Any, TypeAlias

from taskexec.wire import jsontree, protocol

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"

TRUNCATION_PREFIX = protocol.TRUNCATION_PREFIX
DEFAULT_MAX_TEMPLATED_FIELD_LENGTH = 4096
# Containers nested deeper than the server accepts are replaced by TOO_DEEP. A value
# cut here keeps MAX_DEPTH + 1 containers (the last one holds the marker), and the
# body's object of fields is one more: together exactly the server's limit.
MAX_DEPTH = protocol.MAX_NESTING_DEPTH - 2
# JSON numbers the server accepts (orjson): signed 64-bit; larger ints are sent as text.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
TOO_DEEP = "<too deep>"
CIRCULAR = "<circular reference>"

_SUFFIX = "..."
# Below this, the cut content would say nothing useful; Airflow then drops it entirely.
_MIN_CONTENT_LENGTH = 7


def _qualname(obj: object) -> str:
    try:
        module = getattr(obj, "__module__", None)
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    except Exception:
        module = name = None
    if not isinstance(name, str):
        # Instances (a functools.partial, an object with __call__) have no name of
        # their own: use their class's.
        cls = type(obj)
        module, name = cls.__module__, cls.__qualname__
    if isinstance(module, str) and module not in ("", "builtins"):
        return f"{module}.{name}"
    return name


def _object_text(value: object) -> str:
    cls = type(value)
    # object's own __str__ / __repr__ only add a memory address, which would make every
    # try's rendered fields differ.
    if cls.__str__ is not object.__str__ or cls.__repr__ is not object.__repr__:
        try:
            return str(value)
        except Exception:
            pass
    return f"<{_qualname(cls)} object>"


def _key_text(key: object) -> str:
    if type(key) is str:
        return key
    try:
        return str(key)
    except Exception:
        return f"<{_qualname(type(key))} object>"


def _serialize_leaf(value: object, _state: None) -> JsonValue:
    if isinstance(value, str):
        # str.__str__ turns a subclass (a StrEnum member, say) into a plain str.
        return value if type(value) is str else str.__str__(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        whole = value if type(value) is int else int(value)
        return whole if _INT_MIN <= whole <= _INT_MAX else _int_text(whole)
    if isinstance(value, float):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if callable(value):
        return f"<callable {_qualname(value)}>"
    return _object_text(value)


def _sort_set(elements: list[JsonValue]) -> None:
    # Natural order when the elements are comparable, else by str() (the elements are
    # serialized already: str() cannot fail on them).
    try:
        elements.sort()
    except TypeError:
        elements.sort(key=str)


def _open(item: Any, _state: None) -> tuple[JsonValue, Iterable[jsontree.Child[None]]]:
    if isinstance(item, Mapping):
        # Keys are stringified first, so that keys equal as strings collapse (the last
        # one wins) before sorting.
        pairs = {_key_text(key): child for key, child in item.items()}
        return dict.fromkeys(sorted(pairs)), zip(pairs.keys(), pairs.values(), repeat(None))
    return [None] * len(item), zip(count(), tuple(item), repeat(None))


def _close(item: Any, out: JsonValue) -> None:
    # A set's order is arbitrary: sorting its serialized elements makes it stable. A
    # tuple of types, not a union: a union here would be rebuilt for every container.
    if isinstance(item, (set, frozenset)) and isinstance(out, list):
        _sort_set(out)


_TREE: jsontree.TreeCopy[None, JsonValue] = jsontree.TreeCopy(
    leaf=_serialize_leaf,
    open=_open,
    max_depth=MAX_DEPTH,
    too_deep=lambda: TOO_DEEP,
    circular=lambda: CIRCULAR,
    close=_close,
)


def serialize_template_field(value: object) -> JsonValue:
    """A JSON-able form of a rendered template field, following Airflow's rules."""
    return _TREE.copy(value, None)


def _int_text(value: int) -> str:
    try:
        return int.__repr__(value)
    except ValueError:
        # Over Python's int-to-str digit limit: only a readable prefix and the length
        # matter in a rendered field.
        return hex(value)


def _json_text(value: JsonValue) -> str:
    # Compact and not ASCII-escaped, like the orjson text the database stores. A
    # serialized value holds only JSON types, 64-bit integers and at most MAX_DEPTH + 1
    # containers, so the standard encoder cannot fail on it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def truncate_rendered_value(rendered: str, max_length: int) -> str:
    """``rendered`` cut to ``max_length`` characters, with the truncation notice."""
    if max_length <= 0:
        return ""
    if len(rendered) <= max_length:
        return rendered
    available = max_length - len(TRUNCATION_PREFIX) - len(_SUFFIX)
    if available < _MIN_CONTENT_LENGTH:
        return TRUNCATION_PREFIX + _SUFFIX
    return TRUNCATION_PREFIX + rendered[:available] + _SUFFIX


def serialize_and_truncate(
    value: object, max_length: int = DEFAULT_MAX_TEMPLATED_FIELD_LENGTH
) -> JsonValue:
    """The serialized field, or its truncated JSON text when that is over ``max_length``."""
    serialized = serialize_template_field(value)
    text = serialized if isinstance(serialized, str) else _json_text(serialized)
    if len(text) > max_length:
        return truncate_rendered_value(text, max_length)
    return serialized
