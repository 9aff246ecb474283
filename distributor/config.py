"""The distributor's limits, filled by the daemon from its settings of the same names."""

from __future__ import annotations

from dataclasses import dataclass, fields

from distributor.models import PRIORITY_MAX, PRIORITY_MIN
from distributor.queue import Aging


@dataclass(slots=True)
class DistributorConfig:
    """The distributor's limits; the daemon fills it from its settings."""

    max_queue_size: int = 10_000
    #: queued or pending tasks of one operation; None: half of max_queue_size
    max_queued_per_operation: int | None = None
    #: bytes (as submitted) of the tasks not finished yet: queued, pending or running
    max_queued_bytes: int = 256 << 20
    max_retries: int = 3
    heartbeat_timeout_s: float = 30.0
    retry_backoff_base_ms: float = 100.0
    retry_backoff_max_ms: float = 30_000.0
    max_finished_tasks: int = 100_000
    #: estimated bytes held by the finished-task history (see distributor.history)
    max_finished_bytes: int = 64 << 20
    #: a submission repeating the idempotency key of a task submitted this recently returns that task
    idempotency_ttl_s: float = 86_400.0
    #: an unhealthy collector silent this long is forgotten (as if it had deregistered)
    forget_unhealthy_after_s: float = 300.0
    #: priority aging: a queued task's effective priority rises one level per this many seconds waited
    #: (None: off, strict priority order)
    aging_interval_s: float | None = None
    #: the most levels aging adds to a task's own priority (9: any task can reach the highest)
    aging_max_boost: int = PRIORITY_MAX - PRIORITY_MIN
    #: a queued task no local collector took this long goes to another host that offers its operation
    #: (None: never; a daemon in a cluster sets it from cluster_spill_after_ms)
    spill_after_s: float | None = None
    #: a spilled attempt's timeout is its timeout_ms plus this (the time to reach the other host and back)
    spill_grace_s: float = 10.0
    #: (a cluster's ``shared`` mode, with spill_after_s 0) a task spills as soon as it is queued, before
    #: local collectors are tried, when any host offers its operation (this one included: it runs it
    #: through the cluster too)
    spill_first: bool = False

    @classmethod
    def from_settings(cls, settings: object) -> DistributorConfig:
        """The limits read from the attributes of the same names of ``settings`` (the daemon's settings)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    @property
    def aging(self) -> Aging | None:
        """The queue's aging rule, None when aging is off."""
        if self.aging_interval_s is None:
            return None
        return Aging(self.aging_interval_s, self.aging_max_boost)

    @property
    def per_operation_bytes(self) -> int:
        """The share of ``max_queued_bytes`` one operation may hold: the same share as its task count."""
        return self.max_queued_bytes * self.per_operation_limit // self.max_queue_size

    @property
    def per_operation_limit(self) -> int:
        """``max_queued_per_operation``, or half of ``max_queue_size`` (at least 1) when unset."""
        if self.max_queued_per_operation is not None:
            return self.max_queued_per_operation
        return max(1, self.max_queue_size // 2)
