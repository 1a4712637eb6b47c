"""Fuzzed malformed input through a real worker: all of it dead-lettered, nothing else happens.

`make test` pushes 5,000 records; `make soak` pushes 100,000 (CHOREO_FUZZ_COUNT overrides).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import send_all
from choreo.settings import BUNDLED_CONFIG
from tests.hostile_input import MAX_EVENT_BYTES, malformed
from tests.integration.conftest import Worker, wait_until


async def lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of `topic` the group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        return sum(end - (committed[tp].offset if tp in committed else 0)
                   for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


def run_fuzz(make_worker, count: int, seed: int) -> dict:  # noqa: ANN001
    text = BUNDLED_CONFIG.read_text().replace(
        'idle_timeout = "30s"', f'idle_timeout = "30s"\nmax_event_bytes = {MAX_EVENT_BYTES}')
    worker: Worker = make_worker(text)
    topics = worker.choreography.topics
    records = list(malformed(count, seed=seed, run=worker.name))
    expected = {key: (value, reason) for key, value, reason, _kind in records}
    assert len(expected) == count
    before = worker.metric("choreo_dead_lettered_total")
    started = time.monotonic()
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic,
                         ((key, value) for key, value, _r, _k in records)))
    sent_s = time.monotonic() - started
    wait_until(lambda: worker.metric("choreo_dead_lettered_total") - before >= count,
               timeout=max(60, count / 200), every=2)
    processed_s = time.monotonic() - started

    dead = worker.read(topics.dead_letter_topic, idle=3)
    by_key = Counter(r.key for r in dead)
    assert len(dead) == count and set(by_key) == set(expected), "each record exactly once"
    assert max(by_key.values()) == 1
    reasons: Counter[str] = Counter()
    for record in dead:
        value, reason = expected[record.key]
        assert record.value == value, f"{record.key!r}: the original bytes are kept"
        info = read_dead_letter_headers(record.headers)
        assert info["reason"] == reason, record.key
        assert info["stage"] == "ingest" and info["detail"]
        reasons[reason] += 1
    actions = worker.read(*(topics.capability_topic(c) for c in worker.choreography.capabilities),
                          idle=1)
    assert actions == [], "nothing reached a capability topic"
    assert worker.process.poll() is None, "the worker never stopped"
    assert worker.get("/health/")
    wait_until(lambda: asyncio.run(lag(worker.broker.bootstrap, worker.name,
                                       topics.events_topic)) == 0, timeout=60, every=2)
    return {"count": count, "sent_s": sent_s, "processed_s": processed_s,
            "reasons": dict(reasons)}


def test_5000_malformed_records_all_reach_the_dead_letter_topic(make_worker):  # noqa: ANN001
    figures = run_fuzz(make_worker, 5_000, seed=5)
    print(f"\nfuzz: {figures}")
    assert set(figures["reasons"]) >= {"not_json", "wrong_type", "missing_field", "not_object",
                                       "bad_timestamp", "bad_event_type", "too_large"}


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_100000_malformed_records_all_reach_the_dead_letter_topic(make_worker):  # noqa: ANN001
    count = int(os.environ.get("CHOREO_FUZZ_COUNT", "100000"))
    figures = run_fuzz(make_worker, count, seed=20261121)
    print(f"\nfuzz: {figures}")
