"""Plain aiokafka helpers for the command line, the demo and the tests.

Their clients come from choreo/kafka_clients.py: `client` (aiokafka options for TLS/SASL)
overrides the process's settings, which apply otherwise.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from choreo import kafka_clients
from choreo.envelope import new_event


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def json(self) -> Any:
        return orjson.loads(self.value) if self.value is not None else None

    def envelope(self) -> dict[str, Any] | None:
        """The value as an envelope-shaped dict, or None for anything malformed."""
        try:
            data = self.json()
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            return None
        return data


def envelopes(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [e for e in (r.envelope() for r in records) if e is not None]


def producer(bootstrap: str, client: Mapping[str, Any] | None = None,
             **kwargs: Any) -> AIOKafkaProducer:
    """An idempotent producer that waits for every replica; `client` as in the module doc."""
    return kafka_clients.producer(bootstrap, options=client, **{
        "acks": "all", "enable_idempotence": True, "linger_ms": 5, **kwargs})


def complete_envelope(data: dict[str, Any], source: str = "choreo.produce") -> dict[str, Any]:
    """Fill in event_id, timestamp, source, payload and metadata when a line leaves them out."""
    if "event_type" not in data:
        return data
    filled = new_event(
        data["event_type"],
        data.get("payload", {}) if isinstance(data.get("payload", {}), dict) else {},
        source=data.get("source") or source,
        event_id=data.get("event_id") or str(uuid.uuid4()),
        timestamp=data.get("timestamp"),
        metadata=data.get("metadata") if isinstance(data.get("metadata"), dict) else None,
    ).as_dict()
    return {**filled, **{k: v for k, v in data.items() if k in filled}}


def key_for(data: Any) -> bytes | None:
    """Events are keyed by correlation id (else event id), so a flow stays on one partition."""
    if not isinstance(data, dict):
        return None
    metadata = data.get("metadata")
    correlation = metadata.get("correlation_id") if isinstance(metadata, dict) else None
    key = correlation or data.get("event_id")
    return key.encode() if isinstance(key, str) and key else None


Headers = list[tuple[str, bytes]] | None


async def send_all(bootstrap: str, topic: str,
                   values: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes,
                                                                       Headers]],
                   on_sent: Any = None, client: Mapping[str, Any] | None = None) -> int:
    """Send (key, value) or (key, value, headers) and wait until every one is acknowledged.

    `client` adds aiokafka options (TLS, SASL: Settings.kafka_options()).
    """
    prod = producer(bootstrap, client)
    await prod.start()
    sent = 0
    try:
        pending = []
        for key, value, *headers in values:
            pending.append(await prod.send(topic, value=value, key=key,
                                           headers=headers[0] if headers else None))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                sent += len(pending)
                if on_sent:
                    on_sent(len(pending))
                pending = []
        await asyncio.gather(*pending)
        sent += len(pending)
        if on_sent and pending:
            on_sent(len(pending))
    finally:
        await prod.stop()
    return sent


async def send_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    return await send_all(bootstrap, topic, ((key_for(e), orjson.dumps(e)) for e in events))


async def read_records(bootstrap: str, topics: Iterable[str], *, idle: float = 1.0,
                       timeout: float = 30.0, client: Mapping[str, Any] | None = None
                       ) -> AsyncIterator[Record]:
    """Read the topics from the beginning until nothing new arrives for `idle` seconds."""
    consumer = kafka_clients.consumer(bootstrap, options=client, enable_auto_commit=False,
                                      auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            found = consumer.partitions_for_topic(topic)
            if found is None:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                found = consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not any(batch.values()):
                if time.monotonic() - quiet_since >= idle:
                    return
                continue
            quiet_since = time.monotonic()
            for tp_records in batch.values():
                for r in tp_records:
                    yield Record(r.topic, r.partition, r.offset, r.key, r.value,
                                 tuple(r.headers or ()), r.timestamp)
    finally:
        await consumer.stop()


async def collect(bootstrap: str, topics: Iterable[str], **kwargs: Any) -> list[Record]:
    return [r async for r in read_records(bootstrap, topics, **kwargs)]


async def tail(bootstrap: str, topic: str, per_partition: int = 20,
               client: Mapping[str, Any] | None = None) -> list[Record]:
    """The last `per_partition` records of each partition of a topic, newest first."""
    consumer = kafka_clients.consumer(bootstrap, options=client, enable_auto_commit=False,
                                      group_id=None)
    await consumer.start()
    try:
        return await tail_with(consumer, topic, per_partition)
    finally:
        await consumer.stop()


async def tail_with(consumer: AIOKafkaConsumer, topic: str, per_partition: int = 20
                    ) -> list[Record]:
    """`tail` with a started consumer of no group, which may be used again afterwards."""
    out: list[Record] = []
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            found = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(found)]
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        wanted = {tp: max(firsts[tp], ends[tp] - per_partition) for tp in tps
                  if ends[tp] > firsts[tp]}
        if not wanted:
            return []
        consumer.assign(list(wanted))
        for tp, start in wanted.items():
            consumer.seek(tp, start)
        deadline = time.monotonic() + 5
        remaining = set(wanted)
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=300)
            for tp, records in batch.items():
                out += [Record(r.topic, r.partition, r.offset, r.key, r.value,
                               tuple(r.headers or ()), r.timestamp) for r in records
                        if r.offset < ends[tp]]
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        consumer.assign([])  # nothing fetched in the background until the next call
    return sorted(out, key=lambda r: (r.timestamp_ms, r.offset), reverse=True)
