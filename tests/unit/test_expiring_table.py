"""Expiring tables forget entries in event time, a bounded number per call to `advance`."""

from __future__ import annotations

from tables.expiring import SWEEP_LIMIT, ExpiringTable


def test_entries_expire_in_event_time_a_bounded_number_per_call() -> None:
    table = ExpiringTable({}, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    table.advance(0, 0.0)
    table.advance(1, 0.0)
    count = 2 * SWEEP_LIMIT + 500
    for i in range(count):
        table.put(f"k{i}", ts=float(i % 10), partition=0, value=i)
    table.put("other", ts=1.0, partition=1)
    assert table.get("k7") == 7
    table.put("k1", ts=150.0, partition=0, value="again")  # written again since: it stays
    removed = [table.advance(0, 200.0) for _ in range(4)]  # cutoff 140: all but k1
    assert removed == [SWEEP_LIMIT, SWEEP_LIMIT, count - 1 - 2 * SWEEP_LIMIT, 0]
    assert {key for key, _ in table.entries()} == {"k1", "other"}  # partition 1: its own events
    assert table.get("k1") == "again"
    assert table.get("k2") is None


def test_an_expired_entry_reads_as_absent_before_it_is_swept() -> None:
    table = ExpiringTable({}, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    table.put("a", ts=0.0, partition=0)
    table.advance(0, 59.0)
    assert table.get("a") == 1
    table.advance(0, 61.0)
    assert table.get("a") is None
