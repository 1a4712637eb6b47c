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
mask = ["payload.payment.card_number"]

[security.publishers]
"shop.*" = ["order_received", "checkout_started"]
"agent.*" = ["*"]
"""
# The shop signs with the new key, the engine and its workers still with the old: both valid.
SHOP = Keyring({"k2": Key(K2.encode())}, signing="k2")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(f'sign_with = "k1"\n[keys]\nk1 = "{K1}"\nk2 = "{K2}"\n')
    return path


@pytest.fixture(scope="module")
def worker(make_worker, keys_file: Path) -> Worker:  # noqa: ANN001
    return make_worker(BUNDLED_CONFIG.read_text() + SECURITY,
                       env={"CHOREO_SIGNING_KEYS_FILE": str(keys_file)})


def signed(envelope: dict, ring: Keyring = SHOP, at: float | None = None) -> list:
    return sign(ring, event_from_mapping(envelope), time.time() if at is None else at)


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
    send(worker, worker.choreography.topics.events_topic, [
        (b"a", orjson.dumps(by_shop), signed(by_shop)),
        (b"b", orjson.dumps(by_engine_key), signed(by_engine_key, old_ring))])

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

    envelope = make("unsigned")
    cases["unsigned"] = (envelope, [])
    envelope = make("tampered")
    headers = signed(envelope)
    envelope["payload"]["order_value"] = 2000.0
    cases["tampered"] = (envelope, headers)
    envelope = make("wrongkey")
    cases["wrongkey"] = (envelope, signed(envelope, Keyring({"k2": Key(K1.encode())}, "k2")))
    envelope = make("retired")
    cases["retired"] = (envelope, signed(envelope, Keyring({"k0": Key(K1.encode())}, "k0")))
    envelope = make("stale")
    cases["stale"] = (envelope, signed(envelope, at=time.time() - 3600))
    envelope = make("intruder")
    envelope["source"] = "intruder"
    cases["intruder"] = (envelope, signed(envelope))
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
    send(worker, topics.capability_topic("inventory_management"), [
        (b"unsigned-" + suffix.encode(), raw, []),
        (b"forged-" + suffix.encode(), raw, sign(forger, action, time.time()))])
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
    send(worker, topics.events_topic, [(b"g", orjson.dumps(good), signed(good)),
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
                                   headers=signed(envelope, at=signed_at),
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
