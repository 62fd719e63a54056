"""Interpolation of one operator's timings over (batch, threads): linear in batch and in threads.

Torch-free. An operator's latency is a fixed cost plus work per item, so between profiled batch sizes
it is interpolated linearly in the batch size (exact for such affine costs, which log-log interpolation
overestimates between points); this is also the rule the profiler checks before it leaves a batch size
out (``sampling``). Thread counts are few and interpolated linearly. Outside the profiled range the answer
is extrapolated and says so: in batch along the last segment's log-log slope (clamped to [0, 1.5]), in
threads by holding the nearest profiled thread count (no further speed-up is assumed, which errs on the
slow side).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

MAX_SLOPE = 1.5


@dataclass(frozen=True)
class Estimate:
    """An interpolated latency and whether it lies outside the profiled points."""

    # Seconds.
    seconds: float
    # True when the query is outside the profiled batches or thread counts.
    extrapolated: bool


def between(b0: float, t0: float, b1: float, t1: float, batch: float) -> float:
    """Seconds at ``batch`` inside [b0, b1] from the profiled seconds at both ends (linear in batch)."""
    return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)


def _batch_curve(points: list[tuple[int, float]], batch: float) -> Estimate:
    """Seconds at ``batch`` from sorted (batch, seconds) points."""
    sizes = [b for b, _ in points]
    if len(points) == 1:
        return Estimate(points[0][1], batch != sizes[0])
    i = bisect.bisect_left(sizes, batch)
    if i < len(sizes) and sizes[i] == batch:
        return Estimate(points[i][1], False)
    if 0 < i < len(sizes):
        (b0, t0), (b1, t1) = points[i - 1], points[i]
        return Estimate(between(b0, t0, b1, t1, batch), False)
    (b0, t0), (b1, t1) = points[:2] if i == 0 else points[-2:]
    t0, t1 = max(t0, 1e-12), max(t1, 1e-12)
    slope = min(max(math.log(t1 / t0) / math.log(b1 / b0), 0.0), MAX_SLOPE)
    anchor_b, anchor_t = (b1, t1) if i == len(sizes) else (b0, t0)
    return Estimate(anchor_t * (batch / anchor_b) ** slope, True)


class OpCurve:
    """One operator's profiled points on one device, answering any (batch, threads)."""

    def __init__(self, points: dict[tuple[int, int], float], invariant: bool = False) -> None:
        if not points:
            raise ValueError("an OpCurve needs at least one profiled point")
        self.invariant = invariant
        by_threads: dict[int, list[tuple[int, float]]] = {}
        for (batch, threads), seconds in points.items():
            by_threads.setdefault(threads, []).append((batch, seconds))
        self._threads = sorted(by_threads)
        self._curves = {c: sorted(pts) for c, pts in by_threads.items()}

    def at(self, batch: int, threads: int) -> Estimate:
        """Seconds for ``batch`` items with ``threads`` intra-op threads."""
        if self.invariant:
            return Estimate(self._curves[self._threads[0]][0][1], False)
        ts = self._threads
        if threads <= ts[0] or threads >= ts[-1]:
            nearest = ts[0] if threads <= ts[0] else ts[-1]
            est = _batch_curve(self._curves[nearest], batch)
            return Estimate(est.seconds, est.extrapolated or threads != nearest)
        j = bisect.bisect_left(ts, threads)
        if ts[j] == threads:
            return _batch_curve(self._curves[threads], batch)
        lo, hi = _batch_curve(self._curves[ts[j - 1]], batch), _batch_curve(self._curves[ts[j]], batch)
        w = (threads - ts[j - 1]) / (ts[j] - ts[j - 1])
        return Estimate(lo.seconds * (1 - w) + hi.seconds * w, lo.extrapolated or hi.extrapolated)
