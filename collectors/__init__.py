"""The collector SDK: write a class, decorate its operations, run it with eventbus-collector."""

from collectors.runtime import CollectorRuntime
from collectors.sdk import Collector, TaskContext, operation

__all__ = ["Collector", "CollectorRuntime", "TaskContext", "operation"]
