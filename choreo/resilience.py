"""Retry delays and the per-capability circuit breaker, as pure logic with an injected clock.

The breaker counts consecutive failed attempts. At `threshold` it opens: no attempt is
made for `cooldown` seconds. Then it is half-open: one trial attempt is let through;
success closes it, failure opens it again for another cool-down. A threshold of 0
disables it. Each change of state is recorded as a `Transition` for the worker to publish.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from choreo.worker_policy import WorkerPolicy


def backoff_delay(retry: int, policy: WorkerPolicy,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry).

    Exponential with "equal jitter": the ceiling is min(backoff_max, base * 2**(retry-1))
    and the delay is uniform between half the ceiling and the ceiling, so it grows
    with every retry but retries of many actions do not line up.
    """
    if retry < 1:
        raise ValueError("retries are numbered from 1")
    ceiling = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(retry - 1, 64))
    return ceiling / 2 + rand() * ceiling / 2


def retry_schedule(policy: WorkerPolicy, rand: Callable[[], float] = random.random
                   ) -> list[float]:
    """Every delay an action that always fails waits, in order: one per retry."""
    return [backoff_delay(n, policy, rand) for n in range(1, policy.max_retries + 1)]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Transition:
    """A change of a breaker's state, and why."""

    capability: str
    old: BreakerState
    new: BreakerState
    reason: str
    consecutive_failures: int

    def payload(self) -> dict[str, object]:
        return {"capability": self.capability, "from": self.old.value, "to": self.new.value,
                "reason": self.reason, "consecutive_failures": self.consecutive_failures}


@dataclass
class CircuitBreaker:
    """Closed, open or half-open; call `wait_time`, then `attempt`, then the outcome."""

    capability: str
    threshold: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    transitions: list[Transition] = field(default_factory=list)

    @classmethod
    def for_policy(cls, capability: str, policy: WorkerPolicy,
                   clock: Callable[[], float] = time.monotonic) -> CircuitBreaker:
        return cls(capability, policy.breaker_threshold, policy.breaker_cooldown, clock)

    def wait_time(self) -> float:
        """Seconds before an attempt may be made; 0 when one may be made now."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def attempt(self) -> None:
        """Note that an attempt starts; an open breaker whose cool-down is over goes half-open."""
        wait = self.wait_time()
        if wait > 0:
            raise RuntimeError(f"breaker for {self.capability} is open for {wait:.3f}s more")
        if self.state is BreakerState.OPEN:
            self._move(BreakerState.HALF_OPEN, "cool-down over, trying one action")

    def success(self) -> None:
        self.consecutive_failures = 0
        if self.state is not BreakerState.CLOSED:
            self.opened_at = None
            self._move(BreakerState.CLOSED, "trial action succeeded")

    def failure(self, error: str = "") -> None:
        self.consecutive_failures += 1
        detail = f": {error[:200]}" if error else ""
        if self.state is BreakerState.HALF_OPEN:
            self.opened_at = self.clock()
            self._move(BreakerState.OPEN, f"trial action failed{detail}")
        elif (self.state is BreakerState.CLOSED and self.threshold > 0
              and self.consecutive_failures >= self.threshold):
            self.opened_at = self.clock()
            self._move(BreakerState.OPEN,
                       f"{self.consecutive_failures} consecutive failures{detail}")

    def drain(self) -> list[Transition]:
        """The transitions since the last call, oldest first."""
        out, self.transitions = self.transitions, []
        return out

    def describe(self) -> dict[str, object]:
        return {"state": self.state.value, "consecutive_failures": self.consecutive_failures,
                "threshold": self.threshold, "cooldown_s": self.cooldown,
                "retry_in_s": round(self.wait_time(), 3)}

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self.state = self.state, new
        self.transitions.append(Transition(self.capability, old, new, reason,
                                           self.consecutive_failures))
