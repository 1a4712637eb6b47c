"""`python -m bench [--short]`: see bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.run import REPO, Bench, Sizes, say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the quick check (< 2 min)")
    parser.add_argument("--broker", help="use this bootstrap server instead of starting one")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_KAFKA_PORT",
                                                                       "29092")),
                        help="port of the broker the bench starts (default 29092)")
    parser.add_argument("--only", help="comma-separated scenario names (B is always run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and broker data")
    parser.add_argument("--keys", type=int, help="distinct keys for the keys scenario")
    parser.add_argument("--recovery-limit", type=float,
                        help="seconds a restore may take before it is reported unfinished")
    parser.add_argument("--dedup-horizon", default="2m",
                        help="dedup_horizon of the generated files (default 2m)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    mode = "short" if args.short else "full"
    kafka_dir = REPO / ".kafka" / "bench"
    env = {**os.environ, "KAFKA_DIR": str(kafka_dir), "KAFKA_PORT": str(args.port)}
    started_broker = False
    began = time.monotonic()
    failed = False
    work = Path(tempfile.mkdtemp(prefix="choreo-bench-"))
    try:
        if args.broker:
            bootstrap, kafka_data = args.broker.split("://", 1)[-1], None
        else:
            say(f"starting a broker on 127.0.0.1:{args.port} ({kafka_dir})")
            subprocess.run([str(REPO / "scripts" / "kafka-local"), "start"], env=env,
                           check=True)
            started_broker = True
            bootstrap, kafka_data = f"127.0.0.1:{args.port}", kafka_dir / "data"
        sizes = Sizes.for_mode(args.short)
        if args.keys:
            sizes = dataclasses.replace(sizes, keys=args.keys)
        bench = Bench(bootstrap, kafka_data, work, args.out, sizes,
                      dedup_horizon=args.dedup_horizon, recovery_limit=args.recovery_limit)
        scenarios = bench.scenarios()
        if args.only:
            wanted = {"B", *args.only.split(",")}
            scenarios = [s for s in scenarios if s.name in wanted]
        results = []
        for scenario in scenarios:
            try:
                results.append(asyncio.run(bench.run(scenario)))
                failed = failed or "error" in results[-1]
            except Exception as exc:  # noqa: BLE001 - report it and go on with the rest
                failed = True
                say(f"   {scenario.name} FAILED: {type(exc).__name__}: {exc}")
                results.append({"name": scenario.name, "kind": scenario.kind,
                                "patterns": scenario.patterns, "error": str(exc)})
            # What is done so far, in case the run is stopped before the end.
            report.write_json(args.out / "partial.json",
                              {"mode": mode, "run_id": bench.run_id, "scenarios": results})
        report.add_ratios(results)
        checks = report.targets(results)
        document = {
            "mode": mode, "run_id": bench.run_id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - began, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_avg": os.getloadavg()},
            "broker": bootstrap, "sizes": bench.sizes.__dict__,
            "scenarios": results, "targets": checks,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("latest.json", f"{mode}.json"):
            report.write_json(args.out / name, document)
        title = (f"choreo bench, {mode} mode, run {bench.run_id}, "
                 f"{os.cpu_count()} CPUs shared with other work")
        problem = report.plot(results, args.out / f"{mode}.png", title)
        if problem is None:
            shutil.copyfile(args.out / f"{mode}.png", args.out / "latest.png")
        print()
        print(report.table(results))
        print()
        print("targets (ratios to B from this run):")
        print(report.targets_text(checks))
        print(report.memory_text(results))
        print(f"\nwrote {args.out / 'latest.json'}"
              + (f", {args.out / 'latest.png'}" if problem is None else f" (no plot: {problem})")
              + (f", {args.out / 'profile.txt'}" if any("profile" in r for r in results)
                 else ""))
        print(f"took {time.monotonic() - began:.0f}s")
        return 1 if any("error" in r for r in results) else 0
    finally:
        if started_broker:
            stop = ["stop"] if args.keep else ["stop", "--purge"]
            subprocess.run([str(REPO / "scripts" / "kafka-local"), *stop], env=env, check=False)
        if args.keep or failed:
            say(f"work dir (configs, worker logs) kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
