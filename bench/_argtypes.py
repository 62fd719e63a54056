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


def seconds(value: str) -> float:
    """An argparse type: a number of seconds > 0 and finite."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"{value!r}: must be a number of seconds > 0")
    return number
