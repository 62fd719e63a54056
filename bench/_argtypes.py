"""argparse types the benchmarks share: a flag breaking its rule is refused in one line naming the value,
before anything is started."""

from __future__ import annotations

import argparse
import math


def at_least(low: int):
    """An argparse type: a whole number >= ``low``."""
    def parse(value: str) -> int:
        text = value.strip()
        if not text.lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"{value!r}: must be a whole number >= {low}")
        return int(text)
    return parse


def positive(unit: str):
    """An argparse type: a number of ``unit`` > 0 and finite (nan and inf are refused too)."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0 < number < math.inf:
            raise argparse.ArgumentTypeError(f"{value!r}: must be a number of {unit} > 0")
        return number
    return parse


# A number of seconds > 0.
seconds = positive("seconds")
