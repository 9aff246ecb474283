"""Task constraints on collector attributes: ``skill>=5``, ``region==eu``, ``gpu in [a100,h100]``."""

from __future__ import annotations

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


def _scalar(text: str) -> Scalar:
    """A literal: true/false, a number, or a string (optionally quoted)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def _norm(value: AttrValue) -> Scalar:
    if isinstance(value, bool | str):
        return value
    return float(value)


@dataclass(frozen=True, slots=True)
class Constraint:
    """One condition a collector's attributes must meet for a task to be sent to it."""

    attribute: str
    op: str
    value: Scalar | frozenset[Scalar]
    text: str

    def holds(self, attributes: Mapping[str, AttrValue]) -> bool:
        """True when the attribute exists and satisfies the condition (a missing one never does)."""
        if self.attribute not in attributes:
            return False
        actual = _norm(attributes[self.attribute])
        if self.op in _ORDERING:
            if isinstance(actual, bool | str):
                return False
            return _ORDERING[self.op](actual, self.value)  # type: ignore[arg-type]
        if self.op == "in":
            return actual in self.value  # type: ignore[operator]
        return (actual == self.value) is (self.op == "==")

    def __str__(self) -> str:
        return self.text


def parse_constraint(text: str) -> Constraint:
    """Parse ``attr op value``; :class:`InvalidRequest` for a bad operator or a value of the wrong type."""
    match = _SYNTAX.match(text)
    if match is None:
        raise InvalidRequest(f"constraint {text!r} is not 'attribute op value' with op one of == != >= <= > < in")
    attribute, op, raw = match.group(1), match.group(2).strip(), match.group(3)
    if op == "in":
        if not (raw.startswith("[") and raw.endswith("]")):
            raise InvalidRequest(f"constraint {text!r}: 'in' needs a list like [a,b]")
        items = frozenset(_scalar(item) for item in raw[1:-1].split(",") if item.strip())
        if not items:
            raise InvalidRequest(f"constraint {text!r}: the list is empty")
        return Constraint(attribute, op, items, text)
    value = _scalar(raw)
    if op in _ORDERING and isinstance(value, bool | str):
        raise InvalidRequest(f"constraint {text!r}: {op} needs a number, got {raw!r}")
    return Constraint(attribute, op, value, text)


def parse_constraints(texts: list[str]) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(t) for t in texts)


def satisfied(constraints: tuple[Constraint, ...], attributes: Mapping[str, AttrValue]) -> bool:
    return all(c.holds(attributes) for c in constraints)
