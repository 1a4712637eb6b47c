"""CEL conditions: what loads, what is refused, and what an evaluation returns."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.conditions import (
    ALLOWED_VARIABLES,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    Condition,
    ConditionError,
    ConditionRuntimeError,
    compile_condition,
)

ECOMMERCE = Path(__file__).resolve().parents[2] / "choreo" / "choreographies" / "ecommerce.toml"
ALLOWED_LIST = "payload, metadata, source, event_type, event_id, timestamp"


def context(payload: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The context the engine builds for one event."""
    ctx: dict[str, Any] = {
        "payload": payload if payload is not None else {},
        "metadata": {"correlation_id": "corr-1"},
        "source": "shop",
        "event_type": "order_received",
        "event_id": "evt-1",
        "timestamp": "2024-05-01T12:00:00Z",
    }
    ctx.update(overrides)
    return ctx


def run(expr: str, payload: dict[str, Any] | None = None, **overrides: Any) -> bool:
    return compile_condition(expr).evaluate(context(payload, **overrides))


# --- the conditions the project ships -------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "payload", "overrides", "expected"),
    [
        ("payload.order_value > 0", {"order_value": 59.9}, {}, True),
        ("payload.order_value > 0", {"order_value": 0}, {}, False),
        ("payload.order_value > 0", {"order_value": -3}, {}, False),
        ("payload.order_value > 1000", {"order_value": 1200.5}, {}, True),
        ("payload.order_value > 1000", {"order_value": 1200}, {}, True),
        ("payload.order_value > 1000", {"order_value": 1000}, {}, False),
        ("payload.order_value > 1000", {"order_value": 1000.0}, {}, False),
        ("payload.order_value > 1000", {"order_value": 999.99}, {}, False),
        ("has(payload.retry_count) ? payload.retry_count < 3 : true", {}, {}, True),
        ("has(payload.retry_count) ? payload.retry_count < 3 : true", {"retry_count": 2}, {}, True),
        (
            "has(payload.retry_count) ? payload.retry_count < 3 : true",
            {"retry_count": 3},
            {},
            False,
        ),
        ("(has(payload.retry_count) ? payload.retry_count : 0) < 3", {}, {}, True),
        ("(has(payload.retry_count) ? payload.retry_count : 0) >= 3", {"retry_count": 3}, {}, True),
        (
            "(has(payload.retry_count) ? payload.retry_count : 0) >= 3",
            {"retry_count": 1},
            {},
            False,
        ),
        ("payload.retry_count >= 3", {"retry_count": 3}, {}, True),
        ("payload.retry_count >= 3", {"retry_count": 2}, {}, False),
        ("payload.items_available == true", {"items_available": True}, {}, True),
        ("payload.items_available == true", {"items_available": False}, {}, False),
        ("payload.items_available == true", {"items_available": 1}, {}, False),
        ("payload.items_available == true", {"items_available": "true"}, {}, False),
        ("payload.payment_status == 'confirmed'", {"payment_status": "confirmed"}, {}, True),
        ("payload.payment_status == 'confirmed'", {"payment_status": "Confirmed"}, {}, False),
        ("payload.payment_status == 'confirmed'", {"payment_status": "pending"}, {}, False),
        ("has(payload.tracking_number)", {"tracking_number": "1Z999"}, {}, True),
        ("has(payload.tracking_number)", {"tracking_number": ""}, {}, True),
        ("has(payload.tracking_number)", {}, {}, False),
        (
            "has(payload.tracking_number) && payload.tracking_number != ''",
            {"tracking_number": ""},
            {},
            False,
        ),
        ("has(payload.tracking_number) && payload.tracking_number != ''", {}, {}, False),
        ("event_type.startsWith('payment')", {}, {"event_type": "payment_failed"}, True),
        ("event_type.startsWith('payment')", {}, {"event_type": "order_received"}, False),
        ("metadata.correlation_id != ''", {}, {}, True),
        ("metadata.correlation_id != ''", {}, {"metadata": {"correlation_id": ""}}, False),
        ("source == 'shop' && event_id == 'evt-1'", {}, {}, True),
        ("timestamp.startsWith('2024-05')", {}, {}, True),
        ("'vip' in payload.tags", {"tags": ["new", "vip"]}, {}, True),
        ("'vip' in payload.tags", {"tags": []}, {}, False),
        ("payload.items.exists(i, i.qty > 5)", {"items": [{"qty": 1}, {"qty": 9}]}, {}, True),
        ("payload.items.all(i, i.qty > 5)", {"items": [{"qty": 1}, {"qty": 9}]}, {}, False),
        ("size(payload.items) == 2", {"items": [1, 2]}, {}, True),
        ("payload.customer.tier == 'gold'", {"customer": {"tier": "gold"}}, {}, True),
        ("payload.note == null", {"note": None}, {}, True),
        ("payload.sku.matches('^SKU-[0-9]+$')", {"sku": "SKU-42"}, {}, True),
        ("payload.sku.matches('^SKU-[0-9]+$')", {"sku": "sku-42"}, {}, False),
    ],
)
def test_shipped_style_conditions(
    expr: str, payload: dict[str, Any], overrides: dict[str, Any], expected: bool
) -> None:
    assert run(expr, payload, **overrides) is expected


def test_every_condition_in_the_shipped_choreography_compiles() -> None:
    patterns = tomllib.loads(ECOMMERCE.read_text())["patterns"]
    sources = [p["when"] for p in patterns if "when" in p]
    assert sources, "the e-commerce choreography should ship some conditions"
    for source in sources:
        assert compile_condition(source).source == source


# --- ints and doubles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value", "expected"),
    [
        ("payload.v > 1000", 1200, True),
        ("payload.v > 1000", 1200.5, True),
        ("payload.v > 1000.0", 1200, True),
        ("payload.v > 1000.5", 1000, False),
        ("payload.v == 1200", 1200.0, True),
        ("payload.v == 1200.0", 1200, True),
        ("payload.v != 1200.0", 1200, False),
        ("payload.v < 1200.5", 1200, True),
        ("payload.v >= 3", 3, True),
        ("payload.v >= 3", 3.0, True),
        ("payload.v >= 3.0", 3, True),
        ("payload.v in [1, 2, 3]", 2.0, True),
        ("payload.v in [1.0, 2.0]", 2, True),
        ("double(payload.v) * 1.1 > 100.0", 100, True),
        ("int(payload.v) == 1200", 1200.7, True),
        ("payload.v / 2 == 3", 7, True),
    ],
)
def test_int_and_double_compare_across_types(expr: str, value: float, expected: bool) -> None:
    assert run(expr, {"v": value}) is expected


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("payload.v * 1.1 > 100", 100),
        ("payload.v + 1 > 2", 1.5),
        ("payload.v / 0 > 1", 2.5),
    ],
)
def test_arithmetic_mixing_int_and_double_fails_at_run_time(expr: str, value: float) -> None:
    condition = compile_condition(expr)
    with pytest.raises(ConditionRuntimeError, match="TypeError"):
        condition.evaluate(context({"v": value}))


_EXACT_INT = st.integers(min_value=-(2**53), max_value=2**53)
_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_LESS = compile_condition("payload.a < payload.b")
_EQUAL = compile_condition("payload.a == payload.b")
_GREATER_EQUAL = compile_condition("payload.a >= payload.b")


@given(a=st.one_of(_EXACT_INT, _FINITE), b=st.one_of(_EXACT_INT, _FINITE))
def test_comparisons_agree_with_python(a: float, b: float) -> None:
    ctx = context({"a": a, "b": b})
    assert _LESS.evaluate(ctx) is (a < b)
    assert _EQUAL.evaluate(ctx) is (a == b)
    assert _GREATER_EQUAL.evaluate(ctx) is (a >= b)


@given(a=st.text(), b=st.text())
def test_strings_are_data_never_code(a: str, b: str) -> None:
    ctx = context({"a": a, "b": b})
    assert _EQUAL.evaluate(ctx) is (a == b)


# --- run-time failures -------------------------------------------------------------------


def test_missing_field_fails_and_suggests_has() -> None:
    condition = compile_condition("payload.retry_count < 3")
    with pytest.raises(ConditionRuntimeError, match=r"'retry_count'.*has\("):
        condition.evaluate(context({}))


@pytest.mark.parametrize(
    ("expr", "payload", "error"),
    [
        ("payload.a / payload.b > 1", {"a": 1, "b": 0}, "ZeroDivisionError"),
        ("payload.a % payload.b > 1", {"a": 1, "b": 0}, "ZeroDivisionError"),
        ("payload.a + 1 > 0", {"a": 2**63 - 1}, "OverflowError"),
        ("payload.items[3] == 1", {"items": [1]}, "IndexError"),
        ("payload.s > 3", {"s": "text"}, "TypeError"),
        ("payload.s.matches('(')", {"s": "x"}, "RuntimeError"),
        ("int(payload.s) > 3", {"s": "x"}, "RuntimeError"),
        ("payload.items.exists(i, i > 1) && i > 1", {"items": [2]}, "Undefined"),
    ],
)
def test_runtime_failures_raise_condition_runtime_error(
    expr: str, payload: dict[str, Any], error: str
) -> None:
    condition = compile_condition(expr)
    with pytest.raises(ConditionRuntimeError, match=error) as info:
        condition.evaluate(context(payload))
    assert expr in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("expr", "payload", "type_name"),
    [
        ("payload.order_value", {"order_value": 3}, "int"),
        ("payload.order_value", {"order_value": 3.5}, "float"),
        ("payload.status", {"status": "ok"}, "str"),
        ("payload.items", {"items": [True]}, "list"),
        ("payload.customer", {"customer": {"vip": True}}, "dict"),
        ("payload.flag", {"flag": None}, "NoneType"),
        ("payload.items.filter(i, i)", {"items": [True]}, "list"),
    ],
)
def test_non_bool_result_is_a_runtime_error_naming_the_type(
    expr: str, payload: dict[str, Any], type_name: str
) -> None:
    condition = compile_condition(expr)
    with pytest.raises(ConditionRuntimeError, match=f"returned {type_name} .*not a bool"):
        condition.evaluate(context(payload))


def test_a_variable_missing_from_the_context_is_a_runtime_error() -> None:
    condition = compile_condition("metadata.correlation_id != ''")
    with pytest.raises(ConditionRuntimeError, match="Undefined variable.*'metadata'"):
        condition.evaluate({"payload": {}})


def test_unreferenced_context_entries_may_be_missing_or_odd() -> None:
    condition = compile_condition("payload.x == 1")
    assert condition.evaluate({"payload": {"x": 1}, "metadata": object()}) is True


def test_non_data_values_in_the_payload_are_refused_without_touching_them() -> None:
    touched: list[str] = []

    class Sneaky:
        @property
        def x(self) -> int:
            touched.append("x")
            return 1

    condition = compile_condition("payload.obj.x == 1")
    with pytest.raises(ConditionRuntimeError):
        condition.evaluate(context({"obj": Sneaky()}))
    assert touched == []


def test_a_callable_in_the_context_is_never_called() -> None:
    calls: list[object] = []
    condition = compile_condition("source == 'shop'")
    with pytest.raises(ConditionRuntimeError, match="callable"):
        condition.evaluate(context(source=lambda *a: calls.append(a) or True))
    assert calls == []


# --- load-time refusals -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 42, 1.5, True, b"payload.x > 1", ["true"], {"a": 1}])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(ConditionError, match=f"must be a string, not {type(value).__name__}"):
        compile_condition(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("expr", ["", " ", "\n\t  "])
def test_empty_conditions_are_refused(expr: str) -> None:
    with pytest.raises(ConditionError, match="empty"):
        compile_condition(expr)


def test_length_cap() -> None:
    filler = "payload.x == '" + "a" * (MAX_EXPRESSION_LENGTH - 16) + "'"
    assert len(filler) == MAX_EXPRESSION_LENGTH - 1
    compile_condition(filler + " ")
    with pytest.raises(ConditionError, match=f"{MAX_EXPRESSION_LENGTH + 1} characters.*limit"):
        compile_condition(filler + "  ")


@pytest.mark.parametrize(("open_", "close"), [("(", ")"), ("[", "]")])
def test_nesting_cap(open_: str, close: str) -> None:
    def nested(depth: int) -> str:
        inner = open_ * depth + "1" + close * depth
        return f"1 in {inner}" if open_ == "[" else f"{inner} == 1"

    compile_condition(nested(MAX_EXPRESSION_DEPTH))
    with pytest.raises(ConditionError, match=f"{MAX_EXPRESSION_DEPTH + 1} deep"):
        compile_condition(nested(MAX_EXPRESSION_DEPTH + 1))


def test_nesting_cap_counts_braces() -> None:
    deep = "{'a': " * (MAX_EXPRESSION_DEPTH + 1) + "1" + "}" * (MAX_EXPRESSION_DEPTH + 1)
    with pytest.raises(ConditionError, match="deep"):
        compile_condition(f"size({deep}) == 1")


@pytest.mark.parametrize(
    "literal",
    [
        "'" + "(" * 100 + "'",
        '"' + "[" * 100 + '"',
        "'''" + "{" * 100 + "'''",
        "r'\\" + "(" * 100 + "'",
        "'\\'" + "(" * 100 + "'",
    ],
)
def test_brackets_inside_strings_do_not_count(literal: str) -> None:
    assert run(f"payload.s != {literal}", {"s": "x"}) is True


@pytest.mark.parametrize(
    ("expr", "column"),
    [
        ("payload.x +", 12),
        ("payload.x = 1", 11),
        ("payload..x", 9),
        ("a b c", 3),
        ("payload.x > 1 'unterminated", 15),
        ("payload.x == 1 &&", 18),
    ],
)
def test_syntax_errors_are_short_and_point_at_the_column(expr: str, column: int) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(expr)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"syntax error at line 1, column {column}: ")
    assert len(lines) == 3
    assert lines[1].strip() == expr.strip()
    assert lines[2].index("^") - lines[1].index(expr[0]) == column - 1
    assert "NUM_FLOAT" not in str(info.value)
    assert "Failed to parse" not in str(info.value)


def test_syntax_error_on_a_later_line_shows_that_line() -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition("payload.x == 1 &&\n  payload.y ==")
    first, snippet, caret = str(info.value).splitlines()
    assert first.startswith("syntax error at line 2")
    assert snippet.strip() == "payload.y =="
    assert caret.strip() == "^"


def test_syntax_error_snippet_is_trimmed_on_long_lines() -> None:
    expr = "payload.x == '" + "a" * 300 + "' &&"
    with pytest.raises(ConditionError) as info:
        compile_condition(expr)
    assert all(len(line) < 100 for line in str(info.value).splitlines())


@pytest.mark.parametrize(
    ("expr", "unknown"),
    [
        ("data.x > 1", "variable 'data'"),
        ("event.payload.x > 1", "variable 'event'"),
        ("order_value > 1000", "variable 'order_value'"),
        ("payload.x > 1 && ctx.y", "variable 'ctx'"),
        ("os.system('id')", "variable 'os'"),
        ("foo && bar", "variables 'bar', 'foo'"),
        ("payload.items.exists(i, i > 1) && data.y", "variable 'data'"),
    ],
)
def test_unknown_variables_are_refused(expr: str, unknown: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(expr)
    assert str(info.value) == f"unknown {unknown}; conditions see {ALLOWED_LIST}"


def test_allowed_variables_are_exactly_the_envelope_fields() -> None:
    assert ALLOWED_VARIABLES == {
        "payload",
        "metadata",
        "source",
        "event_type",
        "event_id",
        "timestamp",
    }


@pytest.mark.parametrize(
    "expr",
    [
        "payload.items.exists(item, item.qty > 0)",
        "payload.items.all(x, x.qty >= 0)",
        "payload.items.exists_one(x, x.qty > 0)",
        "payload.items.filter(x, x.qty > 0).size() == 1",
        "payload.items.map(x, x.qty).exists(q, q > 0)",
        "payload.items.map(x, x.qty > 0, x.qty).size() == 1",
        "payload.items.exists(\n  x,\n  x.qty > 0\n)",
        "payload.items.exists(payload, payload.qty > 0)",
    ],
)
def test_comprehension_variables_are_not_unknown(expr: str) -> None:
    assert run(expr, {"items": [{"qty": 0}, {"qty": 2}]}) is True


@pytest.mark.parametrize(
    ("expr", "shown"),
    [
        ('"yes"', "str 'yes'"),
        ("'true'", "str 'true'"),
        ("42", "int 42"),
        ("1.5", "float 1.5"),
        ("null", "NoneType None"),
        ("[true]", "list [True]"),
        ("{'a': true}", "dict {'a': True}"),
        ("1 + 2", "int 3"),
    ],
)
def test_constant_non_bool_expressions_are_refused(expr: str, shown: str) -> None:
    with pytest.raises(ConditionError, match=f"always {re.escape(shown)}, not a bool"):
        compile_condition(expr)


@pytest.mark.parametrize("expr", ["1 / 0", "[1][3] == 1", "int('x') == 1", "nope() == 1"])
def test_constant_expressions_that_always_fail_are_refused(expr: str) -> None:
    with pytest.raises(ConditionError, match="always fails"):
        compile_condition(expr)


@pytest.mark.parametrize(("expr", "expected"), [("true", True), ("false", False), ("1 < 2", True)])
def test_constant_bool_expressions_load(expr: str, expected: bool) -> None:
    assert run(expr) is expected


def test_condition_error_is_a_value_error() -> None:
    assert issubclass(ConditionError, ValueError)
    assert not issubclass(ConditionRuntimeError, ValueError)


# --- sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "payload.__class__.__subclasses__()",
        "payload.__class__",
        "payload['__class__'] != null",
        "payload.gi_frame.f_back != null",
        "payload.__globals__ != null",
        "payload.items.map(x, x.__class__).size() > 0",
        "type(payload).__subclasses__().size() > 0",
        "source.__len__() > 0",
        "metadata.correlation_id.__class__.__mro__ != null",
        "event_type.__class__ == event_type",
        "__import__('os').system('touch /tmp/choreo-pwned') == 0",
        "eval('1') == 1",
        "getattr(payload, '__class__') != null",
        "().__class__.__bases__[0]",
        "[].__class__.__base__.__subclasses__()",
        "lambda: 1",
        "payload.x if true else false",
    ],
)
def test_sandbox_escapes_fail_at_load_or_run(expr: str) -> None:
    ctx = context({"items": [1], "x": True}, metadata={"correlation_id": "c"})
    try:
        condition = compile_condition(expr)
    except ConditionError:
        return
    with pytest.raises(ConditionRuntimeError):
        condition.evaluate(ctx)
    assert not Path("/tmp/choreo-pwned").exists()


# --- the Condition value -----------------------------------------------------------------


def test_condition_is_a_frozen_value_keyed_by_source() -> None:
    a = compile_condition("payload.x == 1")
    assert a == compile_condition("payload.x == 1")
    assert a != compile_condition("payload.x == 2")
    assert len({a, compile_condition("payload.x == 1")}) == 1
    assert "payload.x == 1" in repr(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.source = "true"  # type: ignore[misc]


def test_constructing_a_condition_directly_validates_too() -> None:
    assert Condition("payload.x == 1").evaluate(context({"x": 1})) is True
    with pytest.raises(ConditionError):
        Condition("data.x")


@pytest.mark.parametrize("clone", [lambda c: pickle.loads(pickle.dumps(c)), copy.deepcopy])
def test_condition_survives_pickle_and_copy(clone: Any) -> None:
    original = compile_condition("payload.order_value > 1000")
    twin = clone(original)
    assert twin == original
    assert twin.evaluate(context({"order_value": 1200})) is True
    assert twin.evaluate(context({"order_value": 10})) is False


def test_evaluation_does_not_mutate_the_context() -> None:
    ctx = context({"items": [{"qty": 1}], "order_value": 5})
    before = copy.deepcopy(ctx)
    compile_condition("payload.items.map(i, i.qty).size() == 1").evaluate(ctx)
    assert ctx == before
