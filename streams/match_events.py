"""The engine's agent: validate each event, drop duplicates, fire patterns, send actions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import faust

from choreo.app import Runtime
from choreo.envelope import InvalidEvent
from choreo.metrics import DUPLICATES, EVENTS_IN, child
from choreo.monitor import RateMonitor
from streams.keyed import KeyedEngine, in_turns, register_keyed
from streams.records import check_time, isolated, origin_of, read_event, refuse
from tables.dedup import dedup_key, seen_events_table
from tables.expiring import ExpiringTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Matching:
    """What `register_matcher` adds: the keyed engine and the de-duplication tables of the
    events topic and of the rekeyed topic."""

    keyed: KeyedEngine
    seen_events: ExpiringTable
    seen_rekeyed: ExpiringTable


def register_matcher(runtime: Runtime) -> Matching:
    """Add the `match_events` agent and its de-duplication tables to the app."""
    choreography = runtime.choreography
    seen = seen_events_table(runtime.app, choreography.defaults.dedup_horizon,
                             runtime.settings.partitions)
    seen_rekeyed = seen_events_table(
        runtime.app, choreography.defaults.dedup_horizon, runtime.settings.partitions,
        name="seen-rekeyed")
    engine = register_keyed(runtime, seen_rekeyed)
    rates = RateMonitor(choreography.monitor)

    size, wait = runtime.settings.batch_size, runtime.settings.batch_wait

    async def match_events(stream: faust.StreamT) -> None:
        if size <= 1:
            async for record in stream.events():
                await handle_record(runtime, seen, record, engine, rates)
            return
        async for records in stream.take_events(size, within=wait):
            await process_batch(runtime, seen, records, engine, rates)

    runtime.app.agent(runtime.events_topic, name="match_events")(match_events)
    return Matching(engine, seen, seen_rekeyed)


async def process_batch(runtime: Runtime, seen: ExpiringTable, records: Sequence[faust.EventT],
                        engine: KeyedEngine, rates: RateMonitor | None = None) -> None:
    """Handle records in order, with keyed state written and actions acknowledged once for
    the batch (`KeyedEngine.batch`); Faust acks the records after this returns. A record
    whose handling fails is dead-lettered alone (`handle_record`)."""
    async with engine.batch():
        await in_turns(records,
                       lambda record: handle_record(runtime, seen, record, engine, rates))


async def handle_record(runtime: Runtime, seen: ExpiringTable, record: faust.EventT,
                        engine: KeyedEngine, rates: RateMonitor | None = None) -> bool:
    """`process_record`, an unexpected failure dead-lettering the record (`internal_error`)
    instead of stopping the agent; returns False if it failed."""
    return await isolated(runtime, record, "ingest",
                          lambda: process_record(runtime, seen, record, engine, rates))


async def process_record(runtime: Runtime, seen: ExpiringTable, record: faust.EventT,
                         engine: KeyedEngine, rates: RateMonitor | None = None) -> None:
    """Handle one record of the events topic."""
    message = record.message
    schemas = runtime.choreography.schemas
    guard = runtime.guard
    try:
        # The signature first, over the raw bytes: a forgery is refused as one, whatever
        # else is wrong with it (its size, its shape, its depth).
        refusal = guard.authenticate(message.topic, message.key, record.value,
                                     message.headers, message.timestamp)
        if refusal is not None:
            raise InvalidEvent(refusal.reason, refusal.detail)
        event = read_event(runtime, record.value)
        if guard.active:  # the signing key and publishers: before anything reads the event
            refusal = guard.permit(event, message.headers)
            if refusal is not None:
                raise InvalidEvent(refusal.reason, refusal.detail)
        # Before any watermark or horizon sees it: a far-future time would move them there.
        check_time(runtime, event, engine.store.clock())
        if schemas is not None:
            schemas.check(event)  # raises InvalidEvent("schema_violation", "<path>: <error>")
    except InvalidEvent as exc:
        await refuse(runtime, record, exc.reason, exc.detail, "ingest")
        return
    child(EVENTS_IN, event.event_type).inc()
    seen.advance(message.partition, event.ts)
    key = dedup_key(event.source, event.event_id)
    first_offset = seen.get(key)
    if first_offset is not None and first_offset != message.offset:
        DUPLICATES.labels("engine").inc()
        log.debug("duplicate event %s from %s dropped", event.event_id, event.source)
        return
    engine.store.observe(f"e{message.partition}", event.ts, message.offset)
    if rates is not None and runtime.choreography.monitor.rate_spikes:
        spike = rates.observe(event)
        if spike is not None:
            await runtime.alert(spike)
    for tap in runtime.event_taps:
        await tap(event, record.value)
    fired = runtime.matcher.match(event)
    await engine.route(event, record.value, message.partition, message.offset,
                       origin_of(record), fired)
    # After routing: a record whose routing fails sends none of its actions.
    await engine.send(fired, event.ts, wait=False)
    # The first offset is kept so that a record re-read after a crash is not its own
    # duplicate; written last, so that one whose handling failed is not a duplicate when
    # it is re-driven.
    seen.put(key, event.ts, message.partition, message.offset)
