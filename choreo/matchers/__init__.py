"""Pure matchers for the stateful pattern kinds: threshold, temporal, sequence, absence."""

from choreo.matchers.base import (
    KeyedMatcher,
    Matcher,
    Outcome,
    event_from_snapshot,
    event_to_snapshot,
    key_for,
)
from choreo.matchers.kinds import matcher_for
from choreo.matchers.watermark import Watermark

__all__ = [
    "KeyedMatcher",
    "Matcher",
    "Outcome",
    "Watermark",
    "event_from_snapshot",
    "event_to_snapshot",
    "key_for",
    "matcher_for",
]
