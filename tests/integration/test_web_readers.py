"""Web views and metrics against the real broker: one consumer for every dead-letter request,
and a bounded number of series whatever event types arrive."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from choreo.app import create_app
from choreo.config import parse_choreography
from choreo.dead_letter import Origin, dead_letter_headers
from choreo.envelope import new_event
from choreo.graph_svg import build_graph
from choreo.kafka_io import send_all, send_events
from choreo.metrics import OTHER, UNKNOWN_EVENT_TYPES
from choreo.settings import BUNDLED_CONFIG, Settings
from choreo.topics import ensure_topics
from tests.broker import Broker
from tests.integration.conftest import wait_until
from topology import wire


def test_concurrent_dead_letter_requests_share_one_consumer(broker: Broker, tmp_path: Path,
                                                            monkeypatch):
    prefix = f"dlr-{uuid.uuid4().hex[:8]}"
    text = BUNDLED_CONFIG.read_text().replace('prefix = ""', f'prefix = "{prefix}."', 1)
    choreography = parse_choreography(text)
    topic = choreography.topics.dead_letter_topic
    asyncio.run(ensure_topics(broker.bootstrap, [topic], 2))
    origin = Origin(choreography.topics.events_topic, 0, 7)
    asyncio.run(send_all(broker.bootstrap, topic, [
        (f"k{i}".encode(), b"not json", dead_letter_headers("invalid_json", "bad", origin,
                                                            "ingest"))
        for i in range(3)]))
    settings = Settings(broker=broker.url, store="memory://", data_dir=tmp_path)
    components = wire(create_app(settings, choreography))
    components.app.finalize()
    view = components.app.web.views["/ui/dead-letters/"]

    started: list[AIOKafkaConsumer] = []
    real_start = AIOKafkaConsumer.start

    async def counted_start(self: AIOKafkaConsumer) -> None:
        started.append(self)
        await real_start(self)

    monkeypatch.setattr(AIOKafkaConsumer, "start", counted_start)

    async def requests() -> list[dict]:
        try:
            responses = await asyncio.gather(*(view.get(None) for _ in range(10)))
            return [orjson.loads(r.body) for r in responses]
        finally:
            await components.dead_letter_reader.close()

    bodies = asyncio.run(requests())
    assert len(started) == 1, f"{len(started)} consumers for 10 concurrent requests"
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["topic"] == topic
    assert sorted(r["key"] for r in bodies[0]["records"]) == ["k0", "k1", "k2"]
    assert {r["reason"] for r in bodies[0]["records"]} == {"invalid_json"}


def test_random_event_types_make_a_bounded_number_of_series(make_worker):  # noqa: ANN001
    worker = make_worker()
    events = [new_event(f"junk-{uuid.uuid4().hex}", {}, source="it").as_dict()
              for _ in range(300)]
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            events))
    wait_until(lambda: worker.metric("choreo_events_in_total") >= 300, timeout=120, every=2)
    series = [line for line in worker.get("/metrics").decode().splitlines()
              if line.startswith("choreo_events_in_total{")]
    declared = {node.split(":", 1)[1] for node in build_graph(worker.choreography).nodes
                if node.startswith(("event:", "result:"))}
    # On main: a series for each of the 300 types.
    assert len(series) <= len(declared) + UNKNOWN_EVENT_TYPES + 1, len(series)
    assert len([line for line in series if "junk-" in line]) <= UNKNOWN_EVENT_TYPES
    assert worker.metric("choreo_events_in_total", event_type=OTHER) >= 300 - UNKNOWN_EVENT_TYPES
