"""Kafka plumbing for the benchmark: topics, fast and paced producers, offsets, timestamps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.generate import EventMaker


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        log_append_time: bool = False) -> None:
    """Create topics; outputs use LogAppendTime so a record's timestamp is its arrival."""
    config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=config)
                                           for n in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


class Offsets:
    """End offsets and group commits, on one long-lived client."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> Offsets:
        await self.consumer.start()
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        found = self.consumer.partitions_for_topic(topic)
        if not found:
            await self.consumer._client.force_metadata_update()  # noqa: SLF001
            found = self.consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(found)]

    async def ends(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        tps = [tp for topic in topics for tp in await self.partitions(topic)]
        return dict(await self.consumer.end_offsets(tps)) if tps else {}

    async def total(self, topics: Iterable[str]) -> int:
        return sum((await self.ends(topics)).values())

    async def committed(self, group: str, topic: str) -> int:
        """Sum of the group's committed offsets on a topic (0 before its first commit)."""
        try:
            offsets = await self.admin.list_consumer_group_offsets(group)
        except Exception:  # noqa: BLE001 - a group that does not exist yet
            return 0
        return sum(meta.offset for tp, meta in offsets.items()
                   if tp.topic == topic and meta.offset > 0)


async def produce(bootstrap: str, topic: str, make: EventMaker, start: int, count: int,
                  on_progress: Callable[[int], None] | None = None) -> float:
    """Send events start..start+count as fast as the producer takes them; return seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    began = time.monotonic()
    try:
        pending = []
        now = time.time
        for i in range(start, start + count):
            key, value = make(i, now())
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
                if on_progress:
                    on_progress(i + 1 - start)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - began


async def produce_paced(bootstrap: str, topic: str, make: EventMaker, start: int, rate: float,
                        duration: float) -> int:
    """Send at `rate` events/s for `duration` s; each payload carries its send time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent = 0
    try:
        pending = []
        began = time.monotonic()
        while True:
            elapsed = time.monotonic() - began
            if elapsed >= duration:
                break
            due = int(rate * elapsed)
            while sent < due:
                key, value = make(start + sent, time.time())
                pending.append(await producer.send(topic, value=value, key=key))
                sent += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.001)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def edge_timestamps(bootstrap: str, starts: dict[TopicPartition, int],
                          ends: dict[TopicPartition, int]) -> tuple[int | None, int | None]:
    """The earliest and latest record timestamps (ms) between starts and ends, all partitions.

    With LogAppendTime a partition's timestamps never go down, so its first and last
    records bound it.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    first: int | None = None
    last: int | None = None
    try:
        for tp, end in ends.items():
            begin = starts.get(tp, 0)
            if end <= begin:
                continue
            consumer.assign([tp])
            for offset in (begin, end - 1):
                consumer.seek(tp, offset)
                record = await asyncio.wait_for(consumer.getone(tp), 30)
                first = record.timestamp if first is None else min(first, record.timestamp)
                last = record.timestamp if last is None else max(last, record.timestamp)
    finally:
        await consumer.stop()
    return first, last


async def read_range(bootstrap: str, starts: dict[TopicPartition, int],
                     ends: dict[TopicPartition, int]) -> list[tuple[int, bytes]]:
    """(timestamp ms, value) of every record between starts and ends."""
    wanted = {tp: end for tp, end in ends.items() if end > starts.get(tp, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    out: list[tuple[int, bytes]] = []
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, starts.get(tp, 0))
        remaining = dict(wanted)
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                end = remaining.get(tp)
                if end is None:
                    continue
                for record in records:
                    if record.offset < end:
                        out.append((record.timestamp, record.value))
                if records and records[-1].offset >= end - 1:
                    remaining.pop(tp, None)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return out


def log_bytes(kafka_data: Path | None, topic: str) -> int | None:
    """Bytes of a topic's log segments in a local broker's data dir (None when not local)."""
    if kafka_data is None or not kafka_data.is_dir():
        return None
    total = 0
    for directory in kafka_data.glob(f"{topic}-*"):
        if directory.name.rsplit("-", 1)[0] != topic:
            continue
        total += sum(f.stat().st_size for f in directory.glob("*.log"))
    return total
