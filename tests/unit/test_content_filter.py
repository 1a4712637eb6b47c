"""EventBridge-style content filters: matching semantics, compile-time refusals, properties."""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
import pickle
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from choreo.content_filter import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LEAVES,
    ContentFilter,
    FilterError,
    compile_filter,
)

ECOMMERCE = Path(__file__).resolve().parents[2] / "choreo" / "choreographies" / "ecommerce.toml"


def event(payload: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """An envelope as a dict, the shape `ContentFilter.matches` receives."""
    envelope: dict[str, Any] = {
        "event_id": "evt-1",
        "event_type": "order.completed",
        "timestamp": "2024-05-01T12:00:00Z",
        "source": "shop",
        "payload": payload if payload is not None else {},
        "metadata": {"correlation_id": "corr-1"},
    }
    envelope.update(overrides)
    return envelope


def on_field(leaf: Any, value: Any = None, *, present: bool = True) -> bool:
    """Does {payload: {f: leaf}} match an event whose payload.f is value (or absent)?"""
    payload = {"f": value} if present else {}
    return compile_filter({"payload": {"f": leaf}}).matches(event(payload))


# --- exact values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "value", "expected"),
    [
        (["confirmed"], "confirmed", True),
        (["confirmed"], "Confirmed", False),
        (["confirmed"], "confirmed ", False),
        (["a", "b"], "b", True),
        (["a", "b"], "c", False),
        ("confirmed", "confirmed", True),
        ([1], 1, True),
        ([1], 1.0, True),
        ([1.0], 1, True),
        ([1.5], 1.5, True),
        ([1], 2, False),
        ([0], 0.0, True),
        ([0], -0.0, True),
        (1200, 1200.0, True),
        ([2**53 + 1], float(2**53), False),
        ([1], "1", False),
        (["1"], 1, False),
        ([True], True, True),
        ([True], False, False),
        ([True], 1, False),
        ([1], True, False),
        ([False], 0, False),
        ([0], False, False),
        (True, True, True),
        ([None], None, True),
        ([None], "", False),
        ([None], 0, False),
        ([None], False, False),
        ([""], None, False),
        ([""], "", True),
        (None, None, True),
        (["x"], {"x": 1}, False),
        ([1, "a", True, None], None, True),
        ([1, "a", True, None], "a", True),
        ([1, "a", True, None], 1.0, True),
        ([1, "a", True, None], False, False),
    ],
)
def test_exact_values(leaf: Any, value: Any, expected: bool) -> None:
    assert on_field(leaf, value) is expected


@pytest.mark.parametrize("leaf", [["x"], [None], [1], [True], [""]])
def test_exact_values_never_match_a_missing_field(leaf: list[Any]) -> None:
    assert on_field(leaf, present=False) is False


@pytest.mark.parametrize(
    ("leaf", "value", "expected"),
    [
        (["vip"], ["new", "vip"], True),
        (["vip"], ["new"], False),
        (["vip"], [], False),
        ([3], [1, 2, 3.0], True),
        (["vip"], [["deep", ["vip"]]], True),
        ([None], [None], True),
        ([{"prefix": "v"}], ["a", "vip"], True),
        ([{"numeric": [">", 10]}], [1, 2, 30], True),
        ([{"numeric": [">", 10]}], [1, 2, 3], False),
        ([{"anything-but": "a"}], ["a", "b"], True),
        ([{"anything-but": "a"}], ["a", "a"], False),
    ],
)
def test_list_values_match_when_any_element_matches(leaf: Any, value: Any, expected: bool) -> None:
    assert on_field(leaf, value) is expected


# --- prefix and suffix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "value", "expected"),
    [
        ([{"prefix": "ord"}], "order-1", True),
        ([{"prefix": "ord"}], "Order-1", False),
        ([{"prefix": "ord"}], "xord", False),
        ([{"prefix": "ord"}], 123, False),
        ([{"prefix": "1"}], 123, False),
        ([{"prefix": "ord"}], None, False),
        ([{"prefix": ""}], "", True),
        ([{"suffix": ".completed"}], "order.completed", True),
        ([{"suffix": ".completed"}], "order.completed.v2", False),
        ([{"suffix": "e"}], True, False),
        ([{"prefix": "a"}, {"suffix": "z"}], "xyz", True),
        ([{"prefix": "a"}, "exact"], "exact", True),
    ],
)
def test_prefix_and_suffix(leaf: Any, value: Any, expected: bool) -> None:
    assert on_field(leaf, value) is expected


def test_suffix_on_event_type() -> None:
    matcher = compile_filter({"event_type": [{"suffix": ".completed"}], "source": ["shop"]})
    assert matcher.matches(event()) is True
    assert matcher.matches(event(event_type="order.created")) is False
    assert matcher.matches(event(source="warehouse")) is False


# --- anything-but ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "value", "expected"),
    [
        ([{"anything-but": "cancelled"}], "shipped", True),
        ([{"anything-but": "cancelled"}], "cancelled", False),
        ([{"anything-but": ["cancelled", "refunded"]}], "refunded", False),
        ([{"anything-but": ["cancelled", "refunded"]}], "paid", True),
        ([{"anything-but": 0}], 0.0, False),
        ([{"anything-but": 0}], 5, True),
        ([{"anything-but": [1, 2]}], 2.0, False),
        ([{"anything-but": "x"}], 5, True),
        ([{"anything-but": 1}], True, True),
        ([{"anything-but": True}], True, False),
        ([{"anything-but": "x"}], None, True),
        ([{"anything-but": None}], None, False),
        ([{"anything-but": "x"}], {"nested": 1}, False),
        ([{"anything-but": {"prefix": "test-"}}], "test-order", False),
        ([{"anything-but": {"prefix": "test-"}}], "order", True),
        ([{"anything-but": {"prefix": "test-"}}], 7, False),
        ([{"anything-but": {"suffix": ".tmp"}}], "a.tmp", False),
        ([{"anything-but": {"suffix": ".tmp"}}], "a.txt", True),
    ],
)
def test_anything_but(leaf: Any, value: Any, expected: bool) -> None:
    assert on_field(leaf, value) is expected


@pytest.mark.parametrize(
    "leaf",
    [[{"anything-but": "x"}], [{"anything-but": {"prefix": "x"}}], [{"anything-but": [1, 2]}]],
)
def test_anything_but_never_matches_a_missing_field(leaf: Any) -> None:
    assert on_field(leaf, present=False) is False


# --- numeric -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numeric", "value", "expected"),
    [
        ([">", 0], 1, True),
        ([">", 0], 0, False),
        ([">", 0], 0.0001, True),
        ([">=", 0], 0, True),
        (["<", 10], 9.99, True),
        (["<", 10], 10, False),
        (["<=", 10], 10.0, True),
        (["=", 5], 5.0, True),
        (["=", 5], 5.1, False),
        (["!=", 5], 6, True),
        (["!=", 5], 5, False),
        ([">", 0, "<=", 5], 5, True),
        ([">", 0, "<=", 5], 0, False),
        ([">", 0, "<=", 5], 5.5, False),
        ([">=", 1.5, "<", 2.5], 1.5, True),
        ([">=", 1.5, "<", 2.5], 2.5, False),
        (["<", 10, ">", 0], 5, True),
        (["<", 10, ">", 0], 10, False),
        ([">=", 3, "<=", 3], 3, True),
        ([">", 1000], 2**70, True),
        ([">", 2**53], float(2**53), False),
    ],
)
def test_numeric(numeric: list[Any], value: Any, expected: bool) -> None:
    assert on_field([{"numeric": numeric}], value) is expected


@pytest.mark.parametrize("value", [True, False, None, "5", "", {"a": 5}, [], math.nan, -math.nan])
@pytest.mark.parametrize("numeric", [[">", 0], ["!=", 5], ["<", 10], [">=", -1e300, "<=", 1e300]])
def test_numeric_never_matches_non_numbers(numeric: list[Any], value: Any) -> None:
    assert on_field([{"numeric": numeric}], value) is False


def test_numeric_never_matches_a_missing_field() -> None:
    assert on_field([{"numeric": ["!=", 0]}], present=False) is False


def test_shortage_quantity_filter_from_the_shipped_choreography() -> None:
    matcher = compile_filter({"payload": {"shortage_quantity": [{"numeric": [">", 0]}]}})
    assert matcher.matches(event({"shortage_quantity": 3})) is True
    assert matcher.matches(event({"shortage_quantity": 0})) is False
    assert matcher.matches(event({"shortage_quantity": "3"})) is False
    assert matcher.matches(event({})) is False


# --- exists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "payload", "expected"),
    [
        (True, {"f": 1}, True),
        (True, {"f": ""}, True),
        (True, {"f": False}, True),
        (True, {"f": None}, True),
        (True, {"f": {"x": 1}}, True),
        (True, {"f": [1]}, True),
        (True, {"f": []}, False),
        (True, {}, False),
        (False, {}, True),
        (False, {"f": None}, False),
        (False, {"f": 0}, False),
        (False, {"f": []}, True),
        (False, {"g": 1}, True),
    ],
)
def test_exists(flag: bool, payload: dict[str, Any], expected: bool) -> None:
    matcher = compile_filter({"payload": {"f": [{"exists": flag}]}})
    assert matcher.matches(event(payload)) is expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({}, True), ({"customer": "plain"}, True), ({"customer": {"tier": "gold"}}, False)],
)
def test_exists_false_below_a_missing_or_scalar_parent(
    payload: dict[str, Any], expected: bool
) -> None:
    matcher = compile_filter({"payload": {"customer": {"tier": [{"exists": False}]}}})
    assert matcher.matches(event(payload)) is expected


def test_exists_false_or_a_value() -> None:
    matcher = compile_filter({"payload": {"retry": [{"exists": False}, 0]}})
    assert matcher.matches(event({})) is True
    assert matcher.matches(event({"retry": 0})) is True
    assert matcher.matches(event({"retry": 1})) is False


# --- structure: AND across keys, nesting, arrays of objects -----------------------------


def test_every_key_must_match() -> None:
    matcher = compile_filter(
        {
            "source": ["shop"],
            "payload": {"status": ["paid"], "order_value": [{"numeric": [">", 100]}]},
            "metadata": {"correlation_id": [{"exists": True}]},
        }
    )
    good = {"status": "paid", "order_value": 150}
    assert matcher.matches(event(good)) is True
    assert matcher.matches(event({**good, "status": "new"})) is False
    assert matcher.matches(event({**good, "order_value": 50})) is False
    assert matcher.matches(event(good, source="pos")) is False
    assert matcher.matches(event(good, metadata={})) is False


def test_nested_objects() -> None:
    matcher = compile_filter({"payload": {"customer": {"address": {"country": ["DE", "AT"]}}}})
    assert matcher.matches(event({"customer": {"address": {"country": "AT"}}})) is True
    assert matcher.matches(event({"customer": {"address": {"country": "FR"}}})) is False
    assert matcher.matches(event({"customer": {"address": "DE"}})) is False
    assert matcher.matches(event({"customer": "DE"})) is False
    assert matcher.matches(event({})) is False


def test_arrays_of_objects_are_flattened_like_eventbridge() -> None:
    matcher = compile_filter({"payload": {"items": {"sku": ["B-2"]}}})
    assert matcher.matches(event({"items": [{"sku": "A-1"}, {"sku": "B-2"}]})) is True
    assert matcher.matches(event({"items": [{"sku": "A-1"}, {"qty": 1}]})) is False
    assert matcher.matches(event({"items": [[{"sku": "B-2"}]]})) is True
    assert matcher.matches(event({"items": []})) is False


def test_flattening_matches_fields_across_elements() -> None:
    # EventBridge flattens arrays into paths, so two fields may match in different elements.
    matcher = compile_filter({"payload": {"items": {"sku": ["A"], "qty": [2]}}})
    assert matcher.matches(event({"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}))


def test_a_non_mapping_event_matches_only_absence() -> None:
    assert compile_filter({"source": ["shop"]}).matches([]) is False  # type: ignore[arg-type]
    assert compile_filter({"source": [{"exists": False}]}).matches("x") is True  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", ["payload", "metadata", "source", "event_type", "event_id", "timestamp"]
)
def test_every_envelope_field_can_be_filtered(key: str) -> None:
    envelope = event({"a": 1})
    spec: dict[str, Any] = {key: [{"exists": True}]}
    assert compile_filter(spec).matches(envelope) is True
    del envelope[key]
    assert compile_filter(spec).matches(envelope) is False


def test_every_filter_in_the_shipped_choreography_compiles_and_matches() -> None:
    patterns = tomllib.loads(ECOMMERCE.read_text())["patterns"]
    specs = [p["match"] for p in patterns if "match" in p]
    assert specs, "the e-commerce choreography should ship some filters"
    for spec in specs:
        compile_filter(spec)
    packed = compile_filter({"payload": {"items_packed": [True]}})
    assert packed.matches(event({"items_packed": True})) is True
    assert packed.matches(event({"items_packed": False})) is False
    assert packed.matches(event({"items_packed": "true"})) is False


# --- compile-time refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"payload": {"x": []}}, "payload.x", "empty list"),
        ({"payload": {"x": [{"gt": 1}]}}, "payload.x", "unknown operator 'gt'"),
        ({"payload": {"x": [{"equals-ignore-case": "a"}]}}, "payload.x", "unknown operator"),
        ({"payload": {"x": [{"prefix": 1}]}}, "payload.x", "prefix takes a string"),
        ({"payload": {"x": [{"suffix": None}]}}, "payload.x", "suffix takes a string"),
        ({"payload": {"x": [{"exists": "yes"}]}}, "payload.x", "exists takes true or false"),
        ({"payload": {"x": [{"exists": 1}]}}, "payload.x", "exists takes true or false"),
        ({"payload": {"x": [{"numeric": 5}]}}, "payload.x", "numeric takes"),
        ({"payload": {"x": [{"numeric": [">"]}]}}, "payload.x", "numeric takes"),
        ({"payload": {"x": [{"numeric": [">", 1, "<"]}]}}, "payload.x", "numeric takes"),
        (
            {"payload": {"x": [{"numeric": [">", 1, "<", 5, "!=", 3]}]}},
            "payload.x",
            "numeric takes",
        ),
        ({"payload": {"x": [{"numeric": ["=>", 1]}]}}, "payload.x", "operator '=>' unknown"),
        ({"payload": {"x": [{"numeric": [">", "1"]}]}}, "payload.x", "finite number"),
        ({"payload": {"x": [{"numeric": [">", True]}]}}, "payload.x", "finite number"),
        ({"payload": {"x": [{"numeric": [">", math.inf]}]}}, "payload.x", "finite number"),
        ({"payload": {"x": [{"numeric": [">", math.nan]}]}}, "payload.x", "finite number"),
        ({"payload": {"x": [{"numeric": [">", 5, "<", 1]}]}}, "payload.x", "is empty"),
        ({"payload": {"x": [{"numeric": [">", 5, "<=", 5]}]}}, "payload.x", "is empty"),
        ({"payload": {"x": [{"numeric": [">=", 2, "<=", 1.5]}]}}, "payload.x", "is empty"),
        ({"payload": {"x": [{"numeric": [">", 1, ">", 5]}]}}, "payload.x", "one of > >="),
        ({"payload": {"x": [{"numeric": ["=", 1, "<", 5]}]}}, "payload.x", "one of > >="),
        ({"payload": {"x": [{"anything-but": []}]}}, "payload.x", "at least one value"),
        ({"payload": {"x": [{"anything-but": [[1]]}]}}, "payload.x", "not nested"),
        (
            {"payload": {"x": [{"anything-but": {"numeric": [">", 1]}}]}},
            "payload.x",
            "prefix or suffix",
        ),
        ({"payload": {"x": [{"anything-but": {"prefix": 3}}]}}, "payload.x", "takes a string"),
        ({"payload": {"x": [{"anything-but": {"a": 1, "b": 2}}]}}, "payload.x", "exactly one key"),
        ({"payload": {"x": [{"a": 1, "b": 2}]}}, "payload.x", "not allowed inside a leaf list"),
        ({"payload": {"x": [{}]}}, "payload.x", "exactly one key"),
        ({"payload": {"x": [{"y": ["z"]}]}}, "payload.x", "unknown operator 'y'"),
        ({"payload": {"x": [["a"]]}}, "payload.x", "lists inside a leaf list"),
        ({"payload": {"x": [math.inf]}}, "payload.x", "finite number"),
        ({"payload": {"x": [object()]}}, "payload.x", "not object"),
        ({"payload": {"x": {"numeric": [">", 0]}}}, "payload.x", "put the operator in a list"),
        ({"payload": {"x": {"prefix": "a"}}}, "payload.x", "put the operator in a list"),
        ({"payload": {}}, "payload", "no fields"),
        ({}, "", "no fields"),
        ({1: ["a"]}, "", "field names must be strings"),
        ({"payload": {"a": {"b": {2: ["x"]}}}}, "payload.a.b", "field names must be strings"),
    ],
)
def test_malformed_filters_are_refused_with_a_path(spec: Any, path: str, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(spec)
    assert info.value.path == path
    assert reason in info.value.reason
    assert path in str(info.value) and info.value.reason in str(info.value)


@pytest.mark.parametrize("spec", [None, [], ["payload"], "payload", 3, True])
def test_a_filter_must_be_an_object(spec: Any) -> None:
    with pytest.raises(FilterError, match=f"must be an object, not {type(spec).__name__}"):
        compile_filter(spec)


def _nested(depth: int) -> dict[str, Any]:
    spec: Any = ["x"]
    for _ in range(depth):
        spec = {"k": spec}
    return spec


def test_depth_cap() -> None:
    compile_filter(_nested(MAX_FILTER_DEPTH))
    with pytest.raises(FilterError, match=f"deeper than {MAX_FILTER_DEPTH}"):
        compile_filter(_nested(MAX_FILTER_DEPTH + 1))


def test_leaf_cap_counts_across_the_whole_filter() -> None:
    half = MAX_FILTER_LEAVES // 2
    compile_filter({"a": list(range(half)), "b": [{"anything-but": list(range(half - 1))}]})
    with pytest.raises(FilterError, match=f"more than {MAX_FILTER_LEAVES}") as info:
        compile_filter({"a": list(range(half)), "b": list(range(half + 1))})
    assert info.value.path == "b"


def test_filter_error_is_a_value_error_and_pickles() -> None:
    with pytest.raises(ValueError) as info:
        compile_filter({"payload": {"x": []}})
    clone = pickle.loads(pickle.dumps(info.value))
    assert isinstance(clone, FilterError)
    assert (clone.path, clone.reason, str(clone)) == (
        info.value.path,
        info.value.reason,
        str(info.value),
    )


# --- the ContentFilter value ------------------------------------------------------------


def test_content_filter_is_a_frozen_hashable_value() -> None:
    a = compile_filter({"payload": {"n": [1]}})
    assert a == compile_filter({"payload": {"n": [1.0]}})
    assert hash(a) == hash(compile_filter({"payload": {"n": [1.0]}}))
    assert a != compile_filter({"payload": {"n": [2]}})
    assert len({a, compile_filter({"payload": {"n": [1]}})}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.spec = {}  # type: ignore[misc]


def test_constructing_directly_validates_too() -> None:
    assert ContentFilter({"source": ["shop"]}).matches(event()) is True
    with pytest.raises(FilterError):
        ContentFilter({"source": []})


@pytest.mark.parametrize("clone", [lambda f: pickle.loads(pickle.dumps(f)), copy.deepcopy])
def test_content_filter_survives_pickle_and_copy(clone: Callable[[Any], Any]) -> None:
    original = compile_filter({"payload": {"order_value": [{"numeric": [">", 1000]}]}})
    twin = clone(original)
    assert twin == original
    assert twin.matches(event({"order_value": 1200})) is True
    assert twin.matches(event({"order_value": 12})) is False


def test_matching_does_not_mutate_the_event() -> None:
    envelope = event({"items": [{"sku": "a"}, [1, [2]]], "n": 1})
    before = copy.deepcopy(envelope)
    compile_filter({"payload": {"items": {"sku": ["a"]}, "n": [{"numeric": ["<", 5]}]}}).matches(
        envelope
    )
    assert envelope == before


# --- properties --------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)
_KEYS = st.sampled_from(["payload", "f", "g", "items", "a"])
_FINITE = st.one_of(st.integers(min_value=-(10**6), max_value=10**6), st.floats(-1e6, 1e6))
_OPERATOR = st.one_of(
    st.builds(lambda s: {"prefix": s}, st.text(max_size=3)),
    st.builds(lambda s: {"suffix": s}, st.text(max_size=3)),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(lambda v: {"anything-but": v}, st.one_of(st.text(max_size=3), _FINITE)),
    st.builds(lambda o, n: {"numeric": [o, n]}, st.sampled_from(["=", "!=", "<", ">"]), _FINITE),
)
_LEAF = st.lists(
    st.one_of(st.none(), st.booleans(), _FINITE, st.text(max_size=3), _OPERATOR),
    min_size=1,
    max_size=4,
)
_SPEC = st.recursive(
    st.dictionaries(_KEYS, _LEAF, min_size=1, max_size=3),
    lambda inner: st.dictionaries(_KEYS, st.one_of(_LEAF, inner), min_size=1, max_size=3),
    max_leaves=6,
)


@given(spec=_SPEC, payload=_JSON)
def test_any_valid_filter_on_any_json_event_returns_a_bool(
    spec: dict[str, Any], payload: Any
) -> None:
    matcher = compile_filter(spec)
    assert matcher.matches(event(payload)) in (True, False)
    assert matcher.matches({"payload": payload, "f": payload, "items": [payload]}) in (True, False)


_COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMBERS = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))


@given(op=st.sampled_from(sorted(_COMPARE)), bound=_NUMBERS, value=_NUMBERS)
def test_single_numeric_comparison_agrees_with_python(op: str, bound: float, value: float) -> None:
    assert on_field([{"numeric": [op, bound]}], value) is _COMPARE[op](value, bound)


@given(
    low_op=st.sampled_from([">", ">="]),
    high_op=st.sampled_from(["<", "<="]),
    low=_NUMBERS,
    high=_NUMBERS,
    value=st.one_of(_NUMBERS, st.floats(allow_nan=False)),
)
def test_numeric_range_agrees_with_python(
    low_op: str, high_op: str, low: float, high: float, value: float
) -> None:
    assume(low < high)
    expected = _COMPARE[low_op](value, low) and _COMPARE[high_op](value, high)
    assert on_field([{"numeric": [low_op, low, high_op, high]}], value) is expected
    assert on_field([{"numeric": [high_op, high, low_op, low]}], value) is expected


@given(value=_SCALARS)
def test_a_value_matches_itself_and_anything_but_is_its_negation(value: Any) -> None:
    assume(not (isinstance(value, float) and not math.isfinite(value)))
    assert on_field([value], value) is True
    assert on_field([{"anything-but": value}], value) is False


@given(excluded=_SCALARS, value=_SCALARS)
def test_anything_but_negates_exact_match_on_present_scalars(excluded: Any, value: Any) -> None:
    assume(not (isinstance(excluded, float) and not math.isfinite(excluded)))
    exact = on_field([excluded], value)
    assert on_field([{"anything-but": excluded}], value) is (not exact)


@given(payload=st.dictionaries(st.text(max_size=5), _SCALARS, min_size=1, max_size=5))
def test_a_filter_copied_from_the_event_matches_it(payload: dict[str, Any]) -> None:
    spec = {
        key: [value]
        for key, value in payload.items()
        if not (isinstance(value, float) and not math.isfinite(value))
    }
    assume(spec)
    assert compile_filter({"payload": spec}).matches(event(payload)) is True
