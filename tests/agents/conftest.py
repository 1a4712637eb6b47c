"""Agent tests: the real agents on a memory:// app, driven with Faust's test_context()."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from choreo.app import Runtime, create_app
from choreo.config import load_choreography
from choreo.settings import BUNDLED_CONFIG, Settings
from topology import Components, wire


@dataclass
class Sent:
    """What the agents sent, by topic name, as (key, value, headers)."""

    records: dict[str, list[tuple]] = field(default_factory=dict)

    def values(self, topic: str) -> list[bytes]:
        return [value for _key, value, _headers in self.records.get(topic, [])]


def record_sends(runtime: Runtime) -> Sent:
    sent = Sent()
    topics = [runtime.events_topic, runtime.dead_letter_topic, runtime.rekeyed_topic,
              runtime.alerts_topic,
              *runtime.capability_topics.values(),
              *(w.dead_letter_topic for w in runtime.workers.values())]
    for topic in topics:
        name = topic.get_topic_name()

        async def send(*, key=None, value=None, headers=None, _name=name, **_kw):  # noqa: ANN001
            sent.records.setdefault(_name, []).append((key, value, headers))
            acked = asyncio.get_running_loop().create_future()  # as the broker's ack
            acked.set_result(None)
            return acked

        topic.send = send  # type: ignore[method-assign]

    async def produce(topic, key, value, headers=None):  # noqa: ANN001, ANN202
        return await topic.send(key=key, value=value, headers=headers)

    runtime.produce = produce  # type: ignore[method-assign]
    return sent


@pytest.fixture
def components(tmp_path) -> Components:
    # test_context() never connects; the broker address is only a placeholder.
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path)
    parts = wire(create_app(settings, load_choreography(BUNDLED_CONFIG)))
    parts.app.finalize()
    parts.app.conf.store = "memory://"
    return parts


@pytest.fixture
def runtime(components: Components) -> Runtime:
    return components.runtime


@pytest.fixture
def sent(runtime: Runtime) -> Sent:
    return record_sends(runtime)
