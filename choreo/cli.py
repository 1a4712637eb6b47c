"""The `choreo` command: feed events, check a choreography, read trails, re-drive dead letters."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from choreo.config import Choreography, ConfigError, load_choreography
from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import Headers, collect, complete_envelope, key_for, send_all
from choreo.security import Guard, SecuritySettings, build_guard
from choreo.settings import Settings


def _guard(settings: Settings, choreography: Choreography | None) -> Guard:
    """The keys and masks this command works with; exits with the reason when they are bad."""
    security = choreography.security if choreography else SecuritySettings()
    try:
        return build_guard(settings, security, need_signing=False)
    except ConfigError as exc:
        raise SystemExit(f"choreo: {exc}") from None


def _lines(stream: IO[bytes], raw: bool, source: str, errors: list[str],
           guard: Guard | None = None, topic: str = ""
           ) -> Iterator[tuple[bytes | None, bytes, Headers]]:
    for number, line in enumerate(stream, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if raw:
            yield None, line, None
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc}); use --raw to send it as it is")
            continue
        if isinstance(data, dict):
            data = complete_envelope(data, source)
        key, value = key_for(data), orjson.dumps(data)
        # Signed even if invalid: the engine then dead-letters it for what is wrong with it.
        yield key, value, (guard.sign(topic, key, value) if guard is not None else None)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    """Send JSON lines from a file or standard input to the events topic."""
    from tqdm import tqdm

    choreography = _load_quietly(settings)
    if choreography is None and not args.topic:
        choreography = _choreography(settings)  # exits with the reason
    topic = args.topic or choreography.topics.events_topic
    guard = _guard(settings, choreography)
    if guard.require and not guard.signs:
        print("warning: signatures are required but no signing key is named (sign_with or "
              "CHOREO_SIGNING_KEY_ID); events go out unsigned", file=sys.stderr)
    errors: list[str] = []
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    total = None
    if args.file != "-":
        total = sum(1 for line in open(args.file, "rb") if line.strip())  # noqa: SIM115
    with stream, tqdm(total=total, unit="ev", desc=f"-> {topic}", file=sys.stderr,
                      disable=args.quiet) as bar:
        sent = asyncio.run(send_all(settings.bootstrap_servers, topic,
                                    _lines(stream, args.raw, args.source, errors, guard,
                                           topic),
                                    on_sent=bar.update, client=settings.kafka_options()))
    for error in errors:
        print(error, file=sys.stderr)
    print(f"sent {sent} event(s) to {topic}" + (f", skipped {len(errors)}" if errors else ""),
          file=sys.stderr)
    return 1 if errors else 0


def _load(args: argparse.Namespace, settings: Settings) -> tuple[Path, Choreography | None]:
    """The file named on the command line (or the configured one), or None after saying why."""
    path = Path(args.config) if args.config else settings.config_path
    try:
        return path, load_choreography(path)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return path, None


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Load a choreography file and report every problem, or a summary."""
    path, choreography = _load(args, settings)
    if choreography is None:
        return 2
    kinds: dict[str, int] = {}
    for pattern in choreography.patterns:
        kinds[pattern.kind] = kinds.get(pattern.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    schemas = choreography.schemas
    print(f"{path}: ok, {len(choreography.patterns)} pattern(s) ({summary}); "
          f"capabilities: {', '.join(choreography.capabilities)}"
          + (f"; {len(schemas)} schema(s)" if schemas else "")
          + (f"; {len(choreography.workflows)} workflow(s) "
             f"({', '.join(w.name for w in choreography.workflows)})"
             if choreography.workflows else ""))
    code = 0
    if args.static:
        from choreo.static_check import check_static

        findings = check_static(choreography)
        for finding in findings:
            print(f"  {finding}")
        errors = sum(f.level == "error" for f in findings)
        print(f"{path}: static check: {errors} error(s), {len(findings) - errors} warning(s)")
        code = 1 if errors else 0
    if args.state:
        code = max(code, _check_state(path, choreography, settings))
    return code


def _check_state(path: Path, choreography: Choreography, settings: Settings) -> int:
    """What a restart with the file would do to the running deployment's pattern state,
    read from the state table's changelog topic (every partition, every worker). Exits 1
    when entries would be dropped, 2 when the state cannot be read."""
    from choreo.state_evolution import StatePlan, judge_all
    from tables.pattern_state import decode_entry

    topic = f"{settings.app_id}-pattern-state-changelog"
    try:
        latest = asyncio.run(_read_changelog(settings.bootstrap_servers, topic,
                                             settings.kafka_options()))
    except Exception as exc:  # noqa: BLE001 - any broker failure is the answer here
        print(f"{path}: cannot read the state from {topic} at {settings.bootstrap_servers}: "
              f"{exc!r}", file=sys.stderr)
        return 2
    if latest is None:
        print(f"{path}: no topic {topic} at {settings.bootstrap_servers}: no worker of app "
              f"id {settings.app_id!r} has kept state there (is CHOREO_APP_ID right?)",
              file=sys.stderr)
        return 2
    entries = []
    for raw_key, raw in latest.items():
        found = decode_entry(raw_key, raw)
        if found is not None:
            pattern_id, key, slot = found
            entries.append((pattern_id, key, slot.kind, slot.print_, slot.state))
    plan = StatePlan.of(choreography)
    report = judge_all(plan, entries)
    print(f"{path}: state in {topic}: {len(entries)} entries; a restart with this file would:")
    for line in report.lines(plan):
        print(f"  {line}")
    dropped = report.total_dropped
    print(f"{path}: state check: {dropped} entries would be dropped")
    return 1 if dropped else 0


async def _read_changelog(bootstrap: str, topic: str, client: dict
                          ) -> dict[bytes, bytes | None] | None:
    """The last value of every key of a changelog topic, read up to the end offsets it had
    when the read began (None: no such topic)."""
    from aiokafka import TopicPartition

    from choreo import kafka_clients

    consumer = kafka_clients.consumer(bootstrap, options=client, enable_auto_commit=False,
                                      auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        found = consumer.partitions_for_topic(topic)
        if found is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            found = consumer.partitions_for_topic(topic)
        if not found:
            return None
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        latest: dict[bytes, bytes | None] = {}
        left = set(partitions)
        while left:
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if not left:
                break
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    if record.key is not None:  # compacted: the last record is the state
                        latest[record.key] = record.value
        return latest
    finally:
        await consumer.stop()


def cmd_graph(args: argparse.Namespace, settings: Settings) -> int:
    """Print the choreography as a Mermaid flowchart."""
    from choreo.graph import mermaid

    _path, choreography = _load(args, settings)
    if choreography is None:
        return 2
    sys.stdout.write(mermaid(choreography))
    return 0


def cmd_trail(args: argparse.Namespace, settings: Settings) -> int:
    """Print every event and action of one correlation id, in order."""
    choreography = _choreography(settings)
    topics = [choreography.topics.events_topic,
              *(choreography.topics.capability_topic(c) for c in choreography.capabilities)]
    records = asyncio.run(collect(settings.bootstrap_servers, topics, idle=args.idle,
                                  client=settings.kafka_options()))
    rows = []
    for record in records:
        try:
            data = record.json()
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        metadata = data.get("metadata") or {}
        if metadata.get("correlation_id") != args.correlation_id:
            continue
        rows.append((data.get("timestamp", ""), record.timestamp_ms, data))
    for _ts, _kafka_ts, data in sorted(rows, key=lambda r: (r[1], r[0])):
        print(format_trail_line(data))
    return 0 if rows else 1


def format_trail_line(data: dict) -> str:
    payload = data.get("payload") or {}
    if data.get("event_type") == "action.requested":
        return (f"  -> action {payload.get('action')} to {payload.get('capability')} "
                f"(pattern {payload.get('pattern_id')}, priority {payload.get('priority')})")
    return f"{data.get('event_type')}  from {data.get('source')}"


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """Print the dead-letter topic's records with their reasons."""
    choreography = _choreography(settings)
    masker = Guard(choreography.security).masker
    topic = choreography.topics.dead_letter_topic
    records = asyncio.run(collect(settings.bootstrap_servers, [topic], idle=args.idle,
                                  client=settings.kafka_options()))
    for record in records[-args.last:]:
        info = read_dead_letter_headers(record.headers)
        value, detail = record.value or b"", info.get("detail") or ""
        if masker:  # records dead-lettered before the mask was configured
            masked = masker.mask_record(value)
            detail, value = masked.scrub(detail), masked.value or b""
        print(f"{info.get('topic')}:{info.get('partition')}@{info.get('offset')} "
              f"{info.get('reason')}: {detail}  value={value[:80]!r}")
    return 0


def cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    """Send dead-lettered events or actions back to their topic, each DLQ offset once."""
    from choreo.redrive import default_group, redrive

    choreography = _choreography(settings)
    topics = choreography.topics
    if args.capability:
        if args.capability not in choreography.capabilities:
            print(f"no capability {args.capability!r}; the file has "
                  f"{', '.join(choreography.capabilities)}", file=sys.stderr)
            return 2
        source = topics.capability_dead_letter_topic(args.capability)
        allowed = [topics.capability_topic(args.capability)]
    else:
        source = topics.dead_letter_topic
        allowed = [topics.events_topic,
                   *(topics.capability_topic(c) for c in choreography.capabilities)]
    group = args.group or default_group(source)

    def show(record, target, why) -> None:  # noqa: ANN001
        if args.dry_run or target is None:
            info = read_dead_letter_headers(record.headers)
            where = f"-> {target}" if target else f"cannot re-drive: {why}"
            print(f"{record.topic}:{record.partition}@{record.offset} "
                  f"{info.get('reason')}: {(info.get('detail') or '')[:80]} {where}")

    guard = _guard(settings, choreography)
    if guard.require and not guard.signs and not args.dry_run:
        print("signatures are required: name the key to sign re-driven records with "
              "(sign_with in the key file, or CHOREO_SIGNING_KEY_ID)", file=sys.stderr)
        return 2

    def vouch(record, target: str) -> str | None:  # noqa: ANN001
        refusal = guard.vouch(target, record.key, record.value, record.headers,
                              actions=target != topics.events_topic)
        return None if refusal is None else f"{refusal.reason}: {refusal.detail}"

    report = asyncio.run(redrive(settings.bootstrap_servers, source, allowed, group=group,
                                 dry_run=args.dry_run, limit=args.limit, on_record=show,
                                 client=settings.kafka_options(),
                                 sign=guard.sign if guard.signs else None, vouch=vouch))
    verb = "would re-drive" if args.dry_run else "re-drove"
    targets = ", ".join(f"{n} to {t}" for t, n in sorted(report.sent.items())) or "nothing"
    print(f"{verb} {report.total} record(s) from {source} ({targets}); "
          f"{len(report.unroutable)} could not be re-driven; group {group}", file=sys.stderr)
    return 1 if report.unroutable else 0


def _load_quietly(settings: Settings) -> Choreography | None:
    try:
        return load_choreography(settings.config_path)
    except ConfigError:
        return None


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """`faust -A topology replay ...` (see choreo/replay.py), options passed on as they are."""
    argv = [sys.executable, "-m", "faust", "-A", "topology", "replay", *args.options]
    os.execv(sys.executable, argv)
    return 2  # not reached


def _choreography(settings: Settings):  # noqa: ANN202
    try:
        return load_choreography(settings.config_path)
    except ConfigError as exc:
        raise SystemExit(f"{settings.config_path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:  # every option is the Faust command's, --help included
        return cmd_replay(argparse.Namespace(options=argv[1:]), Settings())
    parser = argparse.ArgumentParser(prog="choreo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    produce = sub.add_parser("produce", help="send JSON lines (a file or -) to the events topic")
    produce.add_argument("file", nargs="?", default="-")
    produce.add_argument("--topic", help="another topic than the choreography's events topic")
    produce.add_argument("--source", default="choreo.produce",
                         help="source for lines that have none")
    produce.add_argument("--raw", action="store_true",
                         help="send each line's bytes untouched (to test the dead-letter path)")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=cmd_produce)

    check = sub.add_parser("check", help="validate a choreography file")
    check.add_argument("config", nargs="?")
    check.add_argument("--static", action="store_true",
                       help="also check producers, reachability and loops (exit 1 on errors)")
    check.add_argument("--state", action="store_true",
                       help="also say what a restart with this file would do to the running "
                            "deployment's pattern state, read from its changelog topic "
                            "(CHOREO_BROKER, CHOREO_APP_ID); exit 1 if entries would be dropped, "
                            "2 if it cannot be read")
    check.set_defaults(func=cmd_check)

    graph = sub.add_parser("graph", help="print the choreography as a Mermaid flowchart")
    graph.add_argument("config", nargs="?")
    graph.set_defaults(func=cmd_graph)

    trail = sub.add_parser("trail", help="the events and actions of one correlation id")
    trail.add_argument("correlation_id")
    trail.add_argument("--idle", type=float, default=1.0)
    trail.set_defaults(func=cmd_trail)

    dlq = sub.add_parser("dead-letters", help="recent dead-letter records and their reasons")
    dlq.add_argument("--last", type=int, default=20)
    dlq.add_argument("--idle", type=float, default=1.0)
    dlq.set_defaults(func=cmd_dead_letters)

    again = sub.add_parser("redrive", help="send dead-lettered records back, each only once")
    again.add_argument("--capability",
                       help="re-drive this capability's failed actions (default: the engine's "
                            "dead-letter topic)")
    again.add_argument("--dry-run", action="store_true", help="list, send nothing, commit nothing")
    again.add_argument("--limit", type=int, help="at most this many records")
    again.add_argument("--group", help="consumer group that remembers what was re-driven")
    again.set_defaults(func=cmd_redrive)

    replay = sub.add_parser("replay", add_help=False,
                            help="re-run stored events: rebuild state, or --what-if FILE "
                                 "(faust -A topology replay --help)")
    replay.add_argument("options", nargs=argparse.REMAINDER)
    replay.set_defaults(func=cmd_replay)

    args = parser.parse_args(argv)
    return args.func(args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())
