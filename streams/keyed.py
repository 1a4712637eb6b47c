"""Keyed patterns on the stream: state per key in `tables/pattern_state`, deadlines on a timer.

For each valid event the engine works out, per `group_by` in use, the key its patterns keep
state under. A key's state lives on `partition_for(key)`. Keyed by correlation id (the
default), an event read from that partition is applied at once; an event keyed by another
`group_by` field, or read from another partition, is re-sent to the rekeyed topic on that
partition (Kafka Streams' repartition step) and applied when read back from there.

Applying an event to a key runs, under one lock shared with the timer:
load snapshots -> matchers compute new snapshots and actions -> send the actions and wait
for the broker's ack -> write the snapshots. A crash before the write replays the record
onto the old snapshot and sends the same actions again, with the same deterministic ids,
which the workers drop; a crash after it finds the record's offset already in the snapshot.
So keyed actions are at-least-once, and effectively once where they are consumed.

A record whose handling raises is dead-lettered alone (`streams.records.isolated`, reason
`internal_error`); in a batch its writes, actions and notes are undone (`Batch.rollback`)
and the other records' stand. What it had already re-sent to the rekeyed topic is applied
there (the rekeyed agent isolates its records the same way).

Deadlines fire from a timer once a second. Faust lets tables be written only while an
event of the partition is processed; the timer writes only to partitions this worker owns,
naming the partition with `writing_partition`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

import faust
import orjson

from choreo.actions import (
    Action,
    RecordRefused,
    by_priority,
    changelog_limit,
    encode_record,
    record_limit,
)
from choreo.app import Runtime
from choreo.dead_letter import Origin
from choreo.envelope import Event, InvalidEvent
from choreo.matchers.base import KeyedMatcher, Outcome, key_for
from choreo.matchers.correlation import (
    NOTE_HEADER,
    TRACKER_ID,
    CorrelationTracker,
    action_note,
)
from choreo.matchers.kinds import matcher_for
from choreo.matching import PatternIndex
from choreo.memory import FREED  # memory back to the OS after a mass expiry
from choreo.metrics import (
    ACTION_LATENCY,
    ACTIONS_SENT,
    LATE_EVENTS,
    STATE_ENTRIES,
    TIMER_ERRORS,
    TIMERS_FIRED,
    UNKEYED,
    WATERMARK,
    child,
)
from choreo.monitor import slow_flow_alert
from choreo.patterns import Pattern
from choreo.state_evolution import StatePlan
from streams.records import (
    EXCEPTION_HEADER,
    INFRASTRUCTURE,
    check_time,
    isolated,
    read_event,
    refuse,
)
from streams.runtime_metrics import consumer_lag
from tables.dedup import dedup_key
from tables.expiring import ExpiringTable
from tables.pattern_state import (
    TABLE as STATE_TABLE,
)
from tables.pattern_state import (
    BatchWrites,
    PatternStateTable,
    Slot,
    _Pending,
    partition_for,
    processing,
    writing_partition,
)

log = logging.getLogger(__name__)

TIMER_ERROR = "timer_error"  # dead-letter reason: a timer entry whose handling failed
GROUP_HEADER = "choreo.group"  # the group_by path a rekeyed record is keyed by ("" = correlation)
ORIGIN_HEADER = "choreo.origin"  # where the event was first read: topic:partition:offset
ACTIONS_HEADER = "choreo.actions"  # actions the event already fired, for the correlation summary
TICK_SECONDS = 1.0
# Deadlines run under one hold of the lock, most of it without a turn of the event loop: at
# 200, about 0.2-0.35 s in the e-commerce bench, which every record arriving meanwhile waited.
EXPIRE_BATCH = 50
# Seconds of each tick the timer may spend running deadlines while the stream waits; the
# rest wait for the next tick. When a million keys fell due at once, a timer that ran 5,000
# per partition per tick back to back let the stream handle one event every 3 s (make bench).
TICK_BUDGET = 0.5
# Past the budget the timer goes on while the streams have nothing to do (none waits for the
# lock, no record is waiting for them), up to this many seconds per tick.
TICK_MAX = 5.0

Group = str | None  # a group_by path; None = metadata.correlation_id


@dataclass
class Batch:
    """What a batch of records did to keyed state, held until the batch ends."""

    writes: BatchWrites
    actions: list[tuple[Action, float | None]] = field(default_factory=list)
    elsewhere: list[tuple[Sequence[Action], Group, str]] = field(default_factory=list)
    # Entries as they were before the current record first wrote them (None: not pending),
    # so that a record whose handling fails leaves the batch as it found it.
    undo: dict[tuple[str, str], _Pending | None] = field(default_factory=dict)

    def savepoint(self) -> tuple[int, int]:
        """Mark the start of a record's effects."""
        self.undo.clear()
        return len(self.actions), len(self.elsewhere)

    def keep(self, pattern_id: str, key: str) -> None:
        """Note an entry before the current record's first write to it."""
        name = (pattern_id, key)
        if name not in self.undo:
            entry = self.writes.pending.get(name)
            self.undo[name] = None if entry is None else replace(entry)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Undo the effects of the record since `savepoint`: its actions and its writes."""
        del self.actions[mark[0]:]
        del self.elsewhere[mark[1]:]
        for name, entry in self.undo.items():
            if entry is None:
                self.writes.pending.pop(name, None)
            else:
                self.writes.pending[name] = entry
        self.undo.clear()


# The batch the current task is applying (each agent runs in a task of its own).
_BATCH: ContextVar[Batch | None] = ContextVar("choreo_batch", default=None)


@dataclass(frozen=True)
class Applied:
    """What applying one record to a key did."""

    actions: list[Action]
    late: list[str]  # ids of patterns for which the event came too late


class KeyedEngine:
    """Routes events to keyed state, applies the matchers, and fires deadlines."""

    def __init__(self, runtime: Runtime, store: PatternStateTable | None = None) -> None:
        self.runtime = runtime
        choreography = runtime.choreography
        self.partitions = runtime.settings.partitions
        # A replay (streams/replay.py) hands in a store over a plain dict and its own clock.
        self.store = store or PatternStateTable.create(runtime.app, self.partitions,
                                                       choreography.defaults.idle_timeout)
        self.store.plan = StatePlan.of(choreography)  # stored state is read as the file says
        if store is None:  # a state must fit in a changelog record (`changelog_limit`)
            self.store.limit = changelog_limit(runtime.app)
        keyed = [p for p in choreography.patterns if p.kind != "event"]
        self.matchers: dict[str, KeyedMatcher] = {p.id: matcher_for(p, runtime.stats)
                                                  for p in keyed}
        self.patterns: dict[str, Pattern] = {p.id: p for p in keyed}
        self.tracker = CorrelationTracker(choreography.defaults.correlation_ttl)
        groups: dict[Group, list[Pattern]] = {None: []}
        for pattern in keyed:
            groups.setdefault(pattern.group_by, []).append(pattern)
        self.groups = {g: PatternIndex(ps) for g, ps in groups.items()}
        self.lock = asyncio.Lock()
        self.rekeyed_topic = runtime.rekeyed_topic
        # Seconds per tick for deadlines (None: all that are due, as a replay runs them).
        self.tick_budget: float | None = TICK_BUDGET
        self._ticks = 0

    # --- routing ------------------------------------------------------------------------

    async def route(self, event: Event, raw: bytes, partition: int, offset: int,
                    origin: Origin, fired: Sequence[Action]) -> None:
        """Apply the event to every group's key here, or re-send it to the key's partition."""
        for group, index in self.groups.items():
            patterns = index.for_type(event.event_type)
            tracked = group is None and event.correlation_id is not None
            if not patterns and not tracked:
                continue
            key = event.correlation_id if group is None else key_for(patterns[0], event)
            if key is None:
                for pattern in patterns:
                    UNKEYED.labels(pattern.id).inc()
                continue
            notes = [action_note(a) for a in fired] if group is None else []
            home = partition_for(key, self.partitions)
            # A group_by key always goes through the rekeyed topic, so its state is fed by
            # one source whose event time is one clock; a correlation id usually is the
            # record's key already and is applied where it was read.
            if group is None and home == partition:
                result = await self.apply(group, key, event, partition, "e", offset, notes,
                                          origin)
                await self.report_late(result, raw, key, origin)
            else:
                headers = [(GROUP_HEADER, (group or "").encode()),
                           (ORIGIN_HEADER, f"{origin.topic}:{origin.partition}:"
                                           f"{origin.offset}".encode())]
                if notes:
                    headers.append((ACTIONS_HEADER, orjson.dumps(notes)))
                await self.rekeyed_topic.send(key=key.encode(), value=raw, partition=home,
                                              headers=headers)

    async def report_late(self, result: Applied, raw: bytes, key: str,
                          origin: Origin) -> None:
        if not result.late:
            return
        for pattern_id in result.late:
            LATE_EVENTS.labels(pattern_id).inc()
        await self.runtime.dead_letter(
            raw, key.encode(), "late",
            f"event time is before the watermark minus allowed_lateness for pattern(s) "
            f"{', '.join(result.late)}; not applied to them", origin, stage="match")

    # --- applying -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Apply a batch of records under one hold of the lock: the state each key ends with
        is written once, after every action of the batch has been acknowledged.

        A crash before the end writes nothing, and the batch's records are read again (their
        offsets are committed only after the batch): the same actions go out again with
        the same ids, which the workers drop.
        """
        async with self.lock:
            batch = Batch(BatchWrites(self.store, self.runtime.events_topic.get_topic_name()))
            token = _BATCH.set(batch)
            try:
                yield batch
            finally:
                _BATCH.reset(token)
            await self.send_timed(batch.actions)
            batch.writes.flush(self.deadline_of)
        for actions, group, key in batch.elsewhere:
            await self.note_elsewhere(actions, group, key)

    async def apply(self, group: Group, key: str, event: Event, partition: int, source: str,
                    offset: int, notes: Iterable[dict] = (),
                    origin: Origin | None = None) -> Applied:
        """Apply one event to every pattern of `group` for `key`, and to its correlation.

        Inside `batch()` the actions and writes wait for the end of the batch; alone, the
        actions are sent and acknowledged, then the state is written.
        """
        batch = _BATCH.get()
        if batch is not None:  # the batch holds the lock
            return await self._apply(batch, group, key, event, partition, source, offset,
                                     notes, origin)
        async with self.lock:
            result = await self._apply(None, group, key, event, partition, source, offset,
                                       notes, origin)
        await self.note_elsewhere(result.actions, group, key)
        return result

    async def _apply(self, batch: Batch | None, group: Group, key: str, event: Event,
                     partition: int, source: str, offset: int, notes: Iterable[dict],
                     origin: Origin | None) -> Applied:
        clock = f"{source}{partition}"
        # A record read again after a restart is judged as when first read: on time.
        wm = (-math.inf if self.store.is_replay(clock, offset)
              else self.store.watermark(clock))
        writes: list[tuple[str, dict | None, dict[str, int], bool]] = []
        actions: list[Action] = []
        late: list[str] = []
        load = batch.writes.load if batch is not None else self.store.load
        for pattern in self.groups[group].for_type(event.event_type):
            slot = load(pattern.id, key)
            if slot is not None and slot.applied(source, offset):
                continue  # this record's effect is already stored (replayed after a crash)
            outcome = self.matchers[pattern.id].on_event(slot.state if slot else None,
                                                         event, wm)
            if outcome.late:
                late.append(pattern.id)
            if outcome.state != (slot.state if slot else None) or outcome.actions:
                offsets = {**(slot.offsets if slot else {}), source: offset}
                writes.append((pattern.id, outcome.state, offsets, slot is not None))
            actions += outcome.actions
        actions = by_priority(actions)
        alert = None
        if group is None:
            slot = load(TRACKER_ID, key)
            if slot is None or not slot.applied(source, offset):
                before = slot.state if slot else None
                alert = slow_flow_alert(self.runtime.choreography.monitor, before, event)
                position = (origin.partition, origin.offset) if origin else None
                state = self.tracker.on_event(before, event, wm, position).state
                if alert is not None and state is not None:
                    state["slow_alerted"] = True
                state = self.tracker.note_actions(
                    state, key, [*notes, *(action_note(a) for a in actions)])
                writes.append((TRACKER_ID, state,
                               {**(slot.offsets if slot else {}), source: offset},
                               slot is not None))
        # Before any effect: a state too large for its changelog record refuses the record
        # (StateTooLarge, dead-lettered as state_too_large), and the key keeps what it had.
        for pattern_id, state, offsets, _existed in writes:
            self.store.check(pattern_id, key, partition, state, offsets)
        if alert is not None:
            await (await self.runtime.alert(alert))
        if batch is not None:
            batch.actions += [(a, event.ts) for a in actions]
            for pattern_id, state, offsets, _existed in writes:
                batch.keep(pattern_id, key)
                batch.writes.save(pattern_id, key, partition, state, offsets)
            if actions:
                batch.elsewhere.append((actions, group, key))
            return Applied(actions, late)
        await self.send(actions, event.ts)
        for pattern_id, state, offsets, existed in writes:
            self.store.save(pattern_id, key, partition, state, offsets,
                            self.deadline_of(pattern_id, state), existed)
        return Applied(actions, late)

    async def apply_note(self, key: str, notes: list[dict], partition: int,
                         offset: int) -> None:
        """Record actions fired elsewhere on this correlation's summary."""
        batch = _BATCH.get()
        if batch is not None:
            noted = self._note(batch.writes.load(TRACKER_ID, key), key, notes, offset)
            if noted is not None:
                self.store.check(TRACKER_ID, key, partition, *noted)
                batch.keep(TRACKER_ID, key)
                batch.writes.save(TRACKER_ID, key, partition, *noted)
            return
        async with self.lock:
            slot = self.store.load(TRACKER_ID, key)
            noted = self._note(slot, key, notes, offset)
            if noted is not None:
                self.store.save(TRACKER_ID, key, partition, noted[0], noted[1],
                                self.tracker.deadline(noted[0]), slot is not None)

    def _note(self, slot: Slot | None, key: str, notes: list[dict],
              offset: int) -> tuple[dict | None, dict[str, int]] | None:
        """The correlation summary with `notes` added, and its offsets; None if done before."""
        if slot is not None and slot.applied("r", offset):
            return None
        state = self.tracker.note_actions(slot.state if slot else None, key, notes)
        return state, {**(slot.offsets if slot else {}), "r": offset}

    async def note_elsewhere(self, actions: Sequence[Action], group: Group, key: str) -> None:
        """Actions on another correlation than the key's go to that correlation's summary."""
        for action in actions:
            correlation = action.event.correlation_id
            if correlation is None or (group is None and correlation == key):
                continue
            await self.rekeyed_topic.send(
                key=correlation.encode(), value=orjson.dumps([action_note(action)]),
                partition=partition_for(correlation, self.partitions),
                headers=[(NOTE_HEADER, b"actions")])

    async def send(self, actions: Sequence[Action], event_ts: float | None,
                   wait: bool = True) -> None:
        """Send actions to their capability topics; with `wait`, until the broker has them.

        Unwaited sends are still checked: a failed one stops the next commit (`guard_sends`).
        """
        await self.send_timed([(a, event_ts) for a in actions], wait)

    async def send_timed(self, actions: Sequence[tuple[Action, float | None]],
                         wait: bool = True) -> None:
        """`send` for actions each with the event time of the event that fired it.

        An action that would not fit (`encode_record`) is not sent: what fired it is
        dead-lettered (`refuse_action`) and the other actions go on.
        """
        pending = []
        refused: list[tuple[Action, RecordRefused]] = []
        limit = self.action_limit()
        for action, event_ts in actions:
            topic, route_headers = self.runtime.action_target(action)
            correlation = action.event.correlation_id
            key = correlation.encode() if correlation else None

            def headers_for(value: bytes, topic=topic, key=key, route_headers=route_headers
                            ) -> list[tuple[str, bytes]] | None:
                headers = self.runtime.sign(topic, key, value)
                return [*(headers or []), *route_headers] if route_headers else headers
            try:
                value, headers = encode_record(action.event, key, limit, headers_for)
                pending.append(await self.runtime.produce(topic, key, value, headers))
            except RecordRefused as exc:
                refused.append((action, exc))
                continue
            child(ACTIONS_SENT, action.event.payload["pattern_id"], action.capability).inc()
            if event_ts is not None:
                ACTION_LATENCY.observe(max(0.0, time.time() - event_ts))
        if refused:
            await self.refuse_actions(refused)
        if pending and wait:
            await asyncio.gather(*pending)

    def action_limit(self) -> int:
        """The largest action record: what workers read, and what the producer sends."""
        return record_limit(self.runtime.choreography.defaults.max_event_bytes,
                            self.runtime.app)

    async def refuse_actions(self, refused: Sequence[tuple[Action, RecordRefused]]) -> None:
        """Dead-letter, once, each record that fired actions that cannot be sent (reason
        `action_<reason>`, e.g. `action_too_large`); a deadline's action goes there itself,
        without its data."""
        by_record: dict[int, tuple[Action, list[str], str]] = {}
        for action, exc in refused:
            payload = action.event.payload
            log.warning("action %s of pattern %s not sent: %s", payload["action"],
                        payload["pattern_id"], exc)
            detail = (f"pattern {payload['pattern_id']}, action {payload['action']} "
                      f"(capability {action.capability}): {exc.detail}")
            slot = id(action.fired_by) if action.fired_by is not None else id(action)
            first = by_record.setdefault(slot, (action, [], f"action_{exc.reason}"))
            first[1].append(detail)
        for action, details, reason in by_record.values():
            record = action.fired_by
            if record is not None:
                message = record.message
                headers = dict(message.headers or [])
                await self.runtime.dead_letter(
                    record.value, message.key, reason, "; ".join(details),
                    _origin(headers.get(ORIGIN_HEADER), message), stage="actions")
                continue
            stub = {**action.event.as_dict(),
                    "payload": {**action.event.payload, "data": None}}
            topic = self.runtime.action_target(action)[0].get_topic_name()
            correlation = action.event.correlation_id
            await self.runtime.dead_letter(
                orjson.dumps(stub), correlation.encode() if correlation else None, reason,
                f"{details[0]}; fired by a deadline, sent here without its data",
                Origin(topic, -1, -1), stage="actions")

    def deadline_of(self, pattern_id: str, state: dict | None) -> float | None:
        if pattern_id == TRACKER_ID:
            return self.tracker.deadline(state)
        matcher = self.matchers.get(pattern_id)  # None: a pattern the file no longer has
        return matcher.deadline(state) if matcher is not None else None

    # --- deadlines ----------------------------------------------------------------------

    def active_partitions(self) -> set[int]:
        names = {self.runtime.events_topic.get_topic_name(), self.rekeyed_topic.get_topic_name()}
        return {tp.partition for tp in self.runtime.app.assignor.assigned_actives()
                if tp.topic in names}

    def ready(self) -> bool:
        """Whether deadlines may run: not while recovering or rebalancing, and not once the
        worker is stopping (its producer may be gone before the timer's last changelog
        records are sent; they run again after the restart)."""
        app = self.runtime.app
        return (not app.rebalancing and not app.should_stop
                and app.tables.recovery.completed.is_set())

    async def tick(self) -> int:
        """Fire every deadline the watermarks have passed; returns how many entries it ran."""
        if not self.ready():
            return 0
        active = self.active_partitions()
        topic = self.runtime.events_topic.get_topic_name()
        if self.store.stale:
            held = self.store.rebuild(active, self.deadline_of, topic=topic)
            log.info("pattern state: %d entries on partitions %s", held, sorted(active))
        for pattern_id, key, exc in self.store.take_unreadable():
            async with self.lock:  # an entry no deadline can be found for: dropped too
                await self.timer_error(topic, partition_for(key, self.partitions),
                                       pattern_id, key, exc)
        ran = 0
        began, budget = time.monotonic(), self.tick_budget
        order = sorted(active)
        self._ticks += 1
        if order:  # a different partition first each tick, so none waits on the others
            turn = self._ticks % len(order)
            order = order[turn:] + order[:turn]
        for partition in order:
            clocks = {"e": self.store.watermark(f"e{partition}"),
                      "r": self.store.watermark(f"r{partition}")}
            # At most what was queued when the tick began: a deadline rescheduled at or
            # before the watermark runs next tick, never in a loop within this one.
            left = self.store.pending(partition)
            while left > 0 and not self._yield_to_stream(began, budget):
                due = self.store.due(partition, max(clocks.values()), min(EXPIRE_BATCH, left))
                if not due:
                    break
                left -= len(due)
                ran += await self.expire(topic, partition, due, clocks)
                await self.drain_changelog()
                await asyncio.sleep(0)  # let the stream go on between batches
            for table in self.swept_tables():
                while (table.has_backlog(partition)
                       and not self._yield_to_stream(began, budget)):
                    with writing_partition(topic, partition):
                        table.sweep_backlog(partition, EXPIRE_BATCH)
                    await self.drain_changelog()
                    await asyncio.sleep(0)
            with writing_partition(topic, partition):
                self.store.persist_watermark(f"e{partition}")
                self.store.persist_watermark(f"r{partition}")
            if math.isfinite(clocks["e"]):
                WATERMARK.labels(str(partition)).set(clocks["e"])
        STATE_ENTRIES.set(sum(self.store.live.values()))
        FREED.note(ran)
        return ran

    def swept_tables(self) -> list[ExpiringTable]:
        """The de-duplication tables whose sweep backlog the timer works off."""
        return [t for t in (getattr(self.runtime, "seen_events", None),
                            getattr(self.runtime, "seen_rekeyed", None)) if t is not None]

    def _yield_to_stream(self, began: float, budget: float | None) -> bool:
        """Whether the timer should stop running deadlines for this tick: it has used its
        budget and the streams have work (one waits for the lock, or records are there that
        they have not processed), or it has run `TICK_MAX` seconds."""
        if budget is None:
            return False
        spent = time.monotonic() - began
        if spent >= TICK_MAX:
            return True
        return spent >= budget and (_contended(self.lock) or self._stream_behind())

    def _stream_behind(self) -> bool:
        """Whether the consumer holds or knows of records the streams have not processed.

        A stream whose records are still on their way (fetched, in Faust's queues) does not
        wait for the lock yet; judged by the lock alone, the timer ran a wave of 2,572
        deadlines for 3 s while events queued behind it (make bench, e-commerce latency).
        """
        return any(lag > 0 for lag in consumer_lag(self.runtime.app).values())

    async def drain_changelog(self) -> None:
        """Hand the changelog records the timer queued to the producer before going on.

        Table writes queue their changelog records in Faust's producer buffer without
        waiting; the stream's own writes wait for it to ebb, the timer's did not, and a
        mass expiry grew the buffer by gigabytes while the stream starved.
        """
        buffer = getattr(getattr(self.runtime.app, "producer", None), "buffer", None)
        if buffer is not None:
            await buffer.flush()

    def run_deadline(self, partition: int, pattern_id: str, key: str,
                     clocks: dict[str, float]) -> tuple[Slot, Outcome] | None:
        """Run one entry's deadline if the watermark has passed it (else reschedule it)."""
        slot = self.store.load(pattern_id, key)
        if slot is None:
            return None
        wm = clocks["e" if self.group_of(pattern_id) is None else "r"]
        due = self.deadline_of(pattern_id, slot.state)
        if due is None or due > wm:
            if due is not None:
                self.store.schedule(partition, due, pattern_id, key)
            return None
        if pattern_id == TRACKER_ID:
            outcome = self.tracker.on_time(slot.state, wm)
        else:  # the state was just read, and is not used after this
            outcome = self.matchers[pattern_id].on_time(slot.state, wm, owned=True)
        child(TIMERS_FIRED, pattern_id).inc()
        return slot, outcome

    def save_expired(self, partition: int, pattern_id: str, key: str,
                     offsets: dict[str, int], outcome: Outcome) -> None:
        """Write what a deadline left of the entry, and note its actions on the summary."""
        self.store.save(pattern_id, key, partition, outcome.state, offsets,
                        self.deadline_of(pattern_id, outcome.state), True)
        if outcome.actions and self.group_of(pattern_id) is None:
            tslot = self.store.load(TRACKER_ID, key)
            state = self.tracker.note_actions(
                tslot.state if tslot else None, key,
                [action_note(a) for a in outcome.actions])
            self.store.save(TRACKER_ID, key, partition, state,
                            tslot.offsets if tslot else {},
                            self.tracker.deadline(state), tslot is not None)

    async def timer_error(self, topic: str, partition: int, pattern_id: str, key: str,
                          exc: BaseException) -> None:
        """An entry whose deadline could not run is dropped, its stored value dead-lettered
        (`timer_error`), so that the timer and the key's next events go on without it.

        Dropped rather than parked: a state the code cannot run would fail the key's next
        event as well, and be found again at every rebuild; the dead-letter record keeps it.
        """
        name = f"{type(exc).__name__}: {exc}"
        log.error("timer: the deadline of pattern %s for key %r failed (%s); the entry is "
                  "dropped and its state dead-lettered", pattern_id, key, name,
                  exc_info=exc)
        TIMER_ERRORS.labels(STATE_TABLE).inc()
        with writing_partition(topic, partition):
            raw = self.store.drop(pattern_id, key)
        await self.runtime.dead_letter(
            raw, key.encode(), TIMER_ERROR,
            f"pattern {pattern_id}, key {key[:200]}: the deadline failed: {name}"[:1000],
            Origin(STATE_TABLE, partition, -1), stage="timer",
            extra=[(EXCEPTION_HEADER, type(exc).__name__.encode())])

    def group_of(self, pattern_id: str) -> Group:
        pattern = self.patterns.get(pattern_id)
        return pattern.group_by if pattern is not None else None

    async def expire(self, topic: str, partition: int, entries: list[tuple[str, str]],
                     clocks: dict[str, float]) -> int:
        """Run the deadlines of a batch of entries of one partition: send, then write.

        Each entry is handled alone: one whose deadline raises (anything but
        `INFRASTRUCTURE`) is dropped and dead-lettered (`timer_error`), and the others fire.
        """
        done: list[tuple[str, str, dict[str, int], Outcome]] = []
        failed: list[tuple[str, str, Exception]] = []
        actions: list[Action] = []
        async with self.lock:
            if not self.ready() or partition not in self.active_partitions():
                return 0  # the partition moved; its new owner rebuilds the deadlines
            # Reads name the partition too: without it Faust's store looks for the key in
            # every partition's RocksDB (10% of the timer's time in a deadline backlog).
            with writing_partition(topic, partition):
                for pattern_id, key in entries:
                    try:
                        ran = self.run_deadline(partition, pattern_id, key, clocks)
                    except INFRASTRUCTURE:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this entry's failure alone
                        failed.append((pattern_id, key, exc))
                        continue
                    if ran is not None:
                        done.append((pattern_id, key, ran[0].offsets, ran[1]))
                        actions += ran[1].actions
                await self.send(actions, None)
                saved: list[tuple[str, str, dict[str, int], Outcome]] = []
                for entry in done:
                    try:
                        self.save_expired(partition, *entry)
                    except INFRASTRUCTURE:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this entry's failure alone
                        failed.append((entry[0], entry[1], exc))
                        continue
                    saved.append(entry)
                for pattern_id, key, exc in failed:
                    await self.timer_error(topic, partition, pattern_id, key, exc)
        for pattern_id, key, _offsets, outcome in saved:
            if outcome.actions:
                await self.note_elsewhere(outcome.actions, self.group_of(pattern_id), key)
        return len(saved)


def _contended(lock: asyncio.Lock) -> bool:
    """Whether a task waits for `lock` (asyncio keeps its waiters in `_waiters`)."""
    return bool(getattr(lock, "_waiters", None))


def register_keyed(runtime: Runtime, seen: ExpiringTable) -> KeyedEngine:
    """Add the keyed engine, its rekeyed-topic agent and its deadline timer to the app;
    `seen` de-duplicates the rekeyed topic."""
    engine = KeyedEngine(runtime)
    app = runtime.app

    size, wait = runtime.settings.batch_size, runtime.settings.batch_wait

    async def apply_rekeyed(stream: faust.StreamT) -> None:
        if size <= 1:
            async for record in stream.events():
                await handle_rekeyed(runtime, engine, seen, record)
            return
        async for records in stream.take_events(size, within=wait):
            await process_rekeyed_batch(runtime, engine, seen, records)

    app.agent(engine.rekeyed_topic, name="apply_rekeyed")(apply_rekeyed)

    @app.timer(TICK_SECONDS, name="fire_deadlines")
    async def fire_deadlines() -> None:
        await engine.tick()

    def mark_stale(*_args: object, **_kwargs: object) -> None:
        engine.store.stale = True

    app.on_partitions_assigned.connect(mark_stale)
    app.on_partitions_revoked.connect(mark_stale)
    return engine


# Seconds of a batch's work between turns of the event loop. A batch does not suspend on its
# own (sends are not awaited until its end), and 300 e-commerce events in one go held the loop
# for 300-370 ms: the producer could not send the actions already made, nor the consumer hand
# over records (make bench).
TURN_SECONDS = 0.02


async def in_turns(records: Sequence[faust.EventT],
                   work: Callable[[faust.EventT], Awaitable[bool | None]]) -> None:
    """`work` on each record in order, as the event being processed, giving the event loop a
    turn each `TURN_SECONDS` of it.

    `work` returns False when the record's handling failed (and the record was dead-lettered,
    `streams.records.isolated`): inside `KeyedEngine.batch()` its partial effects on the
    batch are undone, and the other records' writes and actions stand.
    """
    batch = _BATCH.get()
    turn = time.monotonic()
    for record in records:
        with processing(record):
            mark = batch.savepoint() if batch is not None else None
            if await work(record) is False and batch is not None and mark is not None:
                batch.rollback(mark)
        if time.monotonic() - turn >= TURN_SECONDS:
            await asyncio.sleep(0)
            turn = time.monotonic()


async def process_rekeyed_batch(runtime: Runtime, engine: KeyedEngine, seen: ExpiringTable,
                                records: Sequence[faust.EventT]) -> None:
    """Records of the rekeyed topic in order, state written once for the batch."""
    async with engine.batch():
        await in_turns(records, lambda record: handle_rekeyed(runtime, engine, seen, record))


async def handle_rekeyed(runtime: Runtime, engine: KeyedEngine, seen: ExpiringTable,
                         record: faust.EventT) -> bool:
    """`process_rekeyed`, a failure dead-lettering the record alone; False if it failed."""
    origin = _origin(dict(record.message.headers or []).get(ORIGIN_HEADER), record.message)
    return await isolated(runtime, record, "rekeyed",
                          lambda: process_rekeyed(runtime, engine, seen, record), origin)


async def process_rekeyed(runtime: Runtime, engine: KeyedEngine, seen: ExpiringTable,
                          record: faust.EventT) -> None:
    """Apply an event re-sent to its key's partition (or record a note of actions); `seen`
    holds the rekeyed records already applied."""
    message = record.message
    headers = {k: v for k, v in (message.headers or [])}
    key = message.key.decode() if message.key else None
    if key is None:
        return
    if headers.get(NOTE_HEADER) == b"actions":
        await engine.apply_note(key, orjson.loads(record.value), message.partition,
                                message.offset)
        return
    origin = _origin(headers.get(ORIGIN_HEADER), message)
    try:
        event = read_event(runtime, record.value)
        check_time(runtime, event, engine.store.clock())
    except InvalidEvent as exc:  # only if someone else wrote to the internal topic
        await refuse(runtime, record, exc.reason, exc.detail, "rekeyed", origin)
        return
    group_raw = headers.get(GROUP_HEADER, b"").decode()
    group: Group = group_raw or None
    if group not in engine.groups:
        log.warning("rekeyed record for unknown group_by %r skipped", group)
        return
    seen.advance(message.partition, event.ts)
    dkey = dedup_key(group_raw, dedup_key(event.source, event.event_id))
    first = seen.get(dkey)
    if first is not None and first != message.offset:
        return  # re-sent twice by a replayed read of the events topic
    engine.store.observe(f"r{message.partition}", event.ts, message.offset)
    notes = orjson.loads(headers[ACTIONS_HEADER]) if ACTIONS_HEADER in headers else []
    result = await engine.apply(group, key, event, message.partition, "r", message.offset,
                                notes, origin)
    await engine.report_late(result, record.value, key, origin)
    # Last: a record whose handling failed is not a duplicate when it is re-driven.
    seen.put(dkey, event.ts, message.partition, message.offset)


def _origin(raw: bytes | None, message: faust.types.Message) -> Origin:
    if raw:
        topic, _, rest = raw.decode("utf-8", "replace").rpartition(":")
        topic, _, partition = topic.rpartition(":")
        try:
            return Origin(topic, int(partition), int(rest))
        except ValueError:
            pass
    return Origin(message.topic, message.partition, message.offset)


