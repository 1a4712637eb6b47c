"""An agent's inbox: read by this process alone, outside the pool's consumer group.

An inbox topic (`<capability topic>.<agent id>`) has exactly one reader, its agent. Reading
it through the pool's Faust consumer group tied it to every rebalance of that group: each
pool member joining or leaving stopped the inbox, recovered the pool's tables and standbys,
and seeked it again, and once an agent stopped reading its inbox after such a rebalance
with 94 actions left in it (docs/registry.md, Routing). A group brings nothing an
inbox needs: no other member may read it. So each inbox is read by a plain consumer
assigned every partition of it by hand, which commits its offsets to the agent's own group
`<app id>.inbox.<agent id>` (announced as the descriptor's `group`, where the engine's drain
reads how far the agent got).

Where reading starts, per partition: the highest of the offset committed by that group, the
offset the pool's group committed for the inbox (agents of earlier versions read it
there), and the offset an engine's drain reached while the agent was down (those actions
were given to other agents); with none of them, the beginning (actions routed to the agent
before it started reading).

Action ids handled from the inbox are kept in memory for the de-duplication horizon (the
pool's table is written per partition of the capability topic, which an inbox does not
share): a copy of an action read again by this process is skipped, as on the capability
topic. After a restart, records after the committed offsets are handled again
(at-least-once, as everywhere else).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from choreo import kafka_clients
from tables.expiring import ExpiringTable, sweep_every

log = logging.getLogger(__name__)
COMMIT_EVERY = 1.0  # seconds between offset commits while actions are being handled


def inbox_group(app_id: str, agent_id: str) -> str:
    """The consumer group an agent commits its inbox offsets to."""
    return f"{app_id}.inbox.{agent_id}"


@dataclass(frozen=True)
class InboxMessage:
    """What `agents.worker.handle_record` reads of a record (Faust's Message names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Any
    timestamp: float  # seconds


@dataclass(frozen=True)
class InboxRecord:
    value: bytes | None
    message: InboxMessage


def start_offsets(partitions: list[int], *found: Mapping[int, int]) -> dict[int, int | None]:
    """Per partition, the highest offset any of `found` gives (None: from the beginning)."""
    out: dict[int, int | None] = {}
    for partition in partitions:
        offsets = [f[partition] for f in found if f.get(partition, -1) >= 0]
        out[partition] = max(offsets) if offsets else None
    return out


class InboxReader:
    """Reads one inbox topic and hands each record to `handle(record, handled)`."""

    def __init__(self, topic: str, group: str, bootstrap: str, options: Mapping[str, Any],
                 handle: Callable[..., Any], horizon: float,
                 earlier: Callable[[str], Any]) -> None:
        self.topic, self.group, self.bootstrap = topic, group, bootstrap
        self.options = dict(options)
        self.handle = handle  # async (record, handled) -> None
        # action id -> [event_ts, partition, [offset, outcome, incarnation]], in memory
        self.handled = ExpiringTable({}, horizon=horizon, every=sweep_every(horizon))
        self.earlier = earlier  # async: topic -> [{partition: offset}, ...] to start after
        self.stopping = asyncio.Event()
        self.done = asyncio.Event()

    async def supervise(self) -> None:
        """Read until stopped; after an error, start again from the committed offsets."""
        try:
            while not self.stopping.is_set():
                try:
                    await self.run()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - read again from the last commit
                    log.exception("reading inbox %s failed; starting again", self.topic)
                    await asyncio.sleep(1.0)
        finally:
            self.done.set()

    def stop(self) -> None:
        self.stopping.set()

    async def stopped(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            log.warning("inbox %s: still handling an action after %gs; stopping anyway",
                        self.topic, timeout)

    async def run(self) -> None:
        consumer = kafka_clients.consumer(
            self.bootstrap, options=self.options, group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        pending: dict[TopicPartition, int] = {}
        try:
            tps = await self._assign(consumer)
            committed_at = time.monotonic()
            while not self.stopping.is_set():
                batch = await consumer.getmany(*tps, timeout_ms=500, max_records=100)
                for tp, records in batch.items():
                    for r in records:
                        if self.stopping.is_set():
                            break
                        await self.handle(_record(r), self.handled)
                        pending[tp] = r.offset + 1
                if pending and (not batch or time.monotonic() - committed_at >= COMMIT_EVERY):
                    await consumer.commit(pending)
                    pending, committed_at = {}, time.monotonic()
            if pending:
                await consumer.commit(pending)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found = None
        while not found:
            found = consumer.partitions_for_topic(self.topic)
            if not found:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                await asyncio.sleep(0.5)
        tps = [TopicPartition(self.topic, p) for p in sorted(found)]
        consumer.assign(tps)
        own = {}
        for tp in tps:
            offset = await consumer.committed(tp)
            if offset is not None:
                own[tp.partition] = offset
        starts = start_offsets([tp.partition for tp in tps], own,
                               *(await self.earlier(self.topic)))
        for tp in tps:
            if starts[tp.partition] is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, starts[tp.partition])
        log.info("inbox %s: reading partitions %s from %s (group %s)", self.topic,
                 [tp.partition for tp in tps],
                 {p: "beginning" if o is None else o for p, o in sorted(starts.items())},
                 self.group)
        return tps


def _record(r: Any) -> InboxRecord:
    return InboxRecord(r.value, InboxMessage(r.topic, r.partition, r.offset, r.key,
                                             list(r.headers or ()), r.timestamp / 1000.0))
