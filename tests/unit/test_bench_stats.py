"""The benchmark's arithmetic: percentiles, rates, ratios."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import first_per_key, latency_summary, percentile, rate, ratio


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile([10.0, 0.0, 5.0], 50) == 5.0  # unsorted input


def test_percentile_of_one_and_none() -> None:
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_tail_percentiles_on_a_known_distribution() -> None:
    values = [float(i) for i in range(1, 1001)]  # 1..1000
    assert percentile(values, 99) == pytest.approx(990.01)
    assert percentile(values, 99.9) == pytest.approx(999.001)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
       st.floats(0, 100))
def test_percentile_stays_within_the_data_and_is_monotone(values: list[float], q: float) -> None:
    value = percentile(values, q)
    assert min(values) <= value <= max(values) or math.isclose(value, min(values))
    assert percentile(values, min(100.0, q + 1)) >= value - 1e-6


def test_latency_summary() -> None:
    summary = latency_summary([3.0, 1.0, 2.0])
    assert summary == {"count": 3, "p50_ms": 2.0, "p99_ms": pytest.approx(2.98),
                       "p999_ms": pytest.approx(2.998), "max_ms": 3.0}
    assert latency_summary([])["p99_ms"] is None


def test_rate_counts_intervals_between_first_and_last_output() -> None:
    assert rate(1001, 0.0, 1000.0) == pytest.approx(1000.0)
    assert rate(1, 0.0, 1000.0) is None
    assert rate(10, 5.0, 5.0) is None
    assert rate(10, None, 5.0) is None


def test_ratio_and_first_per_key() -> None:
    assert ratio(5.0, 10.0) == 0.5
    assert ratio(None, 10.0) is None
    assert ratio(5.0, 0.0) is None
    assert first_per_key([("a", 3.0), ("b", 1.0), ("a", 2.0)]) == {"a": 2.0, "b": 1.0}


def test_the_table_says_when_a_restore_did_not_finish() -> None:
    from bench import report

    rows = [{"name": "keys", "kind": "engine", "recovery_s": None,
             "recovery_unfinished_after_s": 1500.0},
            {"name": "ecommerce", "kind": "engine", "recovery_s": 20.8}]
    text = report.table(rows)
    keys_line = next(line for line in text.splitlines() if line.startswith("| keys"))
    assert keys_line.rstrip(" |").endswith("> 1500")
    assert "20.80" in text
