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


def test_changelogs_roll_their_segments_so_compaction_can_reach_them():
    assert Settings.from_env({}).changelog_config() == {"cleanup.policy": "compact",
                                                         "segment.ms": "600000"}
    short = Settings.from_env({"CHOREO_CHANGELOG_SEGMENT": "2.5"})  # seconds
    assert short.changelog_config()["segment.ms"] == "2500"
    for bad in ("0", "0.5", "nan", "inf", "1e12"):
        with pytest.raises(ValueError, match="CHOREO_CHANGELOG_SEGMENT"):
            Settings.from_env({"CHOREO_CHANGELOG_SEGMENT": bad})


def test_memory_is_released_after_a_configurable_number_of_freed_entries():
    assert Settings.from_env({}).release_after == 20_000
    assert Settings.from_env({"CHOREO_RELEASE_AFTER": "2000"}).release_after == 2_000
    for bad in ("0", "-5", "lots"):
        with pytest.raises(ValueError, match="CHOREO_RELEASE_AFTER"):
            Settings.from_env({"CHOREO_RELEASE_AFTER": bad})
