"""Choreo: a choreography engine for event-driven agent systems on Faust and Kafka."""

__version__ = "0.1.0"
