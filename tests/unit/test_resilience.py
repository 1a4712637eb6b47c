"""Retry delays, the circuit breaker state machine and the [workers] config, with a fake clock."""

from __future__ import annotations

import pytest

from choreo.config import ConfigError, load_choreography, parse_choreography
from choreo.resilience import BreakerState, CircuitBreaker, backoff_delay, retry_schedule
from choreo.settings import BUNDLED_CONFIG
from choreo.worker_policy import WorkerPolicy

POLICY = WorkerPolicy(max_retries=6, backoff_base=0.5, backoff_max=4.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- backoff ------------------------------------------------------------------------------

def test_backoff_doubles_until_the_maximum_without_jitter():
    assert retry_schedule(POLICY, rand=lambda: 1.0) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_keeps_each_delay_between_half_and_all_of_its_ceiling():
    assert retry_schedule(POLICY, rand=lambda: 0.0) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    import random
    rng = random.Random(7)
    for _ in range(1000):
        delays = retry_schedule(POLICY, rand=rng.random)
        ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_jitter_spreads_retries_of_many_actions():
    import random
    rng = random.Random(1)
    firsts = {round(backoff_delay(3, POLICY, rng.random), 6) for _ in range(100)}
    assert len(firsts) > 90


def test_huge_retry_numbers_do_not_overflow():
    assert backoff_delay(10_000, POLICY, rand=lambda: 1.0) == 4.0


def test_retries_are_numbered_from_one():
    with pytest.raises(ValueError):
        backoff_delay(0, POLICY)


def test_no_retries_means_an_empty_schedule():
    assert retry_schedule(WorkerPolicy(max_retries=0)) == []


# --- circuit breaker ----------------------------------------------------------------------

def breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("payments", threshold, cooldown, clock), clock


def states(b: CircuitBreaker) -> list[tuple[str, str]]:
    return [(t.old.value, t.new.value) for t in b.drain()]


def test_opens_after_threshold_consecutive_failures():
    b, _ = breaker(threshold=3)
    for _ in range(2):
        b.attempt()
        b.failure("boom")
    assert b.state is BreakerState.CLOSED and b.wait_time() == 0
    b.attempt()
    b.failure("boom")
    assert b.state is BreakerState.OPEN
    assert states(b) == [("closed", "open")]
    assert b.wait_time() == 10.0


def test_a_success_resets_the_count():
    b, _ = breaker(threshold=3)
    for outcome in ["f", "f", "ok", "f", "f"]:
        b.attempt()
        b.failure() if outcome == "f" else b.success()
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 2
    assert states(b) == []


def test_open_refuses_attempts_until_the_cool_down_is_over():
    b, clock = breaker(threshold=1, cooldown=10.0)
    b.attempt()
    b.failure()
    clock.now += 4
    assert b.wait_time() == 6.0
    with pytest.raises(RuntimeError, match="open"):
        b.attempt()
    clock.now += 6
    assert b.wait_time() == 0
    b.attempt()
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_trial_success_closes():
    b, clock = breaker(threshold=1)
    b.attempt()
    b.failure()
    clock.now += 10
    b.attempt()
    b.success()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0
    assert states(b) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_half_open_trial_failure_reopens_for_a_full_cool_down():
    b, clock = breaker(threshold=2, cooldown=5)
    for _ in range(2):
        b.attempt()
        b.failure()
    clock.now += 5
    b.attempt()
    b.failure("still down")
    assert b.state is BreakerState.OPEN
    assert b.wait_time() == 5
    changes = b.drain()
    assert [(t.old, t.new) for t in changes] == [
        (BreakerState.CLOSED, BreakerState.OPEN), (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN)]
    assert "trial action failed: still down" in changes[-1].reason
    assert changes[-1].payload()["consecutive_failures"] == 3


def test_threshold_zero_never_opens():
    b, _ = breaker(threshold=0)
    for _ in range(100):
        b.attempt()
        b.failure()
    assert b.state is BreakerState.CLOSED


def test_describe_shows_state_and_time_left():
    b, clock = breaker(threshold=1, cooldown=30)
    b.attempt()
    b.failure()
    clock.now += 10
    assert b.describe() == {"state": "open", "consecutive_failures": 1, "threshold": 1,
                            "cooldown_s": 30, "retry_in_s": 20.0}


# --- config -------------------------------------------------------------------------------

def with_tables(extra: str) -> str:
    return extra + "\n" + BUNDLED_CONFIG.read_text()


def test_the_bundled_file_has_the_default_policy():
    policies = load_choreography(BUNDLED_CONFIG).workers
    assert policies.for_capability("payment_processing") == WorkerPolicy()
    assert WorkerPolicy().timeout == 30.0


def test_workers_defaults_and_capability_overrides():
    text = with_tables(
        '[workers]\ntimeout = "5s"\nmax_retries = 2\nbackoff_base = "100ms"\n'
        'backoff_max = "2s"\nbreaker_threshold = 4\nbreaker_cooldown = "1m"\n'
        '[capabilities.payment_processing]\nmax_retries = 7\ntimeout = "500ms"\n')
    policies = parse_choreography(text).workers
    assert policies.for_capability("inventory_management") == WorkerPolicy(
        5.0, 2, 0.1, 2.0, 4, 60.0)
    assert policies.for_capability("payment_processing") == WorkerPolicy(
        0.5, 7, 0.1, 2.0, 4, 60.0)


def test_capability_dead_letter_topic_follows_the_prefix():
    text = with_tables("").replace('prefix = ""', 'prefix = "shop."')
    topics = parse_choreography(text).topics
    assert topics.capability_dead_letter_topic("billing") == "shop.capability.billing.dlq"


BAD = [
    ('[workers]\ntimeout = "0s"\n', "workers.timeout", "must be longer than zero"),
    ('[workers]\ntimeout = 30\n', "workers.timeout", "expected a duration string"),
    ('[workers]\nmax_retries = -1\n', "workers.max_retries", "at least 0"),
    ('[workers]\nmax_retries = 1000\n', "workers.max_retries", "at most 100"),
    ('[workers]\nmax_retries = true\n', "workers.max_retries", "whole number"),
    ('[workers]\nbreaker_threshold = 2.5\n', "workers.breaker_threshold", "whole number"),
    ('[workers]\nbreaker_cooldown = "0ms"\n', "workers.breaker_cooldown",
     "must be longer than zero"),
    ('[workers]\nbackoff_base = "10s"\nbackoff_max = "1s"\n', "workers.backoff_max",
     "must not be shorter than backoff_base"),
    ('[workers]\nretries = 3\n', "workers.retries", "did you mean 'max_retries'?"),
    ('workers = 3\n', "workers", "must be a table"),
    ('[capabilities.billing]\nmax_retries = 1\n', "capabilities.billing",
     "no pattern sends actions to 'billing'"),
    ('[capabilities.payment_processing]\ntimeout = "soon"\n',
     "capabilities.payment_processing.timeout", "is not a duration"),
    ('[topics]\ncapability_dead_letter = "dlq"\n', "topics.capability_dead_letter",
     "must contain the placeholder {capability}"),
]


@pytest.mark.parametrize(("extra", "field", "reason"), BAD)
def test_bad_worker_settings_stop_the_load_naming_field_and_reason(extra, field, reason):
    text = with_tables(extra)
    if extra.startswith("[topics]"):
        text = BUNDLED_CONFIG.read_text().replace(
            'capability = "capability.{capability}"',
            'capability = "capability.{capability}"\n' + extra.split("\n", 1)[1])
    with pytest.raises(ConfigError) as caught:
        parse_choreography(text)
    found = [(i.field, i.reason) for i in caught.value.issues]
    assert any(f == field and reason in r for f, r in found), found


# --- redrive routing ----------------------------------------------------------------------

def test_redrive_sends_a_record_back_only_to_a_topic_of_the_choreography():
    from choreo.dead_letter import Origin, dead_letter_headers
    from choreo.kafka_io import Record
    from choreo.redrive import target_of

    def record(headers) -> Record:  # noqa: ANN001
        return Record("events.dlq", 0, 7, b"k", b"v", tuple(headers), 0)

    allowed = ["events", "capability.billing"]
    ingest = dead_letter_headers("too_large", "big", Origin("events", 1, 3), "ingest")
    assert target_of(record(ingest), allowed) == ("events", "")
    foreign = dead_letter_headers("x", "y", Origin("elsewhere", 0, 0), "ingest")
    assert target_of(record(foreign), allowed)[0] is None
    assert "not a topic of this choreography" in target_of(record(foreign), allowed)[1]
    assert target_of(record([]), allowed) == (None, "no choreo.dlq.topic header")
