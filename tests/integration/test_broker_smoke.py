"""A message round-trips through whichever broker tests/broker.py finds."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.broker import Broker

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str, topic: str, value: bytes) -> bytes:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"smoke")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    return message.value


def test_message_round_trips(broker: Broker) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    value = b'{"hello": "choreo"}'

    assert asyncio.run(_round_trip(broker.bootstrap, topic, value)) == value


def test_broker_addresses_agree(broker: Broker) -> None:
    assert broker.url.startswith("kafka://")
    assert broker.origin in {"env", "testcontainers", "local"}
    assert "://" not in broker.bootstrap
