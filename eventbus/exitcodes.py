"""Exit codes of every eventbus command (ARCHITECTURE.md, "Processes and commands")."""

from __future__ import annotations

EXIT_OK = 0
#: the task failed, was cancelled or expired (``--wait``, ``task``)
EXIT_TASK_FAILED = 1
#: bad flags, bad payload JSON, bad config
EXIT_USAGE = 2
#: no daemon answers on the socket path, or it went away (or restarted) while a command waited
EXIT_UNREACHABLE = 3
#: the daemon refused the request: invalid, queue full, unknown id
EXIT_REJECTED = 4
#: gave up waiting for an answer or for the task to finish
EXIT_TIMEOUT = 5

_BY_CODE = {
    "unreachable": EXIT_UNREACHABLE,
    "connection_reset": EXIT_UNREACHABLE,
    "daemon_restarted": EXIT_UNREACHABLE,
    # a stopping daemon is one about to be unreachable, not a refusal of the request: a refused
    # submit succeeds once the daemon is back (a wait cut short cannot be resumed: fate unknown)
    "shutting_down": EXIT_UNREACHABLE,
    "timeout": EXIT_TIMEOUT,
    "config": EXIT_USAGE,
    "socket_in_use": EXIT_USAGE,
    # the bench could not run its tasks (a collector or client process failed): its tasks did not succeed
    "bench_failed": EXIT_TASK_FAILED,
}


def exit_code_for(error_code: str) -> int:
    """The exit code for an error ``code``; anything the daemon refused is EXIT_REJECTED."""
    return _BY_CODE.get(error_code, EXIT_REJECTED)
