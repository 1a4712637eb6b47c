"""Timer indexes: the RocksDB one pops what the heap one pops, in the same order."""

import random

import pytest

from tables.expiring import ExpiringTable
from tables.timers import HeapTimers, RocksTimers, time_bytes, time_of, timers_for


@pytest.fixture(params=["heap", "rocksdb"])
def timers(request, tmp_path):
    made = HeapTimers() if request.param == "heap" else RocksTimers(tmp_path / "timers" / "t")
    yield made
    made.clear()


def test_time_bytes_sort_as_the_floats_do():
    times = [-1e300, -5.5, -1.0, -0.0, 0.0, 1e-9, 1.0, 10.1, 1.8e9, 1.8e9 + 1e-6, 1e300]
    assert sorted(times, key=time_bytes) == sorted(times)
    for when in times:
        assert time_of(time_bytes(when)) == when


def test_pops_what_is_due_in_time_order_and_leaves_the_rest(timers):
    timers.add(0, 30.0, "c")
    timers.add(0, 10.1, "a")
    timers.add(0, 20.0, "b")
    timers.add(1, 5.0, "other partition")
    assert timers.size(0) == 3
    assert timers.pop_due(0, 20.0) == [(10.1, "a"), (20.0, "b")]  # inclusive
    assert timers.pop_due(0, 20.0) == []
    assert timers.size(0) == 1
    assert timers.pop_due(1, 100.0) == [(5.0, "other partition")]
    assert timers.pop_due(0, 100.0) == [(30.0, "c")]


def test_exclusive_bound_and_limit(timers):
    for member in ("x", "y", "z"):
        timers.add(0, 10.0, member)
    timers.add(0, 9.0, "w")
    assert timers.pop_due(0, 10.0, inclusive=False) == [(9.0, "w")]
    first = timers.pop_due(0, 10.0, limit=2)
    rest = timers.pop_due(0, 10.0, limit=2)
    assert len(first) == 2 and len(rest) == 1
    assert sorted(m for _, m in first + rest) == ["x", "y", "z"]


def test_an_entry_added_before_what_was_popped_is_still_found(timers):
    """Reads start after the last popped key; an earlier deadline added later (a state due
    at once) must move that start back."""
    timers.add(0, 50.0, "late")
    timers.add(0, 60.0, "later")
    assert timers.pop_due(0, 55.0) == [(50.0, "late")]
    timers.add(0, 40.0, "rescheduled in the past")
    timers.add_many(0, [(45.0, "batch-b"), (42.0, "batch-a")])
    assert timers.pop_due(0, 100.0) == [(40.0, "rescheduled in the past"), (42.0, "batch-a"),
                                         (45.0, "batch-b"), (60.0, "later")]


def test_same_member_at_several_times_and_unicode_members(timers):
    timers.add(0, 2.0, "p\x1fkey-é")
    timers.add(0, 1.0, "p\x1fkey-é")
    assert timers.pop_due(0, 3.0) == [(1.0, "p\x1fkey-é"), (2.0, "p\x1fkey-é")]


def test_a_deadline_saved_again_is_one_entry_in_rocksdb(tmp_path):
    """A state saved again with the same deadline: the count the timer pops by stays exact."""
    timers = RocksTimers(tmp_path / "t")
    for _ in range(3):
        timers.add(0, 5.0, "p\x1fk")
    assert timers.size(0) == 1
    assert timers.pop_due(0, 10.0) == [(5.0, "p\x1fk")]
    assert timers.size(0) == 0
    timers.clear()


def test_large_partition_numbers(timers):
    timers.add(70_000, 1.0, "a")
    timers.add(3, 1.0, "b")
    assert timers.pop_due(70_000, 2.0) == [(1.0, "a")]
    assert timers.pop_due(3, 2.0) == [(1.0, "b")]


def test_clear_empties_every_partition(timers):
    timers.add(0, 1.0, "a")
    timers.add(3, 1.0, "b")
    timers.clear()
    assert timers.size(0) == timers.size(3) == 0
    assert timers.pop_due(0, 10.0) == [] and timers.pop_due(3, 10.0) == []
    timers.add(0, 2.0, "after")
    assert timers.pop_due(0, 10.0) == [(2.0, "after")]


def test_matches_a_heap_over_random_operations(tmp_path):
    rng = random.Random(7)
    heap, rocks = HeapTimers(), RocksTimers(tmp_path / "r")
    now = 0.0
    for step in range(3_000):
        partition = rng.randrange(3)
        if rng.random() < 0.6:
            when, member = now + rng.uniform(-5, 30), f"m{rng.randrange(200)}"
            heap.add(partition, when, member)
            rocks.add(partition, when, member)
        else:
            now += rng.uniform(0, 3)
            limit = rng.choice([None, 1, 5])
            got = rocks.pop_due(partition, now, limit)
            want = heap.pop_due(partition, now, limit)
            # Equal times may come out in another order (by member in RocksDB); the times
            # and the sets of members match.
            assert [t for t, _ in got] == [t for t, _ in want], step
            assert sorted(got) == sorted(want), step
        assert rocks.size(partition) == heap.size(partition)
    rocks.clear()


def test_a_rocksdb_index_starts_empty_though_its_files_are_left_from_a_run(tmp_path):
    path = tmp_path / "timers" / "seen"
    first = RocksTimers(path)
    first.add(0, 1.0, "from the last run")
    first._db.close()  # the worker died: files left, the index never cleared
    first._db = None
    again = RocksTimers(path)
    again.add(0, 2.0, "this run")
    assert again.pop_due(0, 10.0) == [(2.0, "this run")]
    again.clear()


def test_rocksdb_timers_beside_rocksdb_tables_a_heap_beside_memory(tmp_path):
    assert isinstance(timers_for("rocksdb://", tmp_path, "x"), RocksTimers)
    assert isinstance(timers_for("memory://", tmp_path, "x"), HeapTimers)


def test_expiring_table_sweeps_through_a_rocksdb_index(tmp_path):
    table = ExpiringTable({}, horizon=60.0, every=6.0,  # type: ignore[arg-type]
                          timers=RocksTimers(tmp_path / "seen"))
    for i in range(10):  # before the first sweep: found by the scan that builds the index
        table.put(f"k{i}", 100.0 + i, 0)
    assert table.sweep(0, 105.0) == 5
    assert [table.get(f"k{i}") for i in range(10)] == [None] * 5 + [1] * 5
    table.put("late", 101.0, 0)  # after: into the index directly
    assert table.sweep(0, 107.0) == 3  # k5, k6 and late
    assert table.get("late") is None and table.get("k7") == 1
    table.forget_index()  # a rebalance: the index is dropped and built again
    assert table.timers.size(0) == 0
    assert table.sweep(0, 200.0) == 3
    table.timers.clear()
