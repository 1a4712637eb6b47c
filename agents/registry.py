"""A worker process's presence in the agent registry: announce, heartbeats, leave, inboxes.

The process is one agent (CHOREO_AGENT_ID, default host-pid) with the capabilities it runs.
At start it announces itself on the agents topic, then sends a heartbeat every
`[agents] heartbeat_interval`, and a `leave` record when it stops cleanly. For each of its
capabilities that routes explicitly (`routing` in `[capabilities.<name>]`) it also reads its
own inbox topic, `<capability topic>.<agent id>`, with the same handler, outside the pool's
consumer group (agents/inbox.py): the consumer-group topic is still read too, for actions
sent while no agent was routable.

An inbox drained while the agent was down (streams/agents.py) has its drained offsets in the
group `choreo-drain.<inbox>`; the agent starts reading after them when it comes back, since
another agent has been given those actions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from agents.inbox import InboxReader, inbox_group
from agents.worker import CapabilityWorker, handle_record
from choreo import kafka_clients
from choreo.app import Runtime
from choreo.registry import Descriptor, default_agent_id, heartbeat_record
from choreo.topics import ensure_topics

log = logging.getLogger(__name__)
# How long a stopping process waits for its inboxes' actions in hand (then they are read
# again by the next process: at-least-once).
STOP_WAIT = 30.0


@dataclass
class Presence:
    """What this process announces, and its heartbeat sequence."""

    runtime: Runtime
    descriptor: Descriptor
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    # inbox topic -> partition -> first offset not drained by the engine
    skip_below: dict[str, dict[int, int]] = field(default_factory=dict)
    # inbox topic -> partition -> offset the pool's group committed (earlier versions read
    # the inboxes in that group)
    pool_committed: dict[str, dict[int, int]] = field(default_factory=dict)
    readers: list[InboxReader] = field(default_factory=list)
    producer: AIOKafkaProducer | None = None

    async def send(self, kind: str) -> Any:
        """Send a presence record; returns the future of its acknowledgement."""
        if self.producer is None:
            settings = self.runtime.settings
            self.producer = kafka_clients.producer(settings.bootstrap_servers,
                                                   settings=settings, acks=1, linger_ms=0)
            await self.producer.start()
        record = heartbeat_record(kind, self.descriptor, self.incarnation, self.seq, time.time())
        self.seq += 1
        return await self.producer.send(self.runtime.choreography.topics.agents_topic,
                                        key=self.descriptor.agent_id.encode(),
                                        value=orjson.dumps(record))

    async def beat(self) -> None:
        """Announce, then a heartbeat every interval until the process stops.

        Presence records go through a producer of their own: behind the worker's results in
        the app's producer, a heartbeat waited for every batch queued before it, and a busy
        agent could be judged down while it worked.
        """
        await self.send("announce")
        log.info("agent %s announced: capabilities %s, tags %s, weight %g, inboxes %s",
                 self.descriptor.agent_id, ", ".join(self.descriptor.capabilities),
                 ", ".join(self.descriptor.tags) or "-", self.descriptor.weight,
                 ", ".join(self.descriptor.inboxes.values()) or "-")
        interval = self.descriptor.interval
        due = time.monotonic()
        while True:
            due = max(due + interval, time.monotonic())
            await asyncio.sleep(due - time.monotonic())
            try:
                await self.send("heartbeat")
            except Exception as exc:  # noqa: BLE001 - the next one may pass; missing ones count
                log.warning("heartbeat not sent: %s", exc)

    async def leave(self, *_args: Any, **_kwargs: Any) -> None:
        try:
            await asyncio.wait_for(await self.send("leave"), 5.0)
        except Exception as exc:  # noqa: BLE001 - the heartbeats stopping says the same
            log.warning("could not announce leaving: %s", exc)
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def prepare(self) -> None:
        """Create the agents topic and the inboxes; learn what was drained from them."""
        settings = self.runtime.settings
        client = settings.kafka_options()
        await ensure_topics(settings.bootstrap_servers,
                            [self.runtime.choreography.topics.agents_topic],
                            settings.partitions, config={"cleanup.policy": "compact"},
                            client=client)
        inboxes = sorted(self.descriptor.inboxes.values())
        if not inboxes:
            return
        await ensure_topics(settings.bootstrap_servers, inboxes, settings.partitions,
                            client=client)
        admin = kafka_clients.admin(settings.bootstrap_servers, settings=settings)
        await admin.start()
        try:
            pool = await admin.list_consumer_group_offsets(settings.app_id)
            for inbox in inboxes:
                found = await admin.list_consumer_group_offsets(f"choreo-drain.{inbox}")
                self.skip_below[inbox] = _offsets(found, inbox)
                self.pool_committed[inbox] = _offsets(pool, inbox)
        finally:
            await admin.close()

    async def earlier(self, inbox: str) -> list[dict[int, int]]:
        """Offsets an inbox is read after, besides its own group's: see agents/inbox.py."""
        return [self.skip_below.get(inbox, {}), self.pool_committed.get(inbox, {})]

    async def stop_inboxes(self, *_args: Any, **_kwargs: Any) -> None:
        """Let each inbox finish the action in hand and commit, before the process stops."""
        for reader in self.readers:
            reader.stop()
        await asyncio.gather(*(r.stopped(STOP_WAIT) for r in self.readers))


def _offsets(found: Any, topic: str) -> dict[int, int]:
    return {tp.partition: meta.offset for tp, meta in found.items()
            if tp.topic == topic and meta is not None and meta.offset >= 0}


def agent_identity(runtime: Runtime) -> str:
    """This process's id in the agent registry: CHOREO_AGENT_ID, else host-pid."""
    return runtime.settings.agent.agent_id or default_agent_id()


def register_presence(runtime: Runtime, workers: Mapping[str, CapabilityWorker],
                      agent_id: str) -> Presence | None:
    """Announce the capability workers of this process as `agent_id`, and read their
    inboxes."""
    if not workers:
        return None
    capabilities = list(workers)
    identity = runtime.settings.agent
    choreography = runtime.choreography
    routed = [c for c in capabilities if choreography.routing.for_capability(c).explicit]
    descriptor = Descriptor(
        agent_id=agent_id, capabilities=tuple(capabilities), tags=identity.tags,
        weight=identity.weight, version=identity.version,
        interval=choreography.agents.heartbeat_interval,
        group=inbox_group(runtime.settings.app_id, agent_id),
        inboxes={c: choreography.topics.inbox_topic(c, agent_id) for c in routed})
    presence = Presence(runtime, descriptor)
    runtime.startup_hooks.append(presence.prepare)
    app = runtime.app

    settings = runtime.settings
    for capability in routed:
        worker = workers[capability]

        async def handle(record: Any, handled: Any,
                         _worker: CapabilityWorker = worker) -> None:
            await handle_record(_worker, record, handled)

        reader = InboxReader(descriptor.inboxes[capability], descriptor.group,
                             settings.bootstrap_servers, settings.kafka_options(), handle,
                             choreography.defaults.dedup_horizon, presence.earlier)
        presence.readers.append(reader)
        app.task(reader.supervise)

    @app.task
    async def heartbeats() -> None:
        await presence.beat()

    app.on_before_shutdown.connect(presence.stop_inboxes)
    app.on_before_shutdown.connect(presence.leave)
    return presence

