"""Raw-bytes table access shared by the tables: one read per lookup, values at their size."""

from __future__ import annotations

from typing import Any


def tight(raw: bytes) -> bytes:
    """`raw` in a buffer of its own size.

    orjson 3.12+ returns every `dumps` result in a buffer of at least 4 KiB. A table value
    is held by its changelog record until the producer has sent it, so a backlog of 20,000
    records of 200 bytes held 80 MB (make bench, keys, seen in /debug/memory/). The copy
    costs about 0.25 us.
    """
    return memoryview(raw).tobytes()


def read(table: Any, key: Any) -> Any:
    """The stored value for key, or None: one RocksDB read. (`Table.get` reads twice, once
    to ask whether the key is there and once for its value.) A plain dict (replay) as is."""
    return getattr(table, "data", table).get(key)
