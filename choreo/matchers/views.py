"""The web view of one key's matcher state: `/patterns/{id}/state/{key}/`."""

from __future__ import annotations

from typing import Any

from choreo.matchers.kinds import matcher_for
from choreo.matching import PatternStats
from choreo.patterns import Pattern


def describe_state(pattern: Pattern, state: dict | None, watermark: float) -> dict[str, Any]:
    """Matched and missing steps, deadlines (ISO), window counts and buffered events."""
    return matcher_for(pattern, PatternStats()).describe(state, watermark)
