"""The settings model: sources, precedence, errors, and the sample config kept in step."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from eventbus.errors import ConfigError
from eventbus.paths import MAX_SOCKET_PATH, default_socket_path, resolve_socket_path
from eventbus.settings import DaemonSettings, load_settings, sample_toml

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_architecture() -> None:
    s = load_settings(DaemonSettings, environ={})
    assert (s.max_queue_size, s.max_retries, s.heartbeat_interval_s, s.heartbeat_timeout_s, s.strategy) == (
        10_000,
        3,
        5.0,
        30.0,
        "least_loaded",
    )
    assert s.max_message_size == 1 << 20


def test_every_option_is_read_from_its_environment_variable() -> None:
    env = {
        "EVENTBUS_SOCKET": "/tmp/x.sock",
        "EVENTBUS_MAX_RETRIES": "7",
        "EVENTBUS_HEARTBEAT_TIMEOUT_S": "2.5",
        "EVENTBUS_HEARTBEAT_INTERVAL_S": "1",
    }
    s = load_settings(DaemonSettings, environ=env)
    assert (s.socket, s.max_retries, s.heartbeat_timeout_s, s.heartbeat_interval_s) == (Path("/tmp/x.sock"), 7, 2.5, 1)


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    cfg = tmp_path / "eventbusd.toml"
    cfg.write_text("max_retries = 1\nmax_queue_size = 5\nheartbeat_interval_s = 9\n")
    env = {"EVENTBUS_MAX_RETRIES": "2", "EVENTBUS_MAX_QUEUE_SIZE": "6"}
    s = load_settings(DaemonSettings, config_file=cfg, environ=env, flags={"max_retries": 3, "strategy": None})
    assert (s.max_retries, s.max_queue_size, s.heartbeat_interval_s) == (3, 6, 9.0)


def test_a_bad_value_names_the_setting_and_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'max_retries' from EVENTBUS_MAX_RETRIES"):
        load_settings(DaemonSettings, environ={"EVENTBUS_MAX_RETRIES": "lots"})
    cfg = tmp_path / "c.toml"
    cfg.write_text('strategy = "coin_flip"\n')
    with pytest.raises(ConfigError, match=rf"'strategy' from {cfg}.*unknown strategy"):
        load_settings(DaemonSettings, config_file=cfg, environ={})


@pytest.mark.parametrize(
    ("settings", "low", "high"),
    [
        ({"heartbeat_timeout_s": 1, "heartbeat_interval_s": 5}, "heartbeat_interval_s", "heartbeat_timeout_s"),
        ({"retry_backoff_base_ms": 500, "retry_backoff_max_ms": 100}, "retry_backoff_base_ms", "retry_backoff_max_ms"),
        ({"max_queued_per_operation": 11, "max_queue_size": 10}, "max_queued_per_operation", "max_queue_size"),
        ({"max_message_size": 4 << 20, "max_finished_bytes": 2 << 20}, "max_message_size", "max_finished_bytes"),
        ({"max_message_size": 4 << 20, "max_queued_bytes": 2 << 20}, "max_message_size", "max_queued_bytes"),
        (
            {"max_message_size": 1 << 20, "max_pending_bytes_per_peer": 1 << 19},
            "max_message_size",
            "max_pending_bytes_per_peer",
        ),
    ],
)
def test_contradicting_settings_are_rejected_naming_both_and_their_sources(
    tmp_path: Path, settings: dict[str, int], low: str, high: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{high} = {settings[high]}\n")
    env = {"EVENTBUS_" + low.upper(): str(settings[low])}
    with pytest.raises(ConfigError) as err:
        load_settings(DaemonSettings, config_file=cfg, environ=env)
    message = str(err.value)
    assert f"{high}={settings[high]} from {cfg}" in message
    assert f"{low}={settings[low]} from EVENTBUS_{low.upper()}" in message
    assert "\n" not in message


def test_a_contradiction_with_a_default_says_so() -> None:
    with pytest.raises(ConfigError, match="heartbeat_interval_s=5 from the default"):
        load_settings(DaemonSettings, flags={"heartbeat_timeout_s": 9.0}, environ={})
    assert load_settings(DaemonSettings, flags={"heartbeat_timeout_s": 10.0}, environ={}).heartbeat_timeout_s == 10


def test_an_unknown_key_in_the_file_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_retires = 3\n")
    with pytest.raises(ConfigError, match="max_retires"):
        load_settings(DaemonSettings, config_file=cfg, environ={})


def test_a_broken_or_missing_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_retries = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(DaemonSettings, config_file=cfg, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(DaemonSettings, config_file=tmp_path / "missing.toml", environ={})


def test_the_sample_config_lists_every_setting_with_its_default() -> None:
    text = (ROOT / "config" / "eventbusd.toml").read_text()
    assert text == sample_toml(), "regenerate with: python -m eventbus.settings > config/eventbusd.toml"
    uncommented = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line)
    values = tomllib.loads(uncommented.replace('""  # unset', '""'))
    assert set(values) == set(DaemonSettings.model_fields)
    values = {k: v for k, v in values.items() if v != ""}
    assert DaemonSettings.model_validate(values) == DaemonSettings()


def test_socket_path_rules() -> None:
    assert default_socket_path({"EVENTBUS_SOCKET": "/a/b.sock"}) == Path("/a/b.sock")
    assert default_socket_path({"RUNTIME_DIRECTORY": "/run/eventbus:/run/x"}) == Path("/run/eventbus/eventbus.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/eventbus/eventbus.sock")
    assert default_socket_path({}).name == "eventbus.sock"
    assert str(default_socket_path({})).startswith("/tmp/eventbus-")


def test_a_socket_path_longer_than_a_unix_socket_allows_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than"):
        resolve_socket_path("/tmp/" + "x" * MAX_SOCKET_PATH)
