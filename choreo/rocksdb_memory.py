"""One memory budget for every RocksDB store of the process (Kafka Streams'
`BoundedMemoryRocksDBConfig`, for Faust).

Faust opens one RocksDB instance per table and partition, each with its own 2 GiB block
cache and up to three 64 MiB memtables. A worker holding four partitions of three tables
has twelve of them: `make bench` saw a worker loaded with 400,000 keys reach 1.1 GB of RSS
that did not come down when the keys expired, because memtables and cached blocks are only
released when RocksDB flushes and evicts, not when keys are deleted.

`install()` makes every store the process opens share one LRU block cache of `cache_bytes`
and one `WriteBufferManager` of `write_buffer_bytes`, which flushes the largest memtable
when the total goes over. Per store, a memtable is `write_buffer_bytes / 4` at most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust.stores import rocksdb as faust_rocksdb

log = logging.getLogger(__name__)
_PATCHED = "_choreo_bounded_memory"


@dataclass(frozen=True)
class Budget:
    cache_bytes: int
    write_buffer_bytes: int
    cache: rocksdict.Cache
    write_buffers: rocksdict.WriteBufferManager
    memtable_bytes: int


_budget: Budget | None = None


def install(cache_bytes: int, write_buffer_bytes: int) -> Budget:
    """Make every RocksDB store opened from now on share one cache and one write budget.

    Called again with the same sizes (another app in the same process), the budget stays;
    with other sizes, stores opened after it use the new one.
    """
    global _budget
    if _budget is not None and (_budget.cache_bytes, _budget.write_buffer_bytes) == (
            cache_bytes, write_buffer_bytes):
        return _budget
    _budget = Budget(
        cache_bytes=cache_bytes,
        write_buffer_bytes=write_buffer_bytes,
        cache=rocksdict.Cache(cache_bytes),
        write_buffers=rocksdict.WriteBufferManager(write_buffer_bytes, False),
        memtable_bytes=max(1 << 20, write_buffer_bytes // 4),
    )
    options_class = faust_rocksdb.RocksDBOptions
    if not getattr(options_class, _PATCHED, False):
        stock = options_class.as_options

        def as_options(self: faust_rocksdb.RocksDBOptions) -> rocksdict.Options:
            if not self.use_rocksdict or _budget is None:
                return stock(self)
            return bounded_options(self, _budget)

        stock_open = options_class.open

        def open_store(self: faust_rocksdb.RocksDBOptions, path: Any, *,
                       read_only: bool = False) -> Any:
            if not self.use_rocksdict or _budget is None:
                return stock_open(self, path, read_only=read_only)
            return open_bounded(self, path)

        options_class.as_options = as_options
        options_class.open = open_store
        setattr(options_class, _PATCHED, True)
    return _budget


def open_bounded(config: faust_rocksdb.RocksDBOptions, path: Any) -> rocksdict.Rdict:
    """Open a store as Faust does, its column family with the bounded options too.

    A database that already exists (every restart) opens its column families with the
    options in its OPTIONS file unless they are named, and the table options (the block
    cache) are not kept there: Faust's way, each reopened store got RocksDB's default
    8 MiB cache of its own (make bench, `keys`: twelve stores holding 34 MB of blocks
    after the keys expired, none of it in the budget).
    """
    access = (rocksdict.AccessType.read_write() if config.ttl is None
              else rocksdict.AccessType.with_ttl(config.ttl))
    db = rocksdict.Rdict(str(path), options=config.as_options(),
                         column_families={"default": config.as_options()},
                         access_type=access)
    db.set_read_options(rocksdict.ReadOptions())
    return db


def bounded_options(config: faust_rocksdb.RocksDBOptions, budget: Budget) -> rocksdict.Options:
    """Faust's rocksdict options, with the shared cache and write budget."""
    options = _options(budget, config.max_open_files, config.write_buffer_size,
                       config.target_file_size_base)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(config.bloom_filter_size, block_based=True)
    table.set_block_cache(budget.cache)
    table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    options.set_block_based_table_factory(table)
    return options


def index_options() -> rocksdict.Options:
    """Options for a local index read in key order, never by point lookups (the timers of
    `tables/timers.py`): no bloom filter; the shared budget once installed."""
    if _budget is None:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        return options
    options = _options(_budget, 300, _budget.memtable_bytes, 8 << 20)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(_budget.cache)
    options.set_block_based_table_factory(table)
    return options


def _options(budget: Budget, max_open_files: int, write_buffer_size: int,
             target_file_size_base: int) -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_max_open_files(max_open_files)
    options.set_write_buffer_size(min(write_buffer_size, budget.memtable_bytes))
    options.set_max_write_buffer_number(2)
    options.set_target_file_size_base(target_file_size_base)
    options.set_write_buffer_manager(budget.write_buffers)
    return options


def shed(dbs: Iterable[rocksdict.Rdict]) -> None:
    """After a mass expiry: flush the memtables of `dbs` (full of the tombstones) and empty
    the block cache (blocks of deleted keys, mostly), so the budget's memory goes back.

    Both fill up again as the worker reads and writes; they are not lost state.
    """
    for db in dbs:
        try:
            db.flush()
        except Exception:  # noqa: BLE001 - one store's failure leaves the others to flush
            log.warning("flushing a RocksDB store after a mass expiry failed", exc_info=True)
    if _budget is not None:
        _budget.cache.set_capacity(0)
        _budget.cache.set_capacity(_budget.cache_bytes)


def usage() -> dict[str, int]:
    """Bytes held now by the shared block cache and by memtables (empty before install)."""
    if _budget is None:
        return {}
    return {"block_cache": _budget.cache.get_usage(),
            "memtables": _budget.write_buffers.get_usage()}
