"""Signatures: the canonical form, rotation, tampering, staleness, key files and variables."""

from __future__ import annotations

import base64
import dataclasses

import orjson
import pytest

from choreo.envelope import event_from_mapping, new_event
from choreo.signing import (
    AT_HEADER,
    KEY_HEADER,
    SIG_HEADER,
    Key,
    Keyring,
    KeyringError,
    canonical,
    load_keyring,
    may_sign,
    parse_key_file,
    parse_key_list,
    sign,
    signature_headers,
    verify,
)

NOW = 1_780_000_000.0
K1 = b"first-secret-of-32-bytes-length!"
K2 = b"second-secret-32-bytes-length!!!"
RING = Keyring({"k1": Key(K1), "k2": Key(K2)}, signing="k1")


def event(**overrides):  # noqa: ANN003, ANN201
    base = new_event("order_received", {"order_id": "o-1", "payment": {"card": "4242"},
                                        "value": 12.5},
                     source="shop.checkout", correlation_id="o-1", event_id="e-1",
                     timestamp="2026-05-01T10:00:00Z").as_dict()
    return event_from_mapping({**base, **overrides})


TOPIC, KEY = "choreo.events", b"o-1"


def check(ring: Keyring, value: bytes, headers, at: float | None = NOW + 0.2,  # noqa: ANN001, ANN201
          topic: str = TOPIC, key: bytes | None = KEY):
    return verify(ring, topic, key, value, headers, at, max_age=300, max_skew=30)


def signed(ring: Keyring = RING, value: bytes | None = None, topic: str = TOPIC,  # noqa: ANN201
           key: bytes | None = KEY, at: float = NOW):
    return sign(ring, topic, key, event().to_bytes() if value is None else value, at)


def test_the_canonical_form_binds_version_key_time_topic_kafka_key_and_bytes():
    value = event().to_bytes()
    form = canonical(TOPIC, KEY, value, "k1", 1)
    assert form == b'["choreo-sig-v2","k1",1,"choreo.events","by0x"]\n' + value
    assert canonical(TOPIC, None, value, "k1", 1).startswith(
        b'["choreo-sig-v2","k1",1,"choreo.events",null]\n')
    variants = {canonical(TOPIC, KEY, value, "k1", 2), canonical(TOPIC, KEY, value, "k2", 1),
                canonical("choreo.actions.x", KEY, value, "k1", 1),
                canonical(TOPIC, b"o-2", value, "k1", 1), canonical(TOPIC, None, value, "k1", 1),
                canonical(TOPIC, KEY, value + b" ", "k1", 1)}
    assert form not in variants and len(variants) == 6


def test_a_signed_record_verifies_with_headers_as_pairs_or_a_mapping():
    headers = signed()
    assert {name for name, _ in headers} == {SIG_HEADER, KEY_HEADER, AT_HEADER}
    assert check(RING, event().to_bytes(), headers) is None
    assert check(RING, event().to_bytes(), dict(headers)) is None


def test_the_signature_covers_the_raw_bytes_so_it_is_checked_before_parsing():
    junk = b'{"not": "an envelope",}' + b"x" * 5000
    assert check(RING, junk, signed(value=junk)) is None
    assert check(RING, junk, []).reason == "unsigned"
    # Re-serialised (same data, other bytes): no longer the record that was signed.
    value = event().to_bytes()
    spaced = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2)
    assert check(RING, spaced, signed(value=value)).reason == "bad_signature"


def test_a_record_moved_to_another_topic_or_key_is_a_bad_signature():
    value = event().to_bytes()
    headers = signed(value=value, topic="choreo.actions.payment_processing")
    assert check(RING, value, headers, topic="choreo.actions.payment_processing") is None
    moved = check(RING, value, headers, topic="choreo.actions.inventory_management")
    assert moved.reason == "bad_signature" and "topic" in moved.detail
    assert check(RING, value, headers, topic="choreo.actions.payment_processing",
                 key=b"o-2").reason == "bad_signature"
    assert check(RING, value, headers, topic="choreo.actions.payment_processing",
                 key=None).reason == "bad_signature"


def test_two_keys_are_valid_at_once_and_a_retired_one_is_refused():
    value = event().to_bytes()
    assert check(RING, value, signed(dataclasses.replace(RING, signing="k2"))) is None
    assert check(RING, value, signed()) is None
    retired = Keyring({"k2": Key(K2)}, signing="k2")
    refusal = check(retired, value, signed())
    assert refusal.reason == "unknown_key" and "'k1'" in refusal.detail


@pytest.mark.parametrize("field", ["event_id", "event_type", "timestamp", "source", "payload",
                                   "metadata"])
def test_tampering_with_any_field_breaks_the_signature(field):
    ev = event()
    headers = signed()
    changed = {"event_id": "e-2", "event_type": "order_cancelled",
               "timestamp": "2026-05-01T10:00:01Z", "source": "shop.evil",
               "payload": {**ev.payload, "value": 1250.0},
               "metadata": {**ev.metadata, "correlation_id": "o-2"}}[field]
    refusal = check(RING, event(**{field: changed}).to_bytes(), headers)
    assert refusal is not None and refusal.reason == "bad_signature"


@pytest.mark.parametrize("header", [KEY_HEADER, AT_HEADER])
def test_tampering_with_the_key_id_or_the_time_breaks_it(header):
    headers = dict(signed())
    headers[header] = b"k2" if header == KEY_HEADER else str(int(NOW * 1000) + 1).encode()
    assert check(RING, event().to_bytes(), headers).reason == "bad_signature"


def test_a_wrong_secret_under_a_known_key_id_is_a_bad_signature():
    forged = Keyring({"k1": Key(b"guessed-secret-32-bytes-long!!!!")}, signing="k1")
    assert check(RING, event().to_bytes(), signed(forged)).reason == "bad_signature"


def test_unsigned_and_incomplete_signatures():
    value = event().to_bytes()
    assert check(RING, value, []).reason == "unsigned"
    assert check(RING, value, None).reason == "unsigned"
    assert check(RING, value, [("other", b"x")]).reason == "unsigned"
    only_sig = [h for h in signed() if h[0] == SIG_HEADER]
    assert check(RING, value, only_sig).reason == "bad_signature"
    bad_at = {**dict(signed()), AT_HEADER: b"soon"}
    assert check(RING, value, bad_at).reason == "bad_signature"


def test_a_signature_too_old_or_too_far_ahead_is_stale_unless_age_is_not_judged():
    value, headers = event().to_bytes(), signed()
    assert check(RING, value, headers, at=NOW + 299) is None
    old = check(RING, value, headers, at=NOW + 301)
    assert old.reason == "stale" and "301.0s before" in old.detail
    assert check(RING, value, headers, at=NOW - 29) is None
    ahead = check(RING, value, headers, at=NOW - 31)
    assert ahead.reason == "stale" and "after" in ahead.detail
    assert check(RING, value, headers, at=None) is None  # a re-drive judges authenticity only


def test_a_tampered_stale_record_is_a_bad_signature_not_stale():
    headers = signed()
    tampered = event(source="x").to_bytes()
    assert check(RING, tampered, headers, at=NOW + 3600).reason == "bad_signature"


def test_a_key_bound_to_sources_signs_only_for_them():
    ring = Keyring({"shop": Key(K1, ("shop.*",))}, signing="shop")
    assert may_sign(ring, signed(ring), "shop.checkout") is None
    refusal = may_sign(ring, signed(ring), "agent.payment_processing")
    assert refusal.reason == "unauthorized" and "'shop'" in refusal.detail


def test_signature_headers_picks_only_its_own():
    headers = [("choreo.sig", b"a"), ("x", b"b"), ("choreo.sig.key", "k")]
    assert signature_headers(headers) == {"choreo.sig": b"a", "choreo.sig.key": b"k"}


def test_the_keyring_never_shows_its_secrets():
    assert "first-secret" not in repr(RING) and "first-secret" not in str(RING.keys)


# --- key files and variables ----------------------------------------------------------------

def test_a_key_file_with_plain_encoded_and_bound_keys(tmp_path):
    b64 = base64.b64encode(K2).decode()
    text = f"""
sign_with = "2026-02"
[keys]
"2026-01" = "{K1.decode()}"
"2026-02" = {{ secret = "base64:{b64}", sources = ["choreo.engine", "agent.*"] }}
hexed = "hex:{K1.hex()}"
"""
    keys, signing = parse_key_file(text, "keys.toml")
    assert signing == "2026-02"
    assert keys["2026-01"].secret == K1 and keys["hexed"].secret == K1
    assert keys["2026-02"] == Key(K2, ("choreo.engine", "agent.*"))
    path = tmp_path / "keys.toml"
    path.write_text(text)
    ring = load_keyring([path])
    assert ring.signing == "2026-02" and set(ring.keys) == {"2026-01", "2026-02", "hexed"}


@pytest.mark.parametrize(("text", "message"), [
    ("[keys]\nk = 'short'", "5 bytes; use at least 16"),
    ("[keys]\nk = 'base64:@@@'", "not valid base64"),
    ("[keys]\nk = 'hex:zz'", "not valid hex"),
    ("sign_with = 'k2'\n[keys]\nk = '0123456789abcdefgh'", "not in [keys]"),
    ("[keys]\n", "at least one key"),
    ("secret = 'x'", "unknown field 'secret'"),
    ("[keys]\n'bad id' = '0123456789abcdefgh'", "a key id is"),
    ("[keys]\nk = { secret = '0123456789abcdefgh', source = [] }", "unknown field 'source'"),
    ("[keys]\nk = { secret = '0123456789abcdefgh', sources = 'x' }", "list of source globs"),
    ("[keys", "not valid TOML"),
])
def test_a_bad_key_file_says_where_and_why(text, message):
    with pytest.raises(KeyringError, match="keys.toml") as err:
        parse_key_file(text, "keys.toml")
    assert message in str(err.value)


def test_keys_from_a_variable_merge_with_the_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f"[keys]\nk1 = '{K1.decode()}'\n")
    b64 = base64.b64encode(K2).decode()
    ring = load_keyring([path], f"k2=base64:{b64}, k1={K1.decode()}", sign_with="k2")
    assert ring.signing == "k2" and ring.keys["k2"].secret == K2
    assert parse_key_list(f"a={K1.decode()}\nb=hex:{K2.hex()}", "X") == {
        "a": Key(K1), "b": Key(K2)}
    with pytest.raises(KeyringError, match="defined twice"):
        load_keyring([path], f"k1=hex:{K2.hex()}")
    with pytest.raises(KeyringError, match="CHOREO_SIGNING_KEY_ID names 'k9'"):
        load_keyring([path], sign_with="k9")
    with pytest.raises(KeyringError, match="without '='"):
        parse_key_list("justasecret", "CHOREO_SIGNING_KEYS")
    with pytest.raises(KeyringError, match="cannot read key file"):
        load_keyring([tmp_path / "missing.toml"])
