"""How hard a point is timed again: by the share of the model's time its operator holds.

Torch-free. On a shared machine a whole measurement (a few milliseconds of blocks) can fall into a stretch
where the host runs us slower (measured here: a plain Python loop alternated between two speeds 1.85x
apart, in stretches of 10 ms to seconds), and its blocks then agree with each other: nothing flags it. The
only defence is to time the point again later and keep the faster result. That is worth its cost only
where the error shows in the model's latency: an operator holding a large share of the model's time is
timed in ``passes`` passes; one holding a tiny share is not retried even when noisy (a 20% error on 0.5%
of the model is 0.1%). A whole model holds all of its own time, so the whole-model runs (calibration, the
benchmark's reference) follow the same rule with a share of 1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EffortRule:
    """Which points are timed again in later passes."""

    # Points of an operator holding at least ``heavy_share`` of the model's time (and whole-model points)
    # are timed in at least this many passes, keeping the fastest; 1 times them once unless noisy.
    passes: int = 2
    # Share of the model's time from which an operator's points get ``passes`` passes.
    heavy_share: float = 0.1
    # Below this share an operator's noisy or implausible points are not retried.
    light_share: float = 0.01

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise ValueError(f"passes={self.passes}: must be >= 1")
        if not 0 <= self.light_share <= self.heavy_share <= 1:
            raise ValueError(f"light_share={self.light_share}, heavy_share={self.heavy_share}: "
                             "need 0 <= light_share <= heavy_share <= 1")

    def passes_for(self, share: float) -> int:
        """Passes a point of something holding ``share`` of the model's time gets at least."""
        return self.passes if share >= self.heavy_share else 1

    def retries(self, share: float) -> bool:
        """Whether noisy or implausible points of something holding ``share`` are timed again."""
        return share >= self.light_share


def shares(calls: dict[str, int], timed: dict[str, dict[tuple[int, int], float]]) -> dict[str, float]:
    """Each operator's largest share of the model's time over the (batch, threads) points where every
    operator is timed (``calls``: operator calls per forward; ``timed``: seconds per point per operator; an
    operator timed at one point only, a view, costs that everywhere).

    Until every operator has a timing, or without a common point, every share is 1 (assume it matters)."""
    if not calls or any(not timed.get(k) for k in calls):
        return {k: 1.0 for k in calls}
    single = {k: next(iter(timed[k].values())) for k in calls if len(timed[k]) == 1}  # view-like: one point
    spread = [set(timed[k]) for k in calls if k not in single]
    common = set.intersection(*spread) if spread else {next(iter(timed[next(iter(calls))]))}
    best = {k: 0.0 for k in calls}
    for point in common:
        cost = {k: n * (single[k] if k in single else timed[k][point]) for k, n in calls.items()}
        total = sum(cost.values())
        for k in calls:
            best[k] = max(best[k], cost[k] / total if total > 0 else 1.0)
    return best if common else {k: 1.0 for k in calls}
