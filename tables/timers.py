"""Timer indexes: per partition, members ordered by the time they are due.

The engine's deadlines (sequence steps, absence windows, correlation expiry) and the
de-duplication tables' sweep index are such indexes. Held as Python heaps, a million quiet
keys cost their tuples, floats and key strings (about 100 bytes an entry, several entries
a key), and once freed that memory stayed in the worker: pymalloc gives an arena back only
when every object in it is gone (make bench, `keys`: 742 MB loaded, 759 MB after the keys
went quiet, 86 MB idle).

`RocksTimers` keeps the index in a local RocksDB instead, as Flink's RocksDB timer service
does: keys are partition, then the due time in an order-preserving encoding of the float,
then the member, so "what is due" is a range read from the partition's lowest key. Its
memtables and cached blocks come out of the process's RocksDB budget
(`choreo/rocksdb_memory.py`). It has no changelog and no WAL: an index is rebuilt from its
table after every start and rebalance, so nothing in it needs to survive. `HeapTimers`
is the same in memory, for tables held in a dict (replay, the agents' inbox, tests).
"""

from __future__ import annotations

import heapq
import shutil
import struct
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import rocksdict

from choreo import rocksdb_memory

_PARTITION = struct.Struct(">I")
_DOUBLE = struct.Struct(">d")
_BITS = struct.Struct(">Q")
# After every UTF-8 byte: a bound of time + this takes in every member due at that time.
_AFTER_MEMBERS = b"\xff"


class Timers(Protocol):
    """Members (strings) due at a time, per partition; a member may be in several times."""

    def add(self, partition: int, when: float, member: str) -> None: ...

    def add_many(self, partition: int, entries: Iterable[tuple[float, str]]) -> None: ...

    def pop_due(self, partition: int, until: float, limit: int | None = None,
                inclusive: bool = True) -> list[tuple[float, str]]:
        """Remove and return, earliest first, up to `limit` entries due at or before `until`
        (before it when not `inclusive`)."""
        ...

    def size(self, partition: int) -> int:
        """Entries held for the partition. The timer pops at most this many in a tick, so
        what it puts back runs next tick; `RocksTimers.add_many` (index builds) counts an
        entry already there again, which only makes the bound looser."""
        ...

    def clear(self) -> None: ...


@dataclass
class HeapTimers:
    """A heap of (time, member) per partition."""

    heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)

    def add(self, partition: int, when: float, member: str) -> None:
        heapq.heappush(self.heaps.setdefault(partition, []), (when, member))

    def add_many(self, partition: int, entries: Iterable[tuple[float, str]]) -> None:
        heap = self.heaps.setdefault(partition, [])
        heap.extend(entries)
        heapq.heapify(heap)

    def pop_due(self, partition: int, until: float, limit: int | None = None,
                inclusive: bool = True) -> list[tuple[float, str]]:
        heap = self.heaps.get(partition)
        out: list[tuple[float, str]] = []
        while heap and (heap[0][0] <= until if inclusive else heap[0][0] < until) and (
                limit is None or len(out) < limit):
            out.append(heapq.heappop(heap))
        return out

    def size(self, partition: int) -> int:
        return len(self.heaps.get(partition, ()))

    def clear(self) -> None:
        self.heaps.clear()


def time_bytes(when: float) -> bytes:
    """8 bytes that sort as the floats do (IEEE 754 with the sign flipped, or every bit
    flipped for negatives), so RocksDB's byte order is time order."""
    (bits,) = _BITS.unpack(_DOUBLE.pack(when))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return _BITS.pack(bits)


def time_of(raw: bytes) -> float:
    (bits,) = _BITS.unpack(raw)
    bits = bits ^ 1 << 63 if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return _DOUBLE.unpack(_BITS.pack(bits))[0]


@dataclass(eq=False)
class RocksTimers:
    """The index in a RocksDB at `path`, emptied when opened and by `clear`."""

    path: Path
    _db: rocksdict.Rdict | None = None
    _sizes: dict[int, int] = field(default_factory=dict)
    # Per partition, a key at or below every live entry: reads start there, past the
    # tombstones of what was popped (a queue in RocksDB otherwise reads them on every seek).
    _low: dict[int, bytes] = field(default_factory=dict)

    def _open(self) -> rocksdict.Rdict:
        if self._db is None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = rocksdict.Rdict(str(self.path), options=rocksdb_memory.index_options())
            no_wal = rocksdict.WriteOptions()
            no_wal.disable_wal = True
            self._db.set_write_options(no_wal)
            _OPEN.add(self)
        return self._db

    def add(self, partition: int, when: float, member: str) -> None:
        key = _PARTITION.pack(partition) + time_bytes(when) + member.encode()
        db = self._open()
        if db.get(key) is not None:  # a state saved again with the same deadline
            return
        db.put(key, b"")
        self._added(partition, key, 1)

    def add_many(self, partition: int, entries: Iterable[tuple[float, str]]) -> None:
        prefix = _PARTITION.pack(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        lowest, n = None, 0
        for when, member in entries:
            key = prefix + time_bytes(when) + member.encode()
            batch.put(key, b"")
            lowest = key if lowest is None or key < lowest else lowest
            n += 1
        if n:
            self._open().write(batch)
            self._added(partition, lowest, n)

    def _added(self, partition: int, key: bytes, n: int) -> None:
        self._sizes[partition] = self._sizes.get(partition, 0) + n
        low = self._low.get(partition)
        if low is None or key < low:
            self._low[partition] = key

    def pop_due(self, partition: int, until: float, limit: int | None = None,
                inclusive: bool = True) -> list[tuple[float, str]]:
        if not self._sizes.get(partition):
            return []
        db = self._open()
        prefix = _PARTITION.pack(partition)
        low = self._low.get(partition, prefix)
        bounds = rocksdict.ReadOptions()
        bounds.set_iterate_lower_bound(low)
        bounds.set_iterate_upper_bound(
            prefix + time_bytes(until) + (_AFTER_MEMBERS if inclusive else b""))
        it = db.iter(bounds)
        it.seek(low)
        out: list[tuple[float, str]] = []
        batch = rocksdict.WriteBatch(raw_mode=True)
        last = None
        while it.valid() and (limit is None or len(out) < limit):
            last = it.key()
            batch.delete(last)
            out.append((time_of(last[4:12]), last[12:].decode()))
            it.next()
        del it
        if out:
            db.write(batch)
            self._sizes[partition] -= len(out)
            self._low[partition] = last + b"\x00"  # the least key after the last one read
        return out

    def size(self, partition: int) -> int:
        return self._sizes.get(partition, 0)

    def clear(self) -> None:
        """Drop every entry (the files too: the index is rebuilt from its table)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._sizes.clear()
        self._low.clear()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        self.clear()


_OPEN: weakref.WeakSet[RocksTimers] = weakref.WeakSet()


def open_indexes() -> Iterator[rocksdict.Rdict]:
    """The RocksDB instances of the timer indexes open in this process."""
    for timers in list(_OPEN):
        if timers._db is not None:
            yield timers._db


def timers_for(store_url: object, tabledir: object, name: str) -> Timers:
    """RocksDB timers beside a RocksDB-backed table; a heap beside an in-memory one."""
    if str(store_url).startswith("rocksdb") and tabledir is not None:
        return RocksTimers(Path(str(tabledir)) / "timers" / name)
    return HeapTimers()
