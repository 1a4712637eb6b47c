"""Pattern state: one snapshot per (pattern, key) in a changelog-backed Faust table.

All keyed patterns share the table `pattern-state`, its keys `"{pattern_id}\\x1f{key}"`.
A key's state always lives on partition `partition_for(key)` of the events topic (events on
another partition are re-sent there first), so one worker owns every key it holds.

Each value is JSON: `{"p": partition, "o": {source: offset}, "s": snapshot, "k": kind,
"f": fingerprint}`. `o` is the offset of the last record applied from each source topic
("e" events, "r" rekeyed); a record re-read after a crash whose effect is already in the
snapshot is not applied twice. `k` and `f` say which definition the snapshot was built
for: every read judges the entry against the file (`choreo/state_evolution.py`), and the
rebuild after a start or rebalance deletes what the file no longer has a place for and
moves what a renamed pattern takes over to its new id.

Deadlines (sequence steps, absence windows, closing windows, correlation expiry) sit in a
timer index per partition that the timer pops (`tables/timers.py`: a local RocksDB beside
a RocksDB table, a heap beside a dict); it is rebuilt from the table after each
rebalance, so nothing but the table needs to survive a restart. The watermark of each
partition is kept in the table too (key `"\\x00wm\\x1f{clock}"`) so it does not move back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.streams import _current_event  # the context var Faust's tables read

from choreo.actions import record_size
from choreo.matchers.watermark import Watermark
from choreo.metrics import STATE_CARRIED, STATE_DROPPED
from choreo.state_evolution import StatePlan
from tables.raw import read, tight
from tables.timers import HeapTimers, Timers, timers_for

log = logging.getLogger(__name__)

SEP = "\x1f"
TABLE = "pattern-state"
REBUILD_BATCH = 5_000  # deadlines written to the index at a time when it is rebuilt
WM_PREFIX = "\x00wm" + SEP


STATE_TOO_LARGE = "state_too_large"


class StateTooLarge(ValueError):
    """A key's new state that would not fit in a changelog record: it is not written, and
    the record that would have made it is dead-lettered (`streams.records.isolated` reads
    `dead_letter_reason`) while the key keeps the state it had."""

    dead_letter_reason = STATE_TOO_LARGE


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the Java client)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass
class Slot:
    """One (pattern, key) entry as stored."""

    partition: int
    offsets: dict[str, int]
    state: dict | None
    kind: str | None = None  # the kind and definition fingerprint it was stored with
    print_: str | None = None

    def applied(self, source: str, offset: int) -> bool:
        return offset <= self.offsets.get(source, -1)


@dataclass
class _Message:
    topic: str
    partition: int


@dataclass
class _Tick:
    """Stands in for the event being processed while the timer writes to a partition."""

    message: _Message


@contextlib.contextmanager
def writing_partition(topic: str, partition: int) -> Iterator[None]:
    """Let table writes outside the stream go to `partition`'s store and changelog.

    Faust takes a write's changelog partition (and its RocksDB instance) from the event
    being processed, read from a context variable, and refuses writes with none. The timer
    firing deadlines owns the partition it writes to, so it names it here.
    """
    tick = _Tick(_Message(topic, partition))
    token = _current_event.set(weakref.ref(tick))
    try:
        yield
    finally:
        _current_event.reset(token)


@contextlib.contextmanager
def processing(event: Any) -> Iterator[None]:
    """Make `event` the one being processed, as Faust's stream iteration does for one record
    at a time: a batch (`stream.take_events`) runs in a task of its own without it."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass
class PatternStateTable:
    """The table, the per-partition deadline index and the per-partition watermarks."""

    table: faust.Table
    partitions: int
    idle_timeout: float
    timers: Timers = field(default_factory=HeapTimers)  # members "{pattern_id}\x1f{key}"
    watermarks: dict[str, Watermark] = field(default_factory=dict)
    _saved_wm: dict[str, list | None] = field(default_factory=dict)
    high_offsets: dict[str, int] = field(default_factory=dict)  # per clock, highest read
    # Per clock, the highest offset read before the last restart or rebalance: a record at
    # or below it is read again, and was on time when first read (see `is_replay`).
    replay_until: dict[str, int] = field(default_factory=dict)
    stale: bool = True  # the deadlines need rebuilding from the table (after a rebalance)
    live: Counter = field(default_factory=Counter)  # entries per pattern id held here
    # Wall time, for the idle watermark; a replay (streams/replay.py) runs it on record times.
    clock: Callable[[], float] = time.time
    # The file's patterns, which stored entries are judged against (None: taken as stored).
    plan: StatePlan | None = None
    # The largest changelog record a state may make (None: unbounded, a replay's dict).
    limit: int | None = None
    # Entries the last rebuild could not read or schedule: (pattern id, key, exception),
    # for the timer to drop and dead-letter (`take_unreadable`).
    unreadable: list[tuple[str, str, Exception]] = field(default_factory=list)

    @classmethod
    def create(cls, app: faust.App, partitions: int, idle_timeout: float) -> PatternStateTable:
        table = app.Table(TABLE, default=None, partitions=partitions,
                          key_type=bytes, value_type=bytes,  # bytes: the "raw" codec
                          help="pattern id + key -> {partition, offsets, snapshot}")
        return cls(table, partitions, idle_timeout,
                   timers=timers_for(app.conf.store, app.conf.tabledir, "pattern-state"))

    # --- entries ------------------------------------------------------------------------

    def load(self, pattern_id: str, key: str) -> Slot | None:
        """The pattern's entry for key as the file sees it: read under its previous id if it
        was renamed, adapted to a changed definition, None if the file has no use for it."""
        plan = self.plan
        if plan is None:
            raw = read(self.table, _table_key(pattern_id, key))
            return None if raw is None else _slot(raw)
        if not plan.is_current(pattern_id):
            return None
        stored_id = pattern_id
        raw = read(self.table, _table_key(pattern_id, key))
        if raw is None and (old := plan.old_id(pattern_id)) is not None:
            stored_id, raw = old, read(self.table, _table_key(old, key))
        if raw is None:
            return None
        slot = _slot(raw)
        verdict = plan.judge(stored_id, slot.kind, slot.print_, slot.state)
        if verdict.dropped:
            return None
        slot.state = verdict.state
        return slot

    def save(self, pattern_id: str, key: str, partition: int, state: dict | None,
             offsets: dict[str, int], deadline: float | None, existed: bool) -> None:
        """Store a snapshot (None deletes the entry) and schedule its deadline.

        `existed` says whether the caller loaded an entry, which saves a read per write.
        """
        tkey = _table_key(pattern_id, key)
        value = None if state is None else self.encode(pattern_id, key, partition, state,
                                                       offsets)
        old = self.plan.old_id(pattern_id) if self.plan else None
        if old is not None:  # renamed: what was loaded may still sit under the old id
            okey = _table_key(old, key)
            if read(self.table, okey) is not None:
                del self.table[okey]
                existed = read(self.table, tkey) is not None
        if state is None:
            if existed:
                del self.table[tkey]
                self.live[pattern_id] -= 1
            return
        if not existed:
            self.live[pattern_id] += 1
        self.table[tkey] = tight(value)
        if deadline is not None:
            self.schedule(partition, deadline, pattern_id, key)

    def encode(self, pattern_id: str, key: str, partition: int, state: dict,
               offsets: dict[str, int]) -> bytes:
        """The stored value of an entry; StateTooLarge if its changelog record would be
        larger than `limit`."""
        kind, print_ = self.plan.stored(pattern_id) if self.plan else (None, None)
        value: dict[str, Any] = {"p": partition, "o": offsets, "s": state}
        if kind is not None:
            value.update(k=kind, f=print_)
        raw = orjson.dumps(value)
        if self.limit is not None and len(raw) > self.limit - 1024:  # else surely fits
            size = record_size(_table_key(pattern_id, key), raw, None)
            if size > self.limit:
                raise StateTooLarge(f"the state of pattern {pattern_id!r} for key {key[:200]!r} "
                                    f"would be a {size}-byte changelog record, over the limit "
                                    f"of {self.limit}; the key keeps its previous state")
        return raw

    def check(self, pattern_id: str, key: str, partition: int, state: dict | None,
              offsets: dict[str, int]) -> None:
        """Raise StateTooLarge if `save` of this state would."""
        if state is not None and self.limit is not None:
            self.encode(pattern_id, key, partition, state, offsets)

    def drop(self, pattern_id: str, key: str) -> bytes | None:
        """Delete the entry as stored (also under a renamed pattern's old id), whatever its
        contents; returns the value it had (call with its partition's context)."""
        found = None
        old = self.plan.old_id(pattern_id) if self.plan else None
        for stored_id in (pattern_id, old):
            if stored_id is None:
                continue
            tkey = _table_key(stored_id, key)
            raw = read(self.table, tkey)
            if raw is not None:
                del self.table[tkey]
                self.live[stored_id] -= 1
                found = found if found is not None else raw
        return found

    def take_unreadable(self) -> list[tuple[str, str, Exception]]:
        taken, self.unreadable = self.unreadable, []
        return taken

    def schedule(self, partition: int, deadline: float, pattern_id: str, key: str) -> None:
        if math.isfinite(deadline):
            self.timers.add(partition, deadline, f"{pattern_id}{SEP}{key}")

    def due(self, partition: int, watermark: float,
            limit: int | None = None) -> list[tuple[str, str]]:
        """Pop the (pattern, key) entries whose deadline the watermark has reached, at most
        `limit` of them (the rest stay for the next call).

        An entry may have been rescheduled or removed since; callers check its state.
        """
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for _, member in self.timers.pop_due(partition, watermark, limit):
            if member not in seen:
                seen.add(member)
                pattern_id, _, key = member.partition(SEP)
                out.append((pattern_id, key))
        return out

    def pending(self, partition: int) -> int:
        """Deadline entries queued for the partition (a (pattern, key) may have several)."""
        return self.timers.size(partition)

    def entries(self) -> Iterable[tuple[str, str, Slot]]:
        """Every (pattern id, key, slot) held locally (the active partitions' stores)."""
        for raw_key, raw in self.table.items():
            entry = decode_entry(raw_key, raw)
            if entry is not None:
                yield entry

    def count(self) -> int:
        return sum(1 for _ in self.entries())

    # --- watermarks ---------------------------------------------------------------------
    # One per source and partition ("e3": events partition 3, "r3": rekeyed partition 3):
    # a rekeyed partition mixes events re-sent from every events partition, so its event
    # time runs on its own.

    def observe(self, clock: str, ts: float, offset: int = -1) -> float:
        """Note an event time (read at `offset`) on a clock; return the clock's watermark."""
        wm = self.watermarks.get(clock)
        if wm is None:
            wm = self.watermarks[clock] = Watermark()
        wall = self.clock()
        wm.observe(ts, wall)
        if offset > self.high_offsets.get(clock, -1):
            self.high_offsets[clock] = offset
        return wm.current(wall, self.idle_timeout)

    def is_replay(self, clock: str, offset: int) -> bool:
        """Was this record read before a restart? The watermark restored from the table may
        have come from records after it whose state never reached the changelog, so judged
        against it the record would look late; it was not when first read."""
        return offset <= self.replay_until.get(clock, -1)

    def watermark(self, clock: str) -> float:
        wm = self.watermarks.get(clock)
        return wm.current(self.clock(), self.idle_timeout) if wm else -math.inf

    def persist_watermark(self, clock: str) -> None:
        """Write the clock's watermark if it moved (call with its partition's context)."""
        wm = self.watermarks.get(clock)
        value = wm.snapshot() if wm else None
        if value is None:
            return
        entry = [value, self.high_offsets.get(clock, -1)]
        if entry != self._saved_wm.get(clock):
            self.table[(WM_PREFIX + clock).encode()] = orjson.dumps(entry)
            self._saved_wm[clock] = entry

    # --- rebalancing --------------------------------------------------------------------

    def rebuild(self, active: set[int], deadline_of: Any, topic: str = "") -> int:
        """Recreate the deadline index and watermarks for the active partitions from the
        table, first bringing its entries in line with the file (`evolve`); `topic` is the
        events topic, whose partitions name the table's."""
        self.timers.clear()
        wall = self.clock()
        clocks = {f"{source}{p}" for p in active for source in ("e", "r")}
        for clock in clocks:
            raw = self.table.get((WM_PREFIX + clock).encode())
            entry = orjson.loads(raw) if raw is not None else None
            saved, high = entry if isinstance(entry, list) else (entry, -1)
            if high > self.high_offsets.get(clock, -1):
                self.replay_until[clock] = max(high, self.replay_until.get(clock, -1))
                self.high_offsets[clock] = high  # what was read does not go back
            current = self.watermarks.get(clock)
            if current is None or (saved is not None and (current.snapshot() or -math.inf)
                                   < saved):
                self.watermarks[clock] = Watermark.restore(saved, wall)
            self._saved_wm[clock] = entry
        for clock in list(self.watermarks):
            if clock not in clocks:
                del self.watermarks[clock]
        n = 0
        self.live = Counter()
        batches: dict[int, list[tuple[float, str]]] = {}
        for pattern_id, key, slot in self.evolve(active, topic):
            try:
                deadline = deadline_of(pattern_id, slot.state)
            except Exception as exc:  # noqa: BLE001 - a state the code cannot read
                self.unreadable.append((pattern_id, key, exc))
                continue
            n += 1
            self.live[pattern_id] += 1
            if deadline is not None and math.isfinite(deadline):
                batch = batches.setdefault(slot.partition, [])
                batch.append((deadline, f"{pattern_id}{SEP}{key}"))
                if len(batch) >= REBUILD_BATCH:
                    self.timers.add_many(slot.partition, batch)
                    batch.clear()
        for partition, batch in batches.items():
            self.timers.add_many(partition, batch)
        self.stale = False
        return n

    def evolve(self, active: set[int], topic: str) -> Iterator[tuple[str, str, Slot]]:
        """The active partitions' entries as the file sees them; on the way, delete the
        ones it has no place for and move renamed patterns' entries to their new ids.

        Logs and counts (`choreo_pattern_state_dropped_total`) what it dropped or moved.
        Entries are handed on as they are read; only the ones to change are held, and
        changed once the table has been read through.
        """
        dropped: list[tuple[str, str, int, str]] = []  # stored id, key, partition, reason
        moved: list[tuple[str, str, Slot, str]] = []  # stored id, key, slot, new id
        for raw_key, raw in self.table.items():
            try:
                entry = decode_entry(raw_key, raw)
                if entry is None or entry[2].partition not in active:
                    continue
                stored_id, key, slot = entry
                verdict = (None if self.plan is None else
                           self.plan.judge(stored_id, slot.kind, slot.print_, slot.state))
            except Exception as exc:  # noqa: BLE001 - a value the code cannot read
                pattern_id, _, key = bytes(raw_key).decode("utf-8", "replace").partition(SEP)
                if partition_for(key, self.partitions) in active:
                    self.unreadable.append((pattern_id, key, exc))
                continue
            if verdict is not None:
                if verdict.dropped:
                    dropped.append((stored_id, key, slot.partition, verdict.reason or ""))
                    continue
                slot.state = verdict.state
                if verdict.pattern_id != stored_id:
                    moved.append((stored_id, key, slot, verdict.pattern_id or ""))
                    continue
            yield stored_id, key, slot
        for stored_id, key, partition, _reason in dropped:
            with writing_partition(topic, partition):
                del self.table[_table_key(stored_id, key)]
        carried: Counter = Counter()
        for stored_id, key, slot, new_id in moved:
            with writing_partition(topic, slot.partition):
                del self.table[_table_key(stored_id, key)]
                carried[(stored_id, new_id)] += 1
                if read(self.table, _table_key(new_id, key)) is not None:
                    continue  # written under the new id since: that state is newer
                self.save(new_id, key, slot.partition, slot.state, slot.offsets, None,
                          existed=True)
            yield new_id, key, slot
        _report(Counter((reason, pid) for pid, _, _, reason in dropped), carried)


@dataclass
class _Pending:
    existed: bool  # whether the table held the entry when the batch first read it
    partition: int
    slot: Slot | None
    dirty: bool = False


@dataclass
class BatchWrites:
    """Reads through, and holds back writes until `flush`: a key written many times in a
    batch reaches RocksDB and the changelog once (Kafka Streams' record cache does this)."""

    store: PatternStateTable
    topic: str  # the events topic, whose partition numbers name the table's partitions
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)

    def load(self, pattern_id: str, key: str) -> Slot | None:
        entry = self.pending.get((pattern_id, key))
        if entry is None:
            slot = self.store.load(pattern_id, key)
            entry = self.pending[(pattern_id, key)] = _Pending(
                slot is not None, slot.partition if slot else -1, slot)
        return entry.slot

    def save(self, pattern_id: str, key: str, partition: int, state: dict | None,
             offsets: dict[str, int]) -> None:
        entry = self.pending.get((pattern_id, key))
        if entry is None:  # saved without a load first: find out what is stored
            self.load(pattern_id, key)
            entry = self.pending[(pattern_id, key)]
        entry.partition = partition
        entry.slot = None if state is None else Slot(partition, offsets, state)
        entry.dirty = True

    def flush(self, deadline_of: Any) -> int:
        """Write every changed entry to its partition; returns how many were written."""
        written = 0
        for (pattern_id, key), entry in self.pending.items():
            if not entry.dirty:
                continue
            slot = entry.slot
            state = slot.state if slot else None
            with writing_partition(self.topic, entry.partition):
                self.store.save(pattern_id, key, entry.partition, state,
                                slot.offsets if slot else {}, deadline_of(pattern_id, state),
                                entry.existed)
            written += 1
        self.pending.clear()
        return written


def decode_entry(raw_key: bytes, raw: bytes | None) -> tuple[str, str, Slot] | None:
    """(pattern id, key, slot) of a stored record; None for watermarks and deletions."""
    tkey = raw_key.decode()
    if tkey.startswith(WM_PREFIX) or raw is None:
        return None
    pattern_id, _, key = tkey.partition(SEP)
    return pattern_id, key, _slot(raw)


def _slot(raw: bytes) -> Slot:
    data = orjson.loads(raw)
    return Slot(data["p"], data["o"], data["s"], data.get("k"), data.get("f"))


def _report(dropped: Counter, carried: Counter) -> None:
    """Log once what a rebuild dropped and carried over, and count it."""
    by_reason: Counter = Counter()
    for (reason, _pattern_id), n in dropped.items():
        by_reason[reason] += n
    for reason, n in by_reason.items():
        STATE_DROPPED.labels(reason).inc(n)
    if dropped:
        log.warning("pattern state: dropped %d entries the choreography file has no place "
                    "for: %s", sum(dropped.values()),
                    ", ".join(f"{pid!r} {n} ({reason})"
                              for (reason, pid), n in sorted(dropped.items())))
    for (_old, new), n in carried.items():
        STATE_CARRIED.labels(new).inc(n)
    if carried:
        log.warning("pattern state: carried %d entries over to renamed patterns: %s",
                    sum(carried.values()),
                    ", ".join(f"{old!r} -> {new!r} {n}"
                              for (old, new), n in sorted(carried.items())))


def _table_key(pattern_id: str, key: str) -> bytes:
    return f"{pattern_id}{SEP}{key}".encode()
