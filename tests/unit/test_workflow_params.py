"""Parameter references: parsing at load, resolving at run time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.workflows.params import (
    ParamError,
    Ref,
    compile_params,
    describe,
    parse_ref,
    refs_in,
    resolve,
)

SCOPE = {
    "input": {"applicant": {"id": "a-1"}, "items": [1, 2, 3], "x": 7},
    "results": {"quality_checks": [{"score": 90}, {"verified": 3}, {"score": 50}],
                "research": {"sources": ["s1", "s2"]}},
    "previous": {"risk_level": "low"},
}


@pytest.mark.parametrize(("text", "value"), [
    ("$input", SCOPE["input"]),
    ("$input.x", 7),
    ("$input.applicant.id", "a-1"),
    ("$input.items[0]", 1),
    ("$input.items[-1]", 3),
    ("$results.quality_checks[1]", {"verified": 3}),
    ("$results.quality_checks[2].score", 50),
    ("$results.research.sources[1]", "s2"),
    ("$previous", {"risk_level": "low"}),
    ("$previous.risk_level", "low"),
    ("$context.results.quality_checks[0].score", 90),
    ("$context.input.x", 7),
    ("$current.risk_level", "low"),
])
def test_resolves_references(text: str, value: object) -> None:
    assert resolve(compile_params(text), SCOPE) == value


def test_missing_paths_resolve_to_null() -> None:
    for text in ("$input.nope", "$input.items[9]", "$input.x.y", "$results.absent.z",
                 "$input.applicant[0]"):
        assert resolve(compile_params(text), SCOPE) is None


def test_item_and_index_in_a_map_step_and_current_is_the_item() -> None:
    scope = {**SCOPE, "item": {"doc": "d1"}, "index": 4}
    template = compile_params({"doc": "$item.doc", "n": "$index", "same": "$current.doc"})
    assert resolve(template, scope) == {"doc": "d1", "n": 4, "same": "d1"}


def test_nested_templates_keep_literals_and_escape_dollars() -> None:
    template = compile_params({"a": ["$input.x", {"b": "$previous.risk_level"}],
                               "price": "$$5", "n": 3, "flag": True, "s": "plain"})
    assert resolve(template, SCOPE) == {"a": [7, {"b": "low"}], "price": "$5", "n": 3,
                                        "flag": True, "s": "plain"}
    assert describe(template)["price"] == "$$5"
    assert [where for where, _ in refs_in(template)] == ["a[0]", "a[1].b"]


@pytest.mark.parametrize(("text", "why"), [
    ("$inputs.x", "unknown reference"),
    ("$results", "name the step"),
    ("$results[0]", "name the step"),
    ("$input.a b", "cannot read the path"),
    ("$input..a", "cannot read the path"),
    ("$index.x", "has no fields"),
    ("$", "unknown reference"),
])
def test_bad_references_are_refused(text: str, why: str) -> None:
    with pytest.raises(ParamError, match=why):
        parse_ref(text)


def test_a_results_reference_names_its_step() -> None:
    assert parse_ref("$results.quality_checks[1]") == Ref("results", ("quality_checks", 1),
                                                          "$results.quality_checks[1]")
    assert parse_ref("$results.quality_checks[1]").step == "quality_checks"
    assert parse_ref("$input.x").step is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text("ab $.[]0", max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", max_size=3),
                                                                inner, max_size=3),
    max_leaves=10)


@given(json_values)
def test_templates_without_references_resolve_to_themselves(value: object) -> None:
    try:
        template = compile_params(value)
    except ParamError:
        return  # a string such as "$a" that is not a reference: refused at load
    if not list(refs_in(template)):
        assert describe(template) == value
        assert resolve(template, SCOPE) == _unescaped(value)


def _unescaped(value: object) -> object:
    if isinstance(value, str) and value.startswith("$$"):
        return value[1:]
    if isinstance(value, list):
        return [_unescaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _unescaped(v) for k, v in value.items()}
    return value


@given(st.lists(st.integers(), min_size=1, max_size=6), st.integers(-8, 8))
def test_list_indexes_follow_python_within_bounds(items: list[int], index: int) -> None:
    got = resolve(parse_ref(f"$input.items[{index}]"), {"input": {"items": items}})
    assert got == (items[index] if -len(items) <= index < len(items) else None)
