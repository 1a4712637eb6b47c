"""Sample a running worker with py-spy and summarise the hottest functions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> str | None:
    """Run `py-spy record --format raw`; return an error text or None."""
    exe = py_spy()
    if exe is None:
        return "py-spy is not installed (pip install -e '.[bench]')"
    result = subprocess.run(
        [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0 or not out.exists():
        return (result.stderr or result.stdout).strip()[-500:] or f"exit {result.returncode}"
    return None


def short_frame(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:func`."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("lib/"):
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    else:
        for root in ("/choreo/", "/streams/", "/tables/", "/agents/"):
            if root in path:
                path = root.strip("/") + "/" + path.rsplit(root, 1)[1]
                break
    return f"{path}:{match['func']}"


# Frames every stack of the main thread passes through; they say nothing about the cost.
SCAFFOLD = ("<frozen runpy>", "click/", "faust/cli/", "faust/__main__.py", "mode/worker.py",
            "asyncio/base_events.py:BaseEventLoop.run",
            "asyncio/base_events.py:BaseEventLoop._run_once", "asyncio/events.py:Handle._run")
FOCUS = "streams/match_events.py:process_record"


def summarise(raw: str, top: int = 25, focus: str = FOCUS) -> dict:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks, and
    the time spent inside `focus` split by its direct callees."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    inside: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        match = LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = [short_frame(f) for f in match["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            if not name.startswith(SCAFFOLD):
                inclusive[name] += count
        if focus in frames:
            at = len(frames) - 1 - frames[::-1].index(focus)
            inside[frames[at + 1] if at + 1 < len(frames) else "(its own code)"] += count
    return {
        "focus": focus,
        "inside": [(name, n, n / total) for name, n in inside.most_common(top)],
        "samples": total,
        "self": [(name, n, n / total) for name, n in own.most_common(top)] if total else [],
        "inclusive": [(name, n, n / total) for name, n in inclusive.most_common(top)]
        if total else [],
    }


def render(summary: dict, title: str) -> str:
    lines = [title, f"samples: {summary['samples']}", "",
             "top functions by own time (where the CPU is):"]
    lines += [f"  {share:6.1%}  {name}" for name, _n, share in summary["self"]]
    lines += ["", "top functions by inclusive time (what calls it):"]
    lines += [f"  {share:6.1%}  {name}" for name, _n, share in summary["inclusive"]]
    if summary.get("inside"):
        lines += ["", f"inside {summary['focus']} (the engine's own per-event work), "
                      "by direct callee:"]
        lines += [f"  {share:6.1%}  {name}" for name, _n, share in summary["inside"]]
    return "\n".join(lines) + "\n"
