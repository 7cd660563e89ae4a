"""The shared walk over nested values: copying, state, cycles, the depth cap."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from itertools import count, repeat
from typing import Any

import pytest

from taskexec.wire import protocol
from taskexec.wire.jsontree import Child, TreeCopy, dumps, exceeds_depth, loads, open_unkept

TOO_DEEP = "<too deep>"
CIRCULAR = "<circular>"


def _leaf(value: object, state: int) -> object:
    """A leaf's output records the state its container handed it."""
    return (value, state)


def _open(item: Any, state: int) -> tuple[object, Iterable[Child[int]]]:
    if isinstance(item, Mapping):
        return dict.fromkeys(item), [(key, child, state + 1) for key, child in item.items()]
    return [None] * len(item), zip(count(), tuple(item), repeat(state + 1))


def _walk(max_depth: int = 100, closed: list[object] | None = None) -> TreeCopy[int, object]:
    def close(item: Any, out: object) -> None:
        if closed is not None:
            closed.append(out)

    return TreeCopy(
        leaf=_leaf,
        open=_open,
        max_depth=max_depth,
        too_deep=lambda: TOO_DEEP,
        circular=lambda: CIRCULAR,
        close=close,
    )


def _chain(depth: int) -> list[object]:
    """``depth`` lists, each the only element of the one before; the last holds "end"."""
    value: list[object] = ["end"]
    for _ in range(depth - 1):
        value = [value]
    return value


def _chain_depth(value: object) -> tuple[int, object]:
    """How many lists wrap the innermost non-list, and that value."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0]
    return depth, value


def test_copy_is_new_containers_with_state_and_slots() -> None:
    value = {"a": [1, ("x", {"b": None})], 3: frozenset({"s"})}
    result = _walk().copy(value, 0)
    assert result == {"a": [(1, 2), [("x", 3), {"b": (None, 4)}]], 3: [("s", 2)]}
    assert value == {"a": [1, ("x", {"b": None})], 3: frozenset({"s"})}
    assert _walk().copy("plain", 7) == ("plain", 7)


def test_close_runs_once_per_container_after_its_children() -> None:
    closed: list[object] = []
    result = _walk(closed=closed).copy([[1], {"k": [2]}], 0)
    assert result == [[(1, 2)], {"k": [(2, 3)]}]
    # Post-order: each output is complete when closed, and the root closes last.
    assert closed == [[(1, 2)], [(2, 3)], {"k": [(2, 3)]}, result]


def test_a_cycle_is_replaced_but_a_shared_value_is_copied_twice() -> None:
    shared = ["s"]
    cyclic: list[object] = [shared, shared]
    cyclic.append(cyclic)
    result = _walk().copy(cyclic, 0)
    assert result == [[("s", 2)], [("s", 2)], CIRCULAR]
    mapping: dict[str, object] = {}
    mapping["self"] = {"again": mapping}
    assert _walk().copy(mapping, 0) == {"self": {"again": CIRCULAR}}


@pytest.mark.parametrize("max_depth", [0, 1, 5, 50])
def test_containers_deeper_than_max_depth_are_replaced(max_depth: int) -> None:
    # The root is at depth 0, so max_depth + 1 containers are kept.
    kept = _walk(max_depth).copy(_chain(max_depth + 1), 0)
    assert _chain_depth(kept) == (max_depth + 1, ("end", max_depth + 1))
    cut = _walk(max_depth).copy(_chain(max_depth + 2), 0)
    assert _chain_depth(cut) == (max_depth + 1, TOO_DEEP)


def test_a_negative_max_depth_replaces_the_root_container_but_not_a_leaf() -> None:
    assert _walk(-1).copy([1], 0) == TOO_DEEP
    assert _walk(-1).copy(1, 0) == (1, 0)


def test_ten_thousand_deep_does_not_raise() -> None:
    value = _chain(10_000)
    assert _chain_depth(_walk(20_000).copy(value, 0)) == (10_000, ("end", 10_000))
    assert _chain_depth(_walk(100).copy(value, 0)) == (101, TOO_DEEP)


@pytest.mark.parametrize("limit", [1, 2, 7, protocol.MAX_NESTING_DEPTH])
def test_exceeds_depth_at_the_limit_and_one_past_it(limit: int) -> None:
    assert not exceeds_depth(_chain(limit), limit)
    assert exceeds_depth(_chain(limit + 1), limit)
    mixed: object = {"leaf": 1}
    for level in range(limit - 1):
        mixed = {"k": mixed, "n": None} if level % 2 else [mixed, "x"]
    assert not exceeds_depth(mixed, limit)
    assert exceeds_depth([mixed], limit)


def test_exceeds_depth_counts_containers_not_width_or_leaves() -> None:
    wide = {f"k{i}": [str(i)] * 100 for i in range(100)}
    assert not exceeds_depth(wide, 2)
    assert exceeds_depth(wide, 1)
    assert not exceeds_depth("text", 0)
    assert exceeds_depth({}, 0)


def test_exceeds_depth_on_a_cycle_and_ten_thousand_deep() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert exceeds_depth(cyclic, 1_000)
    assert exceeds_depth(_chain(10_000), protocol.MAX_NESTING_DEPTH)
    assert not exceeds_depth(_chain(10_000), 10_000)


def test_without_revisit_each_container_is_walked_once() -> None:
    seen: list[object] = []
    walk: TreeCopy[None, object] = TreeCopy(
        leaf=lambda value, _state: seen.append(value),
        open=open_unkept,
        max_depth=10,
        too_deep=lambda: None,
        circular=lambda: "again",
        revisit=False,
    )
    shared = ["leaf"]
    walk.copy([shared, {"a": shared}, shared], None)
    assert seen == ["leaf"]


@pytest.mark.parametrize(
    "text",
    [
        "9223372036854775807",  # 19 digits, the largest 64-bit integer
        "-9223372036854775809",  # 19 digits, one below the smallest
        "18446744073709551616",  # 2**64
        "123456789012345678901234567890",
        '{"a": [1, 99999999999999999999]}',
        '{"id": "1234567890123456789", "n": 123456789012345678}',
    ],
)
def test_loads_keeps_integers_of_any_size_exactly(text: str) -> None:
    assert loads(text.encode()) == json.loads(text)
    assert dumps(loads(text.encode())) == json.dumps(json.loads(text), separators=(",", ":"))


def test_loads_refuses_what_strict_json_refuses_on_both_paths() -> None:
    for text in ("NaN", "[Infinity, 12345678901234567890]", "[1, 2"):
        with pytest.raises(ValueError):
            loads(text.encode())
