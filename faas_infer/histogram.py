"""Arithmetic on cumulative Prometheus histogram buckets ({upper bound -> count}): quantiles and the
fraction of observations under a limit (SLO attainment), as ``histogram_quantile`` computes them."""

from __future__ import annotations

import math
from typing import Mapping


def quantile(q: float, counts: Mapping[float, float]) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding rank ``q``; None without data."""
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] <= 0:
        return None
    rank = q * counts[bounds[-1]]
    prev_le, prev_n = 0.0, 0.0
    for le in bounds:
        n = counts[le]
        if n >= rank:
            if math.isinf(le):
                return prev_le
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


def fraction_below(limit: float, counts: Mapping[float, float]) -> float | None:
    """Fraction of observations at or below ``limit``, interpolating inside its bucket; None without data."""
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] <= 0:
        return None
    total = counts[bounds[-1]]
    prev_le, prev_n = 0.0, 0.0
    for le in bounds:
        n = counts[le]
        if limit <= le:
            if math.isinf(le):
                return prev_n / total
            return (prev_n + (n - prev_n) * (limit - prev_le) / (le - prev_le)) / total
        prev_le, prev_n = le, n
    return 1.0
