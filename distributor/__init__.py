"""The sans-I/O decision core of eventbus: registry, queues, routing, task state machine."""

from distributor.actions import Action, Cancel, Dispatch, Finished, Publish
from distributor.core import DistributorConfig, TaskDistributor
from distributor.errors import (
    DuplicateTask,
    EventBusError,
    InvalidRequest,
    InvalidState,
    QueueFull,
    UnknownCollector,
    UnknownTask,
)
from distributor.models import (
    CollectorCapability,
    CollectorInfo,
    CollectorStatus,
    ErrorInfo,
    TaskInfo,
    TaskRequest,
    TaskResult,
    TaskState,
)
from distributor.queue import TaskQueue
from distributor.registry import CapabilityRegistry, CollectorState
from distributor.strategies import STRATEGIES, LeastLoaded, RoutingStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "Action",
    "Cancel",
    "CapabilityRegistry",
    "CollectorCapability",
    "CollectorInfo",
    "CollectorState",
    "CollectorStatus",
    "Dispatch",
    "DistributorConfig",
    "DuplicateTask",
    "ErrorInfo",
    "EventBusError",
    "Finished",
    "InvalidRequest",
    "InvalidState",
    "LeastLoaded",
    "Publish",
    "QueueFull",
    "RoutingStrategy",
    "TaskDistributor",
    "TaskInfo",
    "TaskQueue",
    "TaskRequest",
    "TaskResult",
    "TaskState",
    "UnknownCollector",
    "UnknownTask",
    "make_strategy",
]
