"""Every Kafka client outside Faust is built here: the web views' readers, replay, redrive,
the command line, the agent registry's follower and drains, topic creation.

Each gets the process's TLS/SASL settings (CHOREO_SECURITY_PROTOCOL, CHOREO_SASL_*,
CHOREO_SSL_*: `Settings.kafka_options()`), so a client cannot be built that the broker of a
secured cluster turns away. `options` overrides them (a caller holding other settings, or a
test of refused credentials); without it, `settings` or else the environment's are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from choreo.settings import Settings

__all__ = ["admin", "consumer", "producer", "security_options"]


def security_options(settings: Settings | None = None,
                     options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The aiokafka keyword arguments for TLS/SASL: `options` if given, else those of
    `settings`, else those of the environment."""
    if options is not None:
        return dict(options)
    return (settings if settings is not None else Settings.from_env()).kafka_options()


def consumer(bootstrap: str, *topics: str, settings: Settings | None = None,
             options: Mapping[str, Any] | None = None, **kwargs: Any) -> AIOKafkaConsumer:
    """An AIOKafkaConsumer (not started); `kwargs` are aiokafka's consumer arguments."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                            **{**security_options(settings, options), **kwargs})


def producer(bootstrap: str, *, settings: Settings | None = None,
             options: Mapping[str, Any] | None = None, **kwargs: Any) -> AIOKafkaProducer:
    """An AIOKafkaProducer (not started); `kwargs` are aiokafka's producer arguments."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap,
                            **{**security_options(settings, options), **kwargs})


def admin(bootstrap: str, *, settings: Settings | None = None,
          options: Mapping[str, Any] | None = None, **kwargs: Any) -> AIOKafkaAdminClient:
    """An AIOKafkaAdminClient (not started)."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                               **{**security_options(settings, options), **kwargs})
