"""Capability workers: consume actions, do the work, publish result and lifecycle events."""
