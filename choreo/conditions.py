"""CEL conditions: the `when` field of a pattern, compiled once at load time.

Expressions run in the Rust CEL interpreter (the `cel` package); nothing is handed to
Python's `eval`. What the binding does that users may not expect:

* Comparisons mix int and double freely: `payload.order_value > 1000` works whether
  order_value is 1200 or 1200.5, and `1 == 1.0` is true. The int is compared as a
  double, so beyond 2**53 neighbouring values compare equal; Python ints of 2**63 and
  above arrive as uint or double. Comparing with NaN fails.
* Arithmetic does not: `payload.total * 1.1` fails at run time when total is an int,
  and `payload.price + 1` fails when price is a double. Convert explicitly,
  e.g. `double(payload.total) * 1.1 > 100`.
* `/` on two ints is integer division (`7 / 2 == 3`); `1 / 0` fails, `1.0 / 0.0` is inf.
* A missing field fails the evaluation; guard with `has(payload.x)`.
* `size()` of a string counts UTF-8 bytes, not characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

__all__ = [
    "ALLOWED_VARIABLES",
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "Condition",
    "ConditionError",
    "ConditionRuntimeError",
    "compile_condition",
]

_VARIABLE_ORDER = ("payload", "metadata", "source", "event_type", "event_id", "timestamp")
ALLOWED_VARIABLES = frozenset(_VARIABLE_ORDER)
MAX_EXPRESSION_LENGTH = 4096
MAX_EXPRESSION_DEPTH = 32

_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_SYNTAX_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (?:Syntax error: )?(.*)")
_LONG_EXPECTING = re.compile(r"\s*expecting \{[^}]*,[^}]*,[^}]*,[^}]*\}")
_SNIPPET_WIDTH = 60


class ConditionError(ValueError):
    """A condition that cannot be loaded; str() gives the reason."""


class ConditionRuntimeError(Exception):
    """A condition that failed while evaluating one event."""


@dataclass(frozen=True)
class Condition:
    """A compiled, validated CEL condition; build it with `compile_condition`."""

    source: str
    _program: Any = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        program, names = _load(self.source)
        object.__setattr__(self, "_program", program)
        object.__setattr__(self, "_names", names)

    def __reduce__(self) -> tuple[type[Condition], tuple[str]]:
        return (Condition, (self.source,))

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """Evaluate against one event's context; True or False, else ConditionRuntimeError."""
        # A plain dict per call is as fast as cel.Context (both convert every value
        # handed over), so pass only the top-level names the expression uses.
        variables = {}
        for name in self._names:
            if name in context:
                value = context[name]
                if callable(value):
                    raise ConditionRuntimeError(f"{name!r} in the context is callable, not data")
                variables[name] = value
        try:
            result = self._program.execute(variables)
        except KeyError as exc:
            raise ConditionRuntimeError(
                f"{self.source!r}: no field {exc.args[0]!r} in the event; guard with has(...)"
            ) from exc
        except Exception as exc:  # the binding raises many types; callers need one
            raise ConditionRuntimeError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        if type(result) is not bool:
            raise ConditionRuntimeError(
                f"{self.source!r} returned {type(result).__name__} {_short(result)}, not a bool"
            )
        return result


def compile_condition(expr: str) -> Condition:
    """Validate and compile a CEL condition; raises ConditionError."""
    return Condition(expr)


def _load(expr: object) -> tuple[Any, tuple[str, ...]]:
    """Check an expression and compile it; returns the program and its top-level names."""
    if not isinstance(expr, str):
        raise ConditionError(f"a condition must be a string, not {type(expr).__name__}")
    if not expr.strip():
        raise ConditionError("a condition must not be empty")
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise ConditionError(
            f"condition is {len(expr)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    code = _blank_strings(expr)
    depth = _nesting_depth(code)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ConditionError(
            f"condition nests brackets {depth} deep; the limit is {MAX_EXPRESSION_DEPTH}"
        )
    try:
        program = cel.compile(expr)
    except Exception as exc:  # the binding reports parse failures as ValueError
        raise ConditionError(_syntax_message(expr, str(exc))) from exc
    bound = set(_MACRO_VARIABLE.findall(code)) - ALLOWED_VARIABLES
    free = set(program.variables()) - bound
    unknown = sorted(free - ALLOWED_VARIABLES)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        noun = "variable" if len(unknown) == 1 else "variables"
        raise ConditionError(f"unknown {noun} {names}; conditions see {', '.join(_VARIABLE_ORDER)}")
    if not free and not bound:
        _check_constant(program)
    return program, tuple(name for name in _VARIABLE_ORDER if name in free)


def _check_constant(program: Any) -> None:
    """Evaluate an expression without variables or loops; it must give a bool."""
    try:
        result = program.execute({})
    except Exception as exc:
        raise ConditionError(f"condition always fails: {type(exc).__name__}: {exc}") from exc
    if type(result) is not bool:
        raise ConditionError(
            f"condition is always {type(result).__name__} {_short(result)}, not a bool"
        )


def _blank_strings(expr: str) -> str:
    """Replace the inside of every string literal with spaces, keeping offsets."""
    out = list(expr)
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch not in "'\"":
            i += 1
            continue
        raw = i > 0 and expr[i - 1] in "rR"
        quote = expr[i : i + 3] if expr[i : i + 3] in ("'''", '"""') else ch
        j = i + len(quote)
        while j < n and not expr.startswith(quote, j):
            if expr[j] == "\\" and not raw:
                out[j] = " "
                j += 1
            if j < n:
                out[j] = " "
            j += 1
        i = j + len(quote)
    return "".join(out)


def _nesting_depth(code: str) -> int:
    """Deepest nesting of (), [] and {} in code whose strings are blanked."""
    depth = deepest = 0
    for ch in code:
        if ch in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in _CLOSERS:
            depth -= 1
    return deepest


def _syntax_message(expr: str, message: str) -> str:
    """Shorten the parser's report to its first error and a caret under the source."""
    found = _SYNTAX_ERROR.search(message.removeprefix(f"Failed to parse expression '{expr}': "))
    if not found:
        return f"syntax error: {message.splitlines()[0] if message else 'unparseable'}"
    line_no, col, reason = int(found[1]), int(found[2]), found[3]
    reason = _LONG_EXPECTING.sub("", reason).strip()
    lines = expr.splitlines() or [""]
    line = lines[min(line_no, len(lines)) - 1]
    start = max(0, min(col - 1 - _SNIPPET_WIDTH // 2, len(line) - _SNIPPET_WIDTH))
    snippet = line[start : start + _SNIPPET_WIDTH]
    caret = " " * (col - 1 - start) + "^"
    return f"syntax error at line {line_no}, column {col}: {reason}\n  {snippet}\n  {caret}"


def _short(value: object) -> str:
    """A repr cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
