"""The Faust app: `faust -A topology worker -l info`.

Settings come from CHOREO_* environment variables (see choreo/settings.py and docs/operations.md).
A choreography file that does not load stops the worker here, before it joins the group,
with every problem listed by pattern id, field and reason.
"""

from __future__ import annotations

import os
import sys

from choreo.app import create_app, wire
from choreo.config import ConfigError
from choreo.replay_command import register_replay_command
from choreo.settings import Settings

settings = Settings.from_env()
try:
    runtime = wire(create_app(settings), workers=os.environ.get("CHOREO_WORKERS", "*"))
except ConfigError as exc:
    sys.stderr.write(f"choreo: cannot start, the choreography file is invalid: {exc}\n")
    raise SystemExit(2) from None

app = runtime.app

register_replay_command(app, settings)
