"""Build the Faust app and its topics from settings and a choreography."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from choreo import faust_fastpath, rocksdb_memory
from choreo.actions import Action, RecordRefused, producer_request_size
from choreo.config import Choreography, load_choreography
from choreo.dead_letter import HEADER_PREFIX, BrokerFault, Origin, dead_letter_headers
from choreo.envelope import Event
from choreo.faust_fastpath import quiet_library_loggers
from choreo.matching import EventMatcher, PatternStats
from choreo.metrics import ALERTS, DEAD_LETTERED
from choreo.security import Guard, build_guard
from choreo.settings import Settings
from choreo.signing import signature_headers
from choreo.topics import ensure_topics, wait_for_coordinator

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class ActionTargets(Protocol):
    """Picks the topic of each action, and headers to add (streams/agents.py
    `ActionRouter`, which is built on a `Runtime`)."""

    def target(self, action: Action) -> tuple[faust.TopicT, Headers | None]: ...


class CapabilityWorkerView(Protocol):
    """What is read of a capability worker this process runs (agents/worker.py
    `CapabilityWorker`, which is built on a `Runtime`)."""

    capability: str
    dead_letter_topic: faust.TopicT

    def describe(self) -> dict[str, Any]: ...


@dataclass
class Runtime:
    """The app with everything the agents and views share."""

    app: faust.App
    settings: Settings
    choreography: Choreography
    events_topic: faust.TopicT
    dead_letter_topic: faust.TopicT
    rekeyed_topic: faust.TopicT
    alerts_topic: faust.TopicT
    stats: PatternStats = field(default_factory=PatternStats)
    capability_topics: dict[str, faust.TopicT] = field(default_factory=dict)
    # The capability workers this process runs, by capability (added as each is built).
    workers: dict[str, CapabilityWorkerView] = field(default_factory=dict)
    # Signatures, publishers and masking ([security]); does nothing when that is absent.
    guard: Guard = field(default_factory=Guard)
    # Picks the topic of each action (streams/agents.py ActionRouter) when some capability
    # routes explicitly to agents; None: every action goes to its capability topic.
    action_router: ActionTargets | None = None
    # Coroutines run once at start, after the topics exist and before the consumer joins.
    startup_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called with each new valid event of the events topic and its raw bytes (after
    # de-duplication, before matching), e.g. to forward task progress.
    event_taps: list[Callable[[Event, bytes], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.matcher = EventMatcher(self.choreography.patterns, self.stats)
        for capability in self.choreography.capabilities:
            self.capability_topic(capability)

    async def alert(self, alert: Event) -> Any:
        """Publish a monitor alert; returns the send's future (await it for the ack)."""
        ALERTS.labels(alert.payload["alert"]).inc()
        log.warning("alert %s: %s", alert.event_type, alert.payload)
        key = alert.correlation_id or alert.payload.get("event_type")
        key_bytes, value = (key.encode() if key else None), alert.to_bytes()
        return await self.alerts_topic.send(key=key_bytes, value=value,
                                            headers=self.sign(self.alerts_topic, key_bytes,
                                                              value))

    def sign(self, topic: faust.TopicT | str, key: bytes | None, value: bytes | None
             ) -> list[tuple[str, bytes]] | None:
        """Signature headers for a record this process publishes to `topic` with this key
        and value (None without a key): the signature covers all three."""
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        return self.guard.sign(name, key, value)

    async def produce(self, topic: faust.TopicT, key: bytes | None, value: bytes,
                      headers: list[tuple[str, bytes]] | None = None) -> Any:
        """Hand a record of raw bytes straight to the producer; returns the ack's future.

        `Topic.send` builds a FutureMessage, a PendingMessage and codec calls around the same
        producer call: a tenth of the engine's time in a profile, for bytes it already has.
        Failed sends still stop the commit (`guard_sends` wraps the producer). A record the
        producer refuses as too large raises `RecordRefused`, for the caller to dead-letter.
        """
        try:
            return await self.app.producer.send(topic.get_topic_name(), key, value, None, None,
                                                headers)
        except ProducerSendError as exc:
            if not isinstance(exc.__cause__, MessageSizeTooLargeError):
                raise
            raise RecordRefused("too_large", str(exc.__cause__)[:300]) from exc

    def action_target(self, action: Action) -> tuple[faust.TopicT, Headers | None]:
        """The topic an action goes to, and headers to add: its capability topic unless the
        capability routes explicitly, then the chosen agent's inbox (streams/agents.py)."""
        if self.action_router is not None:
            return self.action_router.target(action)
        return self.capability_topic(action.capability), None

    def capability_topic(self, capability: str) -> faust.TopicT:
        topic = self.capability_topics.get(capability)
        if topic is None:
            topic = self.capability_topics[capability] = raw_topic(
                self.app, self.choreography.topics.capability_topic(capability)
            )
        return topic

    def signed_topic_names(self) -> list[str]:
        """The topics whose records are verified: events and every capability topic."""
        topics = self.choreography.topics
        return [topics.events_topic,
                *(topics.capability_topic(c) for c in self.choreography.capabilities)]

    def dead_letter_topic_names(self) -> list[str]:
        """The dead-letter topics: events' and every capability's."""
        topics = self.choreography.topics
        return [topics.dead_letter_topic,
                *(topics.capability_dead_letter_topic(c) for c in self.choreography.capabilities)]

    def topic_names(self) -> list[str]:
        """Every topic the engine and its workers read or write."""
        topics = self.choreography.topics
        return [topics.events_topic, topics.dead_letter_topic, topics.rekeyed_topic,
                topics.alerts_topic,
                *(topics.capability_topic(c) for c in self.choreography.capabilities),
                *(topics.capability_dead_letter_topic(c) for c in self.choreography.capabilities)]

    async def dead_letter(self, value: bytes | None, key: bytes | None, reason: str,
                          detail: str, origin: Origin, stage: str,
                          topic: faust.TopicT | None = None,
                          extra: list[tuple[str, bytes]] | None = None,
                          signed: Any = None) -> None:
        """Send a refused record to the dead-letter topic (or `topic`) with the reason.

        Key and value are kept as they arrived, except the `[security] mask` fields, which
        are masked in the value (the paths masked are listed in `choreo.dlq.masked`, the
        SHA-256 of the original value in `choreo.dlq.sha256`) and scrubbed from the detail.
        The signature headers of `signed` (the record's own headers) are kept, so that
        `choreo redrive` can verify the record before it vouches for it.
        """
        DEAD_LETTERED.labels(reason).inc()
        value, headers, detail = self.masked_record(value, detail)
        log.warning("dead-lettered %s:%s@%s: %s (%s)", origin.topic, origin.partition,
                    origin.offset, reason, detail[:200])
        headers = dead_letter_headers(reason, detail, origin, stage) + headers
        extra = extra or []
        headers += [h for h in signature_headers(signed).items() if h not in extra]
        await (topic or self.dead_letter_topic).send(key=key, value=value,
                                                     headers=headers + extra)

    def masked_record(self, value: bytes | None, detail: str
                      ) -> tuple[bytes | None, list[tuple[str, bytes]], str]:
        """The value with the sensitive fields masked (JSON or not: `Masker.mask_record`),
        the headers saying so, and the detail with the values masked scrubbed out.

        A value nested too deep to mask or to write again (a record refused as too_deep)
        cannot leave masked, so it does not leave: the value and detail are withheld, and
        the send and the agent do not fail on it.
        """
        try:
            masked = self.guard.masker.mask_record(value)
            return masked.value, masked.headers(HEADER_PREFIX), masked.scrub(detail)
        except (TypeError, RecursionError) as exc:
            return None, [(HEADER_PREFIX + "masked", b"*")], (
                f"value and detail withheld: they could not be masked ({type(exc).__name__})")


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic of raw bytes: the engine parses and validates values itself."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw")


class SendFailed(BrokerFault, RuntimeError):
    """A record the engine sent was not acknowledged after the producer's own retries."""


def guard_sends(producer: Any) -> Any:
    """Make a failed send stop the next offset commit instead of passing unnoticed.

    Faust flushes its producer before committing offsets, but a flush also returns when a
    batch *failed*, and a send nobody awaits fails silently: the records that caused it
    would be committed and their outputs lost. Every send's future is watched here, and a
    flush after a failure raises, so the commit does not happen and the worker stops; once
    restarted (by its supervisor) it reads those records again.
    """
    failures: list[BaseException] = []
    send, flush = producer.send, producer.flush

    def watch(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            failures.append(fut.exception())

    async def guarded_send(*args: Any, **kwargs: Any) -> Any:
        fut = await send(*args, **kwargs)
        if hasattr(fut, "add_done_callback"):
            fut.add_done_callback(watch)
        return fut

    async def guarded_flush() -> None:
        await flush()
        if failures:
            first = failures[0]
            log.error("%d send(s) failed after the producer's retries (first: %r); stopping "
                      "without committing, so the records are read again after a restart",
                      len(failures), first)
            raise SendFailed(f"{len(failures)} send(s) failed: {first!r}")

    producer.send, producer.flush = guarded_send, guarded_flush
    return producer


class ChoreoApp(faust.App):
    """A Faust app that creates its topics before its consumer subscribes to them."""

    runtime: Runtime | None = None

    def _new_producer(self) -> Any:
        return guard_sends(super()._new_producer())

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if self.runtime is not None:
            quiet_library_loggers(self.runtime.settings.log_level)
            runtime = self.runtime
            bootstrap = runtime.settings.bootstrap_servers
            partitions = runtime.settings.partitions
            client = runtime.settings.kafka_options()
            names = runtime.topic_names()
            # A record as large as the broker accepts must still be dead-lettered with its
            # headers: the dead-letter topics take records as large as the producer sends
            # (`producer_request_size`), or such a record would stop its partition for good.
            dead = runtime.dead_letter_topic_names()
            await ensure_topics(bootstrap, dead, partitions, client=client, config={
                "max.message.bytes": str(producer_request_size(
                    runtime.choreography.defaults.max_event_bytes))})
            names = [n for n in names if n not in dead]
            if runtime.guard.require:
                # The broker stamps these records' timestamps, against which a signature's
                # age is judged, so a producer cannot make a replayed record look fresh.
                signed = runtime.signed_topic_names()
                await ensure_topics(bootstrap, signed, partitions, client=client,
                                    config={"message.timestamp.type": "LogAppendTime"})
                names = [n for n in names if n not in signed]
            await ensure_topics(bootstrap, names, partitions, client=client)
            # Faust would create the changelogs itself, but an event processed before its
            # consumer's metadata lists them crashes the agent with PartitionsMismatch.
            await ensure_topics(bootstrap, [t.changelog_topic.get_topic_name()
                                            for t in self.tables.values()], partitions,
                                config=runtime.settings.changelog_config(), client=client)
            for hook in self.runtime.startup_hooks:
                await hook()
            await wait_for_coordinator(bootstrap, self.conf.id, client=client)


def create_app(settings: Settings, choreography: Choreography | None = None) -> Runtime:
    """The Faust app with its topics; agents, tables and views are added by
    `topology.wire`."""
    choreography = choreography or load_choreography(settings.config_path)
    if settings.fast_path:
        faust_fastpath.install()
    faust_fastpath.install_fetch_wait()
    if settings.store.startswith("rocksdb"):
        rocksdb_memory.install(settings.rocksdb_cache_mb << 20,
                               settings.rocksdb_write_buffer_mb << 20)
    guard = build_guard(settings, choreography.security)
    app = ChoreoApp(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        producer_acks=-1,
        # Every event writes a changelog record or two; without a linger each goes out in a
        # produce request of its own and the socket writes dominate the profile.
        producer_linger=settings.producer_linger,
        producer_max_batch_size=settings.producer_batch_bytes,
        # Room for any accepted record with dead-letter headers (choreo/actions.py).
        producer_max_request_size=producer_request_size(
            choreography.defaults.max_event_bytes),
        table_cleanup_interval=30.0,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_credentials=settings.faust_credentials(),
        # Faust's /table/<name>/ dumps pattern state, payloads included, unmasked.
        web_tables_enabled=not guard.masker,
    )
    setattr(app, faust_fastpath.FETCH_WAIT_ATTR, settings.fetch_max_wait)
    topics = choreography.topics
    runtime = Runtime(
        app=app,
        settings=settings,
        choreography=choreography,
        events_topic=raw_topic(app, topics.events_topic),
        dead_letter_topic=raw_topic(app, topics.dead_letter_topic),
        rekeyed_topic=raw_topic(app, topics.rekeyed_topic),
        alerts_topic=raw_topic(app, topics.alerts_topic),
        guard=guard,
    )
    app.runtime = runtime
    return runtime
