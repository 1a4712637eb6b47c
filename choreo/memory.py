"""Give memory freed by a mass expiry back to the operating system.

When a million keys go quiet, the worker frees their decoded states and changelog records
at once, and RocksDB holds their tombstones in memtables and their blocks in its cache.
CPython returns an arena only when every object in it is gone, and glibc keeps freed heap
pages for reuse, so the freed memory stays in the worker's RSS. After a large expiry, the
release hooks run (the worker's: flush RocksDB's memtables and empty its shared cache,
`topology.py`), then a full collection and `malloc_trim(0)` (which unmaps free pages
anywhere in the heap). Each costs some milliseconds per hundred thousand live objects, so
it runs only after much was freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _libc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


_malloc_trim = _libc_trim()


def release_freed_memory() -> bool:
    """Collect garbage and hand free heap pages back; whether malloc_trim released any."""
    gc.collect()
    if _malloc_trim is None:  # not glibc: nothing more to do
        return False
    return bool(_malloc_trim(0))


def freeze_startup_objects() -> int:
    """Collect, then put every object alive now out of the collector's reach (`gc.freeze`);
    returns how many objects that is.

    A full (generation 2) collection walks every tracked object. In a worker those are mostly
    what starting made (modules, classes, Faust's and the config's objects), which live as
    long as the process: the bench's `patterns-10` worker spent 60-90 ms in a full
    collection every 2-3 s, the loop standing still meanwhile, and after the freeze none
    over 50 ms. Objects made later (state, buffers) are collected as before.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class ReleaseAfter:
    """Counts what was freed; calls `release_freed_memory` once `threshold` entries were
    freed and the work has stopped (a quiet tick), not in the middle of a backlog."""

    def __init__(self, threshold: int = 20_000) -> None:
        self.threshold = threshold
        self.freed = 0
        self.hooks: list[Callable[[], None]] = []  # run first (RocksDB lets go of its part)

    def on_release(self, hook: Callable[[], None]) -> None:
        if hook not in self.hooks:
            self.hooks.append(hook)

    def add(self, freed: int) -> None:
        """Count entries freed elsewhere (table sweeps); the next quiet tick may release."""
        self.freed += freed

    def note(self, freed: int) -> bool:
        """Record a tick's freed entries; release when a quiet tick follows enough of them."""
        if freed:
            self.freed += freed
            return False
        if self.freed < self.threshold:
            return False
        self.freed = 0
        for hook in self.hooks:
            try:
                hook()
            except Exception:  # memory stays held; the worker goes on
                log.exception("releasing memory after a large expiry: %r failed", hook)
        released = release_freed_memory()
        log.info("released freed memory to the OS after a large expiry (trimmed: %s)",
                 released)
        return True


# One per process: the deadline timer notes what it ran, table sweeps add what they removed.
FREED = ReleaseAfter()
