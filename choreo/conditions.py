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

Evaluation time is bounded. An expression is at most MAX_EXPRESSION_LENGTH characters
and MAX_EXPRESSION_DEPTH brackets deep, and has at most MAX_COMPREHENSIONS macros (`all`,
`exists`, `exists_one`, `map`, `filter`), nested at most two deep. A macro inside another
must range over the enclosing one's variable (`payload.items.all(i, i.tags.exists(t, ...))`),
never over the event again: `payload.a.exists(x, payload.a.exists(y, ...))` is quadratic
(0.4 s on 1,000 items; a nested `map`, 160 s). The bodies of `map` and `filter`, which
build lists, may use only their own variable and scalars: `payload.a.map(x, payload.a)`
took 52 s on 1,000 items. These are refused at load. An expression with macros is not
evaluated on an event whose referenced variables hold more than MAX_COMPREHENSION_ITEMS
list items and map entries in all, or a string longer than MAX_COMPREHENSION_STRING; that
evaluation fails (the pattern does not fire, and the error is counted). The slowest
expressions found within these limits took up to 0.3 s (tests/unit/test_condition_limits.py).

Expressions without macros are bounded too: each operation costs time in proportion to the
values it touches (`payload.a == payload.a` compares every item, `payload.a + payload.a`
copies them), and a chain of `+` builds ever longer lists. An expression's weight is the
number of references to the event's variables times one more than its number of `+`. An
evaluation whose weight times the JSON size of the referenced variables is over
MAX_CONDITION_COST fails like the above, before running; an expression of weight 1 (one
reference, no `+`, e.g. `payload.order_value > 1000`) is not measured. An expression so
heavy that it could not look at MIN_CONDITION_INPUT bytes is refused at load. On a 1 MiB
event of 500,000 items, `size(payload.a + ... + payload.a)` with 30 terms (367 characters)
took 12.6 s; it now fails at once. Timings belong in `make bench`, not in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel
import orjson

__all__ = [
    "ALLOWED_VARIABLES",
    "MAX_COMPREHENSIONS",
    "MAX_COMPREHENSION_ITEMS",
    "MAX_COMPREHENSION_STRING",
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_CONDITION_COST",
    "Condition",
    "ConditionError",
    "ConditionRuntimeError",
    "compile_condition",
]

_VARIABLE_ORDER = ("payload", "metadata", "source", "event_type", "event_id", "timestamp")
ALLOWED_VARIABLES = frozenset(_VARIABLE_ORDER)
MAX_EXPRESSION_LENGTH = 4096
MAX_EXPRESSION_DEPTH = 32
MAX_COMPREHENSIONS = 4
MAX_COMPREHENSION_ITEMS = 1_000
MAX_COMPREHENSION_STRING = 10_000
# Weight times the JSON bytes of the referenced variables allowed for one evaluation: about
# 50 ms of copying and comparing in the interpreter (100-250 ns an item and operation, and
# an item takes 2 bytes or more).
MAX_CONDITION_COST = 1_000_000
MIN_CONDITION_INPUT = 1_000

_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_MACRO_CALL = re.compile(r"\.\s*(all|exists_one|exists|map|filter)\s*\(")
# A binary `+`: after an operand's end (strings are blanked, their quotes kept).
_PLUS = re.compile(r"(?<=[\w)\]}'\"])\s*\+")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
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
    # The names an expression may use: an event's (the default), or a workflow's.
    variables: tuple[str, ...] = _VARIABLE_ORDER
    _program: Any = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _loops: bool = field(init=False, repr=False, compare=False)
    _weight: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        program, names = _load(self.source, self.variables)
        code = _blank_strings(self.source)
        object.__setattr__(self, "_program", program)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_loops", bool(_MACRO_CALL.search(code)))
        object.__setattr__(self, "_weight", cost_weight(code, self.variables))

    def __reduce__(self) -> tuple[type[Condition], tuple[str, tuple[str, ...]]]:
        return (Condition, (self.source, self.variables))

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
        if self._loops:
            _check_loop_input(self.source, variables)
        if self._weight > 1:
            _check_cost(self.source, self._weight, variables)
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


def compile_condition(expr: str, variables: tuple[str, ...] = _VARIABLE_ORDER) -> Condition:
    """Validate and compile a CEL condition over `variables`; raises ConditionError."""
    return Condition(expr, tuple(variables))


def _load(expr: object, order: tuple[str, ...] = _VARIABLE_ORDER
          ) -> tuple[Any, tuple[str, ...]]:
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
    _check_comprehensions(code, frozenset(order))
    allowed = frozenset(order)
    bound = set(_MACRO_VARIABLE.findall(code)) - allowed
    free = set(program.variables()) - bound
    unknown = sorted(free - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        noun = "variable" if len(unknown) == 1 else "variables"
        raise ConditionError(f"unknown {noun} {names}; conditions see {', '.join(order)}")
    if not free and not bound:
        _check_constant(program)
    weight = cost_weight(code, order)
    if weight * MIN_CONDITION_INPUT > MAX_CONDITION_COST:
        raise ConditionError(
            f"condition is too costly: {_count_refs(code, order)} references to the event "
            f"times (1 + {len(_PLUS.findall(code))} '+') is a weight of {weight}; the limit "
            f"is {MAX_CONDITION_COST // MIN_CONDITION_INPUT}")
    return program, tuple(name for name in order if name in free)


def _count_refs(code: str, variables: tuple[str, ...] | frozenset[str]) -> int:
    """How many times code (strings blanked) names one of the variables."""
    return sum(1 for name in re.findall(r"(?<![\w.])([A-Za-z_]\w*)", code) if name in variables)


def cost_weight(code: str, variables: tuple[str, ...] | frozenset[str] = _VARIABLE_ORDER
                ) -> int:
    """References to the event times (1 + binary `+`): an upper bound, in units of the
    referenced values' size, on the items an evaluation copies and compares."""
    return _count_refs(code, variables) * (1 + len(_PLUS.findall(code)))


def _check_comprehensions(code: str, allowed: frozenset[str] = ALLOWED_VARIABLES) -> None:
    """Refuse too many macros, and a macro nested in another that does not range over its
    variable (which makes evaluation time grow with a power of the event's size)."""
    calls = list(_MACRO_CALL.finditer(code))
    if len(calls) > MAX_COMPREHENSIONS:
        raise ConditionError(f"condition has {len(calls)} comprehensions (all, exists, "
                             f"exists_one, map, filter); the limit is {MAX_COMPREHENSIONS}")
    spans = []  # (start, end, bound variable) of each macro's arguments
    for call in calls:
        start = call.end() - 1
        end = _closing(code, start)
        found = re.match(r"\(\s*([A-Za-z_]\w*)\s*,", code[start:])
        spans.append((start, end, found[1] if found else ""))
    for call, (start, end, var) in zip(calls, spans, strict=True):
        if call[1] in ("map", "filter"):
            _check_accumulator_body(call[1], code[start + 1:end], var, allowed)
        enclosing = [var for s, e, var in spans if s < start < e]
        if not enclosing:
            continue
        if len(enclosing) > 1:
            raise ConditionError(f"'{call[1]}' is nested {len(enclosing) + 1} comprehensions "
                                 "deep; the limit is 2")
        root = _receiver_root(code, call.start())
        if root not in enclosing:
            raise ConditionError(
                f"'{call[1]}' inside another comprehension must range over one of its "
                f"variables ({', '.join(enclosing)}), not over {root or 'a literal'}: "
                "comprehensions over the event inside each other take time that grows with "
                "a power of the event's size")


def _check_accumulator_body(macro: str, body: str, var: str,
                            allowed: frozenset[str] = ALLOWED_VARIABLES) -> None:
    """`map` and `filter` build a list, at a cost that grows with the square of its size:
    their bodies may use their own variable and scalar literals, not the event again."""
    body = body.split(",", 1)[1] if "," in body else body
    names = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)", body)) - {var}
    outer = sorted(names & allowed)
    if outer:
        raise ConditionError(f"the body of '{macro}' may use its variable {var!r}, not "
                             f"{', '.join(outer)}: each step would copy from the event")
    if "[" in re.sub(r"(?<=[\w\])])\s*\[", "", body) or "{" in body:
        raise ConditionError(f"the body of '{macro}' may not build lists or maps")


def _closing(code: str, start: int) -> int:
    depth = 0
    for index in range(start, len(code)):
        if code[index] in _OPENERS:
            depth += 1
        elif code[index] in _CLOSERS:
            depth -= 1
            if depth == 0:
                return index
    return len(code)


def _receiver_root(code: str, dot: int) -> str:
    """The first identifier of the receiver chain ending at `dot`, e.g. 'i' in i.tags[0];
    empty when the chain starts with a literal or a parenthesised expression."""
    index = dot - 1
    while index >= 0:
        ch = code[index]
        if ch.isspace() or ch == "." or ch in _IDENT_CHARS:
            index -= 1
            continue
        if ch not in ")]":
            break
        depth = 0
        while index >= 0:  # back over a (...) call or [...] index to its opener
            if code[index] in ")]":
                depth += 1
            elif code[index] in "([":
                depth -= 1
                if depth == 0:
                    break
            index -= 1
        before = code[:max(index, 0)].rstrip()
        if not before or before[-1] not in _IDENT_CHARS | {")", "]"}:
            return ""  # [1, 2].exists(...) or (x).exists(...)
        index = len(before) - 1
    found = re.match(r"[A-Za-z_]\w*", code[index + 1:dot].strip())
    return found[0] if found else ""


def _check_loop_input(source: str, variables: Mapping[str, Any]) -> None:
    """Refuse to loop over an event too big for bounded-time comprehensions."""
    items = 0
    stack = list(variables.values())
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            items += len(value)
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            items += len(value)
            stack.extend(value)
        elif isinstance(value, str) and len(value) > MAX_COMPREHENSION_STRING:
            raise ConditionRuntimeError(
                f"{source!r}: a string of {len(value)} characters is over the limit of "
                f"{MAX_COMPREHENSION_STRING} for conditions with comprehensions")
        if items > MAX_COMPREHENSION_ITEMS:
            raise ConditionRuntimeError(
                f"{source!r}: the event has over {MAX_COMPREHENSION_ITEMS} list items and map "
                "entries, the limit for conditions with comprehensions")


def _check_cost(source: str, weight: int, variables: Mapping[str, Any]) -> None:
    """Refuse to evaluate when weight times the variables' JSON size is over the budget."""
    limit = MAX_CONDITION_COST // weight
    size = 0
    for value in variables.values():
        try:
            size += len(orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS))
        except orjson.JSONEncodeError:  # e.g. an int past 64 bits: repr is as long
            size += len(repr(value))
        if size > limit:
            raise ConditionRuntimeError(
                f"{source!r}: the event is too big for this condition: over {limit} bytes "
                f"of referenced values for its weight {weight} (references times 1 + '+'; "
                f"the limit is {MAX_CONDITION_COST} for weight times bytes)")


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
