"""The single root of every error eventbus raises, and the distributor's own errors.

Every error carries a stable ``code`` (the wire and CLI contract, see
docs/PROTOCOL.md) and a one-line message. The other packages subclass
:class:`EventBusError`; nothing else is raised across a layer boundary.
"""

from __future__ import annotations


class EventBusError(Exception):
    """Root of all eventbus errors; ``code`` is stable and machine-readable."""

    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidRequest(EventBusError):
    """A record failed validation (bad field, bad value, unknown field)."""

    code = "invalid"


class QueueFull(EventBusError):
    """The queue holds ``max_queue_size`` tasks; the submission was not taken."""

    code = "queue_full"


class UnknownTask(EventBusError):
    """No task with that id is known (never submitted, or evicted from history)."""

    code = "not_found"


class UnknownSchedule(EventBusError):
    """No schedule with that name is defined."""

    code = "not_found"


class UnknownCollector(EventBusError):
    """No collector with that id is registered."""

    code = "unknown_collector"


class DuplicateTask(EventBusError):
    """A task with the same id is already known."""

    code = "duplicate"


class InvalidState(EventBusError):
    """The task is in a state where the operation makes no sense (e.g. cancel a finished task)."""

    code = "invalid_state"
