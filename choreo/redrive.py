"""Re-drive dead-lettered records to the topic they came from, once.

Each record goes back with its original key and value bytes, so event and action ids are
unchanged and the usual de-duplication applies. Which dead-letter offsets have been
re-driven is kept as the committed offsets of a consumer group (by default
`choreo-redrive.<dead-letter topic>`), committed after the broker acknowledged every
record sent, so a second run sends only what arrived since. A run interrupted between
sending and committing sends those records again; their unchanged ids make the engine
and the workers drop the copies.

With `[security] require_signatures`, a record goes back only if it is vouched for
(`Guard.vouch`): the signature headers kept with it must verify for the topic it goes back
to, its key and its value, so a record refused by the security checks, one written to a
dead-letter topic by hand, or one whose headers were forged is refused, with the reason.
It goes back signed afresh (the original signature is stale by then).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from choreo import kafka_clients
from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import Headers, Record, producer
from choreo.signing import REASONS

REDRIVE_HEADER = "choreo.redrive.from"


def default_group(dead_letter_topic: str) -> str:
    return f"choreo-redrive.{dead_letter_topic}"


@dataclass
class RedriveReport:
    """What a run did: records sent per target topic, and those it could not send."""

    sent: Counter[str] = field(default_factory=Counter)
    unroutable: list[tuple[Record, str]] = field(default_factory=list)
    seen: int = 0

    @property
    def total(self) -> int:
        return sum(self.sent.values())


Vouch = Callable[[Record, str], str | None]  # (record, target) -> why it may not go back
Sign = Callable[[str, bytes | None, bytes | None], Headers]  # (topic, key, value) -> headers


def target_of(record: Record, allowed: Collection[str],
              vouch: Vouch | None = None) -> tuple[str | None, str]:
    """The topic a dead-lettered record came from, or None and why it cannot go back."""
    info = read_dead_letter_headers(record.headers)
    origin = info.get("topic")
    if info.get("reason") in REASONS:
        # Sending it back signed by whoever runs this would vouch for a forged record.
        return None, (f"refused by the security checks ({info['reason']}); have its "
                      "publisher send it again, signed")
    if info.get("masked"):
        return None, (f"{info['masked']} masked when dead-lettered; the original "
                      "values are not kept")
    if not origin:
        return None, "no choreo.dlq.topic header"
    if origin not in allowed:
        return None, f"came from {origin!r}, not a topic of this choreography"
    why = vouch(record, origin) if vouch is not None else None
    if why:
        return None, f"its signature does not vouch for it ({why}); not re-driven"
    return origin, ""


async def redrive(bootstrap: str, dead_letter_topic: str, allowed: Collection[str], *,
                  group: str | None = None, dry_run: bool = False, limit: int | None = None,
                  on_record: Callable[[Record, str | None, str], None] | None = None,
                  timeout: float = 60.0, client: Mapping[str, Any] | None = None,
                  sign: Sign | None = None, vouch: Vouch | None = None) -> RedriveReport:
    """Send the records past the group's committed offsets back; commit unless dry_run.

    `vouch` says why a record may not go back (None: it may); `sign` gives fresh signature
    headers for its topic, key and value (the original signature would be stale by now);
    `client` adds aiokafka options (TLS, SASL).
    """
    report = RedriveReport()
    consumer = kafka_clients.consumer(
        bootstrap, options=client, group_id=group or default_group(dead_letter_topic),
        enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    prod = None if dry_run else producer(bootstrap, client)
    if prod is not None:
        await prod.start()
    try:
        found = consumer.partitions_for_topic(dead_letter_topic)
        if found is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            found = consumer.partitions_for_topic(dead_letter_topic) or set()
        partitions = [TopicPartition(dead_letter_topic, p) for p in sorted(found)]
        if not partitions:
            return report
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        done: dict[TopicPartition, int] = {}
        pending = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and (limit is None or report.seen < limit):
            open_parts = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            if not open_parts:
                break
            batch = await consumer.getmany(*open_parts, timeout_ms=500, max_records=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp] or (limit is not None and report.seen >= limit):
                        break
                    report.seen += 1
                    record = Record(r.topic, r.partition, r.offset, r.key, r.value,
                                    tuple(r.headers or ()), r.timestamp)
                    target, why = target_of(record, allowed, vouch)
                    if on_record:
                        on_record(record, target, why)
                    if target is None:
                        report.unroutable.append((record, why))
                    else:
                        report.sent[target] += 1
                        if prod is not None:
                            source = f"{r.topic}:{r.partition}:{r.offset}".encode()
                            headers = [(REDRIVE_HEADER, source),
                                       *((sign and sign(target, r.key, r.value)) or ())]
                            pending.append(await prod.send(target, key=r.key, value=r.value,
                                                           headers=headers))
                    done[tp] = r.offset + 1
                # The consumer may have fetched past the record where the limit stopped us.
                if tp in done:
                    consumer.seek(tp, done[tp])
        if prod is not None:
            await asyncio.gather(*pending)
            if done:
                await consumer.commit(dict(done))
    finally:
        if prod is not None:
            await prod.stop()
        await consumer.stop()
    return report
