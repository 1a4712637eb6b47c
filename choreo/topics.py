"""Create the topics the engine reads and writes, before the consumer subscribes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        replication: int = 1) -> list[str]:
    """Create any missing topics; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(names) - existing)
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=replication)
                     for name in missing]
                )
            except TopicAlreadyExistsError:
                pass
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
