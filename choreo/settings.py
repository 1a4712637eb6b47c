"""Process settings, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from choreo.registry import AgentIdentity

BUNDLED_CONFIG = Path(__file__).parent / "choreographies" / "ecommerce.toml"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {env.get(name)!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, got {raw!r}")


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().upper()
    if raw == "":
        return default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name) or ""
    return Path(raw) if raw else None


@dataclass(frozen=True)
class Settings:
    """Everything a worker reads from its environment; every field has a default."""

    broker: str = "kafka://localhost:9092"
    config_path: Path = BUNDLED_CONFIG
    app_id: str = "choreo"
    store: str = "rocksdb://"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = field(default_factory=lambda: Path("choreo-data"))
    partitions: int = 4
    log_level: str = "info"
    handlers: str = "agents.bundled:HANDLERS"
    # Seconds without a heartbeat before the group gives a dead worker's partitions away;
    # also how long a worker restarted after kill -9 waits to get them back.
    session_timeout: float = 60.0
    # Whether this process runs the engine (match_events, keyed patterns, their views);
    # CHOREO_ENGINE=off makes a process of capability workers only.
    engine: bool = True
    # Deliver fetched records to the streams without four tasks per record
    # (choreo/faust_fastpath.py); CHOREO_FAST_PATH=off keeps Faust's own delivery.
    fast_path: bool = True
    # The engine applies events in batches of up to `batch_size`, waiting at most
    # `batch_wait` seconds to fill one: each key's state is written once per batch and the
    # batch's actions are acknowledged together (Kafka Streams' record cache, in effect).
    batch_size: int = 500
    batch_wait: float = 0.005
    # The producer's linger (seconds) and largest record batch per partition (bytes): every
    # event writes changelog records, and small batches mean a produce request each.
    producer_linger: float = 0.005
    producer_batch_bytes: int = 16384
    # Longest the broker holds a fetch with nothing new (seconds). Faust fixes it at 1.5 s,
    # and a record can wait that long behind a fetch for quiet partitions
    # (choreo/faust_fastpath.py, "the fetch wait").
    fetch_max_wait: float = 0.1
    # Once started, leave the objects that starting made out of garbage collection
    # (choreo/memory.py, `freeze_startup_objects`); CHOREO_GC_FREEZE=off does not.
    gc_freeze: bool = True
    # One RocksDB memory budget for the whole process (choreo/rocksdb_memory.py): the block
    # cache every store shares, and the memtables of all stores together, in MiB.
    rocksdb_cache_mb: int = 64
    rocksdb_write_buffer_mb: int = 64
    # Seconds a changelog segment stays open (the topic's `segment.ms`) when the worker
    # creates the changelog. Compaction never touches the open segment, so with Kafka's
    # default of 7 days every superseded state and tombstone of a busy table stays in it and
    # a restore reads them all (make bench, `keys`: 11 records a key).
    changelog_segment: float = 600.0
    # Entries freed (expired state, swept de-duplication entries) after which the next quiet
    # tick gives memory back: RocksDB's memtables flushed and cache emptied, then glibc's
    # malloc_trim (choreo/memory.py).
    release_after: int = 20_000
    # Signing keys (choreo/signing.py): a key file, and/or `id=secret` pairs, and the id
    # this process signs with. Never printed.
    signing_keys_file: Path | None = None
    signing_keys: str = field(default="", repr=False)
    signing_key_id: str = ""
    # How every Kafka client connects (Faust's and the plain aiokafka ones).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Who this process's capability workers are in the agent registry (CHOREO_AGENT_*).
    agent: AgentIdentity = field(default_factory=AgentIdentity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from CHOREO_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        default = cls()
        settings = cls(
            broker=env.get("CHOREO_BROKER") or default.broker,
            config_path=Path(env.get("CHOREO_CONFIG") or default.config_path),
            app_id=env.get("CHOREO_APP_ID") or default.app_id,
            store=env.get("CHOREO_STORE") or default.store,
            web_port=_int(env, "CHOREO_WEB_PORT", default.web_port),
            web_host=env.get("CHOREO_WEB_HOST") or default.web_host,
            data_dir=Path(env.get("CHOREO_DATA_DIR") or default.data_dir),
            partitions=_int(env, "CHOREO_PARTITIONS", default.partitions),
            log_level=env.get("CHOREO_LOG_LEVEL") or default.log_level,
            handlers=env.get("CHOREO_HANDLERS") or default.handlers,
            session_timeout=_float(env, "CHOREO_SESSION_TIMEOUT", default.session_timeout),
            engine=_switch(env, "CHOREO_ENGINE", default.engine),
            fast_path=_switch(env, "CHOREO_FAST_PATH", default.fast_path),
            batch_size=_int(env, "CHOREO_BATCH_SIZE", default.batch_size),
            batch_wait=_float(env, "CHOREO_BATCH_WAIT", default.batch_wait),
            producer_linger=_float(env, "CHOREO_PRODUCER_LINGER", default.producer_linger),
            fetch_max_wait=_float(env, "CHOREO_FETCH_MAX_WAIT", default.fetch_max_wait),
            gc_freeze=_switch(env, "CHOREO_GC_FREEZE", default.gc_freeze),
            producer_batch_bytes=_int(env, "CHOREO_PRODUCER_BATCH_BYTES",
                                      default.producer_batch_bytes),
            rocksdb_cache_mb=_positive_int(env, "CHOREO_ROCKSDB_CACHE_MB",
                                           default.rocksdb_cache_mb),
            rocksdb_write_buffer_mb=_positive_int(env, "CHOREO_ROCKSDB_WRITE_BUFFER_MB",
                                                  default.rocksdb_write_buffer_mb),
            changelog_segment=_float(env, "CHOREO_CHANGELOG_SEGMENT",
                                     default.changelog_segment),
            release_after=_positive_int(env, "CHOREO_RELEASE_AFTER", default.release_after),
            signing_keys_file=_path(env, "CHOREO_SIGNING_KEYS_FILE"),
            signing_keys=env.get("CHOREO_SIGNING_KEYS") or "",
            signing_key_id=env.get("CHOREO_SIGNING_KEY_ID") or "",
            security_protocol=_choice(env, "CHOREO_SECURITY_PROTOCOL",
                                      default.security_protocol, PROTOCOLS),
            sasl_mechanism=_choice(env, "CHOREO_SASL_MECHANISM", default.sasl_mechanism,
                                   MECHANISMS),
            sasl_username=env.get("CHOREO_SASL_USERNAME") or "",
            sasl_password=env.get("CHOREO_SASL_PASSWORD") or "",
            ssl_cafile=_path(env, "CHOREO_SSL_CAFILE"),
            ssl_certfile=_path(env, "CHOREO_SSL_CERTFILE"),
            ssl_keyfile=_path(env, "CHOREO_SSL_KEYFILE"),
            agent=AgentIdentity.from_env(env),
        )
        if not 1.0 <= settings.changelog_segment <= 365 * 86400.0:  # also rules out nan
            raise ValueError("CHOREO_CHANGELOG_SEGMENT must be seconds from 1 to a year, got "
                             f"{env.get('CHOREO_CHANGELOG_SEGMENT')!r}")
        settings.check_kafka_security()
        return settings

    def changelog_config(self) -> dict[str, str]:
        """Topic configs for the changelogs the worker creates."""
        return {"cleanup.policy": "compact",
                "segment.ms": str(max(1, round(self.changelog_segment * 1000)))}

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without the kafka:// scheme, for plain Kafka clients."""
        return ",".join(
            part.split("://", 1)[-1] for part in self.broker.replace(";", ",").split(",") if part
        )

    def check_kafka_security(self) -> None:
        """Raise ValueError naming the variable when the TLS/SASL settings do not fit."""
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username
                                                                and self.sasl_password):
            raise ValueError(f"CHOREO_SECURITY_PROTOCOL={self.security_protocol} needs "
                             "CHOREO_SASL_USERNAME and CHOREO_SASL_PASSWORD")
        if not self.security_protocol.endswith("SSL"):
            for name, value in (("CHOREO_SSL_CAFILE", self.ssl_cafile),
                                ("CHOREO_SSL_CERTFILE", self.ssl_certfile),
                                ("CHOREO_SSL_KEYFILE", self.ssl_keyfile)):
                if value is not None:
                    raise ValueError(f"{name} is set but CHOREO_SECURITY_PROTOCOL is "
                                     f"{self.security_protocol}; use SSL or SASL_SSL")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("CHOREO_SSL_KEYFILE needs CHOREO_SSL_CERTFILE")

    def ssl_context(self) -> Any:
        """The TLS context for SSL and SASL_SSL (system CAs unless CHOREO_SSL_CAFILE)."""
        if not self.security_protocol.endswith("SSL"):
            return None
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
        )

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials` for the same settings (None for PLAINTEXT)."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                     mechanism=self.sasl_mechanism,
                                     ssl_context=self.ssl_context())
