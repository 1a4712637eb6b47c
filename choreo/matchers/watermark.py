"""A partition's watermark: the highest event time seen, moving on with the wall clock once idle."""

from __future__ import annotations

import math


class Watermark:
    """Tracks one partition; pure apart from its own fields, the caller supplies wall time.

    While events flow the watermark is the highest event time observed. Once no event has
    been observed for `idle_timeout` seconds of wall time it advances at wall-clock rate
    from there, so deadlines of an abandoned flow still pass. It never goes back: a value
    `current` has handed out is kept when the next event is observed.
    """

    def __init__(self, value: float = -math.inf, wall: float | None = None) -> None:
        self._value = value  # the highest watermark observed or handed out
        self._base = value  # the watermark when the last event was observed
        self._wall = wall  # wall time of that observation

    def observe(self, ts: float, wall_now: float) -> None:
        """Note an event of this partition."""
        self._base = self._value = max(self._value, ts)
        self._wall = wall_now

    def current(self, wall_now: float, idle_timeout: float) -> float:
        """The watermark now: the event-time high mark, plus wall time idle beyond the timeout."""
        if self._wall is not None:
            idle = wall_now - self._wall - idle_timeout
            if idle > 0:
                self._value = max(self._value, self._base + idle)
        return self._value

    def snapshot(self) -> float | None:
        """What to persist so a restart does not move the watermark back."""
        return self._value if math.isfinite(self._value) else None

    @classmethod
    def restore(cls, value: float | None, wall_now: float) -> Watermark:
        """A tracker resuming from `snapshot()`; it counts idle time from `wall_now`."""
        if value is None:
            return cls()
        return cls(value, wall_now)
