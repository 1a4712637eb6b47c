"""Faust stream agents: read events, keep pattern state in tables, send actions."""
