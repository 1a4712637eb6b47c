"""The de-duplication table forgets events older than the horizon, in event time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from choreo.app import create_app
from choreo.config import parse_choreography
from choreo.envelope import iso_from_ts, new_event
from choreo.settings import BUNDLED_CONFIG, Settings
from tests.agents.conftest import record_sends
from topology import wire

pytestmark = pytest.mark.asyncio
T0 = 1_790_000_000.0


def event_at(ts: float, n: int) -> bytes:
    return new_event("order_received", {"order_id": f"o{n}", "order_value": 1},
                     source="shop", correlation_id=f"o{n}",
                     timestamp=iso_from_ts(ts)).to_bytes()


async def settled(value: Callable[[], int], expected: int, timeout: float = 5.0) -> int:
    """The value once the agent's current batch is done (it waits up to batch_wait to fill)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while value() != expected and loop.time() < end:
        await asyncio.sleep(0.01)
    return value()


async def test_entries_older_than_the_horizon_are_swept(tmp_path):
    text = BUNDLED_CONFIG.read_text().replace('dedup_horizon = "24h"', 'dedup_horizon = "1m"')
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path)
    components = wire(create_app(settings, parse_choreography(text)))
    runtime = components.runtime
    sent = record_sends(runtime)
    async with runtime.app.agents["match_events"].test_context() as agent:
        first = [event_at(T0 + n, n) for n in range(5)]
        for raw in first:
            await agent.put(value=raw, key=b"k")
        await agent.put(value=first[1], key=b"k")  # within the horizon: a duplicate
        assert await settled(lambda: len(components.seen_events), 5) == 5
        # Two minutes of event time later, the first five are past the one-minute horizon.
        await agent.put(value=event_at(T0 + 120, 99), key=b"k")
        assert await settled(lambda: len(components.seen_events), 1) == 1
        # A copy of a forgotten event is no longer known, so it fires again.
        await agent.put(value=first[0], key=b"k")
    fired = [orjson.loads(v)["metadata"]["correlation_id"]
             for v in sent.values("capability.inventory_management")]
    assert fired == ["o0", "o1", "o2", "o3", "o4", "o99", "o0"]
