"""The benchmark's scenarios, run one after the other against one broker."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import kafka, stats
from bench.generate import (
    EventMaker,
    GeneratedChoreography,
    ecommerce_choreography,
    ecommerce_events,
    ecommerce_orders,
    generate_choreography,
    generated_events,
)
from bench.procs import Proc, dir_bytes
from bench.profile import record as profile_record
from bench.profile import render, summarise
from choreo.config import parse_choreography

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 4
DEDUP_TABLES = ("seen-events", "seen-rekeyed")  # swept by the engine's deadline timer
log = logging.getLogger("bench")


def say(message: str) -> None:
    """Progress on the terminal (the harness is a command-line tool)."""
    sys.stdout.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Sizes:
    """How much each mode does, and how long it waits for things to go still."""

    passthrough_events: int
    engine_events: int
    keys: int
    latency_seconds: float
    quiet_seconds: float
    profile_seconds: float
    recovery_for: tuple[str, ...] | None  # None: every engine scenario
    settle_seconds: float = 1.5  # outputs unchanged this long: the worker has sent them all
    # Deadline counters unchanged this long: deadlines caught up (more than the timer's 1 s).
    still_seconds: float = 3.0
    idle_seconds: float = 2.0  # the keys scenario's idle worker, before its baseline reading
    quiet_ticks: int = 2_000  # events on other keys that move event time 20 minutes on
    release_after: int | None = None  # CHOREO_RELEASE_AFTER of the keys worker (None: default)

    @classmethod
    def for_mode(cls, short: bool) -> Sizes:
        if short:
            # No recovery restarts and no profile: those are for the full mode. Counts and
            # waits cut so that the whole run, broker start included, stays under 2 minutes.
            # The engine gives memory back after 20,000 freed entries; 2,500 quiet keys free
            # fewer (a few deadlines and a de-duplication entry each), so the short mode's
            # keys worker lowers that to see the release happen.
            return cls(passthrough_events=3_000, engine_events=1_000, keys=2_500,
                       latency_seconds=1.0, quiet_seconds=2.0, profile_seconds=5.0,
                       recovery_for=(), settle_seconds=0.5, still_seconds=1.5,
                       idle_seconds=1.5, quiet_ticks=400, release_after=2_000)
        return cls(passthrough_events=100_000, engine_events=30_000, keys=1_000_000,
                   latency_seconds=15.0, quiet_seconds=30.0, profile_seconds=20.0,
                   recovery_for=None)


@dataclass
class Scenario:
    name: str
    kind: str  # aiokafka | faust | engine
    events: int
    patterns: int | None = None
    keys: int | None = 10_000  # None: every event has its own correlation key
    choreography: GeneratedChoreography | None = None
    maker: EventMaker | None = None
    quiet_phase: bool = False
    ticks: EventMaker | None = None  # events on other keys that move event time on
    profile: bool = False
    recovery: bool = True


@dataclass
class Bench:
    bootstrap: str
    kafka_data: Path | None
    work: Path
    out: Path
    sizes: Sizes
    run_id: str = field(default_factory=lambda: f"b{int(time.time())}")
    next_port: int = 7100
    dedup_horizon: str = "2m"
    recovery_limit: float | None = None  # seconds a restore may take before it is given up

    def port(self) -> int:
        while self.next_port < 7200:
            port, self.next_port = self.next_port, self.next_port + 1
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError("no free web port in 7100-7199")

    def scenarios(self) -> list[Scenario]:
        s = self.sizes
        ecommerce_prefix = f"{self.run_id}-ecommerce."
        found = [
            Scenario("B", "aiokafka", s.passthrough_events, maker=ecommerce_events(self.run_id)),
            Scenario("faust", "faust", s.passthrough_events, maker=ecommerce_events(self.run_id)),
            Scenario("faust-tuned", "faust", s.passthrough_events,
                     maker=ecommerce_events(self.run_id)),
            Scenario("ecommerce", "engine", s.engine_events,
                     choreography=ecommerce_choreography(ecommerce_prefix),
                     maker=ecommerce_events(self.run_id),
                     ticks=ecommerce_events(f"{self.run_id}-tick"),
                     recovery=s.recovery_for is None or "ecommerce" in s.recovery_for),
        ]
        for n in (10, 100, 1000):
            name = f"patterns-{n}"
            generated = generate_choreography(n, f"{self.run_id}-{name}.",
                                              dedup_horizon=self.dedup_horizon)
            found.append(Scenario(
                name, "engine", s.engine_events, patterns=n, choreography=generated,
                maker=generated_events(self.run_id, generated.event_types, 10_000),
                ticks=generated_events(f"{self.run_id}-tick", generated.event_types, 64),
                profile=n == 100,
                recovery=s.recovery_for is None or name in s.recovery_for))
        # A million new orders: the e-commerce file, one order_received per key (each starts
        # an order-to-shipment sequence and a correlation summary), its 24 h horizons cut to
        # 2 m so the keys go quiet within the 20 minutes of event time the quiet phase adds.
        found.append(Scenario(
            "keys", "engine", s.keys, keys=None,
            choreography=ecommerce_choreography(f"{self.run_id}-keys.",
                                                quiet_after=self.dedup_horizon),
            maker=ecommerce_orders(self.run_id),
            ticks=ecommerce_events(f"{self.run_id}-tick"), quiet_phase=True,
            recovery=s.recovery_for is None or "keys" in s.recovery_for))
        return found

    # --- one scenario -------------------------------------------------------------------
    async def run(self, sc: Scenario) -> dict[str, Any]:
        say(f"== {sc.name}: {sc.kind}, {sc.events:,} events"
            + (f", {sc.patterns} patterns" if sc.patterns else "")
            + (", one correlation key per event" if sc.keys is None else ""))
        app_id = f"{self.run_id}-{sc.name}"
        data_dir = self.work / app_id
        kind_of: dict[str, str] = {}
        if sc.kind == "engine":
            assert sc.choreography is not None
            config_path = self.work / f"{app_id}.toml"
            config_path.write_text(sc.choreography.text)
            parsed = parse_choreography(sc.choreography.text, str(config_path))
            kind_of = {p.id: p.kind for p in parsed.patterns}
            topics = parsed.topics
            in_topic = topics.events_topic
            out_topics = [topics.capability_topic(c) for c in parsed.capabilities]
            await kafka.create_topics(self.bootstrap, [topics.dead_letter_topic], PARTITIONS)
        else:
            config_path = None
            in_topic, out_topics = f"{app_id}.in", [f"{app_id}.out"]
        # LogAppendTime on the input and the outputs: a record's timestamp is its arrival.
        await kafka.create_topics(self.bootstrap, [in_topic, *out_topics], PARTITIONS,
                                  log_append_time=True)
        proc = self.proc(sc, app_id, data_dir, config_path, in_topic, out_topics)
        assert sc.maker is not None
        sample_key, sample_value = sc.maker(0, time.time())
        result: dict[str, Any] = {
            "name": sc.name, "kind": sc.kind, "patterns": sc.patterns, "events": sc.events,
            "message_bytes": len(sample_value),
            "correlation_keys": sc.events if sc.keys is None else sc.keys,
            "pattern_kinds": dict(sc.choreography.kinds) if sc.choreography else None,
        }
        try:
            async with kafka.Offsets(self.bootstrap) as offsets:
                starts = await offsets.ends(out_topics)
                if sc.quiet_phase:
                    # Started before its events: its idle RSS is the baseline memory returns
                    # to, then the events are produced while it runs.
                    result["start_s"] = round(proc.start(), 2)
                    await asyncio.sleep(self.sizes.idle_seconds)
                    result["rss_idle_mb"] = _mb(proc.sample())
                    say(f"   worker ready in {result['start_s']}s; idle RSS "
                        f"{result['rss_idle_mb']:.1f} MB (baseline)")
                took = await kafka.produce(self.bootstrap, in_topic, sc.maker, 0, sc.events,
                                           on_progress=self.progress("produced", sc.events))
                if sc.quiet_phase:
                    say(f"   produced {sc.events:,} events in {took:.1f}s; draining")
                else:
                    say(f"   pre-produced {sc.events:,} events in {took:.1f}s")
                    result["start_s"] = round(proc.start(), 2)
                    result["rss_ready_mb"] = _mb(proc.sample())
                    say(f"   worker ready in {result['start_s']}s; draining")
                await self.drain(offsets, proc, app_id, in_topic, out_topics, sc.events)
                if sc.quiet_phase:  # every key loaded (the catch-up may already expire them)
                    result["rss_loaded_mb"] = _mb(proc.sample())
                ends = await offsets.ends(out_topics)
                first, last = await kafka.edge_timestamps(self.bootstrap, starts, ends)
                throughput = stats.rate(sc.events, first, last)
                result["throughput_eps"] = throughput
                result["outputs"] = sum(ends.values()) - sum(starts.values())
                result["outputs_per_event"] = result["outputs"] / sc.events
                say(f"   throughput {throughput or 0:,.0f} events/s "
                    f"({result['outputs']:,} outputs)")
                if throughput and sc.kind == "engine":
                    result.update(await self.catch_up(offsets, sc, proc, app_id, in_topic))
                if throughput:
                    result.update(await self.latency(offsets, sc, proc, app_id, in_topic,
                                                     out_topics, throughput, kind_of))
                if sc.quiet_phase:
                    result.update(await self.quiet(offsets, sc, proc, app_id, in_topic))
            result["peak_rss_mb"] = _mb(proc.peak_rss_kb)
            proc.stop()
            if sc.kind == "engine":
                result.update(await self.state(app_id, data_dir))
                if sc.recovery:
                    result.update(await self.recover(sc, proc, app_id, data_dir, in_topic,
                                                     result.get("throughput_eps")))
        except Exception as exc:  # noqa: BLE001 - keep what was measured before it failed
            result["error"] = f"{type(exc).__name__}: {exc}"
            say(f"   {sc.name} FAILED: {result['error']}")
        finally:
            proc.stop()
        return result

    def proc(self, sc: Scenario, app_id: str, data_dir: Path, config_path: Path | None,
             in_topic: str, out_topics: list[str]) -> Proc:
        port = self.port()
        logs = self.work / "logs" / f"{app_id}.log"
        if sc.kind == "aiokafka":
            argv = [sys.executable, "-m", "bench.aiokafka_passthrough", self.bootstrap, app_id,
                    in_topic, out_topics[0], str(port)]
            return Proc(sc.name, argv, {"PYTHONPATH": str(REPO)}, REPO, logs, port)
        level = os.environ.get("BENCH_WORKER_LOGLEVEL", "warn")
        faust_argv = [sys.executable, "-m", "faust", "-A", "{module}", "worker", "-l", level]
        if sc.kind == "faust":
            env = {"BENCH_BROKER": f"kafka://{self.bootstrap}", "BENCH_APP_ID": app_id,
                   "BENCH_IN": in_topic, "BENCH_OUT": out_topics[0],
                   "BENCH_WEB_PORT": str(port), "BENCH_DATA_DIR": str(data_dir),
                   "PYTHONPATH": str(REPO), "BENCH_TUNED": "1" if sc.name == "faust-tuned" else ""}
            argv = [a.format(module="bench.faust_passthrough") for a in faust_argv]
            return Proc(sc.name, argv, env, REPO, logs, port)
        env = {"CHOREO_BROKER": f"kafka://{self.bootstrap}", "CHOREO_APP_ID": app_id,
               "CHOREO_CONFIG": str(config_path), "CHOREO_DATA_DIR": str(data_dir),
               "CHOREO_WEB_PORT": str(port), "CHOREO_WORKERS": "none",
               "CHOREO_PARTITIONS": str(PARTITIONS), "PYTHONPATH": str(REPO)}
        if sc.quiet_phase and self.sizes.release_after is not None:
            env["CHOREO_RELEASE_AFTER"] = str(self.sizes.release_after)
        argv = [a.format(module="topology") for a in faust_argv]
        return Proc(sc.name, argv, env, REPO, logs, port)

    def progress(self, what: str, total: int) -> Any:
        last = [0.0]

        def show(done: int) -> None:
            if time.monotonic() - last[0] >= 3.0:
                last[0] = time.monotonic()
                say(f"   {what} {done:,}/{total:,}")
        return show

    async def processed(self, offsets: kafka.Offsets, proc: Proc, group: str,
                        in_topic: str, out_topics: list[str]) -> int:
        """Records handled so far: the engine's events-in counter (this process), the
        pass-throughs' outputs, or else the group's committed offsets."""
        if proc.name not in ("B", "faust", "faust-tuned"):
            counted = await asyncio.to_thread(proc.metric_total, "choreo_events_in_total")
            if counted is not None:
                return int(counted)
        if out_topics:
            return await offsets.total(out_topics)
        return await offsets.committed(group, in_topic)

    async def drain(self, offsets: kafka.Offsets, proc: Proc, group: str, in_topic: str,
                    out_topics: list[str], target: int, timeout: float | None = None) -> float:
        """Wait until the process has handled `target` records; return the seconds it took."""
        began = time.monotonic()
        timeout = timeout or 120.0 + target / 200.0
        last_report = began
        while True:
            done = await self.processed(offsets, proc, group, in_topic, out_topics)
            proc.sample()
            if done >= target:
                # The engine counts an event before it sends its actions (and before a table
                # sweep that may hold it up), so also wait for the outputs to settle.
                await self.settle(offsets, out_topics, began + timeout)
                return time.monotonic() - began
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode} while "
                                   f"draining ({done:,}/{target:,}); see {proc.log_path}")
            now = time.monotonic()
            if now - began > timeout:
                raise TimeoutError(f"{proc.name}: only {done}/{target} handled after "
                                   f"{timeout:.0f}s; see {proc.log_path}")
            if now - last_report >= 3.0:
                last_report = now
                say(f"   handled {done:,}/{target:,}, RSS {_mb(proc.rss_kb() or 0):.0f} MB")
            await asyncio.sleep(0.3)

    async def settle(self, offsets: kafka.Offsets, out_topics: list[str],
                     deadline: float) -> None:
        """Wait until the output topics have not grown for the mode's settle seconds."""
        if not out_topics:
            return
        quiet = self.sizes.settle_seconds
        last, since = await offsets.total(out_topics), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = await offsets.total(out_topics)
            if now != last:
                last, since = now, time.monotonic()

    async def catch_up(self, offsets: kafka.Offsets, sc: Scenario, proc: Proc, group: str,
                       in_topic: str) -> dict[str, Any]:
        """Bring event time to now and let the deadlines that fall due run, before latency.

        The pre-produced events carry the time they were produced, minutes before the paced
        ones: the first paced event moves event time past every window still open, and the
        engine would run all those deadlines (absences firing, state expiring) while the
        latency is measured. A live system reaches them one by one as time passes.
        """
        assert sc.choreography is not None
        handled = await self.processed(offsets, proc, group, in_topic, [])
        assert sc.ticks is not None
        count = 64
        began = time.monotonic()
        await kafka.produce(self.bootstrap, in_topic, sc.ticks, 10 ** 9, count)
        await self.drain(offsets, proc, group, in_topic, [], handled + count, timeout=600.0)
        last, settled = await self.deadlines_settled(proc, began + 1800.0)
        took = time.monotonic() - began
        say(f"   event time moved to now; {int(last or 0):,} deadlines run so far, "
            + (f"caught up in {took:.1f}s" if settled else f"NOT caught up after {took:.0f}s"))
        return {"catch_up_s": round(took, 1), "deadlines_run": last, "catch_up_settled": settled}

    async def deadlines_settled(self, proc: Proc, deadline: float,
                                beyond: float | None = None) -> tuple[float | None, bool]:
        """Wait until the engine's deadline counter and its count of expired
        de-duplication entries (swept by the same timer) have not moved for the mode's still
        seconds (3 s in full mode), with no partition's sweep left unfinished, and past
        `beyond` if given (deadlines are known to fall due: stillness before the timer's
        next tick runs them does not count); return the deadline counter and whether all
        that happened before `deadline`.

        The sweep backlog gauge is needed besides the counters: after a restart a sweep first
        builds its index by a scan, which expires nothing for a while (a million keys: the
        after-quiet memory was read while the sweep had only begun). A worker too busy to
        answer /metrics within 5 s is not settled (in the first full run with a million keys
        two unanswered reads in a row looked like a still counter). Only the de-duplication
        tables count for the backlog: the timer works those off; other expiring tables go on
        at their next event.
        """
        last, swept, since, shown = None, None, time.monotonic(), time.monotonic()
        while time.monotonic() - since < self.sizes.still_seconds:
            if time.monotonic() >= deadline:
                return last, False
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode} while "
                                   f"running deadlines; see {proc.log_path}")
            read = await asyncio.to_thread(
                proc.metric_totals, ["choreo_deadlines_run_total",
                                     "choreo_expired_entries_total",
                                     "choreo_sweep_backlog_partitions"],
                {"choreo_sweep_backlog_partitions": {"table": DEDUP_TABLES}})
            ran, gone, backlog = read.values()
            if (ran is None or gone is None or (ran, gone) != (last, swept) or backlog
                    or (beyond is not None and ran <= beyond)):
                since = time.monotonic()
                last = last if ran is None else ran
                swept = swept if gone is None else gone
            if time.monotonic() - shown >= 10.0:
                shown = time.monotonic()
                say(f"   deadlines run {int(last or 0):,}, de-dup entries expired "
                    f"{int(swept or 0):,}, partitions left to sweep {int(backlog or 0)}, "
                    f"RSS {_mb(proc.rss_kb() or 0):.0f} MB")
            proc.sample()
            await asyncio.sleep(0.5)
        return last, True

    async def latency(self, offsets: kafka.Offsets, sc: Scenario, proc: Proc, group: str,
                      in_topic: str, out_topics: list[str], throughput: float,
                      kind_of: dict[str, str]) -> dict[str, Any]:
        """Send at half the measured rate and time each event to its first action."""
        assert sc.maker is not None
        pace = throughput / 2
        say(f"   latency: {pace:,.0f} events/s for {self.sizes.latency_seconds:g}s")
        starts = await offsets.ends(out_topics)
        in_starts = await offsets.ends([in_topic])
        sent = await kafka.produce_paced(self.bootstrap, in_topic, sc.maker, sc.events, pace,
                                         self.sizes.latency_seconds)
        await self.drain(offsets, proc, group, in_topic, out_topics, sc.events + sent,
                         timeout=60.0)
        ends = await offsets.ends(out_topics)
        records = await kafka.read_range(self.bootstrap, starts, ends)
        arrived = {}  # trigger event id -> (sent_at ms, arrival on the input topic ms)
        for timestamp, value in await kafka.read_range(self.bootstrap, in_starts,
                                                       await offsets.ends([in_topic])):
            data = orjson.loads(value)
            arrived[data["event_id"]] = (data["payload"]["sent_at"] * 1000.0, timestamp)
        samples = []
        for timestamp, value in records:
            data = orjson.loads(value)
            payload = data.get("payload", {})
            if sc.kind == "engine":
                if kind_of.get(payload.get("pattern_id")) in ("absence", "sequence"):
                    continue  # these fire on later events or deadlines, not on their trigger
                sent_at = payload.get("data", {}).get("sent_at")
                trigger = data.get("metadata", {}).get("causation_id")
            else:
                sent_at, trigger = payload.get("sent_at"), data.get("event_id")
            if isinstance(sent_at, float) and trigger:
                samples.append((trigger, timestamp - sent_at * 1000.0))
        first = stats.first_per_key(samples)
        summary = stats.latency_summary(first.values())
        # The two legs: producer to the input topic, and input topic to the action.
        legs = [(arrived[t][1] - arrived[t][0], lat - (arrived[t][1] - arrived[t][0]))
                for t, lat in first.items() if t in arrived]
        produce_leg = stats.latency_summary(leg for leg, _ in legs)
        engine_leg = stats.latency_summary(leg for _, leg in legs)
        say(f"   latency p50 {_ms(summary['p50_ms'])}, p99 {_ms(summary['p99_ms'])}, "
            f"p99.9 {_ms(summary['p999_ms'])} over {summary['count']:,} events")
        say(f"     of which producer to input topic p50 {_ms(produce_leg['p50_ms'])}, p99 "
            f"{_ms(produce_leg['p99_ms'])}; input topic to action p50 "
            f"{_ms(engine_leg['p50_ms'])}, p99 {_ms(engine_leg['p99_ms'])}")
        return {"latency": summary, "latency_produce_leg": produce_leg,
                "latency_processing_leg": engine_leg, "latency_rate_eps": pace,
                "latency_sent": sent}

    async def quiet(self, offsets: kafka.Offsets, sc: Scenario, proc: Proc, group: str,
                    in_topic: str) -> dict[str, Any]:
        """Let the keys go quiet: other keys move event time 20 minutes on; watch RSS."""
        assert sc.choreography is not None
        rss_before = _mb(proc.sample())
        handled = await self.processed(offsets, proc, group, in_topic, [])
        ran_before = await asyncio.to_thread(proc.metric_total, "choreo_deadlines_run_total")
        ticks = sc.ticks
        assert ticks is not None
        begin = time.time()
        count = self.sizes.quiet_ticks
        clock = iter(begin + 1200.0 * i / count for i in range(count))
        sent = await kafka.produce(self.bootstrap, in_topic,
                                   lambda i, _now: ticks(i, next(clock)), 2 * 10 ** 9, count)
        del sent
        await self.drain(offsets, proc, group, in_topic, [], handled + count, timeout=600.0)
        # Every key's sequence and correlation summary fall due: wait for them to run.
        began = time.monotonic()
        _, settled = await self.deadlines_settled(proc, began + 1800.0, beyond=ran_before)
        if not settled:
            say(f"   deadlines and sweeps NOT settled after {time.monotonic() - began:.0f}s; "
                "measuring anyway")
        say(f"   keys quiet, event time +20 min; watching RSS for "
            f"{self.sizes.quiet_seconds:.0f}s (before the quiet phase {rss_before:.0f} MB)")
        readings = []
        until = time.monotonic() + self.sizes.quiet_seconds
        while time.monotonic() < until:
            readings.append(_mb(proc.sample()))
            await asyncio.sleep(1.0)
        after = readings[-1] if readings else None
        held = await asyncio.to_thread(proc.metric_total, "choreo_rocksdb_memory_bytes")
        found = {"quiet_settled": settled,
                 "rocksdb_after_quiet_mb": None if held is None else held / 2**20,
                 "rss_before_quiet_mb": rss_before, "rss_after_quiet_mb": after,
                 "rss_after_quiet_min_mb": min(readings) if readings else None}
        # Under PYTHONTRACEMALLOC (set it for `make bench` to get them): where the Python
        # memory still held after quiet was allocated, biggest first.
        sites = await asyncio.to_thread(proc.get_json, "/debug/memory/")
        if sites and sites.get("tracing"):
            found["python_traced_after_quiet_mb"] = sites["traced_bytes"] / 2**20
            found["python_sites_after_quiet"] = [
                {"mb": round(site["bytes"] / 2**20, 2), "blocks": site["blocks"],
                 "at": site["traceback"][-3:]} for site in sites["sites"][:15]]
            for site in found["python_sites_after_quiet"][:8]:
                say(f"     {site['mb']:7.2f} MB  {site['blocks']:>9,}  {site['at'][-1]}")
        return found

    async def state(self, app_id: str, data_dir: Path) -> dict[str, Any]:
        names = [t for t in await kafka.list_topics(self.bootstrap)
                 if t.startswith(app_id + "-") and t.endswith("-changelog")]
        async with kafka.Offsets(self.bootstrap) as offsets:
            records = await offsets.total(names) if names else 0
        sizes = [kafka.log_bytes(self.kafka_data, n) for n in names]
        return {
            "state_disk_bytes": dir_bytes(data_dir) if data_dir.exists() else 0,
            "changelog_topics": names,
            "changelog_records": records,
            "changelog_bytes": None if any(s is None for s in sizes) else sum(sizes),
        }

    async def recover(self, sc: Scenario, proc: Proc, app_id: str, data_dir: Path,
                      in_topic: str, throughput: float | None) -> dict[str, Any]:
        """Restart with an empty data dir: the state comes back from the changelog.

        For the profiled scenario, enough events to keep the engine busy for the whole
        profile are produced first, so py-spy samples it under full load.
        """
        assert sc.maker is not None
        if sc.profile:
            extra = int((throughput or 2000) * (self.sizes.profile_seconds + 5) * 1.5)
            await kafka.produce(self.bootstrap, in_topic, sc.maker, sc.events * 10, extra)
        shutil.rmtree(data_dir, ignore_errors=True)
        say("   restarting with an empty data dir (state from the changelog)")
        # Faust restores a changelog record at a time (a few thousand a second here).
        records = (await self.state(app_id, data_dir))["changelog_records"]
        timeout = 180.0 + records / 1000
        if self.recovery_limit is not None:
            timeout = min(timeout, self.recovery_limit)
        try:
            out: dict[str, Any] = {"recovery_s": round(proc.start(timeout=timeout), 2)}
        except TimeoutError:
            say(f"   recovery not finished in {timeout:.0f}s ({records:,} changelog records)")
            return {"recovery_s": None, "recovery_unfinished_after_s": round(timeout, 1)}
        say(f"   recovered in {out['recovery_s']}s")
        if sc.profile:
            out["profile"] = await self.profile(proc, sc)
        return out

    async def profile(self, proc: Proc, sc: Scenario) -> dict[str, Any]:
        raw = self.out / "profile.raw"
        seconds = self.sizes.profile_seconds
        say(f"   profiling the engine with py-spy for {seconds:.0f}s while it drains "
            f"{sc.events:,} events")
        error = await asyncio.to_thread(profile_record, proc.pid, seconds, raw)
        if error:
            say(f"   py-spy failed: {error}")
            return {"error": error}
        summary = summarise(raw.read_text())
        title = (f"py-spy profile of the engine ({sc.name}: {sc.patterns} patterns, draining "
                 f"pre-produced events), {seconds:.0f}s at 100 Hz, run {self.run_id}")
        (self.out / "profile.txt").write_text(render(summary, title))
        return {"samples": summary["samples"], "self": summary["self"][:15],
                "inclusive": summary["inclusive"][:15]}


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
