"""Label values are bounded: whatever events arrive, /metrics stays small."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from choreo.config import load_choreography
from choreo.metrics import (
    _CHILDREN,
    EVENTS_IN,
    LABEL_BOUNDS,
    MAX_LABEL_LENGTH,
    MAX_SERIES,
    OTHER,
    REGISTRY,
    UNKNOWN_EVENT_TYPES,
    WORKFLOW_EXECUTIONS,
    Counter,
    child,
)
from choreo.settings import BUNDLED_CONFIG
from streams.runtime_metrics import declare_label_values

WORKFLOWS_CONFIG = BUNDLED_CONFIG.with_name("workflows.toml")


@pytest.fixture
def fresh_bounds() -> Iterator[None]:
    """Each test starts with no unknown values seen (the registry is the process's)."""
    saved = {name: (b.declared, set(b.others), b.spare) for name, b in LABEL_BOUNDS.items()}
    for bound in LABEL_BOUNDS.values():
        bound.others.clear()
    EVENTS_IN.clear()
    WORKFLOW_EXECUTIONS.clear()
    # `child` remembers the children of earlier tests (the agents tier's), which `clear()`
    # has just unregistered.
    _CHILDREN.clear()
    yield
    for name, (declared, others, spare) in saved.items():
        LABEL_BOUNDS[name].declared, LABEL_BOUNDS[name].others = declared, others
        LABEL_BOUNDS[name].spare = spare
    EVENTS_IN.clear()
    WORKFLOW_EXECUTIONS.clear()


def series(metric_name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric_name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_random_event_types_past_the_cap_are_counted_as_other(fresh_bounds):
    choreography = load_choreography(BUNDLED_CONFIG)
    declare_label_values(choreography)
    declared = LABEL_BOUNDS["event_type"].declared
    assert "order_received" in declared
    rng = random.Random(3)
    for _ in range(20_000):
        child(EVENTS_IN, f"junk-{rng.getrandbits(64):x}").inc()
    for _ in range(7):
        child(EVENTS_IN, "order_received").inc()
    found = series("choreo_events_in_total")
    assert len(found) == UNKNOWN_EVENT_TYPES + 2  # the first 100 unknown, other, order_received
    assert found[(("event_type", OTHER),)] == 20_000 - UNKNOWN_EVENT_TYPES
    assert found[(("event_type", "order_received"),)] == 7
    assert sum(found.values()) == 20_007  # nothing lost, only grouped


def test_a_100kb_event_type_does_not_grow_metrics_by_100kb(fresh_bounds):
    before = len(generate_latest(REGISTRY))
    for i in range(50):
        EVENTS_IN.labels(f"{i}-" + "x" * 100_000).inc()
    grown = len(generate_latest(REGISTRY)) - before
    assert grown < 50 * 2 * (MAX_LABEL_LENGTH + 100)  # two lines a series: _total, _created
    assert all(len(labels[0][1]) <= MAX_LABEL_LENGTH for labels in series(
        "choreo_events_in_total"))


def test_the_workflow_label_keeps_only_declared_workflows(fresh_bounds):
    choreography = load_choreography(WORKFLOWS_CONFIG)
    declare_label_values(choreography)
    [name, *_] = [w.name for w in choreography.workflows]
    # `reject` labels a refused start with the payload's workflow name, whatever it is.
    for i in range(1000):
        WORKFLOW_EXECUTIONS.labels(f"not-a-workflow-{i}", "rejected").inc()
    WORKFLOW_EXECUTIONS.labels(name, "started").inc()
    found = series("choreo_workflow_executions_total")
    assert found == {(("status", "rejected"), ("workflow", OTHER)): 1000,
                     (("status", "started"), ("workflow", name)): 1}


def test_a_metric_has_at_most_max_series_label_sets():
    from prometheus_client import CollectorRegistry

    metric = Counter("t_bounded_total", "test", ["agent_id"], registry=CollectorRegistry())
    for i in range(MAX_SERIES + 500):
        metric.labels(f"agent-{i}").inc()
    assert len(metric._metrics) == MAX_SERIES + 1  # noqa: SLF001
    assert metric.labels(agent_id="agent-3")._value.get() == 1  # noqa: SLF001
    assert metric.labels(OTHER)._value.get() == 500  # noqa: SLF001
