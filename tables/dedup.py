"""De-duplication state: event ids seen per source, and action ids handled per worker."""

from __future__ import annotations

import faust

from tables.expiring import ExpiringTable, expiring_table, sweep_every

__all__ = ["dedup_key", "handled_actions_table", "seen_events_table", "sweep_every"]


def seen_events_table(app: faust.App, horizon: float, partitions: int,
                      name: str = "seen-events") -> ExpiringTable:
    """Events already applied, keyed by source and event id, kept for `horizon` seconds."""
    return expiring_table(app, name, horizon, partitions,
                          help="source + event_id -> [event_ts, partition, 1] (orjson)")


def handled_actions_table(app: faust.App, capability: str, horizon: float,
                          partitions: int) -> ExpiringTable:
    """Action ids a capability's workers have already handled."""
    return expiring_table(app, f"handled-actions-{capability}", horizon, partitions,
                          help="action event_id -> [event_ts, partition, outcome] (orjson)")


def dedup_key(source: str, event_id: str) -> str:
    return f"{source}\x1f{event_id}"
