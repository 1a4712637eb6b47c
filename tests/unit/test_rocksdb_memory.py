"""The shared RocksDB budget: every store Faust opens after `install` stays inside it."""

from __future__ import annotations

import os
import time

from faust.stores.rocksdb import RocksDBOptions

from choreo import rocksdb_memory

MB = 1 << 20


def test_stores_share_one_cache_and_one_write_budget(tmp_path):  # noqa: ANN001
    budget = rocksdb_memory.install(cache_bytes=8 * MB, write_buffer_bytes=4 * MB)
    # Faust's own defaults would give each store a 2 GiB cache and 3 x 64 MiB memtables.
    dbs = [RocksDBOptions().open(tmp_path / name) for name in ("a", "b", "c")]
    value = os.urandom(1024)
    written = 0
    for i in range(30_000):  # 30 MB of values across the three stores
        dbs[i % 3][f"key-{i}".encode()] = value
        written += len(value)
    assert written > 7 * 4 * MB
    memtables = budget.write_buffers.get_usage()
    # The manager flushes when the total passes its size: what is held stays near 4 MB
    # (arena blocks are counted whole, and the immutable memtable being flushed with them).
    assert 0 < memtables <= 2 * 4 * MB, memtables
    for i in range(0, 30_000, 7):  # reads go through the shared cache, which stays bounded
        assert dbs[i % 3][f"key-{i}".encode()] == value
    assert 0 < budget.cache.get_usage() <= 8 * MB
    # What the metric reports is the shared budget's (read again: RocksDB's background
    # flushes and evictions move the figures between two reads).
    usage = rocksdb_memory.usage()
    assert set(usage) == {"block_cache", "memtables"}
    assert 0 < usage["block_cache"] <= 8 * MB and 0 < usage["memtables"] <= 2 * 4 * MB
    for db in dbs:
        db.close()


def test_shed_hands_back_memtables_and_cached_blocks_after_a_mass_expiry(tmp_path):  # noqa: ANN001
    budget = rocksdb_memory.install(cache_bytes=8 * MB, write_buffer_bytes=4 * MB)
    db = RocksDBOptions().open(tmp_path / "expired")
    value = os.urandom(1024)
    for i in range(6_000):
        db[f"key-{i}".encode()] = value
    for i in range(0, 6_000, 3):
        assert db[f"key-{i}".encode()] == value
    for i in range(6_000):  # the keys expire: tombstones in the memtable
        del db[f"key-{i}".encode()]
    assert budget.write_buffers.get_usage() > 0 and budget.cache.get_usage() > 1 * MB
    rocksdb_memory.shed([db])
    # The flushed memtable is freed when RocksDB's flush job lets go of it, which on a busy
    # machine can come a moment after flush() returns: wait for it (bounded, not timed).
    for _ in range(200):
        if budget.write_buffers.get_usage() < 64 * 1024:
            break
        time.sleep(0.05)
    assert budget.write_buffers.get_usage() < 64 * 1024  # a new, empty memtable
    assert budget.cache.get_usage() < 256 * 1024
    db[b"after"] = value  # the budget is whole again
    assert db[b"after"] == value
    db.close()


def test_a_timer_index_uses_the_shared_budget(tmp_path):  # noqa: ANN001
    from tables.timers import RocksTimers, open_indexes

    budget = rocksdb_memory.install(cache_bytes=8 * MB, write_buffer_bytes=4 * MB)
    before = budget.write_buffers.get_usage()
    timers = RocksTimers(tmp_path / "timers")
    timers.add_many(0, [(float(i), f"pattern\x1fkey-{i:08d}" * 8) for i in range(20_000)])
    assert budget.write_buffers.get_usage() > before
    db = timers._db
    assert db is not None and any(db is open_db for open_db in open_indexes())
    timers.clear()
    assert not any(db is open_db for open_db in open_indexes())


def test_a_reopened_store_stays_inside_the_budget(tmp_path):  # noqa: ANN001
    """Every restart reopens the stores; RocksDB then takes a column family's options from
    its OPTIONS file, which does not keep the block cache, unless they are named."""
    budget = rocksdb_memory.install(cache_bytes=16 * MB, write_buffer_bytes=4 * MB)
    db = RocksDBOptions().open(tmp_path / "store")
    db[b"key"] = b"value"
    db.close()
    del db
    again = RocksDBOptions().open(tmp_path / "store")
    assert again[b"key"] == b"value"
    assert again.property_int_value("rocksdb.block-cache-capacity") == 16 * MB  # not 8: the default
    value = os.urandom(1024)
    for i in range(3_000):
        again[f"key-{i}".encode()] = value
    again.flush()
    for i in range(3_000):
        assert again[f"key-{i}".encode()] == value
    # The blocks it read are the shared cache's (a cache of its own would leave it empty).
    assert again.property_int_value("rocksdb.block-cache-usage") == budget.cache.get_usage()
    assert budget.cache.get_usage() > 1 * MB
    again.close()
