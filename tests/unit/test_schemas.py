"""Event schemas: load errors name their field; events pass or fail with a path and a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from choreo.config import ConfigError, load_choreography, parse_choreography
from choreo.envelope import InvalidEvent

PATTERN = """
[[patterns]]
id = "order-received"
kind = "event"
on = "order_received"
action = "check_inventory"
capability = "inventory_management"
"""

ORDER = {"type": "object", "required": ["order_id"],
         "properties": {"order_id": {"type": "string"},
                        "items": {"type": "array",
                                  "items": {"type": "object",
                                            "properties": {"quantity": {"type": "integer",
                                                                        "minimum": 1}}}}}}


def issues_of(text: str, tmp_path: Path | None = None) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        if tmp_path is None:
            parse_choreography(text)
        else:
            (tmp_path / "c.toml").write_text(text)
            load_choreography(tmp_path / "c.toml")
    return [(i.pattern_id, i.field, i.reason) for i in caught.value.issues]


def write_folder(tmp_path: Path, files: dict[str, object]) -> Path:
    folder = tmp_path / "schemas"
    folder.mkdir()
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / name).write_text(text)
    return folder


# --- loading ---------------------------------------------------------------------------------

def test_no_schemas_table_means_no_registry():
    assert parse_choreography(PATTERN).schemas is None


def test_folder_inline_and_base_load_together(tmp_path: Path):
    write_folder(tmp_path, {"order_received.json": ORDER, "memory.*.json": {"type": "object"},
                            "README.md": "not a schema"})
    text = PATTERN + """
[schemas]
folder = "schemas/"
base = { required = ["metadata"] }
[schemas.types."payment_failed"]
required = ["order_id"]
"""
    (tmp_path / "c.toml").write_text(text)
    schemas = load_choreography(tmp_path / "c.toml").schemas
    assert schemas is not None and len(schemas) == 4
    assert schemas.describe() == {
        "base": "inline",
        "types": {"order_received": str(tmp_path / "schemas/order_received.json"),
                  "payment_failed": "inline",
                  "memory.*": str(tmp_path / "schemas/memory.*.json")}}


@pytest.mark.parametrize(("schemas", "files", "field", "reason"), [
    pytest.param('[schemas.types."order_received"]\ntype = "objekt"', {},
                 "schemas.order_received", "not a valid JSON Schema at type: 'objekt' is not valid",
                 id="inline-bad-type"),
    pytest.param('[schemas.types."order_received"]\nrequired = "order_id"', {},
                 "schemas.order_received", "not a valid JSON Schema at required",
                 id="inline-required-not-list"),
    pytest.param('[schemas]\nbase = { minProperties = -1 }', {},
                 "schemas.base", "not a valid JSON Schema at minProperties", id="bad-base"),
    pytest.param('[schemas]\nbase = 3', {},
                 "schemas.base", "must be a table (a JSON Schema) or the path", id="base-number"),
    pytest.param('[schemas]\nbase = "nowhere.json"', {},
                 "schemas.base", "cannot read", id="base-file-missing"),
    pytest.param('[schemas]\nfolder = "schemas"', {"order_received.json": "{not json"},
                 "schemas.order_received", "is not JSON", id="file-not-json"),
    pytest.param('[schemas]\nfolder = "schemas"', {"order_received.json": "[1, 2]"},
                 "schemas.order_received", "a JSON Schema is an object", id="file-a-list"),
    pytest.param('[schemas]\nfolder = "schemas"',
                 {"order_received.json": {"$schema": "http://example.com/mine"}},
                 "schemas.order_received", "unknown $schema", id="unknown-dialect"),
    pytest.param('[schemas]\nfolder = "schemas"',
                 {"order_received.json": {"$schema": "http://json-schema.org/draft-07/schema#",
                                          "exclusiveMinimum": True}},
                 "schemas.order_received", "not a valid JSON Schema at exclusiveMinimum",
                 id="draft-7-checked-as-draft-7"),
    pytest.param('[schemas]\nfolder = "schemas"\n[schemas.types."order_received"]\ntype = "object"',
                 {"order_received.json": {"type": "object"}},
                 "schemas.order_received", "defined twice", id="file-and-inline"),
    pytest.param('[schemas]\nfolder = "nowhere"', {},
                 "schemas.folder", "is not a folder", id="missing-folder"),
    pytest.param('[schemas]\nfolder = 3', {}, "schemas.folder", "must be a path", id="folder-int"),
    pytest.param('[schemas]\nfolders = "schemas"', {},
                 "schemas.folders", "unknown field; expected one of folder, base, types",
                 id="unknown-field"),
    pytest.param('[schemas]\ntypes = 3', {}, "schemas.types", "must be a table", id="types-int"),
    pytest.param('[schemas.types]\n"order received" = { type = "object" }', {},
                 "schemas.order received", "must be named for an event type", id="bad-name"),
    pytest.param('[schemas.types]\norder_received = 3', {},
                 "schemas.order_received", "must be a table", id="type-not-table"),
])
def test_a_bad_schema_stops_the_load_naming_its_field(tmp_path: Path, schemas: str,
                                                      files: dict, field: str, reason: str):
    write_folder(tmp_path, files)
    found = issues_of(PATTERN + "\n" + schemas + "\n", tmp_path)
    assert [(pid, f) for pid, f, _ in found] == [("-", field)], found
    assert reason in found[0][2], found


def test_every_bad_schema_is_listed_at_once():
    text = PATTERN + """
[schemas]
base = { type = 1 }
[schemas.types]
a = { type = "nope" }
b = { required = [1] }
"""
    assert [f for _, f, _ in issues_of(text)] == ["schemas.a", "schemas.b", "schemas.base"]


# --- validation --------------------------------------------------------------------------------

@pytest.fixture
def registry(tmp_path: Path):
    write_folder(tmp_path, {"order_received.json": ORDER,
                            "memory.*.json": {"type": "object", "required": ["key"]}})
    text = PATTERN + """
[schemas]
folder = "schemas"
[schemas.base]
required = ["metadata"]
properties = { metadata = { type = "object", required = ["correlation_id"] } }
[schemas.types."memory.create.completed"]
properties = { key = { type = "string", maxLength = 8 } }
"""
    (tmp_path / "c.toml").write_text(text)
    return load_choreography(tmp_path / "c.toml").schemas


def test_a_valid_event_passes(registry, event_factory):
    event = event_factory("order_received", {"order_id": "o-1", "items": [{"quantity": 2}]})
    assert registry.violation(event) is None
    registry.check(event)  # does not raise


def test_a_type_without_schema_passes_the_base_only(registry, event_factory):
    assert registry.violation(event_factory("payment_failed", {"anything": 1})) is None
    assert registry.violation(event_factory("payment_failed", correlation_id=None)) == (
        "metadata: 'correlation_id' is a required property (schema base)")


def test_the_payload_violation_names_its_path(registry, event_factory):
    event = event_factory("order_received", {"order_id": "o-1",
                                             "items": [{"quantity": 1}, {"quantity": 0}]})
    with pytest.raises(InvalidEvent) as caught:
        registry.check(event)
    assert caught.value.reason == "schema_violation"
    assert caught.value.detail == (
        "payload.items[1].quantity: 0 is less than the minimum of 1 (schema order_received)")


def test_the_count_of_further_errors_is_given(registry, event_factory):
    event = event_factory("order_received", {"order_id": 7, "items": [{"quantity": 0}]})
    assert registry.violation(event).endswith("(schema order_received; 1 more)")


def test_a_missing_field_is_reported_at_the_payload(registry, event_factory):
    assert registry.violation(event_factory("order_received", {})) == (
        "payload: 'order_id' is a required property (schema order_received)")


def test_exact_and_glob_schemas_both_apply(registry, event_factory):
    assert registry.violation(event_factory("memory.create.completed", {"key": "k"})) is None
    assert "'key' is a required property (schema memory.*)" in registry.violation(
        event_factory("memory.create.completed", {}))
    assert registry.violation(event_factory("memory.create.completed", {"key": "x" * 9})) == (
        "payload.key: 'xxxxxxxxx' is too long (schema memory.create.completed)")
    assert registry.violation(event_factory("memory.deleted", {})).startswith("payload: ")
    assert [s.name for s in registry.for_type("memory.create.completed")] == [
        "memory.create.completed", "memory.*"]


def test_an_unresolvable_ref_is_a_violation_not_a_crash(event_factory):
    schemas = parse_choreography(PATTERN + """
[schemas.types.order_received]
"$ref" = "https://example.invalid/order.json"
""").schemas
    problem = schemas.violation(event_factory("order_received", {}))
    assert problem.startswith("schema order_received could not be applied: ")
