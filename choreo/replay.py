"""`faust -A topology replay` (and `choreo replay`): re-run stored events through the engine.

Two modes:

* rebuild (default): the whole events log, up to the live engine's committed offsets, is run
  through the engine's code into a fresh pattern-state table, which is compared entry by
  entry with the live table as its changelog topic holds it;
* what-if (`--what-if FILE`): a range of the log is run through another choreography file,
  and the actions it would send are compared, by action id, with those the live engine sent
  to the capability topics.

The records go through the live code (see streams/replay.py) with every send captured:
nothing reaches a topic unless `--emit` names one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from choreo.config import Choreography, ConfigError, load_choreography
from choreo.envelope import parse_timestamp
from choreo.kafka_io import Record, producer
from choreo.matchers.correlation import NOTE_HEADER
from choreo.replay_diff import (
    canonical_state,
    compare_states,
    describe_action,
    diff_actions,
    triggered_within,
)
from choreo.replay_io import (
    committed_offsets,
    offsets_for_time,
    read_range,
    read_table_changelog,
    topic_bounds,
)
from choreo.settings import Settings

REPLAY_HEADER = "choreo.replay"  # on actions sent with --emit: the replay's app id


class ReplayError(Exception):
    """A replay that cannot run as asked; the message says why."""


@dataclass(frozen=True)
class ReplayOptions:
    what_if: Path | None = None
    from_offset: str | None = None  # "N" for every partition, or "P:N,P:N"
    to_offset: str | None = None  # exclusive
    from_time: str | None = None  # ISO 8601 with a zone, or epoch seconds
    to_time: str | None = None
    correlation_id: str | None = None
    event_types: str | None = None  # a glob: "payment_*"
    emit: str | None = None  # a topic, or a template with {capability}
    fail_on_diff: bool = False
    as_json: bool = False
    group: str | None = None  # the live engine's consumer group; default its app id
    progress: bool = True
    wall: float | None = None  # the wall time the replay ends at; default now


def _per_partition(spec: str, partitions: list[int]) -> dict[int, int]:
    spec = spec.strip()
    if ":" not in spec:
        return {p: int(spec) for p in partitions}
    out = {}
    for part in spec.split(","):
        p, _, n = part.partition(":")
        out[int(p)] = int(n)
    return out


def _instant(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return parse_timestamp(value)


async def resolve_range(bootstrap: str, topic: str, group: str, opts: ReplayOptions
                        ) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """(starts, ends, notes): per partition, the offsets to replay, [start, end)."""
    bounds = await topic_bounds(bootstrap, topic)
    if bounds is None:
        raise ReplayError(f"no topic {topic!r} on {bootstrap}")
    partitions = sorted(bounds.end)
    notes: list[str] = []
    committed = await committed_offsets(bootstrap, group, topic)
    if committed:
        ends = {p: committed.get(p, bounds.first[p]) for p in partitions}
        behind = sum(bounds.end[p] - ends[p] for p in partitions)
        if behind:
            notes.append(f"the live engine (group {group}) has not committed the last {behind} "
                         f"record(s) of {topic}; they are left out")
    else:
        ends = dict(bounds.end)
        notes.append(f"group {group} has committed no offsets on {topic}; replaying to its end")
    starts = dict(bounds.first)
    if any(bounds.first[p] > 0 for p in partitions):
        notes.append("the log no longer starts at offset 0 (retention): earlier records are "
                     "not replayed")
    if opts.from_offset:
        starts.update(_per_partition(opts.from_offset, partitions))
    if opts.to_offset:
        ends.update(_per_partition(opts.to_offset, partitions))
    if opts.from_time:
        at = await offsets_for_time(bootstrap, topic, partitions, _instant(opts.from_time),
                                    bounds.end)
        starts = {p: max(starts[p], at[p]) for p in partitions}
    if opts.to_time:
        at = await offsets_for_time(bootstrap, topic, partitions, _instant(opts.to_time),
                                    bounds.end)
        ends = {p: min(ends[p], at[p]) for p in partitions}
    starts = {p: max(starts.get(p, 0), bounds.first[p]) for p in partitions}
    ends = {p: min(ends.get(p, bounds.end[p]), bounds.end[p]) for p in partitions}
    return starts, ends, notes


def selected(record: Record, opts: ReplayOptions) -> bool:
    """Does the record pass --correlation-id and --types? (No filter: every record does.)"""
    if opts.correlation_id is None and opts.event_types is None:
        return True
    if any(name == NOTE_HEADER for name, _ in record.headers):  # actions noted on a summary
        return opts.correlation_id is not None and record.key == opts.correlation_id.encode()
    try:
        data = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict):
        return False
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if opts.correlation_id is not None and metadata.get("correlation_id") != opts.correlation_id:
        return False
    event_type = data.get("event_type")
    return opts.event_types is None or (isinstance(event_type, str)
                                        and fnmatchcase(event_type, opts.event_types))


def _event_id(record: Record) -> str | None:
    try:
        data = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    return data.get("event_id") if isinstance(data, dict) else None


class ReplayOutput(Protocol):
    """What a replay sent: dead-letter reasons counted, and (topic, action) pairs."""

    @property
    def dead_letters(self) -> Mapping[str, int]: ...

    @property
    def actions(self) -> list[tuple[str, dict]]: ...


class Replaying(Protocol):
    """The engine's code run offline over records (streams/replay.py `Replayer`)."""

    rekeyed_sent: int

    @property
    def table(self) -> dict[bytes, bytes]: ...

    async def feed(self, record: Record) -> None: ...

    async def feed_rekeyed(self, record: Record) -> None: ...

    async def finish(self, wall: float | None = None) -> ReplayOutput: ...


# (choreography, settings, rekeyed_from_log) -> a replayer: topology.py passes the Faust one.
ReplayerFactory = Callable[[Choreography, Settings, bool], Replaying]


async def run_replay(opts: ReplayOptions, settings: Settings, replayer_factory: ReplayerFactory,
                     out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Run a replay with the replayers `replayer_factory` makes and print its report;
    returns the exit code."""
    from tqdm import tqdm

    try:
        live = load_choreography(settings.config_path)
        engine_file = live
        if opts.what_if is not None:
            # The other file runs on the live topics, whatever its own [topics] say.
            engine_file = dataclasses.replace(load_choreography(opts.what_if),
                                              topics=live.topics)
    except ConfigError as exc:
        raise ReplayError(str(exc)) from None
    if opts.what_if is None and (opts.event_types or opts.from_offset or opts.to_offset
                                 or opts.from_time or opts.to_time):
        raise ReplayError("rebuild replays the whole log up to the live engine's committed "
                          "offsets, to compare with its state; a range or --types is for "
                          "--what-if")
    bootstrap = settings.bootstrap_servers
    topic = live.topics.events_topic
    group = opts.group or settings.app_id
    starts, ends, notes = await resolve_range(bootstrap, topic, group, opts)
    rekeyed_topic = live.topics.rekeyed_topic
    rebuild = opts.what_if is None
    if rebuild:  # the re-keyed topic as the live engine read it (see streams/replay.py)
        r_starts, r_ends, r_notes = await resolve_range(bootstrap, rekeyed_topic, group,
                                                        ReplayOptions())
        notes += r_notes
    partitions = len(ends)
    replay_settings = dataclasses.replace(settings, partitions=partitions,
                                          app_id=f"{settings.app_id}-replay")
    total = sum(max(0, ends[p] - starts[p]) for p in ends)
    records: list[Record] = []
    with tqdm(total=total, unit="rec", desc=f"read {topic}", file=err,
              disable=not opts.progress) as bar:
        def keep(record: Record) -> None:
            bar.update(1)
            if selected(record, opts):
                records.append(record)

        read = await read_range(bootstrap, topic, starts, ends, keep)
        if rebuild:
            bar.total += sum(max(0, r_ends[p] - r_starts[p]) for p in r_ends)
            read += await read_range(bootstrap, rekeyed_topic, r_starts, r_ends, keep)
    # The order the live engine read them in, near enough: partitions interleave by the time
    # each record was appended, and a re-keyed record comes after the event it was sent for.
    records.sort(key=lambda r: (r.timestamp_ms, r.topic == rekeyed_topic, r.partition,
                                r.offset))
    replayer = replayer_factory(engine_file, replay_settings, rebuild)
    with tqdm(total=len(records), unit="rec", desc="replay", file=err,
              disable=not opts.progress) as bar:
        for record in records:
            if record.topic == rekeyed_topic:
                await replayer.feed_rekeyed(record)
            else:
                await replayer.feed(record)
            bar.update(1)
    output = await replayer.finish(opts.wall)
    replayed_ids = {i for i in (_event_id(r) for r in records if r.topic == topic)
                    if isinstance(i, str)}
    report: dict[str, Any] = {
        "mode": "what-if" if opts.what_if else "rebuild",
        "app_id": replay_settings.app_id,
        "topic": topic,
        "range": {str(p): [starts[p], ends[p]] for p in sorted(ends)},
        **({"rekeyed_range": {str(p): [r_starts[p], r_ends[p]] for p in sorted(r_ends)},
            "rekeyed_sent": replayer.rekeyed_sent} if rebuild else {}),
        "records_read": read,
        "records_replayed": len(records),
        "dead_lettered": dict(output.dead_letters),
        "actions": len(output.actions),
        "notes": notes,
    }
    differs = False
    if opts.what_if is None:
        live_table = await read_table_changelog(
            bootstrap, f"{settings.app_id}-pattern-state-changelog")
        keys = [opts.correlation_id] if opts.correlation_id else None
        comparison = compare_states(canonical_state(live_table), canonical_state(replayer.table),
                                    keys)
        report["state"] = comparison.as_dict()
        differs = not comparison.equal
    else:
        names = {live.topics.capability_topic(c)
                 for c in (*live.capabilities, *engine_file.capabilities)}
        emitted = await _read_actions(bootstrap, sorted(names))
        emitted = [(t, e) for t, e in emitted if triggered_within(e, replayed_ids)]
        replayed = [(t, e) for t, e in output.actions if triggered_within(e, replayed_ids)]
        diff = diff_actions(emitted, replayed)
        report["what_if"] = str(opts.what_if)
        report["emitted"] = len({e["event_id"] for _t, e in emitted})
        report["diff"] = diff.as_dict()
        differs = not diff.empty
    if opts.emit:
        report["emitted_to"] = await _emit(bootstrap, opts.emit, output.actions,
                                           replay_settings.app_id)
    if opts.as_json:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_report(report, out)
    return 1 if differs and opts.fail_on_diff else 0


async def _read_actions(bootstrap: str, topics: Sequence[str]) -> list[tuple[str, dict]]:
    found: list[tuple[str, dict]] = []
    for name in topics:
        bounds = await topic_bounds(bootstrap, name)
        if bounds is None:
            continue

        def keep(record: Record, name: str = name) -> None:
            envelope = record.envelope()
            if envelope and envelope.get("event_type") == "action.requested" \
                    and isinstance(envelope.get("event_id"), str):
                found.append((name, envelope))

        await read_range(bootstrap, name, bounds.first, bounds.end, keep)
    return found


async def _emit(bootstrap: str, template: str, actions: list[tuple[str, dict]],
                app_id: str) -> dict[str, int]:
    """Send the replay's actions to `template` ({capability} filled in); count per topic."""
    sent: dict[str, int] = {}
    prod = producer(bootstrap)
    await prod.start()
    try:
        pending = []
        for _topic, envelope in actions:
            target = template.format(capability=envelope["payload"]["capability"])
            correlation = (envelope.get("metadata") or {}).get("correlation_id")
            pending.append(await prod.send(
                target, value=orjson.dumps(envelope),
                key=correlation.encode() if correlation else None,
                headers=[(REPLAY_HEADER, app_id.encode())]))
            sent[target] = sent.get(target, 0) + 1
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    return sent


def _print_report(report: dict[str, Any], out: IO[str]) -> None:
    w = out.write
    ranges = report["range"]
    n_parts = len(ranges)
    w(f"replay ({report['mode']}, app id {report['app_id']}): {report['topic']}, "
      f"{n_parts} partition(s), offsets "
      + ", ".join(f"{p}:{a}..{b}" for p, (a, b) in ranges.items()) + "\n")
    for note in report["notes"]:
        w(f"  note: {note}\n")
    dead = report["dead_lettered"]
    w(f"  {report['records_read']} record(s) read, {report['records_replayed']} replayed, "
      f"{report['actions']} action(s)"
      + (", dead-lettered: " + ", ".join(f"{r} {n}" for r, n in sorted(dead.items()))
         if dead else "") + "\n")
    if "state" in report:
        state = report["state"]
        verdict = "EQUAL" if state["equal"] else "DIFFERENT"
        w(f"pattern state: live {state['live_entries']} entries, rebuilt "
          f"{state['rebuilt_entries']}: {verdict}\n")
        for entry in state["only_live"]:
            w(f"  only live:    {entry[0]} / {entry[1]}\n")
        for entry in state["only_rebuilt"]:
            w(f"  only rebuilt: {entry[0]} / {entry[1]}\n")
        for item in state["different"]:
            w(f"  different:    {item['entry'][0]} / {item['entry'][1]}: "
              f"{', '.join(item['fields'][:6])}\n")
    if "diff" in report:
        diff = report["diff"]
        w(f"what-if {report['what_if']}: {report['emitted']} action(s) emitted, "
          f"{len(diff['added'])} added, {len(diff['removed'])} removed, "
          f"{len(diff['changed'])} changed, {diff['same']} the same\n")
        for view in diff["added"]:
            w(f"  + {describe_action(view)}\n")
        for view in diff["removed"]:
            w(f"  - {describe_action(view)}\n")
        for item in diff["changed"]:
            old, new = item["emitted"], item["replayed"]
            changes = "; ".join(f"{f}: {_at(old, f)!r} -> {_at(new, f)!r}"
                                for f in item["fields"][:4])
            w(f"  ~ {describe_action(new)}: {changes}\n")
    for target, n in (report.get("emitted_to") or {}).items():
        w(f"sent {n} action(s) to {target}\n")


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
