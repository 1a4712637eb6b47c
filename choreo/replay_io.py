"""Kafka reads for a replay: ranges of a topic by offset or time, committed offsets, changelogs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from choreo import kafka_clients
from choreo.kafka_io import Record


@dataclass(frozen=True)
class Bounds:
    """Per partition: the first offset still in the log and the next offset to be written."""

    first: dict[int, int]
    end: dict[int, int]


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer of no group, with the process's TLS/SASL settings (choreo/kafka_clients.py)."""
    return kafka_clients.consumer(bootstrap, enable_auto_commit=False,
                                  auto_offset_reset="earliest", group_id=None)


async def topic_bounds(bootstrap: str, topic: str) -> Bounds | None:
    """The topic's partitions with their bounds; None if it does not exist."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            found = consumer.partitions_for_topic(topic)
        if not found:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(found)]
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return Bounds({tp.partition: first[tp] for tp in tps},
                      {tp.partition: end[tp] for tp in tps})
    finally:
        await consumer.stop()


async def offsets_for_time(bootstrap: str, topic: str, partitions: list[int], ts: float,
                           end: Mapping[int, int]) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is at or after `ts`."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        found = await consumer.offsets_for_times(
            {TopicPartition(topic, p): int(ts * 1000) for p in partitions})
        return {tp.partition: (hit.offset if hit is not None else end[tp.partition])
                for tp, hit in found.items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets on the topic (partitions it never committed
    are left out)."""
    admin = kafka_clients.admin(bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items()
            if tp.topic == topic and meta.offset >= 0}


async def read_range(bootstrap: str, topic: str, starts: Mapping[int, int],
                     ends: Mapping[int, int], on_record: Callable[[Record], None]) -> int:
    """Read [start, end) of each partition; returns how many records were read."""
    wanted = {p: (starts[p], ends[p]) for p in starts if ends[p] > starts[p]}
    if not wanted:
        return 0
    consumer = _consumer(bootstrap)
    await consumer.start()
    n = 0
    try:
        tps = {p: TopicPartition(topic, p) for p in wanted}
        consumer.assign(list(tps.values()))
        for p, (start, _end) in wanted.items():
            consumer.seek(tps[p], start)
        open_parts = set(wanted)
        while open_parts:
            batch = await consumer.getmany(*(tps[p] for p in open_parts), timeout_ms=1000,
                                           max_records=2000)
            for tp, records in batch.items():
                end = wanted[tp.partition][1]
                for r in records:
                    if r.offset >= end:
                        break
                    n += 1
                    on_record(Record(r.topic, r.partition, r.offset, r.key, r.value,
                                     tuple(r.headers or ()), r.timestamp))
            for p in list(open_parts):
                if await consumer.position(tps[p]) >= wanted[p][1]:
                    open_parts.discard(p)
        return n
    finally:
        await consumer.stop()


async def read_table_changelog(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """A table as its changelog holds it: the last value of each key, deletions applied."""
    bounds = await topic_bounds(bootstrap, topic)
    if bounds is None:
        return {}
    table: dict[bytes, bytes] = {}

    def keep(record: Record) -> None:
        if record.key is None:
            return
        if record.value is None:
            table.pop(record.key, None)
        else:
            table[record.key] = record.value

    await read_range(bootstrap, topic, bounds.first, bounds.end, keep)
    return table
