"""Tables whose entries expire in event time, swept from inside the stream.

Faust writes a table change to the changelog partition of the event being processed, so
an entry may only be deleted while processing an event of the partition that wrote it.
Each value therefore carries its partition and event time, and `sweep` runs inside the
agent for the current partition at most once per `every` seconds of event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust


@dataclass
class ExpiringTable:
    """A Faust table of key -> [event_ts, partition, value] that forgets after `horizon`."""

    table: faust.Table
    horizon: float
    every: float = 60.0
    _last_sweep: dict[int, float] = field(default_factory=dict)
    _high_water: dict[int, float] = field(default_factory=dict)

    def get(self, key: str) -> Any | None:
        """The live value for key, or None when absent or expired."""
        entry = self.table.get(key)
        if entry is None:
            return None
        ts, partition, value = entry
        if ts < self._high_water.get(partition, ts) - self.horizon:
            return None
        return value

    def put(self, key: str, ts: float, partition: int, value: Any = 1) -> None:
        self.table[key] = [ts, partition, value]

    def advance(self, partition: int, ts: float) -> int:
        """Note event time on a partition; sweep it when due. Returns entries removed."""
        if ts > self._high_water.get(partition, float("-inf")):
            self._high_water[partition] = ts
        high = self._high_water[partition]
        last = self._last_sweep.get(partition)
        if last is None:
            self._last_sweep[partition] = high
            return 0
        if high - last < self.every:
            return 0
        self._last_sweep[partition] = high
        return self.sweep(partition, high - self.horizon)

    def sweep(self, partition: int, cutoff: float) -> int:
        """Delete this partition's entries older than cutoff (call inside the stream)."""
        stale = [
            key for key, (ts, owner, _value) in self.table.items()
            if owner == partition and ts < cutoff
        ]
        for key in stale:
            del self.table[key]
        return len(stale)

    def __len__(self) -> int:
        return sum(1 for _ in self.table.keys())
