"""Settings read from the environment."""

from __future__ import annotations

import pytest

from choreo.settings import Settings


def test_the_engine_switch():
    assert Settings.from_env({}).engine is True
    assert Settings.from_env({"CHOREO_ENGINE": "off"}).engine is False
    assert Settings.from_env({"CHOREO_ENGINE": "On"}).engine is True
    with pytest.raises(ValueError, match="CHOREO_ENGINE"):
        Settings.from_env({"CHOREO_ENGINE": "maybe"})
