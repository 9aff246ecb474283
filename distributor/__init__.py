"""The sans-I/O decision core of eventbus: registry, queues, routing, task state machine."""

from distributor.actions import Action, Cancel, Dispatch, Finished, Publish
from distributor.constraints import Constraint, parse_constraint
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
from distributor.strategies import (
    STRATEGIES,
    BestFit,
    FirstAvailable,
    LeastLoaded,
    RandomChoice,
    RoundRobin,
    RoutingStrategy,
    make_strategy,
)

__all__ = [
    "STRATEGIES",
    "Action",
    "BestFit",
    "Cancel",
    "CapabilityRegistry",
    "CollectorCapability",
    "CollectorInfo",
    "CollectorState",
    "CollectorStatus",
    "Constraint",
    "Dispatch",
    "DistributorConfig",
    "DuplicateTask",
    "ErrorInfo",
    "EventBusError",
    "Finished",
    "FirstAvailable",
    "InvalidRequest",
    "InvalidState",
    "LeastLoaded",
    "Publish",
    "QueueFull",
    "RandomChoice",
    "RoundRobin",
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
    "parse_constraint",
]
