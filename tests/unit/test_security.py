"""`[security]`: loading and its errors, the publishers table, masking, the guard, settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import orjson
import pytest

from choreo.config import ConfigError, parse_choreography
from choreo.envelope import new_event
from choreo.masking import MASK, Masker, scrub
from choreo.security import Guard, SecuritySettings, build_guard
from choreo.settings import BUNDLED_CONFIG, Settings
from choreo.signing import Key, Keyring, sign

SECRET = "0123456789abcdef0123456789abcdef"


def load(security: str):  # noqa: ANN201
    return parse_choreography(BUNDLED_CONFIG.read_text() + "\n" + security,
                              source="/etc/choreo/flow.toml")


def test_no_security_table_means_everything_off():
    security = load("").security
    assert security == SecuritySettings()
    guard = Guard(security)
    assert not guard.active and not guard.require and not guard.signs and not guard.masker


def test_a_full_security_table_loads():
    security = load("""
[security]
require_signatures = true
max_age = "2m"
max_clock_skew = "5s"
keys_file = "keys.toml"
mask = ["payload.payment.card_number", "metadata.email", "payload.*.token"]

[security.publishers]
"shop.*" = ["order_received", "checkout_started"]
"agent.*" = ["*"]
""").security
    assert security.require_signatures
    assert (security.max_age, security.max_clock_skew) == (120.0, 5.0)
    assert security.keys_file == Path("/etc/choreo/keys.toml")
    assert security.mask == ("payload.payment.card_number", "metadata.email",
                             "payload.*.token")
    assert security.publishers == (("shop.*", ("order_received", "checkout_started")),
                                   ("agent.*", ("*",)))


@pytest.mark.parametrize(("table", "field", "reason"), [
    ("require_signatures = 'yes'", "security.require_signatures", "true or false"),
    ("max_age = '5 min'", "security.max_age", "not a duration"),
    ("max_clock_skew = '0s'", "security.max_clock_skew", "longer than zero"),
    ("max_age = '2d'", "security.max_age", "must not exceed defaults.dedup_horizon"),
    ("keys_file = 3", "security.keys_file", "never the keys themselves"),
    ("mask = 'payload.card'", "security.mask", "list of paths"),
    ("mask = ['card_number']", "security.mask[0]", "is not a path"),
    ("mask = ['payload.']", "security.mask[0]", "is not a path"),
    ("publishers = ['shop']", "security.publishers", "table of source glob"),
    ("publishers = { shop = 'order_received' }", "security.publishers.shop",
     "list of event types"),
    ("require_signature = true", "security.require_signature",
     "did you mean 'require_signatures'?"),
    ("keys = { k1 = 'secret' }", "security.keys", "unknown security field"),
])
def test_a_bad_security_table_names_the_field_and_the_reason(table, field, reason):
    with pytest.raises(ConfigError) as err:
        load(f"[security]\n{table}\n")
    [issue] = err.value.issues
    assert issue.field == field
    assert reason in issue.reason


@pytest.mark.parametrize(("source", "event_type", "allowed"), [
    ("shop.checkout", "order_received", True),
    ("shop.web", "checkout_started", True),
    ("shop.checkout", "payment_successful", False),
    ("agent.payment_processing", "payment_successful", True),
    ("agent.payment_processing", "action.completed", True),
    ("billing", "payment.refunded", True),
    ("billing", "payment", False),
    ("billing.eu", "payment.refunded", False),
    ("intruder", "order_received", False),
    ("", "order_received", False),
])
def test_the_publishers_table(source, event_type, allowed):
    guard = Guard(SecuritySettings(publishers=(
        ("shop.*", ("order_received", "checkout_started")),
        ("agent.*", ("*",)),
        ("billing", ("payment.*",)),
    )))
    assert guard.authorized(source, event_type) is allowed
    assert guard.authorized(source, event_type) is allowed  # cached


def test_the_guard_checks_publishers_without_signatures():
    guard = Guard(SecuritySettings(publishers=(("shop.*", ("order_received",)),)))
    assert guard.active and not guard.require
    ev = new_event("order_received", {}, source="shop.web")
    assert guard.check(ev, None, None, **raw(ev)) is None
    refusal = guard.permit(new_event("order_received", {}, source="x"), None)
    assert refusal.reason == "unauthorized" and "'x' may not publish" in refusal.detail


def raw(event, topic: str = "choreo.events", key: bytes | None = b"k") -> dict:  # noqa: ANN001
    """The record fields a signature covers, for `Guard.check`."""
    return {"topic": topic, "key": key, "value": event.to_bytes()}


def signed_by(guard: Guard, event, topic: str = "choreo.events",  # noqa: ANN001, ANN201
              key: bytes | None = b"k"):
    return guard.sign(topic, key, event.to_bytes())


def test_the_guard_verifies_then_authorizes():
    ring = Keyring({"k": Key(SECRET.encode())}, signing="k")
    guard = Guard(SecuritySettings(require_signatures=True,
                                   publishers=(("shop.*", ("order_received",)),)),
                  ring, clock=lambda: 1000.0)
    ok = new_event("order_received", {}, source="shop.web")
    assert guard.check(ok, signed_by(guard, ok), 1000.5, **raw(ok)) is None
    assert guard.check(ok, None, 1000.5, **raw(ok)).reason == "unsigned"
    other = new_event("order_cancelled", {}, source="shop.web")
    assert guard.check(other, signed_by(guard, other), 1000.5, **raw(other)).reason == (
        "unauthorized")
    # No record timestamp: judged against the clock.
    old = sign(ring, "choreo.events", b"k", ok.to_bytes(), 500.0)
    assert guard.check(ok, old, None, **raw(ok)).reason == "stale"
    # Signed for another key: refused before anything reads the value.
    assert guard.authenticate("choreo.events", b"other", ok.to_bytes(), signed_by(guard, ok),
                              1000.5).reason == "bad_signature"


def test_workers_take_only_signed_actions_of_the_engine():
    ring = Keyring({"k": Key(SECRET.encode())}, signing="k")
    guard = Guard(SecuritySettings(require_signatures=True), ring, clock=lambda: 10.0)
    topic = "choreo.actions.payment_processing"
    action = new_event("action.requested", {"action": "a"}, source="choreo.engine")
    headers = signed_by(guard, action, topic)
    assert guard.authenticate(topic, b"k", action.to_bytes(), headers, 10.0) is None
    assert guard.permit_action(action, headers) is None
    assert guard.authenticate(topic, b"k", action.to_bytes(), None, 10.0).reason == "unsigned"
    copied = guard.authenticate("choreo.actions.shipping", b"k", action.to_bytes(), headers,
                                10.0)
    assert copied.reason == "bad_signature"
    forged = new_event("action.requested", {"action": "a"}, source="shop.web")
    refusal = guard.permit_action(forged, signed_by(guard, forged, topic))
    assert refusal.reason == "unauthorized" and "choreo.engine" in refusal.detail
    off = Guard()  # off: anything goes
    assert off.authenticate(topic, None, b"x", None, 10.0) is None
    assert off.permit_action(forged, None) is None


def test_vouch_re_verifies_what_redrive_would_send_back():
    ring = Keyring({"k": Key(SECRET.encode())}, signing="k")
    guard = Guard(SecuritySettings(require_signatures=True,
                                   publishers=(("shop.*", ("order_received",)),)),
                  ring, clock=lambda: 10.0)
    events, actions = "choreo.events", "choreo.actions.payment_processing"
    ok = new_event("order_received", {}, source="shop.web")
    value = ok.to_bytes()
    # Signed long ago (stale now) but genuine: vouched for.
    old = sign(ring, events, b"k", value, -10_000.0)
    assert guard.vouch(events, b"k", value, old, actions=False) is None
    assert guard.vouch(events, b"k", value, None, actions=False).reason == "unsigned"
    assert guard.vouch(events, b"k", value + b" ", old, actions=False).reason == (
        "bad_signature")
    assert guard.vouch(actions, b"k", value, old, actions=True).reason == "bad_signature"
    # Genuine, but not an action of the engine: not for a capability topic.
    assert guard.vouch(actions, b"k", value, sign(ring, actions, b"k", value, 0.0),
                       actions=True).reason == "unauthorized"
    junk = b"x" * 10
    refusal = guard.vouch(events, b"k", junk, sign(ring, events, b"k", junk, 0.0),
                          actions=False)
    assert refusal.reason == "not_json" and "refused again" in refusal.detail
    assert Guard().vouch(events, None, b"x", None, actions=False) is None


def test_build_guard_reads_keys_and_stops_on_missing_ones(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f"sign_with = 'a'\n[keys]\na = '{SECRET}'\n")
    required = SecuritySettings(require_signatures=True, keys_file=keys)
    guard = build_guard(Settings(), required)
    assert guard.signs and guard.keyring.signing == "a"
    # The variable's file wins over keys_file.
    other = tmp_path / "other.toml"
    other.write_text(f"sign_with = 'b'\n[keys]\nb = '{SECRET}'\n")
    assert build_guard(Settings(signing_keys_file=other), required).keyring.signing == "b"
    with pytest.raises(ConfigError) as err:
        build_guard(Settings(), SecuritySettings(require_signatures=True))
    assert err.value.issues[0].field == "security.require_signatures"
    assert "no keys" in err.value.issues[0].reason
    with pytest.raises(ConfigError) as err:
        build_guard(Settings(signing_keys=f"a={SECRET}"),
                    SecuritySettings(require_signatures=True))
    assert "sign_with" in err.value.issues[0].reason
    # A verify-only tool (the CLI) may go without a signing key.
    assert not build_guard(Settings(signing_keys=f"a={SECRET}"),
                           SecuritySettings(require_signatures=True), need_signing=False).signs
    with pytest.raises(ConfigError) as err:
        build_guard(Settings(), SecuritySettings(keys_file=tmp_path / "none.toml"))
    assert err.value.issues[0].field == "security.keys_file"


# --- masking ------------------------------------------------------------------------------

def envelope(**payload):  # noqa: ANN003, ANN201
    return {"event_id": "e", "event_type": "order_received", "source": "s",
            "timestamp": "2026-01-01T00:00:00Z", "payload": payload,
            "metadata": {"email": "a@b.example", "correlation_id": "o"}}


def test_masking_nested_paths_lists_and_wildcards():
    masker = Masker(["payload.payment.card_number", "payload.items.sku", "metadata.email",
                     "payload.*.token", "payload.absent.x"])
    data = envelope(payment={"card_number": "4242424242424242", "method": "card"},
                    items=[{"sku": "A", "quantity": 1}, {"sku": "B"}, "loose"],
                    wallet={"token": "tok_1"}, other={"token": {"deep": 1}})
    paths = masker.mask(data)
    assert paths == ["payload.payment.card_number", "payload.items.sku", "metadata.email",
                     "payload.*.token"]
    assert data["payload"]["payment"] == {"card_number": MASK, "method": "card"}
    assert data["payload"]["items"] == [{"sku": MASK, "quantity": 1}, {"sku": MASK}, "loose"]
    assert data["payload"]["wallet"]["token"] == MASK
    assert data["payload"]["other"]["token"] == MASK
    assert data["metadata"] == {"email": MASK, "correlation_id": "o"}


def test_an_action_masks_the_copy_of_the_triggering_payload():
    masker = Masker(["payload.payment.card_number"])
    action = {**envelope(data={"payment": {"card_number": "4242424242424242"}}),
              "event_type": "action.requested"}
    assert masker.mask(action) == ["payload.payment.card_number"]
    assert action["payload"]["data"]["payment"]["card_number"] == MASK
    plain = envelope(data={"payment": {"card_number": "4242424242424242"}})
    assert masker.mask(plain) == []


def test_mask_bytes_and_copies_leave_the_rest_alone():
    masker = Masker(["payload.card"])
    raw = orjson.dumps(envelope(card="4242424242424242", order_id="o-1"))
    masked, paths = masker.mask_bytes(raw)
    assert paths == ["payload.card"] and b"4242" not in masked
    assert orjson.loads(masked)["payload"]["order_id"] == "o-1"
    assert masker.mask_bytes(b"{not json") == (b"{not json", [])
    assert masker.mask_bytes(b"[1]") == (b"[1]", [])
    unchanged = orjson.dumps(envelope(order_id="o-1"))
    assert masker.mask_bytes(unchanged) == (unchanged, [])
    original = envelope(card="4242424242424242")
    assert masker.masked(original)["payload"]["card"] == MASK
    assert original["payload"]["card"] == "4242424242424242"
    assert Masker().mask_bytes(raw) == (raw, [])


def test_secrets_are_scrubbed_from_text_however_short():
    masker = Masker(["payload.card", "payload.cvv", "payload.nested"])
    data = envelope(card="4242424242424242", cvv="123", nested={"a": "secret-value"})
    secrets = masker.secrets(data)
    assert "4242424242424242" in secrets and "123" in secrets
    text = "payload.card: '4242424242424242' is not of type 'integer'"
    assert scrub(text, secrets) == f"payload.card: '{MASK}' is not of type 'integer'"
    assert scrub('{"a":"secret-value"}', secrets) == MASK
    # A short one only where it stands alone: not inside a longer number or word.
    assert scrub("payload.cvv: '123' is too short; order o-1234", secrets) == (
        f"payload.cvv: '{MASK}' is too short; order o-1234")


def test_a_value_that_is_not_json_is_masked_as_text():
    masker = Masker(["payload.payment.card_number", "payload.payment.cvv", "payload.wallet.*"])
    raw = (b'{"event_id":"e","payload":{"payment":{"card_number":"4111111111111111",'
           b'"cvv": 123},"wallet":{"a":[1,"}"]},"order_id":"o-1"},}')
    masked = masker.mask_record(raw)
    assert masked.as_text and masked.value == (
        b'{"event_id":"e","payload":{"payment":{"card_number":"[masked]",'
        b'"cvv": "[masked]"},"wallet":"[masked]","order_id":"o-1"},}')
    assert masked.paths == ("payload.payment.card_number", "payload.payment.cvv",
                            "payload.wallet.*")
    assert masked.digest == __import__("hashlib").sha256(raw).hexdigest()
    assert dict(masked.headers("choreo.dlq.")) == {
        "choreo.dlq.masked": b"payload.payment.card_number,payload.payment.cvv,"
                             b"payload.wallet.*",
        "choreo.dlq.sha256": masked.digest.encode(), "choreo.dlq.masked-as": b"text"}
    assert masked.scrub("near 4111111111111111 and 123") == f"near {MASK} and {MASK}"
    # Truncated mid-value: masked to the end.
    assert masker.mask_record(b'{"payload":{"payment":{"card_number":"41111').value == (
        b'{"payload":{"payment":{"card_number":"[masked]"')
    # Nothing configured found: the value and no headers.
    assert masker.mask_record(b"{oops").value == b"{oops"
    assert masker.mask_record(b"{oops").headers("p.") == []


def test_mask_names_masks_any_shape_and_scrubs_text():
    masker = Masker(["payload.ssn"])
    data = {"input": {"ssn": "078-05-1120", "name": "A"}, "history": [
        {"what": "failed", "error": "bad ssn 078-05-1120"}], "results": {"s": {"ssn": 1}}}
    masked = masker.mask_names(data, masker.secrets({"payload": data["input"]}))
    assert masked == {"input": {"ssn": MASK, "name": "A"}, "history": [
        {"what": "failed", "error": f"bad ssn {MASK}"}], "results": {"s": {"ssn": MASK}}}
    assert data["input"]["ssn"] == "078-05-1120"  # a copy


# --- TLS and SASL settings ------------------------------------------------------------------

def test_plaintext_needs_no_options():
    settings = Settings.from_env({})
    assert settings.kafka_options() == {}
    assert settings.faust_credentials() is None


def test_sasl_scram_reaches_aiokafka_and_faust():
    settings = Settings.from_env({"CHOREO_SECURITY_PROTOCOL": "sasl_plaintext",
                                  "CHOREO_SASL_MECHANISM": "SCRAM-SHA-512",
                                  "CHOREO_SASL_USERNAME": "choreo",
                                  "CHOREO_SASL_PASSWORD": "hunter2-long"})
    assert settings.kafka_options() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "choreo", "sasl_plain_password": "hunter2-long"}
    creds = settings.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value, creds.protocol.value) == (
        "choreo", "hunter2-long", "SCRAM-SHA-512", "SASL_PLAINTEXT")
    assert "hunter2" not in repr(settings)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert credentials_to_aiokafka_auth(creds) == {**settings.kafka_options(),
                                                   "ssl_context": None}


def test_ssl_and_sasl_ssl_build_a_context():
    settings = Settings.from_env({"CHOREO_SECURITY_PROTOCOL": "SSL"})
    options = settings.kafka_options()
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    creds = settings.faust_credentials()
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    sasl_ssl = Settings.from_env({"CHOREO_SECURITY_PROTOCOL": "SASL_SSL",
                                  "CHOREO_SASL_MECHANISM": "SCRAM-SHA-256",
                                  "CHOREO_SASL_USERNAME": "u", "CHOREO_SASL_PASSWORD": "p"})
    creds = sasl_ssl.faust_credentials()
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-256"
    assert isinstance(sasl_ssl.kafka_options()["ssl_context"], ssl.SSLContext)


def test_a_missing_ca_file_fails_when_the_context_is_built(tmp_path):
    settings = Settings.from_env({"CHOREO_SECURITY_PROTOCOL": "SSL",
                                  "CHOREO_SSL_CAFILE": str(tmp_path / "ca.pem")})
    with pytest.raises(FileNotFoundError):
        settings.kafka_options()


@pytest.mark.parametrize(("env", "message"), [
    ({"CHOREO_SECURITY_PROTOCOL": "TLS"}, "CHOREO_SECURITY_PROTOCOL must be one of"),
    ({"CHOREO_SASL_MECHANISM": "GSSAPI"}, "CHOREO_SASL_MECHANISM must be one of"),
    ({"CHOREO_SECURITY_PROTOCOL": "SASL_SSL"}, "needs CHOREO_SASL_USERNAME"),
    ({"CHOREO_SSL_CAFILE": "/ca.pem"}, "CHOREO_SSL_CAFILE is set but"),
    ({"CHOREO_SECURITY_PROTOCOL": "SSL", "CHOREO_SSL_KEYFILE": "/k.pem"},
     "CHOREO_SSL_KEYFILE needs CHOREO_SSL_CERTFILE"),
])
def test_bad_kafka_security_settings_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="needs openssl")
def test_client_certificate_files_are_loaded(tmp_path):
    import subprocess

    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=choreo-test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    settings = Settings.from_env({"CHOREO_SECURITY_PROTOCOL": "SSL",
                                  "CHOREO_SSL_CAFILE": str(cert),
                                  "CHOREO_SSL_CERTFILE": str(cert),
                                  "CHOREO_SSL_KEYFILE": str(key)})
    context = settings.kafka_options()["ssl_context"]
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName",
                                                                   "choreo-test"),),)]
    assert settings.faust_credentials().context.get_ca_certs() == context.get_ca_certs()


def test_redrive_refuses_records_of_the_security_checks_and_masked_ones():
    from choreo.dead_letter import Origin, dead_letter_headers
    from choreo.kafka_io import Record
    from choreo.redrive import target_of

    def record(reason: str, *extra: tuple[str, bytes]) -> Record:
        headers = dead_letter_headers(reason, "d", Origin("events", 0, 1), "ingest")
        return Record("events.dlq", 0, 0, None, b"{}", tuple(headers) + extra, 0)

    allowed = ["events"]
    assert target_of(record("not_json"), allowed) == ("events", "")
    for reason in ("unsigned", "bad_signature", "unknown_key", "stale", "unauthorized"):
        target, why = target_of(record(reason), allowed)
        assert target is None and f"security checks ({reason})" in why
    target, why = target_of(record("late", ("choreo.dlq.masked", b"payload.card")), allowed)
    assert target is None and why.startswith("payload.card masked")
