"""Which batch sizes to time for one operator: both ends of the grid, inside only where interpolation fails.

Torch-free. An operator's latency is mostly a fixed cost plus work per item, so timing every batch size
spends most of the time on the largest sizes to learn what a straight line already says. The grid's smallest
sizes (``dense``) and its largest are always timed (the predictor then interpolates and never extrapolates
inside the grid). A segment between two timed sizes with untimed sizes inside is checked at its middle
size: when the interpolation from the segment's ends (``interp.between``, the predictor's own rule)
predicts the timed middle within the tolerance at every thread count, the segment's other sizes are left
to interpolation; otherwise both halves are checked the same way. A tolerance of 0 times the whole grid.

The three smallest sizes are timed whatever a line says because they cost least (batches 2 and 4 are 6/63
of the batches 1..32) and are where torch's CPU kernels change: measured here, a TextCNN took 0.36 ms at
batch 1 and 0.86 ms at 2 (a straight line from 1 to 8 missed 2 by 40%), the MLP example was flat from 1 to
3, and the LSTM example took 3.8 ms at batch 2 and 4.5 ms at 4 (a line from 2 to 8 missed 4 by 19%: with
two smallest sizes, every ``bench cop`` run predicted the LSTM 19% slow there; with three, its largest
error over the grid fell from 18-52% to 5.5-6.5% in two runs, and operator profiling cost 8% more).
"""

from __future__ import annotations

from dataclasses import dataclass

from cop_profiler.interp import between


@dataclass(frozen=True)
class SamplingRule:
    """When an untimed batch size may be left to interpolation."""

    # Largest relative error of the interpolation at a segment's middle for the segment to be accepted;
    # 0 times every batch size of the grid.
    tolerance: float = 0.05
    # Errors below this many seconds pass whatever their relative size: dispatch jitter of the tiniest
    # operators, far below anything a model's latency resolves.
    slack: float = 2e-6
    # This many of the grid's smallest sizes are always timed (cheap, and where kernels change).
    dense: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance={self.tolerance}: must be in [0, 1)")
        if self.slack < 0:
            raise ValueError(f"slack={self.slack}: must be >= 0")
        if self.dense < 1:
            raise ValueError(f"dense={self.dense}: must be >= 1")

    def accepts(self, predicted: float, measured: float) -> bool:
        """True when ``predicted`` is close enough to ``measured``."""
        error = abs(predicted - measured)
        return self.tolerance > 0 and (error <= self.slack or error <= self.tolerance * measured)


def needed(grid: tuple[int, ...], threads: tuple[int, ...], timed: dict[tuple[int, int], float],
           rule: SamplingRule = SamplingRule()) -> list[tuple[int, int]]:
    """(batch, threads) points still to time, given the operator's timings so far ((batch, threads) -> s).

    Deterministic in ``timed``: called again after the returned points are timed it asks for the next
    ones, and returns nothing once every segment is timed densely or accepted.
    """
    sizes = sorted(set(grid))
    first = min(rule.dense, len(sizes)) - 1  # the last of the always-timed small sizes
    if rule.tolerance == 0 or len(sizes) - first <= 2:
        wanted = set(sizes)
    else:
        wanted = set(sizes[:first + 1]) | {sizes[-1]}
        _visit(sizes, threads, timed, rule, first, len(sizes) - 1, wanted)
    return [(b, c) for b in sorted(wanted) for c in threads if (b, c) not in timed]


def _visit(sizes: list[int], threads: tuple[int, ...], timed: dict[tuple[int, int], float], rule: SamplingRule,
           lo: int, hi: int, wanted: set[int]) -> None:
    """Add to ``wanted`` the sizes segment [lo, hi] (indices, both ends wanted) needs."""
    if hi - lo < 2:
        return
    mid = (lo + hi + 1) // 2
    wanted.add(sizes[mid])
    ends = (sizes[lo], sizes[mid], sizes[hi])
    if not all((b, c) in timed for b in ends for c in threads):
        return  # decided once the three sizes are timed
    b0, bm, b1 = ends
    if all(rule.accepts(between(b0, timed[b0, c], b1, timed[b1, c], bm), timed[bm, c]) for c in threads):
        return
    _visit(sizes, threads, timed, rule, lo, mid, wanted)
    _visit(sizes, threads, timed, rule, mid, hi, wanted)
