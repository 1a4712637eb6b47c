"""The config loader: what a valid file becomes, and every problem named by pattern and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from choreo.config import ConfigError, Defaults, Topics, load_choreography, parse_choreography
from choreo.patterns import (
    AbsencePattern,
    EventPattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)


def issues_of(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_choreography(text)
    return [(i.pattern_id, i.field, i.reason) for i in caught.value.issues]


# --- every problem a pattern table can have ------------------------------------------------

# (kind, fields to set, fields to omit, expected pattern id, field, fragment of the reason)
PATTERN_ERRORS = [
    pytest.param("event", {"kind": "evnt"}, (), "bad", "kind",
                 "must be one of event, threshold, temporal, sequence, absence; got 'evnt'",
                 id="unknown-kind"),
    pytest.param("event", {}, ("kind",), "bad", "kind", "got None", id="missing-kind"),
    pytest.param("event", {}, ("id",), "#1", "id", "required", id="missing-id"),
    pytest.param("event", {"id": "bad id"}, (), "#1", "id", "letters, digits", id="bad-id"),
    pytest.param("event", {"id": 7}, (), "#1", "id", "required", id="id-not-string"),
    pytest.param("event", {}, ("action",), "bad", "action", "required", id="missing-action"),
    pytest.param("event", {"action": "do it!"}, (), "bad", "action", "letters, digits",
                 id="bad-action-name"),
    pytest.param("event", {}, ("capability",), "bad", "capability", "required",
                 id="missing-capability"),
    pytest.param("event", {"capability": "fraud/detection"}, (), "bad", "capability",
                 "letters, digits", id="bad-capability-name"),
    pytest.param("event", {"priority": "high"}, (), "bad", "priority",
                 "must be an integer, got 'high'", id="priority-string"),
    pytest.param("event", {"priority": 1.5}, (), "bad", "priority",
                 "must be an integer, got 1.5", id="priority-float"),
    pytest.param("event", {"priority": True}, (), "bad", "priority",
                 "must be an integer, got True", id="priority-bool"),
    pytest.param("event", {"priorty": 3}, (), "bad", "priorty",
                 "unknown field of an event pattern; did you mean 'priority'?",
                 id="unknown-field-hint"),
    pytest.param("event", {"zzz": 1}, (), "bad", "zzz",
                 "unknown field of an event pattern; expected one of action, allowed_lateness",
                 id="unknown-field-no-hint"),
    pytest.param("absence", {"windo": "5m"}, (), "bad", "windo",
                 "unknown field of an absence pattern", id="unknown-field-article"),
    pytest.param("event", {"steps": ["a", "b"]}, (), "bad", "steps",
                 "unknown field of an event pattern", id="field-of-another-kind"),
    pytest.param("event", {"on": "order received"}, (), "bad", "on",
                 "an event type or a glob such as 'order.*'", id="bad-on-glob"),
    pytest.param("event", {"on": 5}, (), "bad", "on", "an event type or a glob",
                 id="on-not-string"),
    pytest.param("event", {}, ("on",), "bad", "on", "required", id="missing-on"),
    pytest.param("event", {"when": "payload.order_value >"}, (), "bad", "when",
                 "syntax error", id="when-syntax"),
    pytest.param("event", {"when": "data.x > 1"}, (), "bad", "when",
                 "unknown variable 'data'", id="when-unknown-variable"),
    pytest.param("event", {"when": 5}, (), "bad", "when", "must be a string", id="when-not-string"),
    pytest.param("event", {"when": ""}, (), "bad", "when", "must not be empty", id="when-empty"),
    pytest.param("event", {"match": "payload.x = 1"}, (), "bad", "match",
                 "must be a table (a content filter)", id="match-not-table"),
    pytest.param("event", {"match": {"payload": {"x": [{"numeric": [">>", 1]}]}}}, (), "bad",
                 "match", "numeric operator '>>' unknown", id="match-bad-operator"),
    pytest.param("event", {"match": {}}, (), "bad", "match", "an empty object", id="match-empty"),
    pytest.param("event", {"group_by": "payload.customer_id"}, (), "bad", "group_by",
                 "event patterns are not keyed", id="group-by-on-event"),
    pytest.param("threshold", {"group_by": "customer_id"}, (), "bad", "group_by",
                 "must name a field: payload.<path>, metadata.<path> or source",
                 id="group-by-malformed"),
    pytest.param("threshold", {"group_by": "payload."}, (), "bad", "group_by",
                 "must name a field", id="group-by-empty-path"),
    pytest.param("threshold", {"group_by": 5}, (), "bad", "group_by", "must name a field",
                 id="group-by-not-string"),
    pytest.param("event", {"allowed_lateness": 5}, (), "bad", "allowed_lateness",
                 "expected a duration string", id="lateness-number"),
    # threshold
    pytest.param("threshold", {"window": "5 minutes"}, (), "bad", "window",
                 "'5 minutes' is not a duration", id="window-words"),
    pytest.param("threshold", {"window": 30}, (), "bad", "window",
                 "expected a duration string like \"30s\" or \"5m\", got 30", id="window-number"),
    pytest.param("threshold", {"window": "0s"}, (), "bad", "window", "must be longer than zero",
                 id="window-zero"),
    pytest.param("threshold", {}, ("window",), "bad", "window", "required: a duration",
                 id="window-missing"),
    pytest.param("threshold", {"count": 0}, (), "bad", "count",
                 "a whole number of at least 1, got 0", id="count-zero"),
    pytest.param("threshold", {}, ("count",), "bad", "count", "got None", id="count-missing"),
    pytest.param("threshold", {"count": "3"}, (), "bad", "count", "got '3'", id="count-string"),
    pytest.param("threshold", {"count": True}, (), "bad", "count", "got True", id="count-bool"),
    pytest.param("threshold", {"window_kind": "rolling"}, (), "bad", "window_kind",
                 "must be sliding, tumbling or hopping", id="window-kind"),
    pytest.param("threshold", {"hop": "1m"}, (), "bad", "hop", "only hopping windows take a hop",
                 id="hop-without-hopping"),
    pytest.param("threshold", {"window_kind": "hopping", "window": "1m", "hop": "2m"}, (), "bad",
                 "hop", "must not be longer than window", id="hop-longer-than-window"),
    pytest.param("threshold", {"window_kind": "hopping"}, (), "bad", "hop", "required",
                 id="hopping-without-hop"),
    pytest.param("threshold", {"window_kind": "hopping", "hop": "0s"}, (), "bad", "hop",
                 "must be longer than zero", id="hop-zero"),
    # temporal
    pytest.param("temporal", {"all_of": ["payment_successful"]}, (), "bad", "all_of",
                 "a list of at least 2", id="all-of-one"),
    pytest.param("temporal", {"all_of": "payment_successful"}, (), "bad", "all_of",
                 "a list of at least 2", id="all-of-string"),
    pytest.param("temporal", {"window": "0s"}, (), "bad", "window", "longer than zero",
                 id="temporal-window-zero"),
    pytest.param("temporal", {"all_of": [{"on": "a", "when": "data.x > 1"}, "b"]}, (), "bad",
                 "all_of[0].when", "unknown variable 'data'", id="step-when"),
    pytest.param("temporal", {"all_of": [{"on": "a", "whn": "payload.x > 1"}, "b"]}, (), "bad",
                 "all_of[0].whn", "unknown step field; did you mean 'when'?",
                 id="step-unknown-field"),
    pytest.param("temporal", {"all_of": ["a", {"on": "b", "match": 3}]}, (), "bad",
                 "all_of[1].match", "must be a table", id="step-match"),
    # sequence
    pytest.param("sequence", {"steps": ["cart.created"]}, (), "bad", "steps",
                 "a list of at least 2", id="steps-one"),
    pytest.param("sequence", {"steps": ["cart.created", "checkout started"]}, (), "bad",
                 "steps[1]", "an event type or a glob", id="step-bad-glob"),
    pytest.param("sequence", {"steps": [{"when": "payload.x > 1"}, "b"]}, (), "bad",
                 "steps[0].on", "required", id="step-table-without-on"),
    pytest.param("sequence", {"max_interval": "0s"}, (), "bad", "max_interval",
                 "must be longer than zero", id="max-interval-zero"),
    pytest.param("sequence", {}, ("max_interval",), "bad", "max_interval", "required",
                 id="max-interval-missing"),
    pytest.param("sequence", {"within": "soon"}, (), "bad", "within", "'soon' is not a duration",
                 id="within-words"),
    pytest.param("sequence", {"timeout_capability": "ops"}, (), "bad", "timeout_capability",
                 "needs timeout_action", id="timeout-capability-alone"),
    pytest.param("sequence", {"timeout_action": "time out"}, (), "bad", "timeout_action",
                 "must be an action name", id="timeout-action-bad"),
    pytest.param("sequence", {"timeout_action": "expire", "timeout_capability": "o p s"}, (),
                 "bad", "timeout_capability", "must be a capability name",
                 id="timeout-capability-bad"),
    # absence
    pytest.param("absence", {}, ("after",), "bad", "after", "required", id="after-missing"),
    pytest.param("absence", {"expect": "order received"}, (), "bad", "expect",
                 "an event type or a glob", id="expect-bad-glob"),
    pytest.param("absence", {"within": "0s"}, (), "bad", "within", "must be longer than zero",
                 id="absence-within-zero"),
    pytest.param("absence", {}, ("within",), "bad", "within", "required",
                 id="absence-within-missing"),
]


@pytest.mark.parametrize(("kind", "fields", "omit", "pattern_id", "field", "reason"),
                         PATTERN_ERRORS)
def test_each_pattern_problem_names_the_pattern_and_field(
    pattern_factory, toml_factory, kind: str, fields: dict[str, Any], omit: tuple[str, ...],
    pattern_id: str, field: str, reason: str,
):
    table = {**pattern_factory(kind, omit=omit, id="bad"), **fields}

    [(got_id, got_field, got_reason)] = issues_of(toml_factory(table))

    assert (got_id, got_field) == (pattern_id, field)
    assert reason in got_reason



def test_a_sequence_that_must_finish_within_zero_seconds_is_refused(pattern_factory,
                                                                    toml_factory):
    table = pattern_factory("sequence", id="bad", within="0s")

    [(pattern_id, field, reason)] = issues_of(toml_factory(table))

    assert (pattern_id, field) == ("bad", "within")
    assert "longer than zero" in reason


def test_a_duplicate_id_names_the_second_pattern(pattern_factory, toml_factory):
    first = pattern_factory(id="same")
    second = pattern_factory("threshold", id="same")

    assert issues_of(toml_factory(first, second)) == [("same", "id", "duplicate pattern id")]


def test_patterns_without_an_id_are_named_by_position(pattern_factory, toml_factory):
    good = pattern_factory(id="good")
    anonymous = pattern_factory(omit=("id",))

    [(pattern_id, field, _)] = issues_of(toml_factory(good, anonymous))

    assert (pattern_id, field) == ("#2", "id")


# --- the seed material's shorthand, and its own problems -------------------------------------

SEED_ERRORS = [
    pytest.param({"type": "threshold_pattern", "pattern_id": "bad", "threshold": 3,
                  "time_window": 60, "action": "a", "target_capability": "c"},
                 "bad", "on", "required", id="threshold-without-event-type"),
    pytest.param({"type": "threshold_pattern", "pattern_id": "bad", "event_type": "x",
                  "threshold": 0, "time_window": 60, "action": "a", "target_capability": "c"},
                 "bad", "count", "at least 1", id="threshold-zero"),
    pytest.param({"type": "threshold_pattern", "pattern_id": "bad", "event_type": "x",
                  "threshold": 3, "action": "a", "target_capability": "c"},
                 "bad", "window", "got None", id="threshold-without-time-window"),
    pytest.param({"type": "temporal_sequence", "pattern_id": "bad", "trigger_event": "x",
                  "time_window": 60, "action": "a", "target_capability": "c"},
                 "bad", "all_of", "at least 2", id="temporal-without-required-events"),
    pytest.param({"type": "state_transition", "pattern_id": "bad", "event_type": "x",
                  "condition": "data.get('x') > 1", "action": "a", "target_capability": "c"},
                 "bad", "when", "unknown variable 'data'", id="state-transition-python-condition"),
    pytest.param({"type": "flow", "pattern_id": "bad", "action": "a", "capability": "c"},
                 "bad", "kind", "got 'flow'", id="unknown-seed-type"),
]


@pytest.mark.parametrize(("table", "pattern_id", "field", "reason"), SEED_ERRORS)
def test_each_seed_shorthand_problem_names_the_pattern_and_field(
    toml_factory, table: dict[str, Any], pattern_id: str, field: str, reason: str,
):
    [(got_id, got_field, got_reason)] = issues_of(toml_factory(table))

    assert (got_id, got_field) == (pattern_id, field)
    assert reason in got_reason


def test_a_sequences_entry_without_an_id_is_named_after_the_patterns(pattern_factory,
                                                                    toml_factory):
    text = toml_factory(pattern_factory(id="first"),
                        sequences=[{"events": ["a", "b"], "action": "x", "capability": "c"}])

    [(pattern_id, field, _)] = issues_of(text)

    assert (pattern_id, field) == ("#2", "id")


def test_a_sequences_entry_with_zero_max_interval_is_refused(toml_factory):
    text = toml_factory(sequences=[{"sequence_id": "s", "events": ["a", "b"],
                                    "max_interval": 0, "action": "x",
                                    "target_capability": "c"}])

    assert issues_of(text) == [("s", "max_interval", "must be longer than zero")]


# --- the file outside the patterns ------------------------------------------------------------

FILE_ERRORS = [
    pytest.param('[topics]\nevent = "events"\n', "topics.event", "did you mean 'events'?",
                 id="topics-unknown-key"),
    pytest.param('[topics]\ncapability = "capability"\n', "topics.capability",
                 "must contain the placeholder {capability}", id="topics-no-placeholder"),
    pytest.param('[topics]\nevents = ""\n', "topics.events", "must be a non-empty string",
                 id="topics-empty-events"),
    pytest.param('[topics]\ndead_letter = 5\n', "topics.dead_letter",
                 "must be a non-empty string", id="topics-dead-letter-number"),
    pytest.param('[topics]\nprefix = 5\n', "topics.prefix", "must be a non-empty string",
                 id="topics-prefix-number"),
    pytest.param('[topics]\nevents = "my events"\n', "topics",
                 "'my events' is not a valid Kafka topic name", id="topics-bad-name"),
    pytest.param('topics = "events"\n', "topics", "must be a table", id="topics-not-table"),
    pytest.param('[defaults]\ndedup_horizn = "1h"\n', "defaults.dedup_horizn",
                 "unknown defaults field; did you mean 'dedup_horizon'?",
                 id="defaults-unknown-key"),
    pytest.param('[defaults]\ndedup_horizon = "1 day"\n', "defaults.dedup_horizon",
                 "is not a duration", id="defaults-bad-duration"),
    pytest.param('[defaults]\nidle_timeout = 30\n', "defaults.idle_timeout",
                 "expected a duration string", id="defaults-number-duration"),
    pytest.param('[defaults]\nmax_event_bytes = 100\n', "defaults.max_event_bytes",
                 "must be an integer >= 256", id="defaults-small-max-bytes"),
    pytest.param('[defaults]\nmax_event_bytes = "1MB"\n', "defaults.max_event_bytes",
                 "must be an integer >= 256", id="defaults-max-bytes-string"),
    pytest.param('[defaults]\nmax_event_depth = 300\n', "defaults.max_event_depth",
                 "must be an integer from 2 to 200", id="defaults-depth-past-writable"),
    pytest.param('[defaults]\nmax_event_depth = "64"\n', "defaults.max_event_depth",
                 "must be an integer from 2 to 200", id="defaults-depth-string"),
    pytest.param('[defaults]\nmax_future_skew = 300\n', "defaults.max_future_skew",
                 "expected a duration string", id="defaults-skew-number"),
    pytest.param('defaults = 5\n', "defaults", "must be a table", id="defaults-not-table"),
    pytest.param('[pattern]\nid = "x"\n', "pattern",
                 "unknown top-level table; did you mean 'patterns'?", id="unknown-top-level"),
    pytest.param('patterns = 5\n', "patterns", "write patterns as [[patterns]] tables",
                 id="patterns-not-array"),
    pytest.param('sequences = "a,b"\n', "sequences", "write sequences as [[sequences]] tables",
                 id="sequences-not-array"),
    pytest.param('[[patterns]\nid = "x"\n', "-", "not valid TOML", id="invalid-toml"),
]


@pytest.mark.parametrize(("text", "field", "reason"), FILE_ERRORS)
def test_each_file_level_problem_names_its_field(text: str, field: str, reason: str):
    [(pattern_id, got_field, got_reason)] = issues_of(text)

    assert (pattern_id, got_field) == ("-", field)
    assert reason in got_reason


def test_an_entry_that_is_not_a_table_is_named_by_position():
    assert issues_of("patterns = [5]\n") == [("#1", "-", "each pattern is a table")]


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path):
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load_choreography(path)

    [issue] = caught.value.issues
    assert (issue.pattern_id, issue.field) == ("-", "-")
    assert f"cannot read {path}" in issue.reason


def test_a_directory_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_choreography(tmp_path)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[patterns]]\nid = "caf\xe9"\n'.encode("latin-1"))

    with pytest.raises(ConfigError):
        load_choreography(path)


def test_a_capability_template_with_an_unknown_placeholder_is_refused():
    issues = issues_of('[topics]\ncapability = "capability.{capability}.{region}"\n')

    assert [(pid, field) for pid, field, _ in issues] == [("-", "topics.capability")]


def test_several_problems_are_reported_together(pattern_factory, toml_factory):
    text = toml_factory(
        pattern_factory(id="one", priority="high"),
        pattern_factory("threshold", id="two", count=0, window="soon"),
        topics={"events": ""},
        defaults={"max_event_bytes": 1},
    )

    with pytest.raises(ConfigError) as caught:
        parse_choreography(text, source="shop.toml")

    found = [(i.pattern_id, i.field) for i in caught.value.issues]
    assert found == [
        ("-", "topics.events"),
        ("-", "defaults.max_event_bytes"),
        ("one", "priority"),
        ("two", "count"),
        ("two", "window"),
    ]
    message = str(caught.value)
    assert message.startswith("5 problem(s) in shop.toml:")
    for issue in caught.value.issues:
        assert f"  - {issue}" in message
    assert "pattern 'two', field 'window': 'soon' is not a duration" in message


# --- what a valid file becomes ----------------------------------------------------------------

ECOMMERCE_IDS = [
    "order-received", "high-value-order", "inventory-confirmed", "inventory-shortage",
    "payment-successful", "payment-failed-retry", "payment-failed-cancel",
    "fulfillment-complete", "shipping-complete", "delivery-confirmed",
    "repeated-payment-failures", "abandoned-checkout", "order-to-shipment",
]


def test_the_bundled_choreography_loads(ecommerce):
    assert [p.id for p in ecommerce.patterns] == ECOMMERCE_IDS
    assert [p.kind for p in ecommerce.patterns[-3:]] == ["threshold", "absence", "sequence"]
    assert all(isinstance(p, EventPattern) for p in ecommerce.patterns[:-3])
    failures, abandoned, shipment = ecommerce.patterns[-3:]
    assert (failures.count, failures.window, failures.group_by) == (3, 600.0,
                                                                     "payload.customer_id")
    assert (abandoned.after.on, abandoned.expect.on, abandoned.within) == (
        "checkout_started", "order_received", 1800.0)
    assert [s.on for s in shipment.steps] == ["order_received", "payment_successful",
                                              "shipping_complete"]
    assert (shipment.max_interval, shipment.timeout_action) == (600.0,
                                                                "escalate_stalled_order")
    assert ecommerce.capabilities == (
        "inventory_management", "fraud_detection", "payment_processing", "supplier_management",
        "order_fulfillment", "order_management", "shipping_management",
        "customer_communication", "customer_engagement",
    )
    assert ecommerce.topics.events_topic == "events"
    assert ecommerce.topics.dead_letter_topic == "events.dlq"
    assert ecommerce.topics.capability_topic("fraud_detection") == "capability.fraud_detection"
    assert ecommerce.defaults == Defaults(allowed_lateness=10.0, dedup_horizon=86400.0,
                                          idle_timeout=30.0)
    high_value = ecommerce.pattern("high-value-order")
    assert (high_value.action, high_value.capability, high_value.priority) == (
        "request_manual_review", "fraud_detection", 9)
    assert high_value.allowed_lateness == 10.0
    assert ecommerce.pattern("no-such-pattern") is None


def test_topic_names_carry_the_prefix():
    choreography = parse_choreography(
        '[topics]\nprefix = "shop."\nevents = "in"\ndead_letter = "in.dlq"\n'
        'capability = "cap-{capability}"\n')

    assert choreography.topics.events_topic == "shop.in"
    assert choreography.topics.dead_letter_topic == "shop.in.dlq"
    assert choreography.topics.capability_topic("billing") == "shop.cap-billing"


def test_an_empty_file_gives_the_defaults():
    choreography = parse_choreography("")

    assert choreography.patterns == ()
    assert choreography.topics == Topics()
    assert choreography.defaults == Defaults()


def test_defaults_parse_durations(pattern_factory, toml_factory):
    choreography = parse_choreography(toml_factory(
        pattern_factory("threshold", id="t"),
        pattern_factory("threshold", id="late", allowed_lateness="1m"),
        defaults={"allowed_lateness": "500ms", "dedup_horizon": "7d", "idle_timeout": "2m",
                  "max_event_bytes": 4096, "max_event_depth": 20, "max_future_skew": "1m"},
    ))

    assert choreography.defaults == Defaults(allowed_lateness=0.5, dedup_horizon=7 * 86400.0,
                                             idle_timeout=120.0, max_event_bytes=4096,
                                             max_event_depth=20, max_future_skew=60.0)
    assert choreography.pattern("t").allowed_lateness == 0.5
    assert choreography.pattern("late").allowed_lateness == 60.0


def test_an_event_pattern_lands_in_its_dataclass(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        id="e", on="order.*", action="check", capability="inv", priority=4)).patterns

    assert isinstance(pattern, EventPattern)
    assert (pattern.id, pattern.action, pattern.capability, pattern.priority) == (
        "e", "check", "inv", 4)
    assert pattern.on.on == "order.*"
    assert pattern.group_by is None


def test_priority_defaults_to_one(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(omit=("priority",))).patterns

    assert pattern.priority == 1


def test_a_threshold_pattern_lands_in_its_dataclass(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        "threshold", on="payment_failed", count=3, window="10m", window_kind="hopping",
        hop="10m", group_by="metadata.tenant")).patterns

    assert isinstance(pattern, ThresholdPattern)
    assert (pattern.on.on, pattern.count, pattern.window, pattern.window_kind, pattern.hop,
            pattern.group_by) == ("payment_failed", 3, 600.0, "hopping", 600.0, "metadata.tenant")


def test_a_threshold_pattern_is_sliding_by_default(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory("threshold", group_by="source")).patterns

    assert (pattern.window_kind, pattern.hop, pattern.group_by) == ("sliding", None, "source")


def test_a_temporal_pattern_lands_in_its_dataclass(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        "temporal", all_of=["payment_successful", {"on": "inventory_*"}], window="5m")).patterns

    assert isinstance(pattern, TemporalPattern)
    assert [spec.on for spec in pattern.all_of] == ["payment_successful", "inventory_*"]
    assert pattern.window == 300.0


def test_a_sequence_pattern_lands_in_its_dataclass(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        "sequence", steps=["cart.created", "checkout.started", "order_received"],
        max_interval="30m", within="2h", timeout_action="remind_customer",
        timeout_capability="customer_communication", capability="sales")).patterns

    assert isinstance(pattern, SequencePattern)
    assert [spec.on for spec in pattern.steps] == [
        "cart.created", "checkout.started", "order_received"]
    assert (pattern.max_interval, pattern.within, pattern.timeout_action,
            pattern.timeout_capability) == (1800.0, 7200.0, "remind_customer",
                                            "customer_communication")


def test_capabilities_include_timeout_capabilities(choreography_factory, pattern_factory):
    choreography = choreography_factory(
        pattern_factory("sequence", id="s1", capability="sales", timeout_action="remind",
                        timeout_capability="mail"),
        pattern_factory("sequence", id="s2", capability="sales", timeout_action="remind"),
        pattern_factory("event", id="e", capability="sales"),
    )

    assert choreography.capabilities == ("sales", "mail")


def test_an_absence_pattern_lands_in_its_dataclass(choreography_factory, pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        "absence", after="cart.updated", expect="order_received", within="1h",
        group_by="payload.cart_id")).patterns

    assert isinstance(pattern, AbsencePattern)
    assert (pattern.after.on, pattern.expect.on, pattern.within, pattern.group_by) == (
        "cart.updated", "order_received", 3600.0, "payload.cart_id")


def test_pattern_level_when_and_match_apply_to_every_step(choreography_factory, pattern_factory,
                                                          event_factory):
    [pattern] = choreography_factory(pattern_factory(
        "temporal",
        all_of=[{"on": "payment_successful", "when": "payload.amount > 10"}, "shipped"],
        when="payload.region == 'EU'",
        match={"source": ["shop"]},
    )).patterns
    paid, shipped = pattern.all_of

    def event(**payload: Any):
        return event_factory("payment_successful", payload, source="shop")

    assert paid.accepts(event(amount=20, region="EU"))
    assert not paid.accepts(event(amount=5, region="EU"))  # the step's own condition
    assert not paid.accepts(event(amount=20, region="US"))  # the pattern's condition
    assert not paid.accepts(event_factory("payment_successful", {"amount": 20, "region": "EU"},
                                          source="pos"))  # the pattern's filter
    assert shipped.accepts(event_factory("shipped", {"region": "EU"}, source="shop"))
    assert not shipped.accepts(event_factory("shipped", {"region": "US"}, source="shop"))
    assert paid.describe()["when"] == ["payload.amount > 10", "payload.region == 'EU'"]
    assert shipped.describe()["match"] == [{"source": ["shop"]}]


# --- the seed material's shorthand ------------------------------------------------------------

def test_seed_threshold_pattern(choreography_factory):
    [pattern] = choreography_factory({
        "type": "threshold_pattern", "pattern_id": "many-failures", "event_type": "payment_failed",
        "threshold": 3, "time_window": 300, "action": "block_card",
        "target_capability": "fraud_detection", "priority": 9,
        "group_by": "payload.customer_id",
    }).patterns

    assert isinstance(pattern, ThresholdPattern)
    assert (pattern.id, pattern.on.on, pattern.count, pattern.window, pattern.action,
            pattern.capability, pattern.priority) == (
        "many-failures", "payment_failed", 3, 300.0, "block_card", "fraud_detection", 9)


def test_seed_threshold_window_may_be_fractional_seconds(choreography_factory):
    [pattern] = choreography_factory({
        "type": "threshold_pattern", "id": "t", "event_type": "x", "threshold": 2,
        "time_window": 1.5, "action": "a", "capability": "c",
    }).patterns

    assert pattern.window == 1.5


def test_seed_temporal_sequence_includes_the_trigger(choreography_factory):
    [pattern] = choreography_factory({
        "type": "temporal_sequence", "pattern_id": "ready-to-ship",
        "trigger_event": "payment_successful",
        "required_events": ["inventory_confirmed", "address_verified"],
        "time_window": 600, "action": "ship", "target_capability": "shipping_management",
    }).patterns

    assert isinstance(pattern, TemporalPattern)
    assert [spec.on for spec in pattern.all_of] == [
        "inventory_confirmed", "address_verified", "payment_successful"]
    assert pattern.window == 600.0
    assert pattern.capability == "shipping_management"


def test_seed_temporal_sequence_does_not_repeat_a_listed_trigger(choreography_factory):
    [pattern] = choreography_factory({
        "type": "temporal_sequence", "id": "t", "trigger_event": "b",
        "required_events": ["a", "b"], "time_window": 60, "action": "x", "capability": "c",
    }).patterns

    assert [spec.on for spec in pattern.all_of] == ["a", "b"]


def test_seed_state_transition_is_an_event_pattern_with_a_condition(choreography_factory,
                                                                    event_factory):
    [pattern] = choreography_factory({
        "type": "state_transition", "pattern_id": "big-order", "event_type": "order_received",
        "condition": "payload.order_value > 1000", "action": "request_manual_review",
        "target_capability": "fraud_detection",
    }).patterns

    assert isinstance(pattern, EventPattern)
    assert (pattern.id, pattern.on.on, pattern.capability) == (
        "big-order", "order_received", "fraud_detection")
    assert pattern.on.accepts(event_factory(payload={"order_value": 1200}))
    assert not pattern.on.accepts(event_factory(payload={"order_value": 800}))


def test_target_capability_is_an_alias_for_capability(choreography_factory, pattern_factory):
    table = pattern_factory(id="p", omit=("kind", "capability"))
    [pattern] = choreography_factory({**table, "type": "event", "target_capability": "billing"}
                                     ).patterns

    assert pattern.capability == "billing"


def test_seed_sequences_entry(choreography_factory, pattern_factory):
    choreography = choreography_factory(
        pattern_factory(id="first"),
        sequences=[{"sequence_id": "checkout", "events": ["cart.created", "order_received"],
                    "max_interval": 120, "action": "thank_customer",
                    "target_capability": "customer_communication", "priority": 3}],
    )

    assert [p.id for p in choreography.patterns] == ["first", "checkout"]
    pattern = choreography.pattern("checkout")
    assert isinstance(pattern, SequencePattern)
    assert [spec.on for spec in pattern.steps] == ["cart.created", "order_received"]
    assert (pattern.max_interval, pattern.action, pattern.capability, pattern.priority) == (
        120.0, "thank_customer", "customer_communication", 3)


def test_seed_sequences_entry_defaults_to_sixty_seconds(choreography_factory):
    [pattern] = choreography_factory(sequences=[{
        "sequence_id": "s", "events": ["a", "b"], "action": "x", "target_capability": "c",
    }]).patterns

    assert pattern.max_interval == 60.0


# --- renamed patterns and deep nesting --------------------------------------------------------

def test_renamed_from_names_the_id_whose_state_a_pattern_takes_over(choreography_factory,
                                                                     pattern_factory):
    choreography = choreography_factory(
        pattern_factory("sequence", id="checkout-v2", renamed_from="checkout"))
    assert choreography.renamed_from == {"checkout-v2": "checkout"}


@pytest.mark.parametrize(("renames", "pattern_id", "reason"), [
    pytest.param({"a": "b"}, "a", "'b' is the id of a pattern in this file", id="old-id-in-use"),
    pytest.param({"a": "old", "b": "old"}, "b", "pattern 'a' is renamed from 'old' already",
                 id="two-patterns-one-old-id"),
    pytest.param({"a": "a"}, "a", "names the pattern's own id", id="own-id"),
    pytest.param({"a": "not an id"}, "a", "must be the pattern's previous id", id="bad-id"),
    pytest.param({"a": 3}, "a", "must be the pattern's previous id", id="not-a-string"),
])
def test_a_bad_renamed_from_names_the_pattern_field_and_reason(
        renames, pattern_id, reason, pattern_factory, toml_factory):
    tables = [pattern_factory("threshold", id=pid, **({"renamed_from": renames[pid]}
                                                       if pid in renames else {}))
              for pid in ("a", "b")]
    [(pid, field, why)] = issues_of(toml_factory(*tables))
    assert (pid, field) == (pattern_id, "renamed_from")
    assert reason in why


@pytest.mark.parametrize("value", [
    pytest.param("{a = " * 5000 + "1" + "}" * 5000, id="inline-tables"),
    pytest.param("[" * 5000 + "]" * 5000, id="arrays"),
])
def test_a_deeply_nested_value_is_a_config_error_not_a_recursion_error(value: str):
    [(pid, field, reason)] = issues_of(f"x = {value}\n")
    assert (pid, field) == ("-", "-")
    assert "nested too deeply" in reason


def test_a_deep_value_in_a_pattern_names_the_pattern_and_field(pattern_factory, toml_factory):
    text = toml_factory(pattern_factory("event", id="deep"))
    text += "match = " + "{a = " * 100 + "1" + "}" * 100 + "\n"
    [(pid, field, reason)] = issues_of(text)
    assert (pid, field) == ("deep", "match")
    assert "nested more than 64 levels deep" in reason


def test_choreo_check_reports_a_deep_file_in_one_paragraph(tmp_path: Path, capsys):
    from choreo.cli import main

    path = tmp_path / "deep.toml"
    path.write_text("x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 2
    assert "pattern '-', field '-': tables or arrays nested too deeply" in err


def test_the_worker_refuses_a_deep_file_at_start_in_one_paragraph(tmp_path: Path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    env = {**os.environ, "CHOREO_CONFIG": str(path), "CHOREO_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "topology", "worker"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert ("choreo: cannot start, the choreography file is invalid: 1 problem(s) in "
            f"{path}:\n  - pattern '-', field '-': tables or arrays nested too deeply"
            in done.stderr)
