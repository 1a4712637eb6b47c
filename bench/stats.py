"""Pure arithmetic for the benchmark: percentiles, rates and ratios."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    None for an empty sequence. The input need not be sorted.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """p50, p99, p99.9 and max of latencies in milliseconds, with the sample count."""
    ordered = sorted(values_ms)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "p999_ms": percentile(ordered, 99.9),
        "max_ms": float(ordered[-1]) if ordered else None,
    }


def rate(count: int, first_ms: float | None, last_ms: float | None) -> float | None:
    """Events per second for `count` events handled between two timestamps in milliseconds.

    The span covers count - 1 intervals between the first and the last output; fewer than
    two events or a zero span give None.
    """
    if first_ms is None or last_ms is None or count < 2 or last_ms <= first_ms:
        return None
    return (count - 1) * 1000.0 / (last_ms - first_ms)


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def first_per_key(items: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The smallest value for each key: the first action each trigger event produced."""
    out: dict[str, float] = {}
    for key, value in items:
        known = out.get(key)
        if known is None or value < known:
            out[key] = value
    return out
