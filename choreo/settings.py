"""Process settings, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BUNDLED_CONFIG = Path(__file__).parent / "choreographies" / "ecommerce.toml"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from CHOREO_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        default = cls()
        return cls(
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
        )

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without the kafka:// scheme, for plain Kafka clients."""
        return ",".join(
            part.split("://", 1)[-1] for part in self.broker.replace(";", ",").split(",") if part
        )
