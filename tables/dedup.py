"""De-duplication state: event ids seen per source, and action ids handled per worker."""

from __future__ import annotations

import faust

from tables.expiring import ExpiringTable


def seen_events_table(app: faust.App, horizon: float, partitions: int,
                      name: str = "seen-events") -> ExpiringTable:
    """Events already applied, keyed by source and event id, kept for `horizon` seconds."""
    # value_type=bytes: the "raw" codec; ExpiringTable stores orjson bytes.
    table = app.Table(name, default=None, partitions=partitions, value_type=bytes,
                      help="source + event_id -> [event_ts, partition, 1] (orjson)")
    expiring = ExpiringTable(table, horizon=horizon, every=sweep_every(horizon))
    app.on_partitions_assigned.connect(expiring.forget_index)
    return expiring


def handled_actions_table(app: faust.App, capability: str, horizon: float,
                          partitions: int) -> ExpiringTable:
    """Action ids a capability's workers have already handled."""
    table = app.Table(f"handled-actions-{capability}", default=None, partitions=partitions,
                      value_type=bytes,
                      help="action event_id -> [event_ts, partition, outcome] (orjson)")
    expiring = ExpiringTable(table, horizon=horizon, every=sweep_every(horizon))
    app.on_partitions_assigned.connect(expiring.forget_index)
    return expiring


def sweep_every(horizon: float) -> float:
    """How much event time passes between two sweeps of a partition's expired entries."""
    return min(60.0, max(horizon / 10, 1.0))


def dedup_key(source: str, event_id: str) -> str:
    return f"{source}\x1f{event_id}"
