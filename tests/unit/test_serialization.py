"""Serializing and truncating rendered template fields (Airflow's rules)."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import json
import math
from typing import Any

import pytest

from taskexec.sdk.serialization import (
    DEFAULT_MAX_TEMPLATED_FIELD_LENGTH,
    MAX_DEPTH,
    TOO_DEEP,
    TRUNCATION_PREFIX,
    serialize_and_truncate,
    serialize_template_field,
    truncate_rendered_value,
)
from taskexec.wire import jsontree, protocol
from taskexec.wire.protocol import is_truncated


class Plain:
    """Only object's __str__ and __repr__."""


class WithStr:
    """A custom __str__."""

    def __str__(self) -> str:
        return "with-str"


class BadStr:
    """A __str__ that raises."""

    def __str__(self) -> str:
        raise RuntimeError("boom")


class CallableObject:
    """An instance with __call__."""

    def __call__(self) -> None:
        return None

    def method(self) -> None:
        return None


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def some_function() -> None:
    return None


def test_constants() -> None:
    assert TRUNCATION_PREFIX == (
        "Truncated. You can change this behaviour in max_templated_field_length. "
    )
    assert DEFAULT_MAX_TEMPLATED_FIELD_LENGTH == 4096


@pytest.mark.parametrize("value", ["text", "", 0, -7, 2**62, 1.5, True, False, None])
def test_json_scalars_are_kept(value: object) -> None:
    result = serialize_template_field(value)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")],
)
def test_non_finite_floats_become_strings(value: float, expected: str) -> None:
    assert serialize_template_field(value) == expected
    assert serialize_template_field([value]) == [expected]


def test_tuples_become_lists_recursively() -> None:
    assert serialize_template_field((1, ("a", (None,)), [2, (3,)])) == [1, ["a", [None]], [2, [3]]]


def test_dict_keys_are_stringified_and_sorted() -> None:
    value = {"b": 1, 10: "ten", "a": {"z": 1, "y": 2}, None: 0, (1, 2): "tuple"}
    result = serialize_template_field(value)
    assert result == {"(1, 2)": "tuple", "10": "ten", "None": 0, "a": {"y": 2, "z": 1}, "b": 1}
    assert isinstance(result, dict)
    assert list(result) == ["(1, 2)", "10", "None", "a", "b"]
    nested = result["a"]
    assert isinstance(nested, dict)
    assert list(nested) == ["y", "z"]


def test_sets_become_sorted_lists() -> None:
    assert serialize_template_field({3, 1, 2}) == [1, 2, 3]
    assert serialize_template_field(frozenset({"b", "c", "a"})) == ["a", "b", "c"]
    assert serialize_template_field({"k": {(2, "b"), (1, "a")}}) == {"k": [[1, "a"], [2, "b"]]}


def test_sets_of_incomparable_elements_sort_by_str() -> None:
    # str(): "1" < "None" < "a" < "b"
    assert serialize_template_field({"b", 1, None, "a"}) == [1, None, "a", "b"]
    # str() of the serialized elements: "['x']" < "x"
    assert serialize_template_field({"x", ("x",)}) == [["x"], "x"]


def test_set_ordering_is_deterministic() -> None:
    values = [f"item-{i}" for i in range(50)]
    first = serialize_template_field(set(values))
    second = serialize_template_field(set(reversed(values)))
    assert first == second == sorted(values)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (some_function, f"<callable {__name__}.some_function>"),
        (lambda: 0, f"<callable {__name__}.<lambda>>"),
        (CallableObject().method, f"<callable {__name__}.CallableObject.method>"),
        (CallableObject(), f"<callable {__name__}.CallableObject>"),
        (CallableObject, f"<callable {__name__}.CallableObject>"),
        (functools.partial(some_function), "<callable functools.partial>"),
        (len, "<callable len>"),
    ],
)
def test_callables(value: object, expected: str) -> None:
    assert serialize_template_field(value) == expected


def test_lambda_qualname_includes_its_scope() -> None:
    def make() -> Any:
        return lambda: 1

    result = serialize_template_field(make())
    assert result == (
        f"<callable {__name__}.test_lambda_qualname_includes_its_scope.<locals>.make"
        ".<locals>.<lambda>>"
    )


def test_objects_with_and_without_custom_str() -> None:
    assert serialize_template_field(WithStr()) == "with-str"
    assert serialize_template_field(Plain()) == f"<{__name__}.Plain object>"
    assert serialize_template_field(BadStr()) == f"<{__name__}.BadStr object>"
    assert serialize_template_field(decimal.Decimal("1.50")) == "1.50"
    assert serialize_template_field(Color.RED) == "Color.RED"
    assert serialize_template_field([Plain(), WithStr()]) == [
        f"<{__name__}.Plain object>",
        "with-str",
    ]


def test_subclasses_of_json_types_become_plain() -> None:
    result = serialize_template_field([Level.HIGH])
    assert result == [3]
    assert isinstance(result, list)
    assert type(result[0]) is int


def test_dates_and_datetimes_use_isoformat() -> None:
    moment = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC)
    assert serialize_template_field(moment) == "2024-05-06T07:08:09.123000+00:00"
    assert serialize_template_field(dt.date(2024, 5, 6)) == "2024-05-06"
    assert serialize_template_field({"when": [moment.date()]}) == {"when": ["2024-05-06"]}


def test_bytes_are_decoded_with_replacement() -> None:
    assert serialize_template_field(b"caf\xc3\xa9") == "café"
    assert serialize_template_field(b"bad \xff byte") == "bad \ufffd byte"
    assert serialize_template_field(bytearray(b"ok")) == "ok"


def test_input_is_not_mutated() -> None:
    value = {"b": [3, (1, 2)], "a": {2, 1}}
    serialize_template_field(value)
    assert value == {"b": [3, (1, 2)], "a": {2, 1}}
    assert list(value) == ["b", "a"]


def test_nesting_up_to_the_limit_is_kept() -> None:
    half = MAX_DEPTH // 2
    value: object = "bottom"
    for _ in range(half):  # MAX_DEPTH containers: a dict and a list per round
        value = {"k": [value]}
    result = serialize_template_field(value)
    for _ in range(half):
        assert isinstance(result, dict)
        inner = result["k"]
        assert isinstance(inner, list)
        result = inner[0]
    assert result == "bottom"
    nested: object = {3, 1}
    for _ in range(MAX_DEPTH - 1):
        nested = (nested,)
    listed = serialize_template_field(nested)
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(listed, list) and len(listed) == 1
        listed = listed[0]
    assert listed == [1, 3]


def test_deeper_than_the_limit_is_replaced() -> None:
    value: object = "bottom"
    for _ in range(MAX_DEPTH + 500):
        value = [value]
    result = serialize_template_field(value)
    depth = 0
    while isinstance(result, list):
        result = result[0]
        depth += 1
    assert result == TOO_DEEP
    assert depth == MAX_DEPTH + 1


def test_very_deep_input_does_not_raise() -> None:
    value: object = "bottom"
    for _ in range(5000):
        value = [value]
    assert "bottom" not in repr(serialize_template_field(value))


def test_ints_beyond_64_bits_become_text() -> None:
    assert serialize_template_field([2**70, -(2**70), 2**63, -(2**63)]) == [
        str(2**70),
        str(-(2**70)),
        2**63,
        -(2**63),
    ]


def test_ints_over_the_digit_limit_become_hex_text() -> None:
    # str() of such an int raises ValueError (Python's int-to-str limit): it used to fail
    # the whole serialization, and with it the try.
    huge = 10**5000
    assert serialize_template_field({"n": huge}) == {"n": hex(huge)}
    cut = serialize_and_truncate({"n": huge}, 100)
    assert isinstance(cut, str) and cut.startswith(TRUNCATION_PREFIX)


def test_cycles_do_not_hang() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    result = serialize_template_field(loop)
    assert isinstance(result, list)
    assert result[0] == 1
    assert isinstance(result[1], str)


def test_serialized_value_is_json_dumpable() -> None:
    value = {"f": some_function, "s": {1, 2}, "t": (Plain(),), "n": math.nan, 1: b"x"}
    text = json.dumps(serialize_template_field(value), allow_nan=False)
    assert json.loads(text) == {
        "1": "x",
        "f": f"<callable {__name__}.some_function>",
        "n": "nan",
        "s": [1, 2],
        "t": [f"<{__name__}.Plain object>"],
    }


# --- truncation ------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [len(TRUNCATION_PREFIX) + 10, 100, 200, 4096])
def test_truncation_total_length_is_max_length(max_length: int) -> None:
    rendered = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    result = truncate_rendered_value(rendered, max_length)
    assert len(result) == max_length
    assert result.startswith(TRUNCATION_PREFIX)
    assert result.endswith("...")
    content = result[len(TRUNCATION_PREFIX) : -3]
    assert content == rendered[: max_length - len(TRUNCATION_PREFIX) - 3]
    assert len(content) >= 7


def test_truncation_keeps_short_values() -> None:
    assert truncate_rendered_value("short", 5) == "short"
    assert truncate_rendered_value("short", 100) == "short"
    assert truncate_rendered_value("", 1) == ""


def test_truncation_with_exactly_seven_characters_of_content() -> None:
    max_length = len(TRUNCATION_PREFIX) + 3 + 7
    result = truncate_rendered_value("0123456789" * 20, max_length)
    assert result == TRUNCATION_PREFIX + "0123456" + "..."
    assert len(result) == max_length


@pytest.mark.parametrize("room", [6, 1, 0])
def test_truncation_with_less_than_seven_characters_of_content(room: int) -> None:
    max_length = len(TRUNCATION_PREFIX) + 3 + room
    result = truncate_rendered_value("x" * 1000, max_length)
    assert result == TRUNCATION_PREFIX + "..."


def test_truncation_when_max_length_is_below_the_prefix() -> None:
    result = truncate_rendered_value("x" * 1000, 20)
    assert result == TRUNCATION_PREFIX + "..."
    assert len(result) > 20


@pytest.mark.parametrize("max_length", [0, -1, -4096])
def test_truncation_with_non_positive_max_length(max_length: int) -> None:
    assert truncate_rendered_value("anything", max_length) == ""
    assert truncate_rendered_value("", max_length) == ""
    assert serialize_and_truncate({"a": 1}, max_length) == ""


def test_serialize_and_truncate_keeps_small_values() -> None:
    value = {"b": (1, 2), "a": "x"}
    assert serialize_and_truncate(value) == {"a": "x", "b": [1, 2]}
    assert serialize_and_truncate("small", 5) == "small"
    assert serialize_and_truncate(None) is None


def test_serialize_and_truncate_big_dict() -> None:
    value = {f"key{i:04d}": "v" * 20 for i in range(500)}
    result = serialize_and_truncate(value, 1000)
    assert isinstance(result, str)
    assert is_truncated(result)
    assert len(result) == 1000
    assert result[len(TRUNCATION_PREFIX) :].startswith('{"key0000":"vvvvv')
    assert result.endswith("...")


def test_serialize_and_truncate_big_str() -> None:
    value = "line\n" * 2000
    result = serialize_and_truncate(value)
    assert isinstance(result, str)
    assert is_truncated(result)
    assert len(result) == DEFAULT_MAX_TEMPLATED_FIELD_LENGTH
    # A str is cut as it is, not as JSON text (no quotes, no escaped newlines).
    assert result[len(TRUNCATION_PREFIX) :].startswith("line\nline\n")


def test_serialize_and_truncate_boundary_uses_json_text_length() -> None:
    value = ["x" * 10]  # JSON text '["xxxxxxxxxx"]' is 14 characters
    assert serialize_and_truncate(value, 14) == ["x" * 10]
    assert is_truncated(serialize_and_truncate(value, 13))
    assert serialize_and_truncate("é" * 10, 10) == "é" * 10


def test_serialize_and_truncate_deep_value() -> None:
    value: object = "bottom"
    for _ in range(5000):
        value = [value]
    result = serialize_and_truncate(value, 300)
    # Cut at the depth the server accepts, with the fields object around it.
    assert not jsontree.exceeds_depth({"field": result}, protocol.MAX_NESTING_DEPTH)
    assert jsontree.exceeds_depth({"field": [result]}, protocol.MAX_NESTING_DEPTH)
    bottom = result
    while isinstance(bottom, list):
        bottom = bottom[0]
    assert bottom == TOO_DEEP


def test_is_truncated() -> None:
    assert is_truncated(TRUNCATION_PREFIX + "...")
    assert is_truncated(truncate_rendered_value("y" * 10_000, 300))
    assert not is_truncated("Truncated.")
    assert not is_truncated("x" + TRUNCATION_PREFIX)
    assert not is_truncated([TRUNCATION_PREFIX])
    assert not is_truncated(None)
