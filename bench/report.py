"""The benchmark's output: a terminal table, a JSON file and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bench import stats

COLUMNS = ("scenario", "events/s", "x B", "p50 ms", "p99 ms", "p99.9 ms", "peak MB",
           "disk MB", "changelog", "start s", "recover s")


def add_ratios(results: list[dict[str, Any]]) -> float | None:
    """Put each scenario's throughput ratio to baseline B in it; return B's throughput."""
    baseline = next((r.get("throughput_eps") for r in results if r["name"] == "B"), None)
    for result in results:
        result["ratio_to_B"] = stats.ratio(result.get("throughput_eps"), baseline)
    return baseline


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it holds."""
    by = {r["name"]: r for r in results}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, at_least: bool) -> None:
        ok = None if value is None else (value >= limit if at_least else value <= limit)
        checks.append({"target": name, "value": value, "limit": limit, "met": ok})

    def thr_ratio(name: str) -> float | None:
        return by.get(name, {}).get("ratio_to_B")

    check("ecommerce >= 0.5 B", thr_ratio("ecommerce"), 0.5, True)
    check("100 patterns >= 0.4 B", thr_ratio("patterns-100"), 0.4, True)
    check("faust pass-through >= 0.6 B", thr_ratio("faust"), 0.6, True)
    check("faust pass-through, tuned as the engine >= 0.6 B", thr_ratio("faust-tuned"), 0.6,
          True)
    ten = by.get("patterns-10", {}).get("throughput_eps")
    thousand = by.get("patterns-1000", {}).get("throughput_eps")
    check("1000 patterns / 10 patterns throughput > 0.5", stats.ratio(thousand, ten), 0.5, True)
    for result in results:
        p99 = (result.get("latency") or {}).get("p99_ms")
        check(f"{result['name']}: p99 at 50% load < 50 ms", p99, 50.0, False)
    keys = by.get("keys", {})
    idle, after = keys.get("rss_idle_mb"), keys.get("rss_after_quiet_mb")
    check("keys: RSS after quiet / idle baseline <= 1.2", stats.ratio(after, idle), 1.2, False)
    return checks


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: list[dict[str, Any]]) -> str:
    rows = [COLUMNS]
    for r in results:
        lat = r.get("latency") or {}
        changelog = "-"
        if r.get("changelog_records") is not None:
            size = r.get("changelog_bytes")
            changelog = f"{r['changelog_records']:,} rec" + (
                f" / {size / 2**20:.1f} MB" if size is not None else "")
        rows.append((
            r["name"], _fmt(r.get("throughput_eps"), 0), _fmt(r.get("ratio_to_B"), 2),
            _fmt(lat.get("p50_ms")), _fmt(lat.get("p99_ms")), _fmt(lat.get("p999_ms")),
            _fmt(r.get("peak_rss_mb")),
            _fmt(r["state_disk_bytes"] / 2**20) if r.get("state_disk_bytes") is not None
            else "-",
            changelog, _fmt(r.get("start_s"), 2),
            f"> {r['recovery_unfinished_after_s']:.0f}" if r.get("recovery_unfinished_after_s")
            else _fmt(r.get("recovery_s"), 2)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def targets_text(checks: list[dict[str, Any]]) -> str:
    marks = {True: "met", False: "MISSED", None: "n/a"}
    return "\n".join(f"  [{marks[c['met']]:>6}] {c['target']}: {_fmt(c['value'], 2)}"
                     for c in checks)


def memory_text(results: list[dict[str, Any]]) -> str:
    keys = next((r for r in results if r["name"] == "keys" and r.get("rss_idle_mb")), None)
    if not keys:
        return ""
    return (f"  keys ({keys['correlation_keys']:,} distinct): idle RSS "
            f"{_fmt(keys.get('rss_idle_mb'))} MB, loaded {_fmt(keys.get('rss_loaded_mb'))} MB, "
            f"peak {_fmt(keys.get('peak_rss_mb'))} MB, after quiet "
            f"{_fmt(keys.get('rss_after_quiet_mb'))} MB (RocksDB's cache and memtables "
            f"{_fmt(keys.get('rocksdb_after_quiet_mb'))} MB of it)"
            + (f" (failed later: {keys['error']})" if "error" in keys else ""))


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def plot(results: list[dict[str, Any]], path: Path, title: str) -> str | None:
    """Throughput and p99 latency against the number of patterns; None or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    series = sorted((r for r in results if r["name"].startswith("patterns-")
                     and r.get("throughput_eps")), key=lambda r: r["patterns"])
    if not series:
        return "no pattern scenario finished"
    xs = [r["patterns"] for r in series]
    by = {r["name"]: r for r in results}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(xs, [r["throughput_eps"] for r in series], "o-", label="engine, generated")
    for name, style in (("B", "k--"), ("faust", "b:"), ("faust-tuned", "c:"),
                        ("ecommerce", "g-.")):
        value = by.get(name, {}).get("throughput_eps")
        if value:
            left.axhline(value, linestyle=style[1:], color=style[0],
                         label={"B": "B: aiokafka pass-through", "faust": "Faust pass-through",
                                "faust-tuned": "Faust pass-through, tuned",
                                "ecommerce": "engine, e-commerce"}[name])
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("patterns")
    left.set_ylabel("events/s (drain of pre-produced events)")
    left.set_title("throughput")
    left.legend(fontsize=8)
    right.plot(xs, [(r.get("latency") or {}).get("p99_ms") for r in series], "o-",
               label="engine p99")
    right.plot(xs, [(r.get("latency") or {}).get("p50_ms") for r in series], "s--",
               label="engine p50")
    for name, color in (("B", "k"), ("faust", "b"), ("ecommerce", "g")):
        value = (by.get(name, {}).get("latency") or {}).get("p99_ms")
        if value:
            right.axhline(value, color=color, linestyle="--", linewidth=0.8,
                          label=f"{name} p99")
    right.axhline(50, color="r", linestyle=":", label="target p99 50 ms")
    right.set_xscale("log")
    right.set_xlabel("patterns")
    right.set_ylabel("ms, production to action on the capability topic")
    right.set_title("latency at 50% of max rate")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
