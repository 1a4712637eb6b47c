"""EventBridge-style content filters: the `match` field of a pattern, compiled once to closures.

A filter mirrors the event's shape. Every key must match (AND); a leaf is a list of
alternatives (OR), and a scalar leaf stands for a one-element list::

    {payload = {order_value = [{numeric = [">", 0, "<=", 5000]}], region = ["eu", "us"]}}

Alternatives are exact values (string, number, bool, null; 1 matches 1.0, true never
matches 1) or one-key operators: `prefix`, `suffix`, `anything-but` (a value, a list
of values, or `{prefix = ...}` / `{suffix = ...}`), `numeric` (one or two comparisons,
two forming a range) and `exists`. As in EventBridge, arrays in the event are
flattened: a leaf matches when any element matches, and a nested object is matched
against all elements together. A null value exists; an empty array does not.
`anything-but` and the other operators never match a missing field; `numeric` never
matches a bool, a string or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LEAVES",
    "ContentFilter",
    "FilterError",
    "compile_filter",
]

MAX_FILTER_DEPTH = 16
MAX_FILTER_LEAVES = 1000

_OPERATORS = ("prefix", "suffix", "anything-but", "numeric", "exists")
_LOWER = frozenset({">", ">="})
_UPPER = frozenset({"<", "<="})
_ALL_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")

_MISSING = object()

Values = list[Any]
Matcher = Callable[[Values], bool]
Predicate = Callable[[Any], bool]


class FilterError(ValueError):
    """A filter that cannot be compiled; `.path` says where, `.reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


@dataclass(frozen=True)
class ContentFilter:
    """A validated content filter; build it with `compile_filter`."""

    spec: Mapping[str, Any]
    _match: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", _compile_root(self.spec))

    def __reduce__(self) -> tuple[type[ContentFilter], tuple[Mapping[str, Any]]]:
        return (ContentFilter, (self.spec,))

    def __hash__(self) -> int:
        return hash(_freeze(self.spec))

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when the event envelope satisfies every field of the filter."""
        return self._match([event])


def compile_filter(spec: Mapping[str, Any]) -> ContentFilter:
    """Validate a filter spec and compile it; raises FilterError."""
    return ContentFilter(spec)


def _compile_root(spec: object) -> Matcher:
    """Compile the top-level object, counting leaves against the cap."""
    if not isinstance(spec, Mapping):
        raise FilterError("", f"a filter must be an object, not {type(spec).__name__}")
    budget = [MAX_FILTER_LEAVES]
    return _compile_object(spec, "", 1, budget)


def _compile_object(spec: Mapping[Any, Any], path: str, depth: int, budget: list[int]) -> Matcher:
    """Compile one object level into a matcher over the values found at its path."""
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(path, f"filter nests deeper than {MAX_FILTER_DEPTH} levels")
    if not spec:
        raise FilterError(path, "an empty object has no fields to match; name at least one")
    fields: list[tuple[str, Matcher]] = []
    for key, sub in spec.items():
        if not isinstance(key, str):
            raise FilterError(path, f"field names must be strings, not {type(key).__name__}")
        sub_path = f"{path}.{key}" if path else key
        if isinstance(sub, Mapping):
            if len(sub) == 1 and next(iter(sub)) in _OPERATORS:
                op = next(iter(sub))
                raise FilterError(sub_path, f"put the operator in a list: [{{{op} = ...}}]")
            fields.append((key, _compile_object(sub, sub_path, depth + 1, budget)))
        else:
            fields.append((key, _compile_leaf(sub, sub_path, budget)))

    def match(nodes: Values) -> bool:
        for key, child in fields:
            if not child(_gather(nodes, key)):
                return False
        return True

    return match


def _compile_leaf(spec: object, path: str, budget: list[int]) -> Matcher:
    """Compile a leaf: alternatives OR-ed, checked against every value found."""
    alternatives = list(spec) if isinstance(spec, list | tuple) else [spec]
    if not alternatives:
        raise FilterError(path, "an empty list matches nothing; give at least one value")
    _spend(budget, len(alternatives), path)
    exact: list[Any] = []
    predicates: list[Predicate] = []
    if_present = if_absent = False
    for alt in alternatives:
        if isinstance(alt, Mapping):
            op, operand = _operator(alt, path)
            if op == "exists":
                if_present, if_absent = if_present or operand, if_absent or not operand
            else:
                predicates.append(_compile_operator(op, operand, path, budget))
        elif isinstance(alt, list | tuple):
            raise FilterError(path, "lists inside a leaf list are not allowed")
        else:
            exact.append(_scalar(alt, path))
    tests = (_exact_predicate(exact), *predicates) if exact else tuple(predicates)

    def match(values: Values) -> bool:
        if not values:
            return if_absent
        if if_present:
            return True
        for value in values:
            for test in tests:
                if test(value):
                    return True
        return False

    return match


def _operator(alt: Mapping[Any, Any], path: str) -> tuple[str, Any]:
    """Split a one-key operator object, rejecting anything else."""
    if len(alt) != 1:
        keys = ", ".join(repr(key) for key in alt) or "none"
        raise FilterError(
            path,
            f"an operator object takes exactly one key (got {keys}); "
            "objects are not allowed inside a leaf list",
        )
    ((op, operand),) = alt.items()
    if op not in _OPERATORS:
        raise FilterError(path, f"unknown operator {op!r}; use {', '.join(_OPERATORS)}")
    if op == "exists" and not isinstance(operand, bool):
        raise FilterError(path, f"exists takes true or false, not {operand!r}")
    return op, operand


def _compile_operator(op: str, operand: Any, path: str, budget: list[int]) -> Predicate:
    """Compile prefix, suffix, anything-but or numeric into a predicate on one value."""
    if op == "prefix":
        text = _text(op, operand, path)
        return lambda value: isinstance(value, str) and value.startswith(text)
    if op == "suffix":
        text = _text(op, operand, path)
        return lambda value: isinstance(value, str) and value.endswith(text)
    if op == "numeric":
        return _numeric(operand, path)
    return _anything_but(operand, path, budget)


def _anything_but(operand: Any, path: str, budget: list[int]) -> Predicate:
    """Match present leaf values other than the excluded ones."""
    if isinstance(operand, Mapping):
        inner, text = _operator(operand, path)
        if inner not in ("prefix", "suffix"):
            raise FilterError(path, f"anything-but takes prefix or suffix, not {inner!r}")
        text = _text(f"anything-but {inner}", text, path)
        if inner == "prefix":
            return lambda value: isinstance(value, str) and not value.startswith(text)
        return lambda value: isinstance(value, str) and not value.endswith(text)
    values = list(operand) if isinstance(operand, list | tuple) else [operand]
    if not values:
        raise FilterError(path, "anything-but needs at least one value")
    _spend(budget, len(values), path)
    excluded = _exact_predicate([_scalar(value, path, "anything-but") for value in values])
    return lambda value: not isinstance(value, Mapping) and not excluded(value)


def _numeric(operand: Any, path: str) -> Predicate:
    """Compile [op, n] or [lower-op, n, upper-op, m] into a number test."""
    if not isinstance(operand, list | tuple) or len(operand) not in (2, 4):
        raise FilterError(
            path, f"numeric takes [op, number] or [op, number, op, number], not {operand!r}"
        )
    pairs = [(operand[i], operand[i + 1]) for i in range(0, len(operand), 2)]
    for op, bound in pairs:
        if op not in _ALL_COMPARISONS:
            raise FilterError(
                path, f"numeric operator {op!r} unknown; use {' '.join(_ALL_COMPARISONS)}"
            )
        if not _is_number(bound) or not _finite(bound):
            raise FilterError(
                path, f"numeric bound for {op!r} must be a finite number, not {bound!r}"
            )
    if len(pairs) == 1:
        op, bound = pairs[0]
        compare = _compare(op, bound)
        return lambda value: _is_number(value) and compare(value)
    lows = [pair for pair in pairs if pair[0] in _LOWER]
    highs = [pair for pair in pairs if pair[0] in _UPPER]
    if len(lows) != 1 or len(highs) != 1:
        raise FilterError(path, "a numeric range needs one of > >= and one of < <=")
    (low_op, low), (high_op, high) = lows[0], highs[0]
    if low > high or (low == high and (low_op, high_op) != (">=", "<=")):
        raise FilterError(path, f"numeric range {low_op} {low} and {high_op} {high} is empty")
    above, below = _compare(low_op, low), _compare(high_op, high)
    return lambda value: _is_number(value) and above(value) and below(value)


def _compare(op: str, bound: float) -> Predicate:
    """One comparison against a bound, using Python's exact int/float ordering."""
    table: dict[str, Predicate] = {
        "=": lambda value: value == bound,
        "!=": lambda value: value != bound,
        "<": lambda value: value < bound,
        "<=": lambda value: value <= bound,
        ">": lambda value: value > bound,
        ">=": lambda value: value >= bound,
    }
    return table[op]


def _exact_predicate(values: list[Any]) -> Predicate:
    """Type-aware membership: numbers numerically, bools only as bools, null only as null."""
    strings = frozenset(value for value in values if isinstance(value, str))
    bools = frozenset(value for value in values if isinstance(value, bool))
    numbers = frozenset(value for value in values if _is_number(value))
    null = any(value is None for value in values)

    def is_exact(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if isinstance(value, bool):
            return value in bools
        if isinstance(value, int | float):
            return value in numbers
        return value is None and null

    return is_exact


def _gather(nodes: Values, key: str) -> Values:
    """The values under key in every object among nodes, arrays flattened."""
    found: Values = []
    for node in nodes:
        if type(node) is dict or isinstance(node, Mapping):  # exact dict first: cheaper
            value = node.get(key, _MISSING)
            if value is _MISSING:
                continue
            if isinstance(value, list | tuple):
                _flatten(value, found)
            else:
                found.append(value)
    return found


def _flatten(items: list[Any] | tuple[Any, ...], out: Values) -> None:
    """Append the non-list items of arbitrarily nested lists, without recursion."""
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list | tuple):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()


def _scalar(value: Any, path: str, where: str = "a leaf") -> Any:
    """Accept a string, finite number, bool or null as an exact value."""
    if value is None or isinstance(value, str | bool):
        return value
    if _is_number(value):
        if not _finite(value):
            raise FilterError(path, f"{where} value must be a finite number, not {value!r}")
        return value
    if isinstance(value, Mapping | list | tuple):
        raise FilterError(path, f"{where} takes strings, numbers, bools or null, not nested values")
    raise FilterError(
        path, f"{where} takes strings, numbers, bools or null, not {type(value).__name__}"
    )


def _text(op: str, operand: Any, path: str) -> str:
    """The string operand of prefix or suffix."""
    if not isinstance(operand, str):
        raise FilterError(path, f"{op} takes a string, not {operand!r}")
    return operand


def _is_number(value: Any) -> bool:
    """An int or a non-NaN float, never a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a validated spec, equal where the spec compares equal."""
    if isinstance(value, Mapping):
        return frozenset((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _finite(number: float) -> bool:
    """Not inf or NaN; ints of any size are finite."""
    return isinstance(number, int) or math.isfinite(number)


def _spend(budget: list[int], count: int, path: str) -> None:
    """Charge leaf values against the filter's cap."""
    budget[0] -= count
    if budget[0] < 0:
        raise FilterError(path, f"filter has more than {MAX_FILTER_LEAVES} leaf values")
