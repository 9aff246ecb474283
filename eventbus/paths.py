"""Where the daemon's socket and state live (ARCHITECTURE.md, "Processes and commands")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from eventbus.errors import ConfigError

#: sun_path is 108 bytes including the terminating NUL
MAX_SOCKET_PATH = 107
SOCKET_NAME = "eventbus.sock"


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """The socket path when none is given: systemd's, the user's runtime dir, or /tmp."""
    env = os.environ if environ is None else environ
    if env.get("EVENTBUS_SOCKET"):
        return Path(env["EVENTBUS_SOCKET"])
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may pass several, separated by ':'; the first is ours
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / SOCKET_NAME
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "eventbus" / SOCKET_NAME
    return Path(f"/tmp/eventbus-{os.getuid()}") / SOCKET_NAME


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the state database lives when no ``state_dir`` is set: systemd's, the user's state dir, or ~."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "eventbus"
    return Path.home() / ".local" / "state" / "eventbus"


def resolve_socket_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path:
    """``explicit`` if given, else the default; :class:`ConfigError` if too long for a Unix socket."""
    path = Path(explicit) if explicit else default_socket_path(environ)
    path = path.absolute()
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ConfigError(
            f"socket path is {size} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket allows: {path}"
        )
    return path


def endpoint(path: Path) -> str:
    """The ZeroMQ endpoint for a socket path."""
    return f"ipc://{path}"
