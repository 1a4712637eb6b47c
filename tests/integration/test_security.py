"""Signatures, publishers and masking on a real broker, through a real worker."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import uuid
from pathlib import Path

import orjson
import pytest

from choreo import cli
from choreo.actions import build_action
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import event_from_mapping
from choreo.kafka_io import envelopes, send_all
from choreo.samples import CARD_OK, order
from choreo.settings import BUNDLED_CONFIG
from choreo.signing import Key, Keyring, sign
from tests.integration.conftest import Worker, wait_until

K1 = "k1-integration-secret-0123456789"
K2 = "k2-integration-secret-0123456789"
SECURITY = """
[security]
require_signatures = true
max_age = "5m"
mask = ["payload.payment.card_number", "payload.payment.cvv"]

[security.publishers]
"shop.*" = ["order_received", "checkout_started"]
"agent.*" = ["*"]

[schemas.types."order_received"]
type = "object"
properties = { payment = { type = "object", properties = { cvv = { type = "string", pattern = "^[0-9]{4}$" } } } }
"""  # noqa: E501
# Forgeries larger than this are still refused as forgeries, not as too large.
MAX_EVENT_BYTES = 4096
# The shop signs with the new key, the engine and its workers still with the old: both valid.
SHOP = Keyring({"k2": Key(K2.encode())}, signing="k2")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(f'sign_with = "k1"\n[keys]\nk1 = "{K1}"\nk2 = "{K2}"\n')
    return path


@pytest.fixture(scope="module")
def worker(make_worker, keys_file: Path) -> Worker:  # noqa: ANN001
    config = BUNDLED_CONFIG.read_text().replace(
        'idle_timeout = "30s"\n', f'idle_timeout = "30s"\nmax_event_bytes = {MAX_EVENT_BYTES}\n', 1)
    return make_worker(config + SECURITY, env={"CHOREO_SIGNING_KEYS_FILE": str(keys_file)})


def signed(envelope: dict, ring: Keyring = SHOP, at: float | None = None, *,
           key: bytes | None, topic: str) -> list:
    """Signature headers for `orjson.dumps(envelope)` sent to `topic` with `key`."""
    return sign(ring, topic, key, orjson.dumps(envelope), time.time() if at is None else at)


def run_cli(worker: Worker, keys_file: Path, monkeypatch, capsys, *args: str  # noqa: ANN001
            ) -> tuple[int, str]:
    """`choreo <args>` against the worker's broker and file; (exit code, stdout + stderr)."""
    monkeypatch.setenv("CHOREO_BROKER", worker.broker.url)
    monkeypatch.setenv("CHOREO_CONFIG", str(worker.config_path))
    monkeypatch.setenv("CHOREO_SIGNING_KEYS_FILE", str(keys_file))
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def send(worker: Worker, topic: str, records: list[tuple]) -> None:
    asyncio.run(send_all(worker.broker.bootstrap, topic, records))


def flow(worker: Worker, correlation_id: str) -> list[dict]:
    topics = worker.choreography.topics
    names = [topics.events_topic,
             *(topics.capability_topic(c) for c in worker.choreography.capabilities)]
    return [e for e in envelopes(worker.read(*names))
            if e["metadata"].get("correlation_id") == correlation_id]


def test_signed_events_fire_and_the_flow_runs_signed_end_to_end(worker: Worker):
    suffix = uuid.uuid4().hex[:6]
    by_shop = order(f"ord-k2-{suffix}", [("SKU-BOOK", 1)], 20.0)
    by_engine_key = order(f"ord-k1-{suffix}", [("SKU-BOOK", 1)], 20.0)
    old_ring = Keyring({"k1": Key(K1.encode())}, signing="k1")
    events = worker.choreography.topics.events_topic
    send(worker, worker.choreography.topics.events_topic, [
        (b"a", orjson.dumps(by_shop), signed(by_shop, key=b"a", topic=events)),
        (b"b", orjson.dumps(by_engine_key),
         signed(by_engine_key, old_ring, key=b"b", topic=events))])

    def paid(correlation_id: str) -> bool:
        return any(e["event_type"] == "payment_successful" for e in flow(worker, correlation_id))

    for envelope in (by_shop, by_engine_key):
        # The engine's signed actions were verified by the workers, and their signed results
        # (inventory_confirmed) by the engine again: payment comes two hops later.
        wait_until(lambda e=envelope: paid(e["metadata"]["correlation_id"]), timeout=90)
    topics = worker.choreography.topics
    actions = worker.read(topics.capability_topic("inventory_management"))
    assert actions and all(dict(r.headers)["choreo.sig.key"] == b"k1" for r in actions)
    results = [r for r in worker.read(topics.events_topic)
               if (r.envelope() or {}).get("source", "").startswith("agent.")]
    assert results and all("choreo.sig" in dict(r.headers) for r in results)


def test_refused_events_are_dead_lettered_with_reason_and_bytes(worker: Worker):
    suffix = uuid.uuid4().hex[:6]
    cases: dict[str, tuple[dict, list]] = {}

    def make(case: str) -> dict:
        envelope = order(f"ord-{case}-{suffix}", [("SKU-BOOK", 1)], 20.0)
        envelope["payload"]["payment"] = {"method": "invoice"}  # nothing masked
        return envelope

    events = worker.choreography.topics.events_topic

    def key(case: str) -> bytes:
        return f"{case}-{suffix}".encode()

    envelope = make("unsigned")
    cases["unsigned"] = (envelope, [])
    envelope = make("tampered")
    headers = signed(envelope, key=key("tampered"), topic=events)
    envelope["payload"]["order_value"] = 2000.0
    cases["tampered"] = (envelope, headers)
    envelope = make("wrongkey")
    cases["wrongkey"] = (envelope, signed(envelope, Keyring({"k2": Key(K1.encode())}, "k2"),
                                          key=key("wrongkey"), topic=events))
    envelope = make("retired")
    cases["retired"] = (envelope, signed(envelope, Keyring({"k0": Key(K1.encode())}, "k0"),
                                         key=key("retired"), topic=events))
    envelope = make("stale")
    cases["stale"] = (envelope, signed(envelope, at=time.time() - 3600, key=key("stale"),
                                       topic=events))
    envelope = make("intruder")
    envelope["source"] = "intruder"
    cases["intruder"] = (envelope, signed(envelope, key=key("intruder"), topic=events))
    expected = {"unsigned": "unsigned", "tampered": "bad_signature",
                "wrongkey": "bad_signature", "retired": "unknown_key", "stale": "stale",
                "intruder": "unauthorized"}
    topics = worker.choreography.topics
    sent = {case: orjson.dumps(env) for case, (env, _h) in cases.items()}
    send(worker, topics.events_topic,
         [(f"{case}-{suffix}".encode(), sent[case], headers)
          for case, (_env, headers) in cases.items()])

    def dead() -> dict[str, object]:
        found = {r.key.decode().split("-")[0]: r for r in worker.read(topics.dead_letter_topic)
                 if r.key and r.key.decode().endswith(suffix)}
        return found if len(found) == len(cases) else {}

    found = wait_until(dead, timeout=60)
    for case, record in found.items():
        info = read_dead_letter_headers(record.headers)
        assert info["reason"] == expected[case], (case, info)
        assert info["stage"] == "ingest"
        assert record.value == sent[case], f"{case}: original bytes kept"
    assert worker.metric("choreo_dead_lettered_total", reason="bad_signature") >= 2
    assert worker.metric("choreo_dead_lettered_total", reason="stale") >= 1
    fired = [a for a in envelopes(worker.read(topics.capability_topic("inventory_management")))
             if a["metadata"].get("correlation_id", "").endswith(suffix)]
    assert fired == []


def test_a_forged_action_is_refused_by_the_worker(worker: Worker):
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    trigger = event_from_mapping(order(f"ord-forged-{suffix}", [("SKU-BOOK", 1)], 20.0))
    action = build_action(pattern_id="order-received", action="check_inventory",
                          capability="inventory_management", priority=1,
                          triggers=[trigger]).event
    forger = Keyring({"k9": Key(K2.encode())}, signing="k9")
    raw = action.to_bytes()
    inventory = topics.capability_topic("inventory_management")
    forged_key = b"forged-" + suffix.encode()
    send(worker, inventory, [
        (b"unsigned-" + suffix.encode(), raw, []),
        (forged_key, raw, sign(forger, inventory, forged_key, raw, time.time()))])
    dlq = topics.capability_dead_letter_topic("inventory_management")

    def refused() -> list:
        found = [r for r in worker.read(dlq) if r.key and r.key.decode().endswith(suffix)]
        return found if len(found) == 2 else []

    records = wait_until(refused, timeout=60)
    reasons = sorted(read_dead_letter_headers(r.headers)["reason"] for r in records)
    assert reasons == ["unknown_key", "unsigned"]
    assert all(CARD_OK.encode() not in r.value for r in records)
    time.sleep(2)
    assert not [e for e in flow(worker, f"ord-forged-{suffix}")
                if e["metadata"].get("causation_id") == action.event_id], "handler never ran"


def test_masked_fields_stay_out_of_dead_letters_and_views(worker: Worker, keys_file: Path,
                                                          monkeypatch, capsys):
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    good = order(f"ord-mask-{suffix}", [("SKU-BOOK", 1)], 20.0)
    bad = order(f"ord-maskbad-{suffix}", [("SKU-BOOK", 1)], 20.0)
    send(worker, topics.events_topic, [
        (b"g", orjson.dumps(good), signed(good, key=b"g", topic=topics.events_topic)),
        (b"bad-" + suffix.encode(), orjson.dumps(bad), [])])
    cid = good["metadata"]["correlation_id"]
    wait_until(lambda: any(e["event_type"] == "payment_successful" for e in flow(worker, cid)),
               timeout=90)

    def dead() -> list:
        return [r for r in worker.read(topics.dead_letter_topic)
                if r.key == b"bad-" + suffix.encode()]

    [record] = wait_until(dead, timeout=60)
    info = read_dead_letter_headers(record.headers)
    assert info["reason"] == "unsigned" and info["masked"] == "payload.payment.card_number"
    assert CARD_OK.encode() not in record.value
    assert orjson.loads(record.value)["payload"]["order_id"] == bad["payload"]["order_id"]

    for path in (f"/correlations/{cid}/", f"/correlations/{cid}/events/",
                 f"/correlations/{cid}/trail/?lifecycle=1",
                 f"/patterns/order-to-shipment/state/{cid}/"):
        body = worker.get(path)
        assert cid.encode() in body and CARD_OK.encode() not in body, path
    with pytest.raises(urllib.error.HTTPError) as err:  # Faust's raw table dump is off
        worker.get("/table/pattern-state/")
    assert err.value.code == 404

    monkeypatch.setenv("CHOREO_BROKER", worker.broker.url)
    monkeypatch.setenv("CHOREO_CONFIG", str(worker.config_path))
    monkeypatch.setenv("CHOREO_SIGNING_KEYS_FILE", str(keys_file))
    assert cli.main(["dead-letters", "--last", "1000"]) == 0
    out = capsys.readouterr().out
    assert "unsigned" in out and CARD_OK not in out


def test_choreo_produce_signs_with_the_configured_key(worker: Worker, keys_file: Path,
                                                      tmp_path: Path, monkeypatch):
    suffix = uuid.uuid4().hex[:6]
    line = order(f"ord-cli-{suffix}", [("SKU-BOOK", 1)], 20.0)
    line["source"] = "shop.cli"
    path = tmp_path / "orders.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")
    monkeypatch.setenv("CHOREO_BROKER", worker.broker.url)
    monkeypatch.setenv("CHOREO_CONFIG", str(worker.config_path))
    monkeypatch.setenv("CHOREO_SIGNING_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("CHOREO_SIGNING_KEY_ID", "k2")
    assert cli.main(["produce", str(path), "--quiet"]) == 0
    inventory = worker.choreography.topics.capability_topic("inventory_management")
    wait_until(lambda: [a for a in envelopes(worker.read(inventory))
                        if a["metadata"].get("correlation_id") == f"ord-cli-{suffix}"],
               timeout=60)


def test_a_backdated_replay_is_still_stale(worker: Worker):
    """The events topic is created with LogAppendTime: the broker dates records, not the
    producer, so a replay whose record timestamp claims the signing time is still stale."""
    from choreo.kafka_io import producer

    suffix = uuid.uuid4().hex[:6]
    envelope = order(f"ord-backdated-{suffix}", [("SKU-BOOK", 1)], 20.0)
    envelope["payload"]["payment"] = {"method": "invoice"}
    signed_at = time.time() - 3600
    topic = worker.choreography.topics.events_topic

    async def replay() -> None:
        prod = producer(worker.broker.bootstrap)
        await prod.start()
        try:
            await (await prod.send(topic, value=orjson.dumps(envelope), key=suffix.encode(),
                                   headers=signed(envelope, at=signed_at,
                                                  key=suffix.encode(), topic=topic),
                                   timestamp_ms=int(signed_at * 1000)))
        finally:
            await prod.stop()

    asyncio.run(replay())
    [record] = wait_until(lambda: [r for r in worker.read(topic) if r.key == suffix.encode()])
    assert record.timestamp_ms > (signed_at + 3000) * 1000, "the broker's time, not ours"
    dead = wait_until(lambda: [r for r in worker.read(worker.choreography.topics
                                                      .dead_letter_topic)
                               if r.key == suffix.encode()])
    assert read_dead_letter_headers(dead[0].headers)["reason"] == "stale"


def redrive(worker: Worker, keys_file: Path, monkeypatch, capsys,  # noqa: ANN001
            *args: str) -> tuple[int, str]:
    """`choreo redrive` with a group of its own (so it reads the whole dead-letter topic)."""
    return run_cli(worker, keys_file, monkeypatch, capsys, "redrive", "--group",
                   f"g-{uuid.uuid4().hex[:8]}", *args)


def test_a_forgery_over_the_size_limit_is_unsigned_and_redrive_refuses_it(
        worker: Worker, keys_file: Path, monkeypatch, capsys):
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    forged = order(f"ord-big-{suffix}", [("SKU-BOOK", 1)], 20.0)
    forged["source"] = "shop.web"
    forged["payload"]["note"] = "x" * (MAX_EVENT_BYTES + 1000)
    key = f"big-{suffix}".encode()
    send(worker, topics.events_topic, [(key, orjson.dumps(forged), [])])
    [record] = wait_until(lambda: [r for r in worker.read(topics.dead_letter_topic)
                                   if r.key == key])
    assert read_dead_letter_headers(record.headers)["reason"] == "unsigned"

    code, out = redrive(worker, keys_file, monkeypatch, capsys)
    assert code == 1
    line = next(x for x in out.splitlines()
                if x.startswith(f"{record.topic}:{record.partition}@{record.offset} "))
    assert "unsigned" in line and "cannot re-drive" in line, line
    time.sleep(2)
    assert len([r for r in worker.read(topics.events_topic) if r.key == key]) == 1, (
        "never sent back")
    cid = forged["metadata"]["correlation_id"]
    assert not [e for e in flow(worker, cid) if e["event_type"] != "order_received"]


def test_a_forged_record_on_a_capability_dead_letter_topic_is_refused_by_redrive(
        worker: Worker, keys_file: Path, monkeypatch, capsys):
    """Written straight to the dead-letter topic, with dead-letter headers claiming a
    handler error and a signature made with a guessed secret under the engine's key id."""
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    capability = "order_management"
    target, dlq = topics.capability_topic(capability), topics.capability_dead_letter_topic(
        capability)
    trigger = event_from_mapping(order(f"ord-cancel-{suffix}", [("SKU-BOOK", 1)], 20.0))
    action = build_action(pattern_id="payment-failed-cancel", action="cancel_order",
                          capability=capability, priority=8, triggers=[trigger]).event
    raw = action.to_bytes()
    guessed = Keyring({"k1": Key(b"guessed-secret-0123456789abcdef")}, signing="k1")
    dlq_headers = [("choreo.dlq.reason", b"handler_error"), ("choreo.dlq.topic", target.encode()),
                   ("choreo.dlq.partition", b"0"), ("choreo.dlq.offset", b"0"),
                   ("choreo.dlq.stage", f"worker.{capability}".encode())]
    forged_key, bare_key = f"forged-{suffix}".encode(), f"bare-{suffix}".encode()
    send(worker, dlq, [
        (forged_key, raw, dlq_headers + sign(guessed, target, forged_key, raw, time.time())),
        (bare_key, raw, dlq_headers)])

    code, out = redrive(worker, keys_file, monkeypatch, capsys, "--capability", capability)
    assert code == 1
    assert "re-drove 0 record(s)" in out and "2 could not be re-driven" in out, out
    refused = [x for x in out.splitlines() if "cannot re-drive" in x]
    assert any("bad_signature" in x for x in refused), out
    assert any("unsigned" in x for x in refused), out
    time.sleep(2)
    assert not [r for r in worker.read(target) if r.key in (forged_key, bare_key)]


def test_an_engine_signed_action_copied_to_another_topic_or_key_is_refused(worker: Worker):
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    envelope = order(f"ord-copy-{suffix}", [("SKU-BOOK", 1)], 20.0)
    send(worker, topics.events_topic,
         [(b"c", orjson.dumps(envelope), signed(envelope, key=b"c", topic=topics.events_topic))])
    cid = envelope["metadata"]["correlation_id"]
    inventory = topics.capability_topic("inventory_management")
    [action] = wait_until(lambda: [r for r in worker.read(inventory)
                                   if (r.envelope() or {}).get("metadata", {})
                                   .get("correlation_id") == cid], timeout=60)
    payment = topics.capability_topic("payment_processing")
    send(worker, payment, [(action.key, action.value, list(action.headers))])
    send(worker, inventory, [(b"other-" + suffix.encode(), action.value, list(action.headers))])

    def refused(capability: str, key: bytes) -> list:
        return [r for r in worker.read(topics.capability_dead_letter_topic(capability))
                if r.key == key]

    [copied] = wait_until(lambda: refused("payment_processing", action.key), timeout=60)
    [rekeyed] = wait_until(lambda: refused("inventory_management", b"other-" + suffix.encode()),
                           timeout=60)
    for record in (copied, rekeyed):
        assert read_dead_letter_headers(record.headers)["reason"] == "bad_signature"


def test_a_trailing_comma_envelope_and_a_short_cvv_stay_out_of_dead_letters_logs_and_page(
        worker: Worker):
    """Masking needs no JSON: a value that does not parse is masked as text; and a
    3-character CVV is scrubbed from the detail of a schema violation that quotes it."""
    suffix = uuid.uuid4().hex[:6]
    topics = worker.choreography.topics
    card, cvv = "4111111111111111", "Q7x"  # letters: no accidental match in digests or times
    comma = order(f"ord-comma-{suffix}", [("SKU-BOOK", 1)], 20.0, card=card)
    comma["payload"]["payment"]["cvv"] = cvv
    schema = order(f"ord-cvv-{suffix}", [("SKU-BOOK", 1)], 20.0, card=card)
    schema["payload"]["payment"]["cvv"] = cvv  # the schema wants 4 digits
    comma_key, schema_key = f"comma-{suffix}".encode(), f"cvv-{suffix}".encode()
    comma_raw = orjson.dumps(comma)[:-1] + b",}"
    send(worker, topics.events_topic, [
        (comma_key, comma_raw, sign(SHOP, topics.events_topic, comma_key, comma_raw,
                                    time.time())),
        (schema_key, orjson.dumps(schema),
         signed(schema, key=schema_key, topic=topics.events_topic))])

    def dead() -> dict[bytes, object]:
        found = {r.key: r for r in worker.read(topics.dead_letter_topic)
                 if r.key in (comma_key, schema_key)}
        return found if len(found) == 2 else {}

    found = wait_until(dead, timeout=60)
    infos = {k: read_dead_letter_headers(r.headers) for k, r in found.items()}
    assert infos[comma_key]["reason"] == "not_json"
    assert infos[comma_key]["masked-as"] == "text"
    assert infos[schema_key]["reason"] == "schema_violation"
    assert "payload.payment.cvv" in infos[schema_key]["detail"]
    assert "[masked]" in infos[schema_key]["detail"]
    for record in found.values():
        assert card.encode() not in record.value and cvv.encode() not in record.value
        for _name, value in record.headers:
            assert card.encode() not in value and cvv.encode() not in value
    assert f"ord-comma-{suffix}".encode() in found[comma_key].value, "the rest is kept"

    def page() -> bytes:
        body = worker.get("/ui/dead-letters/")
        return body if all(k in body for k in (comma_key, schema_key)) else b""

    body = wait_until(page, timeout=30, every=2)  # the page caches for a few seconds
    assert b"payload.payment.cvv" in body
    assert card.encode() not in body and cvv.encode() not in body
    log = (worker.data_dir.parent / f"{worker.name}.log").read_bytes()
    assert b"schema_violation (payload.payment.cvv" in log
    assert card.encode() not in log and cvv.encode() not in log
