"""Expiring tables forget entries in event time, a bounded number per call to `advance`."""

from __future__ import annotations

from choreo.metrics import REGISTRY
from tables.expiring import SWEEP_LIMIT, ExpiringTable


def expired_total() -> float:
    return REGISTRY.get_sample_value("choreo_expired_entries_total", {"table": "memory"}) or 0


def backlog_shown() -> float | None:
    return REGISTRY.get_sample_value("choreo_sweep_backlog_partitions", {"table": "memory"})


def test_entries_expire_in_event_time_a_bounded_number_per_call() -> None:
    table = ExpiringTable({}, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    before = expired_total()
    table.advance(0, 0.0)
    table.advance(1, 0.0)
    count = 3 * SWEEP_LIMIT + 50
    for i in range(count):
        table.put(f"k{i}", ts=float(i % 10), partition=0, value=i)
    table.put("other", ts=1.0, partition=1)
    assert table.get("k7") == 7
    table.put("k1", ts=150.0, partition=0, value="again")  # written again since: it stays
    assert table.advance(0, 200.0) == SWEEP_LIMIT  # cutoff 140: all but k1, SWEEP_LIMIT now
    assert table.advance(0, 201.0) == 0  # the next event does not sweep: the timer goes on
    assert table.has_backlog(0) and not table.has_backlog(1)
    assert backlog_shown() == 1  # /metrics: one partition still to sweep
    removed = [table.sweep_backlog(0, 2 * SWEEP_LIMIT) for _ in range(3)]  # the timer's
    assert removed == [2 * SWEEP_LIMIT, count - 1 - 3 * SWEEP_LIMIT, 0]
    assert not table.has_backlog(0)
    assert backlog_shown() == 0
    assert expired_total() - before == count - 1  # what /metrics shows
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


def test_the_sweep_index_is_built_a_chunk_per_call(monkeypatch) -> None:
    """After a start the index comes from a scan; it goes on a chunk per call, and entries
    written meanwhile are swept too."""
    from tables import expiring

    monkeypatch.setattr(expiring, "SCAN_CHUNK", 40)
    stored: dict = {}
    before = ExpiringTable(stored, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    for i in range(100):  # written before a restart
        before.put(f"old{i}", ts=float(i % 10), partition=i % 2)
    table = ExpiringTable(stored, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    table.advance(0, 0.0)
    assert table.advance(0, 200.0) == 0  # read 40 of 100 entries, nothing swept yet
    assert table.has_backlog(0)
    assert backlog_shown() == 1  # the index build counts as backlog
    table.put("new", ts=5.0, partition=0)  # written while the scan goes on
    removed = [table.sweep_backlog(0, 1_000) for _ in range(3)]
    assert removed == [0, 51, 0]  # 80 read, then the rest and the sweep
    assert not table.has_backlog(0)
    assert sorted(k for k, (_ts, owner, _v) in table.entries() if owner == 0) == []
    assert len([k for k, (_ts, owner, _v) in table.entries() if owner == 1]) == 50


def test_a_sweep_that_read_only_rewritten_keys_still_leaves_a_backlog() -> None:
    """Index entries of keys written again since delete nothing but use the sweep's limit;
    the expired entries behind them must still be swept by the backlog."""
    table = ExpiringTable({}, horizon=60.0, every=6.0)  # type: ignore[arg-type]
    table.advance(0, 0.0)
    table.sweep(0, -1.0)  # builds the (empty) index: puts go into it from now on
    for i in range(SWEEP_LIMIT):  # written at 1.0, then again at 150.0: not expired
        table.put(f"again{i}", ts=1.0, partition=0)
        table.put(f"again{i}", ts=150.0, partition=0)
    for i in range(10):
        table.put(f"old{i}", ts=2.0, partition=0)
    assert table.advance(0, 200.0) == 0  # read SWEEP_LIMIT stale index entries, none due
    assert table.has_backlog(0)
    assert table.sweep_backlog(0, 2 * SWEEP_LIMIT) == 10
    assert not table.has_backlog(0)
    assert table.get("old3") is None and table.get("again3") == 1


def test_the_backlog_gauge_adds_up_the_tables_that_share_a_name() -> None:
    """Inboxes and replays each hold an in-memory table, all named "memory": one table's
    count must not hide another's backlog."""

    def with_backlog() -> ExpiringTable:
        table = ExpiringTable({}, horizon=60.0, every=6.0)  # type: ignore[arg-type]
        table.advance(0, 0.0)
        table.sweep(0, -1.0)  # the index is built; puts go into it
        for i in range(SWEEP_LIMIT + 1):
            table.put(f"k{i}", ts=1.0, partition=0)
        table.advance(0, 200.0)  # SWEEP_LIMIT swept, one left for the timer
        assert table.has_backlog(0)
        return table

    first = with_backlog()
    assert backlog_shown() == 1
    second = with_backlog()
    assert backlog_shown() == 2
    first.sweep_backlog(0, SWEEP_LIMIT)  # first is done: second still has its backlog
    assert backlog_shown() == 1
    second.forget_index()  # a rebalance: rebuilt at its next sweep
    assert backlog_shown() == 0
