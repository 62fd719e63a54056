"""Timing one callable: warm-up, blocks of calls, median and IQR per call, and a noise flag.

After torch.utils.benchmark: a frozen policy, a frozen measurement, an injectable clock, and a ``sync``
hook that CUDA timing sets to ``torch.cuda.synchronize`` so queued kernels are inside the timed span.
Cheap calls run several times per block so the clock's resolution and the loop cost do not dominate.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

MAX_CALLS_PER_BLOCK = 10_000


@dataclass(frozen=True)
class TimingPolicy:
    """How hard to measure."""

    # Untimed calls first (the last one also sizes the blocks).
    warmup: int = 1
    # Each timed block runs enough calls to last at least this many seconds.
    min_block: float = 0.0003
    # Timed blocks at least; the median of their per-call times is reported.
    blocks: int = 3
    # While the blocks so far are noisy, more are timed, up to this many in all (adaptive, like
    # torch.utils.benchmark's adaptive_autorange): quiet calls stop at ``blocks``, short bursts of
    # interference are outvoted.
    max_blocks: int = 11
    # Spread/median above this marks the measurement noisy (the spread is the IQR from five blocks on,
    # the whole range below five, where quartiles would only be midpoints between extremes)...
    noise_threshold: float = 0.1
    # ...unless the spread is below this many seconds per call: jitter of a few microseconds on the tiniest
    # calls is dispatch and clock noise, far below anything a model's latency resolves, and timing such a
    # call again or longer would not change a prediction.
    noise_floor: float = 2e-6
    # Reported statistic: "median" of the block times, or "min" (timeit's advice on shared machines,
    # where interference from other processes only ever adds time).
    estimator: str = "median"

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ValueError(f"warmup={self.warmup}: must be >= 1")
        if self.blocks < 1:
            raise ValueError(f"blocks={self.blocks}: must be >= 1")
        if self.max_blocks < self.blocks:
            raise ValueError(f"max_blocks={self.max_blocks}: must be >= blocks ({self.blocks})")
        if self.estimator not in ("median", "min"):
            raise ValueError(f"estimator={self.estimator!r}: must be median or min")
        if self.min_block < 0:
            raise ValueError(f"min_block={self.min_block}: must be >= 0")
        if self.noise_floor < 0:
            raise ValueError(f"noise_floor={self.noise_floor}: must be >= 0")


@dataclass(frozen=True)
class Measurement:
    """Per-call seconds of one callable."""

    # The policy's statistic over blocks (the median by default; see TimingPolicy.estimator).
    median: float
    # Interquartile range over blocks (0 with a single block).
    iqr: float
    # Calls per timed block.
    calls_per_block: int
    # Timed blocks.
    blocks: int
    # True when the spread / median exceeded the policy's threshold (and the spread its noise floor).
    noisy: bool


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def _spread(values: list[float]) -> float:
    return _iqr(values) if len(values) >= 5 else max(values) - min(values)


def _noisy(per_call: list[float], policy: TimingPolicy) -> bool:
    median, spread = statistics.median(per_call), _spread(per_call)
    return median > 0 and spread / median > policy.noise_threshold and spread > policy.noise_floor


def measure(fn: Callable[[], Any], policy: TimingPolicy = TimingPolicy(),
            clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None) -> Measurement:
    """Time ``fn`` per ``policy``; ``sync`` (e.g. CUDA synchronize) brackets every timed span."""
    sync = sync or (lambda: None)
    estimate = 0.0
    for _ in range(policy.warmup):
        sync()
        start = clock()
        fn()
        sync()
        estimate = clock() - start
    calls = 1 if estimate <= 0 else min(MAX_CALLS_PER_BLOCK, max(1, math.ceil(policy.min_block / estimate)))
    per_call: list[float] = []
    while len(per_call) < policy.blocks or (len(per_call) < policy.max_blocks and _noisy(per_call, policy)):
        sync()
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        per_call.append((clock() - start) / calls)
    median = statistics.median(per_call)
    iqr = _iqr(per_call)
    value = median if policy.estimator == "median" else min(per_call)
    return Measurement(value, iqr, calls, len(per_call), _noisy(per_call, policy))


# With more threads (or a smaller batch) an operator may get a little slower (fork/join cost on tiny work,
# a different kernel), never this much: a bigger jump means another process held one of our cores, and
# the point is timed again.
MAX_SLOWDOWN = 1.3
# ...and never by more than this many seconds: waking a second thread costs microseconds, which on a
# call of a few microseconds is well over MAX_SLOWDOWN and yet real; interference costs scheduler slices.
SLOWDOWN_SLACK = 50e-6


def quieter(a: Measurement, b: Measurement) -> Measurement:
    """Of two measurements of the same thing, the faster one: interference only ever adds time."""
    return a if a.median <= b.median else b


def plausible_bound(seconds: dict[tuple[int, int], float], point: tuple[int, int]) -> float:
    """The least time ``point`` (batch, threads) can plausibly take more than: its time with fewer threads at
    the same batch, or with a larger batch at the same thread count (inf when neither is timed)."""
    b, c = point
    return min((t for (b2, c2), t in seconds.items() if (b2 == b and c2 < c) or (c2 == c and b2 > b)),
               default=math.inf)


def implausible(seconds: dict[tuple[int, int], float]) -> set[tuple[int, int]]:
    """(batch, threads) points that interference probably slowed: more than MAX_SLOWDOWN x (and more than
    SLOWDOWN_SLACK seconds over) ``plausible_bound``."""
    suspects = set()
    for point, t in seconds.items():
        bound = plausible_bound(seconds, point)
        if t > MAX_SLOWDOWN * bound and t - bound > SLOWDOWN_SLACK:
            suspects.add(point)
    return suspects
