"""The sd_notify helpers and the config file in effect, without a daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from eventbus.notify import Notifier, watchdog_interval
from eventbus.reload import SettingsSource, config_file_in_effect


def test_the_watchdog_is_pinged_at_half_its_interval_only_for_our_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}, pid=42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"}, pid=42) is None
    assert watchdog_interval({}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=42) is None


def test_without_notify_socket_notifying_does_nothing() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_a_notification_is_one_datagram_of_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
        assert notifier.send("READY=1", "STATUS=ok")
        notifier.close()
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


def test_a_dead_notify_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "missing.sock"))
    assert notifier.send("READY=1") is False
    notifier.close()


def test_the_default_config_file_is_read_only_when_it_exists_and_none_is_named(tmp_path: Path) -> None:
    default = tmp_path / "eventbusd.toml"
    named = tmp_path / "other.toml"
    assert config_file_in_effect(None, default) is None
    default.write_text("")
    assert config_file_in_effect(None, default) == default
    assert config_file_in_effect(named, default) == named


def test_a_default_config_file_created_after_start_is_read_by_the_next_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTBUS_STRATEGY", raising=False)
    default = tmp_path / "eventbusd.toml"
    source = SettingsSource(None, {}, default)
    assert source.load().strategy == "least_loaded"
    default.write_text('strategy = "round_robin"\n')
    assert source.load().strategy == "round_robin"
    assert source.describe() == str(default)
    named = tmp_path / "named.toml"
    named.write_text('strategy = "random"\n')
    assert SettingsSource(named, {}, default).load().strategy == "random"  # a named file wins
