"""The one walk over nested JSON-like values (mappings, lists, tuples, sets, frozensets):
masking, serialization and the server's nesting check are each a few callbacks on it."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Generic, NoReturn, TypeVar

import orjson

State = TypeVar("State")
Out = TypeVar("Out")

# What the walk descends into; anything else is a leaf. Built once: a union spelled
# inside the loop would be rebuilt on every node.
CONTAINERS: tuple[type, ...] = (dict, list, tuple, set, frozenset, Mapping)

# (slot in the output container, child value, child's state)
Child = tuple[Any, object, State]


@dataclass(frozen=True)
class TreeCopy(Generic[State, Out]):
    """How to copy a tree: a leaf's output, a container's output and children, and the
    replacements for containers nested too deep or already on the current path.

    ``open`` returns the (still empty) output container and its children; the walk
    stores each child's output at its slot (``out[slot] = ...``). It consumes the
    children lazily, between other callbacks: list a mutable container's children from
    a snapshot, so that user code a callback runs (a ``__str__``) cannot change them
    mid-walk. ``close``, if given, runs on a container's input and output once all its
    children are stored. With ``revisit`` off, a container met a second time anywhere
    (not only on the current path) is replaced by ``circular()``: each is walked once.
    """

    leaf: Callable[[object, State], Out]
    open: Callable[[Any, State], tuple[Out, Iterable[Child[State]]]]
    # The root container is at depth 0; a container deeper than this is replaced.
    max_depth: int
    too_deep: Callable[[], Out]
    circular: Callable[[], Out]
    close: Callable[[Any, Out], None] | None = None
    revisit: bool = True

    def copy(self, value: object, state: State) -> Out:
        """The output for ``value``, walked iteratively (no depth raises RecursionError)."""
        # str first: the commonest leaf, and cheaper to rule out than the ABCs.
        if type(value) is str or not isinstance(value, CONTAINERS):
            return self.leaf(value, state)
        if self.max_depth < 0:
            return self.too_deep()
        leaf, open_, close, max_depth = self.leaf, self.open, self.close, self.max_depth
        root, root_children = open_(value, state)
        # One frame per open container, the root's first: its remaining children, output
        # and input. A frame's children are at depth len(stack).
        stack: list[tuple[Iterator[Child[State]], Any, Any]] = [(iter(root_children), root, value)]
        path = {id(value)}
        while stack:
            children, out, item = stack[-1]
            for slot, child, child_state in children:
                if type(child) is str or not isinstance(child, CONTAINERS):
                    out[slot] = leaf(child, child_state)
                elif len(stack) > max_depth:
                    out[slot] = self.too_deep()
                elif id(child) in path:
                    out[slot] = self.circular()
                else:
                    path.add(id(child))
                    child_out, grandchildren = open_(child, child_state)
                    out[slot] = child_out
                    stack.append((iter(grandchildren), child_out, child))
                    break
            else:
                stack.pop()
                if self.revisit:
                    path.discard(id(item))
                if close is not None:
                    close(item, out)
        return root


# Raised from inside the walk: it stops at the first container past the limit.
class _Exceeded(Exception):
    pass


def _exceeded() -> NoReturn:
    raise _Exceeded


def _ignore(_value: object, _state: None) -> None:
    return None


def open_unkept(item: Any, state: State) -> tuple[dict[int, object], Iterable[Child[State]]]:
    """An ``open`` for walks that keep no copy (a check, a collection): every child of
    ``item`` with the same ``state``, their outputs all dropped in one throwaway slot."""
    # dict is checked before the Mapping ABC, which is slower to test.
    values = item.values() if isinstance(item, (dict, Mapping)) else item
    return {}, zip(repeat(0), values, repeat(state))


# Callers pass a constant limit: building the walk once per limit keeps small checks cheap.
@functools.lru_cache(maxsize=16)
def _depth_walk(limit: int) -> TreeCopy[None, object]:
    return TreeCopy(
        leaf=_ignore,
        open=open_unkept,
        # The walk puts the root container at depth 0; the limit counts it as level 1.
        max_depth=limit - 1,
        too_deep=_exceeded,
        circular=_exceeded,
    )


def exceeds_depth(value: object, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers deep (a cycle always does)."""
    try:
        _depth_walk(limit).copy(value, None)
    except _Exceeded:
        return True
    return False


class SerializedJson(str):
    """JSON text already serialized (a large masked body, made in a worker process):
    the database's JSON columns store it as it is instead of serializing a value again."""


# What a rendered-fields write stores: the fields, or their JSON text.
JsonFields = dict[str, Any] | SerializedJson


# An integer token of 19 digits or more may not fit in 64 bits, which orjson reads as a
# float (changing it) and cannot write. Such text takes the standard library's path,
# which keeps integers of any size exactly. (A long digit run inside a string also
# takes it: slower, never wrong.) Found by mapping every digit to "0" and anything else
# to "." and searching for 19 zeros: two passes in C, a tenth of a regular expression's
# time on the request path (each character is a start the expression would try).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x2E for i in range(256))
_LONG_DIGITS = b"0" * 19


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | str) -> Any:
    """JSON text to a value, integers of any size kept exact; NaN and Infinity refused
    (``ValueError``), as in strict JSON."""
    data = raw.encode() if isinstance(raw, str) else raw
    if _LONG_DIGITS not in data.translate(_DIGITS_AS_ZEROS):
        return orjson.loads(data)
    return json.loads(data, parse_constant=_no_constants)


def dumps(value: Any) -> str:
    """A value to compact JSON text, integers of any size kept exact."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # Only an integer beyond 64 bits takes this path: orjson refuses it.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
