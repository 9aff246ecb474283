"""click parameter types shared by the command lines."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """click's ``FloatRange`` that also refuses NaN and infinity.

    NaN compares false with any bound, so a plain ``FloatRange(min=0)`` lets
    it through, and ``inf`` passes every range without a maximum.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
