"""Tables whose entries expire in event time, swept from inside the stream.

Faust writes a table change to the changelog partition of the event being processed, so
an entry may only be deleted while processing an event of the partition that wrote it.
Each value therefore carries its partition and event time, and `sweep` runs inside the
agent for the current partition at most once per `every` seconds of event time.

A sweep must not scan the table: with a million entries that blocked the stream for 17 s
each time (make bench). Each partition keeps a sweep index of (event time, key) for the
entries written here (`tables/timers.py`: a local RocksDB beside a RocksDB table, a heap
beside a dict); a sweep pops what is older than the cutoff. After a start or a rebalance
the index of a partition is built by one scan that starts at its first sweep and goes on
`SCAN_CHUNK` entries per call (the timer's backlog calls finish it): done in one go, the
scans of four partitions held the loop 4 x 270 ms in the e-commerce bench.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from choreo.memory import FREED
from choreo.metrics import EXPIRED_ENTRIES, SWEEP_BACKLOG, child
from tables.raw import read, tight
from tables.timers import HeapTimers, Timers, timers_for

# Entries a sweep in the stream removes at most (a RocksDB read, a delete and a changelog
# tombstone each: 1,000 held the stream for about a second); the timer does the rest.
SWEEP_LIMIT = 100
# Entries the scan that builds a partition's sweep index reads per call (about 10-20 ms).
SCAN_CHUNK = 2_000


@dataclass(eq=False)  # compared and hashed by identity (a weak set holds them, below)
class ExpiringTable:
    """A Faust table of key -> [event_ts, partition, value] that forgets after `horizon`.

    Keys are UTF-8 and values orjson bytes (the table's key and value types are raw bytes):
    Faust's json codec cost about as much as the RocksDB write itself in a profile of the
    engine, and gave each key a 4 KiB buffer (see `tight`).
    """

    table: faust.Table
    horizon: float
    every: float = 60.0
    _last_sweep: dict[int, float] = field(default_factory=dict)
    _high_water: dict[int, float] = field(default_factory=dict)
    timers: Timers = field(default_factory=HeapTimers)  # the sweep index: key by event time
    _indexed_parts: set[int] = field(default_factory=set)  # partitions whose index is kept
    _backlog: dict[int, float] = field(default_factory=dict)  # cutoff of an unfinished sweep
    _scans: dict[int, Iterator[tuple[str, Any]]] = field(default_factory=dict)  # index builds

    def get(self, key: str) -> Any | None:
        """The live value for key, or None when absent or expired."""
        raw = read(self.table, key.encode())
        if raw is None:
            return None
        ts, partition, value = orjson.loads(raw)
        if ts < self._high_water.get(partition, ts) - self.horizon:
            return None
        return value

    def put(self, key: str, ts: float, partition: int, value: Any = 1) -> None:
        self.table[key.encode()] = tight(orjson.dumps([ts, partition, value]))
        if partition in self._indexed_parts:
            self.timers.add(partition, ts, key)

    def forget_index(self, *_args: Any, **_kwargs: Any) -> None:
        """After a rebalance: partitions may have changed hands, rebuild at the next sweep."""
        self._indexed_parts.clear()
        self.timers.clear()
        self._backlog.clear()
        self._scans.clear()
        self._show_backlog()

    def advance(self, partition: int, ts: float) -> int:
        """Note event time on a partition; sweep it when due. Returns entries removed.

        A sweep here removes at most `SWEEP_LIMIT` entries, so a million entries expiring
        together do not hold the stream for minutes. The rest is the partition's backlog:
        the engine's timer works it off in its time budget (`sweep_backlog`); otherwise the
        next sweep, `every` seconds of event time later, goes on with it.
        """
        if ts > self._high_water.get(partition, float("-inf")):
            self._high_water[partition] = ts
        high = self._high_water[partition]
        last = self._last_sweep.get(partition)
        if last is None:
            self._last_sweep[partition] = high
            return 0
        if high - last < self.every:
            return 0
        self._last_sweep[partition] = high
        return self._sweep_some(partition, high - self.horizon)

    def _sweep_some(self, partition: int, cutoff: float, limit: int = SWEEP_LIMIT) -> int:
        removed, read_all = self._sweep(partition, cutoff, limit)
        if not read_all or partition in self._scans:
            self._backlog[partition] = cutoff
        else:
            self._backlog.pop(partition, None)
        self._show_backlog()
        return removed

    def _show_backlog(self) -> None:
        """Set the backlog gauge of this table's name, summed over the tables of that name
        (the in-memory tables of inboxes and replays are all "memory")."""
        named = _NAMED.setdefault(self.name, weakref.WeakSet())
        named.add(self)
        child(SWEEP_BACKLOG, self.name).set(sum(len(t._backlog) for t in named))

    @property
    def name(self) -> str:
        """The table's name in metrics ("memory" for a plain dict)."""
        return getattr(self.table, "name", "memory")

    def has_backlog(self, partition: int) -> bool:
        """Whether a sweep of the partition stopped at its limit with more expired."""
        return partition in self._backlog

    def sweep_backlog(self, partition: int, limit: int) -> int:
        """Go on with the partition's unfinished sweep, `limit` entries at most (call with the
        partition's writing context)."""
        cutoff = self._backlog.get(partition)
        return 0 if cutoff is None else self._sweep_some(partition, cutoff, limit)

    def sweep(self, partition: int, cutoff: float, limit: int | None = None) -> int:
        """Delete this partition's entries older than cutoff, looking at `limit` index
        entries at most (call inside the stream); returns how many were deleted."""
        return self._sweep(partition, cutoff, limit)[0]

    def _sweep(self, partition: int, cutoff: float, limit: int | None) -> tuple[int, bool]:
        """(entries deleted, whether the index had no more due than were read)."""
        if not self._indexed(partition, whole=limit is None):
            return 0, False  # the index is still being built; the backlog goes on with it
        removed = 0
        due = self.timers.pop_due(partition, cutoff, limit, inclusive=False)
        for _, key in due:
            raw = read(self.table, key.encode())
            entry = orjson.loads(raw) if raw is not None else None
            # A key written again since, or by another partition, is not this entry's to drop.
            if entry is not None and entry[1] == partition and entry[0] < cutoff:
                del self.table[key.encode()]
                removed += 1
        FREED.add(removed)
        if removed:
            child(EXPIRED_ENTRIES, self.name).inc(removed)
        # Index entries of keys written again since count towards the limit but delete
        # nothing: a full read means there may be more.
        return removed, limit is None or len(due) < limit

    def _indexed(self, partition: int, whole: bool = False) -> bool:
        """Whether the partition's sweep index is complete; until the scan that builds it
        is done, each call reads `SCAN_CHUNK` more entries (all of them if `whole`). Entries
        put meanwhile go in the index directly."""
        if partition not in self._indexed_parts:
            self._indexed_parts.add(partition)
            # RocksDB iterators read a snapshot; a dict (memory store, replay) must not change
            # while iterated, and is small: read it at once.
            rocksdb = getattr(getattr(self.table, "data", None), "_dbs", None) is not None
            self._scans[partition] = self.entries() if rocksdb else iter(list(self.entries()))
        scan = self._scans.get(partition)
        if scan is None:
            return True
        read_now = 0
        found: list[tuple[float, str]] = []
        for key, (ts, owner, _value) in itertools.islice(scan, None if whole else SCAN_CHUNK):
            read_now += 1
            if owner == partition:
                found.append((ts, key))
        self.timers.add_many(partition, found)
        if whole or read_now < SCAN_CHUNK:
            del self._scans[partition]
            return True
        return False

    def entries(self) -> Any:
        """(key, [event_ts, partition, value]) for every entry held locally."""
        for key, raw in self.table.items():
            if raw is not None:
                yield key.decode(), orjson.loads(raw)

    def __len__(self) -> int:
        return sum(1 for _ in self.table.keys())


_NAMED: dict[str, weakref.WeakSet[ExpiringTable]] = {}


def sweep_every(horizon: float) -> float:
    """How much event time passes between two sweeps of a partition's expired entries."""
    return min(60.0, max(horizon / 10, 1.0))


def expiring_table(app: faust.App, name: str, horizon: float, partitions: int,
                   help: str) -> ExpiringTable:  # noqa: A002 - Faust's own argument name
    """A changelog-backed table of raw bytes (ExpiringTable stores orjson under UTF-8 keys),
    forgetting after `horizon`, its sweep index dropped on every rebalance."""
    table = app.Table(name, default=None, partitions=partitions, key_type=bytes,
                      value_type=bytes, help=help)
    expiring = ExpiringTable(table, horizon=horizon, every=sweep_every(horizon),
                             timers=timers_for(app.conf.store, app.conf.tabledir, name))
    app.on_partitions_assigned.connect(expiring.forget_index)
    return expiring
