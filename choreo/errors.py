"""The error a choreography that does not load raises: shared by `choreo.config` and the
sections it parses (`choreo.security`...), which must not import the loader back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    pattern_id: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"pattern {self.pattern_id!r}, field {self.field!r}: {self.reason}"


class ConfigError(ValueError):
    """The choreography file is invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue], path: str = "") -> None:
        self.issues = issues
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{len(issues)} problem(s){where}:\n{lines}")
