"""Task constraints on collector attributes: ``skill>=5``, ``region==eu``, ``gpu in [a100,h100]``."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from distributor.errors import InvalidRequest
from distributor.models import AttrValue

_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(==|!=|>=|<=|>|<|\s+in\s+)\s*(.+?)\s*$")
_ORDERING: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
Scalar = str | float | bool
#: a value tagged with its kind, so True never equals 1 and "1" never equals 1
Tagged = tuple[str, Scalar]


def _scalar(text: str) -> Scalar:
    """A literal: true/false, a finite number, or a string (optionally quoted)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def _tag(value: AttrValue | Scalar) -> Tagged:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("str", value)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One condition a collector's attributes must meet for a task to be sent to it."""

    attribute: str
    op: str
    value: Tagged | frozenset[Tagged]
    text: str

    def holds(self, attributes: Mapping[str, AttrValue]) -> bool:
        """True when the attribute exists and satisfies the condition (a missing one never does).

        Values compare only with values of the same kind (bool, number, string).
        """
        if self.attribute not in attributes:
            return False
        actual = _tag(attributes[self.attribute])
        if self.op in _ORDERING:
            wanted = self.value
            if actual[0] != "number":
                return False
            return _ORDERING[self.op](actual[1], wanted[1])  # type: ignore[arg-type,index]
        if self.op == "in":
            return actual in self.value
        return (actual == self.value) is (self.op == "==")

    def __str__(self) -> str:
        return self.text


def parse_constraint(text: str) -> Constraint:
    """Parse ``attr op value``; :class:`InvalidRequest` for a bad operator or a value of the wrong type."""
    match = _SYNTAX.match(text)
    if match is None:
        raise InvalidRequest(f"constraint {text!r} is not 'attribute op value' with op one of == != >= <= > < in")
    attribute, op, raw = match.group(1), match.group(2).strip(), match.group(3)
    if raw[:1] in ("=", "<", ">", "!"):
        raise InvalidRequest(f"constraint {text!r}: unknown operator {op + raw[:1]!r}")
    try:
        if op == "in":
            if not (raw.startswith("[") and raw.endswith("]")):
                raise InvalidRequest(f"constraint {text!r}: 'in' needs a list like [a,b]")
            items = frozenset(_tag(_scalar(item)) for item in raw[1:-1].split(",") if item.strip())
            if not items:
                raise InvalidRequest(f"constraint {text!r}: the list is empty")
            return Constraint(attribute, op, items, text)
        value = _scalar(raw)
    except ValueError as exc:
        raise InvalidRequest(f"constraint {text!r}: {exc}") from None
    if op in _ORDERING and isinstance(value, bool | str):
        raise InvalidRequest(f"constraint {text!r}: {op} needs a number, got {raw!r}")
    return Constraint(attribute, op, _tag(value), text)


def parse_constraints(texts: list[str]) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(t) for t in texts)


def satisfied(constraints: tuple[Constraint, ...], attributes: Mapping[str, AttrValue]) -> bool:
    return all(c.holds(attributes) for c in constraints)
