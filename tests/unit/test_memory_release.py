"""Memory freed by a mass expiry goes back to the OS, once, after the backlog is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo import memory
from choreo.memory import ReleaseAfter


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memory._malloc_trim is None, reason="needs glibc's malloc_trim")
def test_release_returns_freed_pages_held_between_live_objects() -> None:
    # Freed pages the tests before this one left in the heap would be reused by the blocks
    # below and hide them: hand those back first.
    memory.release_freed_memory()
    base = rss_mb()
    # 150 MB in 4 KiB blocks (orjson's output buffers are this size), every 16th kept alive,
    # so the freed blocks sit between live ones and glibc cannot just shrink the heap's top.
    blocks = [bytearray(4000) for _ in range(38_000)]
    kept = blocks[::16]
    del blocks
    held = rss_mb()
    assert held - base > 100, (base, held)  # freed but still resident
    memory.release_freed_memory()
    after = rss_mb()
    assert after - base < (held - base) / 2, (base, held, after)
    assert len(kept) == 2375


def test_release_waits_for_the_threshold_and_a_quiet_tick(monkeypatch) -> None:  # noqa: ANN001
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or True)
    release = ReleaseAfter(threshold=1_000)
    assert release.note(600) is False  # a tick that ran deadlines: the backlog goes on
    release.add(300)  # a dedup sweep
    assert release.note(0) is False  # quiet, but only 900 freed
    assert release.note(200) is False
    assert release.note(0) is True  # quiet after 1,100
    assert calls == [1]
    assert release.note(0) is False  # counted from zero again
    assert calls == [1]


def test_release_runs_its_hooks_first_and_survives_a_failing_one(monkeypatch) -> None:  # noqa: ANN001
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append("trim") or True)
    release = ReleaseAfter(threshold=10)

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("store closed")

    release.on_release(broken)
    release.on_release(lambda: calls.append("rocksdb"))
    release.on_release(broken)  # once only
    release.note(50)
    assert calls == []
    assert release.note(0) is True
    assert calls == ["broken", "rocksdb", "trim"]


def test_memory_view_lists_allocation_sites_only_when_tracing() -> None:
    import tracemalloc

    from streams.runtime_metrics import memory_sites

    assert not tracemalloc.is_tracing()
    assert memory_sites()["tracing"] is False
    tracemalloc.start(3)
    try:
        held = [bytearray(1000) for _ in range(5_000)]  # 5 MB from one line
        body = memory_sites(limit=5)
        assert body["tracing"] is True and body["traced_bytes"] >= 5_000_000
        top = body["sites"][0]
        assert top["bytes"] >= 5_000_000 and top["blocks"] >= 5_000
        assert any("test_memory_release.py" in frame for frame in top["traceback"])
        assert len(held) == 5_000
    finally:
        tracemalloc.stop()


def test_tight_values_hold_their_own_size_not_orjsons_buffer() -> None:
    import tracemalloc

    import orjson

    from tables.pattern_state import tight

    value = {"p": 1, "o": {"e": 12}, "s": {"step": 1}}
    tracemalloc.start()
    try:
        loose = [orjson.dumps(value) for _ in range(1_000)]
        loose_bytes = tracemalloc.get_traced_memory()[0]
        del loose
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        kept = [tight(orjson.dumps(value)) for _ in range(1_000)]
        tight_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(value)
    assert tight_bytes < 200_000 < loose_bytes, (tight_bytes, loose_bytes)


def test_objects_made_at_start_are_left_out_of_full_collections() -> None:
    import gc

    keep = [[i] for i in range(50_000)]  # long-lived, like a worker's startup objects
    try:
        before = len(gc.get_objects(generation=2))
        frozen = memory.freeze_startup_objects()
        assert frozen >= len(keep)
        assert len(gc.get_objects(generation=2)) < before - len(keep)
        later = [[i] for i in range(10)]
        gc.collect()
        assert any(o is later for o in gc.get_objects(generation=2))  # collected as before
    finally:
        gc.unfreeze()


def test_the_worker_takes_its_release_threshold_from_the_settings(monkeypatch) -> None:  # noqa: ANN001
    from choreo.app import create_app
    from choreo.settings import Settings
    from topology import wire

    monkeypatch.setattr(memory.FREED, "threshold", memory.FREED.threshold)  # restored after
    settings = Settings.from_env({"CHOREO_STORE": "memory://", "CHOREO_RELEASE_AFTER": "2000"})
    wire(create_app(settings), workers="none")
    assert memory.FREED.threshold == 2_000
