"""The systemd units in config/: ``systemd-analyze verify`` accepts them, and they agree with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

from collectors.builtin import BUILTINS
from distributor.models import SEGMENT
from eventbus.exitcodes import EXIT_USAGE
from eventbus.paths import SOCKET_NAME, default_socket_path
from eventbus.settings import CollectorSettings, DaemonSettings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
DAEMON_UNIT = "eventbusd.service"
COLLECTOR_UNIT = "eventbus-collector@.service"
#: where the units expect the package (README: "Install as a systemd service")
INSTALL_BIN = "/opt/eventbus/bin/"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> keys -> every value given (systemd keys may repeat); comments and blanks skipped."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((CONFIG / name).read_text())


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values is not None, f"{key}= is not set in [{section}]"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit["Service"].get("Environment", []):
        for item in value.split():
            name, _, val = item.partition("=")
            env[name] = val
    return env


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


# ---- systemd-analyze verify ---------------------------------------------


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found (Debian package: systemd; .ci/run installs it)")
    return path


def _installable_copy(tmp_path: Path, edit: dict[str, str] | None = None) -> Path:
    """Both units in ``tmp_path``, with ExecStart pointing at this environment's scripts.

    verify checks that each Exec*= binary exists and is executable, so the
    install location (/opt/eventbus/bin) is replaced by where the scripts are now.
    """
    scripts = Path(sysconfig.get_path("scripts"))
    for script in ("eventbusd", "eventbus-collector"):
        assert (scripts / script).is_file(), f"{script} is not installed in {scripts} (pip install -e .)"
    for name in (DAEMON_UNIT, COLLECTOR_UNIT):
        text = (CONFIG / name).read_text().replace(INSTALL_BIN, f"{scripts}/")
        for old, new in (edit or {}).items():
            text = text.replace(old, new)
        (tmp_path / name).write_text(text)
    return tmp_path


def _verify(analyze: str, directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", *(str(directory / u) for u in units)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    directory = _installable_copy(tmp_path)
    # a template is verified through an instance; verify finds the template next to it
    proc = _verify(analyze, directory, DAEMON_UNIT, "eventbus-collector@demo.service")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # unknown keys and bad values are only warnings: none may name our units
    ours = [line for line in output.splitlines() if "eventbus" in line]
    assert ours == [], output


def test_systemd_analyze_verify_rejects_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a missing binary fails verify."""
    analyze = _systemd_analyze()
    directory = _installable_copy(tmp_path, {"bin/eventbusd": "bin/no-such-eventbusd"})
    proc = _verify(analyze, directory, DAEMON_UNIT)
    assert proc.returncode != 0
    assert "no-such-eventbusd" in proc.stdout + proc.stderr


# ---- the units agree with the code --------------------------------------


def test_daemon_socket_is_in_its_runtime_directory_where_collectors_look() -> None:
    daemon, collector = load(DAEMON_UNIT), load(COLLECTOR_UNIT)
    runtime_dir = Path("/run") / one(daemon, "RuntimeDirectory")
    assert "EVENTBUS_SOCKET" not in environment(daemon), "the daemon finds its socket from $RUNTIME_DIRECTORY"
    served = default_socket_path({"RUNTIME_DIRECTORY": str(runtime_dir)})
    assert served == Path("/run/eventbus") / SOCKET_NAME
    collector_env = environment(collector)
    assert default_socket_path(collector_env) == served
    # operators in the group reach it: the directory lets the group in (the socket itself is 0660)
    mode = int(one(daemon, "RuntimeDirectoryMode"), 8)
    assert mode & 0o050 == 0o050 and mode & 0o007 == 0
    assert str(served) in (ROOT / "README.md").read_text()


def test_units_share_user_and_group_so_collectors_are_served() -> None:
    daemon, collector = load(DAEMON_UNIT), load(COLLECTOR_UNIT)
    for key in ("User", "Group"):
        assert one(daemon, key) == one(collector, key) == "eventbus"
    assert "DynamicUser" not in daemon["Service"]


def test_daemon_unit_speaks_the_systemd_protocol() -> None:
    daemon = load(DAEMON_UNIT)
    assert one(daemon, "Type") == "notify"
    assert seconds(one(daemon, "WatchdogSec")) > 0
    assert one(daemon, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(daemon, "KillSignal") == "SIGTERM"
    assert one(daemon, "Restart") == "on-failure"


def test_stop_timeouts_exceed_the_shutdown_grace() -> None:
    daemon, collector = load(DAEMON_UNIT), load(COLLECTOR_UNIT)
    field = DaemonSettings.model_fields.get("shutdown_grace_s")
    daemon_grace = float(field.default) if field is not None else 30.0  # the documented default
    assert seconds(one(daemon, "TimeoutStopSec")) > daemon_grace
    collector_grace = CollectorSettings.model_fields["shutdown_grace_s"].default
    assert seconds(one(collector, "TimeoutStopSec")) > collector_grace


def test_usage_errors_are_not_restarted() -> None:
    for name in (DAEMON_UNIT, COLLECTOR_UNIT):
        assert one(load(name), "RestartPreventExitStatus") == str(EXIT_USAGE)


def test_exec_start_runs_the_installed_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    daemon, collector = load(DAEMON_UNIT), load(COLLECTOR_UNIT)
    assert one(daemon, "ExecStart").split()[0] == INSTALL_BIN + "eventbusd"
    argv = one(collector, "ExecStart").split()
    assert argv[0] == INSTALL_BIN + "eventbus-collector"
    assert argv[1:] == ["run", "%I", "--id", "%i"]
    assert {"eventbusd", "eventbus-collector"} <= set(scripts)
    # README installs the package where the units look
    assert f"python3 -m venv {INSTALL_BIN.rstrip('/').removesuffix('/bin')}" in (ROOT / "README.md").read_text()


def test_builtin_names_are_valid_collector_ids() -> None:
    """The instance name is the collector id (--id %i): every built-in can be an instance."""
    for name in BUILTINS:
        assert re.match(SEGMENT, name), name


def test_hardening_leaves_what_the_code_needs() -> None:
    daemon, collector = load(DAEMON_UNIT), load(COLLECTOR_UNIT)
    for unit in (daemon, collector):
        service = unit["Service"]
        assert one(unit, "ProtectSystem") == "strict"
        assert one(unit, "RestrictAddressFamilies") == "AF_UNIX"
        assert "@system-service" in service["SystemCallFilter"]
        assert one(unit, "CapabilityBoundingSet") == ""
        # the daemon reads /proc/PID/status of connecting processes (eventbus.peers.supplementary_groups),
        # procmond reads every process's /proc entry
        assert service.get("ProtectProc", ["default"]) == ["default"]
        assert service.get("ProcSubset", ["all"]) == ["all"]
        # peer credentials of other users must stay real
        assert service.get("PrivateUsers", ["no"]) == ["no"]
    assert one(daemon, "MemoryDenyWriteExecute") == "yes"


def test_config_directory_is_where_the_daemon_looks() -> None:
    from eventbus.reload import DEFAULT_CONFIG_FILE

    daemon = load(DAEMON_UNIT)
    assert Path("/etc") / one(daemon, "ConfigurationDirectory") == DEFAULT_CONFIG_FILE.parent
    assert str(DEFAULT_CONFIG_FILE) in (ROOT / "README.md").read_text()
