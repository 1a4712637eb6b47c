"""The registry of stateful pattern kinds: each kind's matcher class (they all build on
`choreo.matchers.base`, which does not import them back)."""

from __future__ import annotations

from choreo.matchers.absence import AbsenceMatcher
from choreo.matchers.base import KeyedMatcher
from choreo.matchers.sequence import SequenceMatcher
from choreo.matchers.temporal import TemporalMatcher
from choreo.matchers.threshold import ThresholdMatcher
from choreo.matching import PatternStats
from choreo.patterns import Pattern

KINDS: dict[str, type[KeyedMatcher]] = {
    "threshold": ThresholdMatcher,
    "temporal": TemporalMatcher,
    "sequence": SequenceMatcher,
    "absence": AbsenceMatcher,
}


def matcher_for(pattern: Pattern, stats: PatternStats) -> KeyedMatcher:
    """The matcher for a threshold, temporal, sequence or absence pattern."""
    cls = KINDS.get(pattern.kind)
    if cls is None:
        raise TypeError(f"pattern {pattern.id!r} of kind {pattern.kind!r} keeps no state")
    return cls(pattern, stats)
