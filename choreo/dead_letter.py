"""Dead-letter records: the original bytes untouched, the reason and origin in headers.

This follows Kafka Connect's convention: the value and key are exactly what arrived, so a
record can be re-driven as it was; headers say why it was refused and where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from choreo.envelope import now_iso

HEADER_PREFIX = "choreo.dlq."


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int


def dead_letter_headers(reason: str, detail: str, origin: Origin, stage: str) -> list[
    tuple[str, bytes]
]:
    """Headers for a dead-lettered record."""
    values = {
        "reason": reason,
        "detail": detail[:1000],
        "stage": stage,
        "topic": origin.topic,
        "partition": str(origin.partition),
        "offset": str(origin.offset),
        "at": now_iso(),
    }
    return [(HEADER_PREFIX + name, value.encode()) for name, value in values.items()]


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None
                             ) -> dict[str, str]:
    """The choreo.dlq.* headers of a record as a plain dict without the prefix."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {
        name[len(HEADER_PREFIX):]: (value or b"").decode("utf-8", "replace")
        for name, value in items
        if name.startswith(HEADER_PREFIX)
    }
