"""Duration strings, and the settings a worker reads from its environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.durations import format_duration, parse_duration
from choreo.settings import BUNDLED_CONFIG, Settings

# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5),
    ("30s", 30.0),
    ("5m", 300.0),
    ("2h", 7200.0),
    ("7d", 604800.0),
    ("1.5h", 5400.0),
    ("0.25s", 0.25),
    ("0s", 0.0),
    (" 10 s ", 10.0),
])
def test_parse_duration(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "5 minutes", "5", "5M", "-5s", "1e3s", "5s5m", "s", "", "1,5h", "5 sec",
])
def test_strings_that_are_not_durations(text: str):
    with pytest.raises(ValueError, match="is not a duration: write a number and a unit, one "
                                         "of ms, s, m, h, d"):
        parse_duration(text)


@pytest.mark.parametrize("value", [30, 1.5, True, None, ["5s"]])
def test_values_that_are_not_strings(value: object):
    with pytest.raises(ValueError, match=r"expected a duration string like \"30s\" or \"5m\""):
        parse_duration(value)


@pytest.mark.parametrize(("seconds", "text"), [
    (604800.0, "7d"),
    (86400.0, "1d"),
    (7200.0, "2h"),
    (5400.0, "90m"),
    (300.0, "5m"),
    (90.0, "90s"),
    (1.0, "1s"),
    (1.5, "1500ms"),
    (0.5, "500ms"),
    (0.0, "0ms"),
])
def test_format_duration_uses_the_largest_exact_unit(seconds: float, text: str):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**10))
def test_whole_milliseconds_round_trip(milliseconds: int):
    seconds = milliseconds / 1000

    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


# --- settings ---------------------------------------------------------------------------------

def test_settings_defaults():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.broker == "kafka://localhost:9092"
    assert settings.config_path == BUNDLED_CONFIG
    assert BUNDLED_CONFIG.name == "ecommerce.toml" and BUNDLED_CONFIG.is_file()
    assert settings.app_id == "choreo"
    assert settings.store == "rocksdb://"
    assert settings.web_port == 6066
    assert settings.web_host == "127.0.0.1"
    assert settings.data_dir == Path("choreo-data")
    assert settings.partitions == 4
    assert settings.log_level == "info"


@pytest.mark.parametrize(("variable", "value", "field", "expected"), [
    ("CHOREO_BROKER", "kafka://broker:29092", "broker", "kafka://broker:29092"),
    ("CHOREO_CONFIG", "/etc/choreo/shop.toml", "config_path", Path("/etc/choreo/shop.toml")),
    ("CHOREO_APP_ID", "shop-engine", "app_id", "shop-engine"),
    ("CHOREO_STORE", "memory://", "store", "memory://"),
    ("CHOREO_WEB_PORT", "8080", "web_port", 8080),
    ("CHOREO_WEB_HOST", "0.0.0.0", "web_host", "0.0.0.0"),
    ("CHOREO_DATA_DIR", "/var/lib/choreo", "data_dir", Path("/var/lib/choreo")),
    ("CHOREO_PARTITIONS", "12", "partitions", 12),
    ("CHOREO_LOG_LEVEL", "debug", "log_level", "debug"),
    ("CHOREO_SESSION_TIMEOUT", "10", "session_timeout", 10.0),
])
def test_each_variable_sets_its_field(variable: str, value: str, field: str, expected: object):
    settings = Settings.from_env({variable: value})

    assert getattr(settings, field) == expected
    others = {name for name in Settings.__dataclass_fields__ if name != field}
    assert {name: getattr(settings, name) for name in others} == {
        name: getattr(Settings(), name) for name in others}


@pytest.mark.parametrize("variable", [
    "CHOREO_BROKER", "CHOREO_CONFIG", "CHOREO_APP_ID", "CHOREO_STORE", "CHOREO_WEB_PORT",
    "CHOREO_WEB_HOST", "CHOREO_DATA_DIR", "CHOREO_PARTITIONS", "CHOREO_LOG_LEVEL",
    "CHOREO_SESSION_TIMEOUT",
])
def test_an_empty_variable_keeps_the_default(variable: str):
    assert Settings.from_env({variable: ""}) == Settings()


@pytest.mark.parametrize("variable", ["CHOREO_WEB_PORT", "CHOREO_PARTITIONS"])
@pytest.mark.parametrize("value", ["eight", "4.0", "0x10"])
def test_a_bad_integer_names_the_variable(variable: str, value: str):
    with pytest.raises(ValueError, match=f"{variable} must be an integer, got {value!r}"):
        Settings.from_env({variable: value})


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_session_timeout_names_the_variable(value: str):
    with pytest.raises(ValueError, match="CHOREO_SESSION_TIMEOUT must be"):
        Settings.from_env({"CHOREO_SESSION_TIMEOUT": value})


def test_settings_are_read_from_the_process_environment_when_called(monkeypatch):
    monkeypatch.setenv("CHOREO_APP_ID", "from-env")
    monkeypatch.setenv("CHOREO_PARTITIONS", "2")

    settings = Settings.from_env()

    assert (settings.app_id, settings.partitions) == ("from-env", 2)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().broker = "kafka://elsewhere:9092"  # type: ignore[misc]


@pytest.mark.parametrize(("broker", "servers"), [
    ("kafka://localhost:9092", "localhost:9092"),
    ("localhost:9092", "localhost:9092"),
    ("kafka://a:9092;kafka://b:9092", "a:9092,b:9092"),
    ("kafka://a:9092,kafka://b:9092,c:9092", "a:9092,b:9092,c:9092"),
    ("kafka://a:9092;", "a:9092"),
])
def test_bootstrap_servers_drops_the_scheme(broker: str, servers: str):
    assert Settings(broker=broker).bootstrap_servers == servers
