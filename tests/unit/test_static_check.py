"""`choreo check --static` and `choreo graph` on crafted choreographies."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo.cli import main
from choreo.config import ConfigError, parse_choreography
from choreo.graph import mermaid
from choreo.settings import BUNDLED_CONFIG
from choreo.static_check import check_static


def pattern(pid: str, on: str, action: str, capability: str = "work", **extra: str) -> str:
    lines = [f'[[patterns]]\nid = "{pid}"\nkind = "event"\non = "{on}"',
             f'action = "{action}"\ncapability = "{capability}"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def findings(text: str) -> list[tuple[str, str, str]]:
    return [(f.level, f.code, f.pattern_id) for f in check_static(parse_choreography(text))]


def messages(text: str) -> list[str]:
    return [f.message for f in check_static(parse_choreography(text))]


CHAIN = (pattern("start", "a", "make_b") + pattern("next", "b", "make_c")
         + '[events]\nexternal = ["a"]\n'
         + '[capabilities.work.produces]\nmake_b = ["b"]\nmake_c = ["c"]\n')


def test_a_clean_chain_has_no_findings():
    assert findings(CHAIN) == []


def test_the_bundled_file_passes_with_one_guarded_loop():
    found = check_static(parse_choreography(BUNDLED_CONFIG.read_text()))
    assert [(f.level, f.code) for f in found] == [("warning", "loop")]
    assert found[0].message == (
        "loop: payment_failed -> payment-failed-retry -> retry_payment @ payment_processing "
        "-> payment_failed; guarded by 'payment-failed-retry' (on) when "
        "(has(payload.retry_count) ? payload.retry_count : 0) < 3: make sure it turns false")


def test_a_type_nobody_produces_is_an_error():
    text = CHAIN + pattern("orphan", "z", "make_c")
    assert findings(text) == [("error", "missing_producer", "orphan")]
    assert messages(text) == ["pattern 'orphan' listens to 'z' (on), which no capability "
                              "produces and [events] external does not list"]


def test_a_pattern_fed_only_by_patterns_that_never_fire_is_unreachable():
    # x -> make_y -> y -> make_x -> x: each type has a producer, but nothing starts the cycle.
    text = (CHAIN + pattern("p-x", "x", "make_y", "island")
            + pattern("p-y", "y", "make_x", "island")
            + '[capabilities.island.produces]\nmake_y = ["y"]\nmake_x = ["x"]\n')
    assert findings(text) == [("error", "unguarded_loop", "-"),
                              ("error", "unreachable", "p-x"), ("error", "unreachable", "p-y")]
    assert "pattern 'p-x' can never fire: 'x' only come(s) from actions of patterns that " \
           "never fire" in messages(text)


def test_a_sequence_needs_every_step_and_its_timeout_only_the_first():
    text = CHAIN + """
[[patterns]]
id = "seq"
kind = "sequence"
steps = ["a", "never"]
max_interval = "1m"
action = "done"
capability = "work"
timeout_action = "late"
""" + pattern("after-late", "late_noticed", "noop")
    text = text.replace('make_c = ["c"]', 'make_c = ["c"]\nlate = ["late_noticed"]')
    # The sequence's second step has no producer, but its timeout can still fire, so the
    # pattern behind the timeout's result is reachable.
    assert findings(text) == [("error", "missing_producer", "seq")]


def test_an_absence_whose_expected_event_never_comes_is_a_warning():
    text = CHAIN + """
[[patterns]]
id = "idle"
kind = "absence"
after = "b"
expect = "nobody_sends_this"
within = "1m"
action = "remind"
capability = "work"
"""
    assert findings(text) == [("warning", "never_expected", "idle")]


def test_a_loop_guarded_by_a_condition_is_a_warning_naming_the_cycle():
    text = (pattern("retry", "payment_failed", "retry_payment", "pay",
                    when='"payload.retry_count < 3"')
            + '[events]\nexternal = ["payment_failed"]\n'
            + '[capabilities.pay]\nproduces = ["payment_failed", "payment_successful"]\n')
    assert messages(text) == [
        "loop: payment_failed -> retry -> retry_payment @ pay -> payment_failed; guarded by "
        "'retry' (on) when payload.retry_count < 3: make sure it turns false"]
    assert findings(text) == [("warning", "loop", "-")]


def test_a_loop_through_two_patterns_without_a_guard_is_an_error():
    text = (pattern("ping", "ping", "send_pong") + pattern("pong", "pong", "send_ping")
            + '[events]\nexternal = ["ping"]\n'
            + '[capabilities.work.produces]\nsend_pong = ["pong"]\nsend_ping = ["ping"]\n')
    assert messages(text) == [
        "loop: ping -> ping -> send_pong @ work -> pong -> pong -> send_ping @ work -> ping; "
        "no condition or content filter on it can stop it"]


def test_a_pattern_on_action_completed_loops_through_its_own_lifecycle():
    text = CHAIN + pattern("audit", "action.completed", "audit", match='{ payload = { x = [1] } }')
    assert findings(text) == [("warning", "loop", "-")]


def test_a_capability_without_produces_is_a_warning():
    text = pattern("start", "a", "make_b", "quiet") + '[events]\nexternal = ["a"]\n'
    assert findings(text) == [("warning", "undeclared_produces", "-")]


def test_external_globs_cover_the_types_they_match():
    text = (pattern("m", "memory.create.completed", "noop") + pattern("g", "memory.*", "noop")
            + '[events]\nexternal = ["memory.*"]\n[capabilities.work]\nproduces = []\n')
    assert findings(text) == []


@pytest.mark.parametrize(("extra", "field", "reason"), [
    ('[capabilities.work]\nproduces = "b"', "capabilities.work.produces", "must be a list"),
    ('[capabilities.work]\nproduces = ["b c"]', "capabilities.work.produces[0]",
     "must be an event type"),
    ('[capabilities.work.produces]\nmake_z = ["b"]', "capabilities.work.produces.make_z",
     "no pattern sends 'make_z' to 'work'"),
    ('[capabilities.work.produces]\nmake_b = "b"', "capabilities.work.produces.make_b",
     "must be a list"),
    ('[capabilities.work]\nproduce = ["b"]', "capabilities.work.produce", "did you mean"),
    ('[events]\nexternal = "a"', "events.external", "must be a list"),
    ('[events]\nexternals = ["a"]', "events.externals", "unknown field"),
    ('[events]\nexternal = ["a b"]', "events.external[0]", "an event type or a glob"),
])
def test_bad_declarations_name_their_field(extra: str, field: str, reason: str):
    with pytest.raises(ConfigError) as caught:
        parse_choreography(pattern("start", "a", "make_b") + extra + "\n")
    assert [(i.field, reason in i.reason) for i in caught.value.issues] == [(field, True)]


def test_the_cli_exits_non_zero_on_errors_and_zero_with_warnings(tmp_path: Path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(CHAIN + pattern("orphan", "z", "make_c"))
    assert main(["check", "--static", str(bad)]) == 1
    assert "static check: 1 error(s), 0 warning(s)" in capsys.readouterr().out
    assert main(["check", "--static", str(BUNDLED_CONFIG)]) == 0
    assert "static check: 0 error(s), 1 warning(s)" in capsys.readouterr().out
    assert main(["check", str(bad)]) == 0  # without --static only the load is checked


GRAPH = """
[[patterns]]
id = "big-order"
kind = "event"
on = "order_received"
when = "payload.value > 1000 && payload.currency == \\"EUR\\""
action = "review"
capability = "fraud"

[[patterns]]
id = "no-order"
kind = "absence"
after = "checkout_started"
expect = "order_received"
within = "30m"
action = "remind"
capability = "mail"

[events]
external = ["order_received", "checkout_started"]

[capabilities.fraud]
produces = ["review_requested"]

[capabilities.mail]
produces = ["reminder_sent"]
"""


def test_the_graph_of_a_tiny_choreography(tmp_path: Path, capsys):
    expected = """\
flowchart LR
    X(("external"))
    E1(["order_received"])
    E2(["checkout_started"])
    E3(["review_requested"])
    E4(["reminder_sent"])
    P1["big-order"]
    P2["no-order<br/>absence: within 30m"]
    A1{{"review @ fraud"}}
    A2{{"remind @ mail"}}
    X --> E1
    X --> E2
    E1 -->|"when payload.value #gt; 1000 #amp;#amp; payload.currency == #quot;EUR#quot;"| P1
    P1 --> A1
    A1 --> E3
    E2 -->|"after"| P2
    E1 -.->|"expect"| P2
    P2 --> A2
    A2 --> E4
"""
    assert mermaid(parse_choreography(GRAPH)) == expected
    path = tmp_path / "tiny.toml"
    path.write_text(GRAPH)
    assert main(["graph", str(path)]) == 0
    assert capsys.readouterr().out == expected
