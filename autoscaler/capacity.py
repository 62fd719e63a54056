"""The capacity factor: how much of the modelled capacity a function's instances really serve.

Pure. Read from refusals under sustained load (``capacity_factor``), recovered toward 1 only with evidence
of spare capacity; ``decide`` scales every candidate's throughput by it.
"""

from __future__ import annotations

import math

from autoscaler.candidates import Candidate, config_key
from autoscaler.snapshot import FunctionState, Variant

# Refusals above this share of the arrivals (and 1/s) mean the function's instances are saturated.
SATURATED_SHARE = 0.01
# The capacity factor never goes below this (a stalled instance must not price every configuration at 0).
MIN_FACTOR = 0.05
# Refusals are read as saturation only while the instances admit at least this share of the capacity the
# factor allows (below it they are bursts at low load: 20/s admitted of a modelled 667/s once drove the
# factor to its floor)...
LOADED_SHARE = 0.25
# ...and the factor does not recover while they admit this share or more (no evidence of spare capacity).
BUSY_SHARE = 0.6
# Share of the way a capacity factor moves toward each new saturated reading.
FACTOR_STEP = 0.5
# A reading is taken only under sustained load: arrivals over the last few seconds within this ratio of the
# rate window's average (either way). When load falls, the window's average of admitted requests takes in
# idle seconds while its refusals still count: read then, one overload left the factor at 0.12 a minute
# after the last request, and the autoscaler added instances with nothing arriving; a burst from idle is
# the same reading the other way round.
STEADY_RATIO = 1.25
# Seconds over which a capacity factor learnt under saturation recovers toward 1 (e-folding time).
FACTOR_RECOVERY_SECONDS = 600.0


def capacity_factor(fs: FunctionState, pinned_cap: float, cands: list[Candidate], pred, model: str,
                     before: tuple[float, float] | None, now: float) -> tuple[float, float]:
    """(factor, time): how much of the modelled capacity the function's instances really serve.

    The model prices an instance by its handler's batch time alone; what the instance does around it (HTTP,
    parsing, the queue) also costs, and on a busy host far more (measured here: an MLP instance modelled at
    1,880 requests/s refused requests at 770). Instances that refuse requests while they admit at least
    ``LOADED_SHARE`` of what the factor says they serve are saturated, so what they admit is their real
    capacity: the reading is admitted / modelled (ready instances only), and each moves the factor
    ``FACTOR_STEP`` of the way (readings are noisy while instances come and go). Refusals at lower load are
    bursts (a queue that overflowed), which say nothing about capacity, and so are refusals that stopped,
    or a load that rose or fell within the window (``STEADY_RATIO``). The factor recovers toward 1 over
    ``FACTOR_RECOVERY_SECONDS`` only while the instances run below ``BUSY_SHARE`` of what it allows: spare
    capacity is the only evidence that they serve more, and recovering without it removed an instance,
    saw refusals and added it back every 90 s at a steady load."""
    rate, refused = fs.rate or 0.0, fs.refused_rate
    factor, at = before if before is not None else (1.0, now)
    by_key = {c.key: c for c in cands}
    modelled = pinned_cap
    for v in fs.variants:
        if not v.pinned:  # only instances ready to serve: one still starting admits nothing yet
            c = by_key.get(config_key(v.batch, v.cpu, v.gpu))
            t = pred.exec_seconds(model, v.batch, v.cpu, v.gpu)
            modelled += min(v.ready, v.replicas) * (c.r_max if c else (v.batch / t if t else 0.0))
    admitted = max(0.0, rate - refused)
    saturated = refused > max(1.0, SATURATED_SHARE * rate) and _sustained(fs)
    if modelled > 0 and saturated and admitted >= LOADED_SHARE * factor * modelled:
        seen = min(1.0, max(MIN_FACTOR, admitted / modelled))
        return factor + FACTOR_STEP * (seen - factor), now
    if modelled > 0 and admitted >= BUSY_SHARE * factor * modelled:
        return factor, now  # as busy as the factor allows: no evidence that they serve more
    return 1.0 - (1.0 - factor) * math.exp(-max(0.0, now - at) / FACTOR_RECOVERY_SECONDS), now


def _sustained(fs: FunctionState) -> bool:
    """Refusals still going on over the last few seconds, at an arrival rate the rate window's average
    holds (True when the short window is unknown)."""
    if fs.recent_rate is None:
        return True
    rate, recent = fs.rate or 0.0, fs.recent_rate
    return (fs.recent_refused > max(1.0, SATURATED_SHARE * recent)
            and rate > 0 and 1 / STEADY_RATIO <= recent / rate <= STEADY_RATIO)


def useful_rate(pred, model: str, v: Variant, slo: float, batch_sizes: tuple[int, ...]) -> float:
    """Requests per second a pinned instance serves within the SLO: at its own batch size when that batch
    meets INFless's rule (t <= SLO/2, or SLO for b = 1), else at the largest smaller batch that does (its
    admission keeps its batches that small under load); 0 when none does or nothing is known."""
    best = 0.0
    for b in sorted({v.batch, *(b for b in batch_sizes if b < v.batch)}):
        t = pred.exec_seconds(model, b, v.cpu, v.gpu)
        if t and t <= (slo / 2 if b > 1 else slo):
            best = max(best, b / t)
    return best
