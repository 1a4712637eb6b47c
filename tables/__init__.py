"""Tables that hold pattern and processing state (RocksDB-backed, changelog-replicated)."""
