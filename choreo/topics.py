"""Create the topics the engine reads and writes, before the consumer subscribes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from choreo import kafka_clients

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        replication: int = 1, config: dict[str, str] | None = None,
                        client: Mapping[str, Any] | None = None) -> list[str]:
    """Create any missing topics (with `config`, e.g. compaction); return the names created.

    `client` is the aiokafka options for TLS/SASL (default: the process's settings).
    """
    admin = kafka_clients.admin(bootstrap, options=client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(names) - existing)
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=replication,
                              topic_configs=dict(config or {}))
                     for name in missing]
                )
            except TopicAlreadyExistsError:
                pass
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def wait_for_coordinator(bootstrap: str, group_id: str, timeout: float = 60.0,
                               client: Mapping[str, Any] | None = None) -> None:
    """Wait until the broker can coordinate `group_id`.

    A broker that has just been formatted creates its offsets topic on the first group
    request; a Faust consumer that joins during that window has been seen to stop
    fetching from some of its partitions, so the worker waits here first.
    """
    admin = kafka_clients.admin(bootstrap, options=client)
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await admin.find_coordinator(group_id)
                return
            except Exception as exc:  # noqa: BLE001 - any error means not yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no group coordinator for {group_id!r} after "
                                       f"{timeout}s: {exc}") from exc
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
