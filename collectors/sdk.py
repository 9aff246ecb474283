"""The collector SDK: subclass :class:`Collector`, decorate methods with :func:`operation`.

    class Greeter(Collector):
        collector_type = "greeter"

        @operation
        async def greet(self, payload, ctx):
            ctx.report_progress(0.5, "thinking")
            return f"hello {payload['name']}"

Operations may be ``async def`` (cancelled with ``asyncio.CancelledError``)
or plain ``def`` (run in a thread; poll ``ctx.cancelled``). The return
value is the result; an exception fails the attempt with its type and
message. When the payload parameter or the return value is annotated with a
pydantic model, the payload is validated into it (a mismatch fails the
attempt with ``InvalidPayload``) and the result is validated and dumped.
"""

from __future__ import annotations

import inspect
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, ValidationError

from distributor.models import ALL_PRIORITIES, SEGMENT, AttrValue
from eventbus.errors import InvalidRequest
from eventbus.messages import describe

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__eventbus_operation__"


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """How a decorated method is exposed."""

    name: str
    priority_levels: tuple[int, ...]
    is_async: bool
    wants_context: bool


@overload
def operation(func: F) -> F: ...
@overload
def operation(*, name: str | None = None, priority_levels: list[int] | None = None) -> Callable[[F], F]: ...


def operation(
    func: F | None = None, *, name: str | None = None, priority_levels: list[int] | None = None
) -> F | Callable[[F], F]:
    """Expose a method as an operation (named after the method unless ``name`` is given)."""

    def mark(fn: F) -> F:
        op_name = name or fn.__name__
        if not re.match(SEGMENT, op_name):
            raise InvalidRequest(f"operation name {op_name!r} must match [a-z0-9_-]+")
        params = list(inspect.signature(fn).parameters)
        spec = OperationSpec(
            name=op_name,
            priority_levels=tuple(priority_levels or ALL_PRIORITIES),
            is_async=inspect.iscoroutinefunction(fn),
            wants_context=len(params) >= 3,  # (self, payload, ctx)
        )
        setattr(fn, _MARK, spec)
        return fn

    return mark(func) if func is not None else mark


@dataclass(slots=True)
class TaskContext:
    """What an operation knows about the attempt it runs."""

    task_id: str
    attempt: int
    deadline: float | None
    collector_id: str
    #: set when the daemon cancels the attempt; sync operations should poll it
    cancelled: threading.Event = field(default_factory=threading.Event)
    _progress: Callable[[float, str], None] | None = None

    def report_progress(self, fraction: float, message: str = "") -> None:
        """Publish progress (0.0-1.0) to watchers of ``events.task.progress.<op>``."""
        if self._progress is not None:
            self._progress(min(1.0, max(0.0, fraction)), message)


class InvalidPayload(ValueError):
    """The payload does not match the operation's pydantic model."""


@dataclass(frozen=True, slots=True)
class Models:
    """The pydantic models an operation declares for its payload and result (None: any value)."""

    payload: type[BaseModel] | None
    result: type[BaseModel] | None

    def load(self, payload: Any) -> Any:
        if self.payload is None:
            return payload
        try:
            return self.payload.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(f"payload does not match {self.payload.__name__}: {describe(exc)}") from None

    def dump(self, value: Any) -> Any:
        if self.result is not None and not isinstance(value, self.result):
            value = self.result.model_validate(value)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def models_of(func: Callable[..., Any]) -> Models:
    """Read the payload and return annotations of an operation (resolved when the collector starts)."""
    hints = typing.get_type_hints(func)
    params = [p for p in inspect.signature(func).parameters if p != "self"]
    payload = hints.get(params[0]) if params else None
    result = hints.get("return")

    def model(hint: Any) -> type[BaseModel] | None:
        return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None

    return Models(model(payload), model(result))


class Collector:
    """Base class of collectors. Class attributes describe the capability it registers."""

    collector_type: ClassVar[str] = "generic"
    max_concurrent_tasks: ClassVar[int] = 4
    attributes: ClassVar[dict[str, AttrValue]] = {}

    def __init__(self, attributes: dict[str, AttrValue] | None = None) -> None:
        self.attributes = {**type(self).attributes, **(attributes or {})}  # type: ignore[misc]

    @classmethod
    def operations(cls) -> dict[str, tuple[str, OperationSpec]]:
        """operation name -> (method name, spec) of every decorated method."""
        found: dict[str, tuple[str, OperationSpec]] = {}
        for attr, member in inspect.getmembers(cls):
            spec = getattr(member, _MARK, None)
            if isinstance(spec, OperationSpec):
                found[spec.name] = (attr, spec)
        return found
