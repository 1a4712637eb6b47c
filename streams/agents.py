"""The engine's side of the agent registry: the global view, liveness verdicts, routing.

- **Global view.** Every engine worker reads the whole compacted agents topic with a consumer
  of its own (no group, every partition, from the beginning) and folds it into a
  `choreo.registry.Registry`: Kafka Streams' GlobalKTable, by hand. The router on the sending
  side needs every agent, whichever partitions the worker owns. A Faust GlobalTable would
  keep a second copy of what the compacted topic already holds (its changelog) and recover
  every partition before the streams resume at each rebalance.
- **Verdicts.** The `track_agents` agent makes the engine's consumer group share the agents
  topic's partitions; the worker owning an agent's partition is the only one that judges it.
  A timer publishes a `status` record when the judged status differs from the last verdict,
  then `agent.up` / `agent.down` on the events topic, keyed by agent id, with an id derived
  from the agent, its incarnation and the heartbeat judged: once per change, and a re-send
  after a crash between the two is dropped as a duplicate.
- **Routing.** `ActionRouter.target` picks a routable agent of the capability (with the tag)
  and names its inbox topic; with none, the capability topic (the consumer group).
- **Draining.** A down agent's inbox is read from where its group (or an earlier drain) left
  off and every action is routed again; the drain's progress is the committed offset of the
  group `choreo-drain.<inbox>`, which a restarted agent reads to skip what was re-routed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from choreo import kafka_clients
from choreo.actions import Action
from choreo.app import Runtime, raw_topic
from choreo.envelope import new_event
from choreo.metrics import (
    ACTIONS_REROUTED,
    ACTIONS_ROUTED,
    AGENT_TRANSITIONS,
    AGENTS,
    ROUTE_FALLBACKS,
)
from choreo.registry import (
    AGENT_DOWN,
    AGENT_UP,
    REGISTRY_SOURCE,
    AgentState,
    InvalidAgentRecord,
    Registry,
    parse_record,
    status_record,
    transition_event_id,
    transition_payload,
)
from choreo.routing import Candidate, Router
from choreo.topics import ensure_topics
from streams.records import isolated, refuse
from tables.pattern_state import partition_for

log = logging.getLogger(__name__)
ROUTE_HEADER = "choreo.route.agent"
FALLBACK_HEADER = "choreo.route.fallback"
REROUTED_HEADER = "choreo.route.from"  # inbox:partition:offset of a drained action
DRAIN_FOR = 60.0  # a down agent's inbox is drained again every DRAIN_EVERY for this long
DRAIN_EVERY = 5.0


def drain_group(inbox: str) -> str:
    return f"choreo-drain.{inbox}"


async def ensure_agents_topic(runtime: Runtime) -> None:
    """The agents topic is compacted: the latest record of an agent is all the registry needs."""
    await ensure_topics(runtime.settings.bootstrap_servers,
                        [runtime.choreography.topics.agents_topic], runtime.settings.partitions,
                        config={"cleanup.policy": "compact"},
                        client=runtime.settings.kafka_options())


class RegistryView:
    """The global view: every partition of the agents topic folded into a Registry."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = Registry(runtime.choreography.agents.missed_heartbeats)
        self.partitions = runtime.settings.partitions
        self.caught_up = asyncio.Event()
        # partition -> wall time of the latest fetch after which nothing was left to read
        self.read_up_to: dict[int, float] = {}

    def apply(self, key: bytes | None, value: bytes | None, ts: float) -> None:
        """Fold one record of the agents topic; one that cannot be folded is skipped (the
        `track_agents` agent, which sees each record once, dead-letters it)."""
        try:
            fold(self.registry, key, value, ts)
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop the view
            log.warning("agents topic: record for %r skipped: %s: %s", key,
                        type(exc).__name__, exc)

    async def follow(self) -> None:
        topic = self.runtime.choreography.topics.agents_topic
        settings = self.runtime.settings
        consumer = kafka_clients.consumer(settings.bootstrap_servers, settings=settings,
                                          group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        await consumer.start()
        try:
            found = None
            while not found:
                found = consumer.partitions_for_topic(topic)
                if not found:
                    await consumer._client.force_metadata_update()  # noqa: SLF001
                    await asyncio.sleep(0.5)
            self.partitions = len(found)
            tps = [TopicPartition(topic, p) for p in sorted(found)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                for records in batch.values():
                    for r in records:
                        self.apply(r.key, r.value, r.timestamp / 1000.0)
                await self._note_read(consumer, tps)
                if not self.caught_up.is_set() and await _reached(consumer, end):
                    self.caught_up.set()
                    log.info("agent registry: %d agent(s) known", len(self.registry.agents))
        finally:
            await consumer.stop()

    async def _note_read(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Note, per partition, when a fetch last found nothing beyond what has been read."""
        for tp in tps:
            highwater, fetched_at = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            if highwater is not None and fetched_at and await consumer.position(tp) >= highwater:
                self.read_up_to[tp.partition] = fetched_at / 1000.0

    def now(self) -> float:
        """The time the liveness rule is applied at: now, or, when this worker is behind on
        the agents topic, the time up to which it has read every heartbeat sent.

        A worker busy elsewhere (a burst of events, a loaded machine) may read the agents
        topic late; judged against the wall clock, the heartbeats it has not read yet would
        count as missed, and a live agent would be marked down.
        """
        return min([time.time(), *self.read_up_to.values()])

    def describe(self) -> dict[str, Any]:
        now = self.now()
        missed = self.registry.missed_heartbeats
        return {"agents": [s.describe(now, missed) for _id, s in
                           sorted(self.registry.agents.items())],
                "missed_heartbeats": missed, "caught_up": self.caught_up.is_set()}


def fold(registry: Registry, key: bytes | None, value: bytes | None, ts: float) -> None:
    """Fold one record of the agents topic into `registry`; raises InvalidAgentRecord (or
    whatever a malformed field provokes) for one that cannot be folded."""
    if key is None:
        return
    if value is None:
        registry.apply(key.decode(), None, ts)
        return
    data = parse_record(value)
    registry.apply(data["agent_id"], data, ts)


async def check_agent_record(runtime: Runtime, record: faust.EventT) -> None:
    """Dead-letter a record of the agents topic that the registry cannot fold (tried on an
    empty registry: the global view only skips it)."""
    message = record.message
    try:
        fold(Registry(), message.key, record.value, (message.timestamp or 0.0))
    except InvalidAgentRecord as exc:
        await refuse(runtime, record, "invalid_agent_record", str(exc), "registry")


class ActionRouter:
    """Where each action goes: an agent's inbox when its capability routes explicitly."""

    def __init__(self, runtime: Runtime, view: RegistryView) -> None:
        self.runtime, self.view = runtime, view
        self.router = Router()
        self.inboxes: dict[str, faust.TopicT] = {}

    def target(self, action: Action, exclude: str | None = None
               ) -> tuple[faust.TopicT, list[tuple[str, bytes]] | None]:
        capability = action.capability
        route = self.runtime.choreography.routing.for_capability(capability)
        if not route.explicit:
            return self.runtime.capability_topic(capability), None
        found = [s for s in self.view.registry.candidates(capability, route.tag,
                                                          self.view.now())
                 if s.descriptor.agent_id != exclude]
        agent_id = self.router.choose(capability, route, [
            Candidate(s.descriptor.agent_id, s.descriptor.weight) for s in found])
        if agent_id is None:
            reason = "no_healthy_agent" if self.view.caught_up.is_set() else "registry_loading"
            ROUTE_FALLBACKS.labels(capability, reason).inc()
            return self.runtime.capability_topic(capability), [(FALLBACK_HEADER,
                                                                reason.encode())]
        ACTIONS_ROUTED.labels(capability, agent_id).inc()
        inbox = self.runtime.choreography.topics.inbox_topic(capability, agent_id)
        topic = self.inboxes.get(inbox)
        if topic is None:
            topic = self.inboxes[inbox] = raw_topic(self.runtime.app, inbox)
        return topic, [(ROUTE_HEADER, agent_id.encode())]


class LivenessOwner:
    """Judges the agents on the agents-topic partitions this worker owns."""

    def __init__(self, runtime: Runtime, view: RegistryView, router: ActionRouter) -> None:
        self.runtime, self.view, self.router = runtime, view, router
        self.agents_topic = raw_topic(runtime.app, runtime.choreography.topics.agents_topic)
        self.draining: dict[str, asyncio.Task] = {}
        self.drained_at: dict[str, float] = {}

    def owned(self) -> list[str]:
        name = self.agents_topic.get_topic_name()
        mine = {tp.partition for tp in self.runtime.app.assignor.assigned_actives()
                if tp.topic == name}
        return [a for a in self.view.registry.agents
                if partition_for(a, self.view.partitions) in mine]

    async def tick(self) -> None:
        if not self.view.caught_up.is_set():
            return
        registry, now = self.view.registry, time.time()
        owned = self.owned()
        for state, status, reason in registry.transitions(owned, self.view.now()):
            await self.publish(state, status, reason, now)
        for agent_id in registry.forgettable(owned, now,
                                             self.runtime.choreography.agents.forget_after):
            await (await self.agents_topic.send(key=agent_id.encode(), value=None))
            registry.apply(agent_id, None, now)
            log.info("agent %s forgotten", agent_id)
        for agent_id in owned:
            state = registry.agents.get(agent_id)
            if state is not None and state.status == "down" and state.descriptor.inboxes:
                self.maybe_drain(state, now)
        for (capability, status), count in registry_counts(registry, self.view.now()).items():
            AGENTS.labels(capability, status).set(count)

    async def publish(self, state: AgentState, status: str, reason: str, now: float) -> None:
        """The verdict first (so it is not judged again), then the event."""
        agent_id = state.descriptor.agent_id
        record = status_record(state, status, reason, now)
        await (await self.agents_topic.send(key=agent_id.encode(), value=orjson.dumps(record)))
        event = new_event(AGENT_DOWN if status == "down" else AGENT_UP,
                          transition_payload(state, status, reason, now),
                          source=REGISTRY_SOURCE, event_id=transition_event_id(state, status))
        self.view.registry.apply(agent_id, record, now)
        topic, key, value = self.runtime.events_topic, agent_id.encode(), event.to_bytes()
        await (await topic.send(key=key, value=value,
                                headers=self.runtime.sign(topic, key, value)))
        AGENT_TRANSITIONS.labels(status).inc()
        log.warning("agent %s is %s%s", agent_id, status, f": {reason}" if reason else "")

    def maybe_drain(self, state: AgentState, now: float) -> None:
        agent_id = state.descriptor.agent_id
        running = self.draining.get(agent_id)
        if running is not None and not running.done():
            return
        if now - state.status_at > DRAIN_FOR and agent_id in self.drained_at:
            return
        if now - self.drained_at.get(agent_id, 0.0) < DRAIN_EVERY:
            return
        self.drained_at[agent_id] = now
        self.draining[agent_id] = asyncio.ensure_future(self.drain(state))

    async def drain(self, state: AgentState) -> int:
        """Route again every action left in a down agent's inboxes; returns how many."""
        moved = 0
        for capability, inbox in sorted(state.descriptor.inboxes.items()):
            try:
                moved += await self.drain_inbox(state, capability, inbox)
            except Exception:  # noqa: BLE001 - tried again at the next tick
                log.exception("draining %s failed; will try again", inbox)
                self.drained_at.pop(state.descriptor.agent_id, None)
        return moved

    async def drain_inbox(self, state: AgentState, capability: str, inbox: str) -> int:
        bootstrap = self.runtime.settings.bootstrap_servers
        options = self.runtime.settings.kafka_options()
        group = drain_group(inbox)
        consumer = kafka_clients.consumer(bootstrap, options=options, group_id=group,
                                          enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        await consumer.start()
        try:
            found = consumer.partitions_for_topic(inbox)
            if not found:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                found = consumer.partitions_for_topic(inbox) or set()
            tps = [TopicPartition(inbox, p) for p in sorted(found)]
            if not tps:
                return 0
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            start = await committed_offsets(bootstrap, state.descriptor.group, tps, options)
            drained = await committed_offsets(bootstrap, group, tps, options)
            first = await consumer.beginning_offsets(tps)
            todo = []
            for tp in tps:
                offset = max(start.get(tp, -1), drained.get(tp, -1), first[tp])
                if offset < end[tp]:
                    consumer.seek(tp, offset)
                    todo.append(tp)
            if not todo:
                return 0
            pending, moved = [], 0
            while not await _reached(consumer, {tp: end[tp] for tp in todo}):
                batch = await consumer.getmany(*todo, timeout_ms=500, max_records=500)
                for tp, records in batch.items():
                    for r in records:
                        if r.offset >= end[tp]:
                            continue
                        pending.append(await self.reroute(state, capability, r))
                        moved += 1
            await asyncio.gather(*pending)
            await consumer.commit({tp: end[tp] for tp in todo})
            ACTIONS_REROUTED.labels(capability).inc(moved)
            log.warning("drained %d action(s) from %s (agent %s is down)", moved, inbox,
                        state.descriptor.agent_id)
            return moved
        finally:
            await consumer.stop()

    async def reroute(self, state: AgentState, capability: str, record: Any) -> Any:
        action = _Routed(capability)
        topic, headers = self.router.target(action, exclude=state.descriptor.agent_id)
        origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
        # Signed again for its new topic, once its signature for the inbox verifies.
        signed = None
        if self.runtime.guard.vouch(record.topic, record.key, record.value, record.headers,
                                    actions=True) is None:
            signed = self.runtime.sign(topic, record.key, record.value)
        return await topic.send(key=record.key, value=record.value,
                                headers=[*(signed or []), *(headers or []),
                                         (REROUTED_HEADER, origin)])


async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


class _Routed:
    """Enough of an Action for the router: its capability."""

    def __init__(self, capability: str) -> None:
        self.capability = capability


def registry_counts(registry: Registry, now: float) -> dict[tuple[str, str], int]:
    counts = registry.counts(now)
    for capability, _status in list(counts):
        for status in ("up", "down"):
            counts.setdefault((capability, status), 0)
    return counts


async def committed_offsets(bootstrap: str, group: str, tps: list[TopicPartition],
                            options: Mapping[str, Any]) -> dict[TopicPartition, int]:
    """The group's committed offset per partition (-1 when none); `options` are the
    TLS/SASL settings (Settings.kafka_options)."""
    if not group:
        return {}
    admin = kafka_clients.admin(bootstrap, options=options)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta is not None}


@dataclass(frozen=True)
class AgentRegistry:
    """What `register_registry` adds: the global view, the router and the liveness owner."""

    view: RegistryView
    router: ActionRouter
    liveness: LivenessOwner


def register_registry(runtime: Runtime) -> AgentRegistry:
    """Add the global registry view, the router and the verdict timer (`/agents/` shows the
    view: agents/views.py)."""
    app = runtime.app
    view = RegistryView(runtime)
    router = ActionRouter(runtime, view)
    owner = LivenessOwner(runtime, view, router)
    runtime.startup_hooks.append(lambda: ensure_agents_topic(runtime))
    if any(r.explicit for r in runtime.choreography.routing.routes.values()):
        runtime.action_router = router

    async def track_agents(stream: faust.StreamT) -> None:
        # To share the agents topic's partitions among the engine's workers: the owner of a
        # partition judges its agents (the global view has already folded the records), and
        # dead-letters the records that could not be folded.
        async for record in stream.events():
            await isolated(runtime, record, "registry",
                           lambda record=record: check_agent_record(runtime, record))

    app.agent(owner.agents_topic, name="track_agents")(track_agents)

    @app.task
    async def follow_agents() -> None:
        await view.follow()

    tick = max(0.1, min(1.0, runtime.choreography.agents.heartbeat_interval / 2))

    @app.timer(tick, name="judge_agents")
    async def judge_agents() -> None:
        await owner.tick()

    return AgentRegistry(view, router, owner)
