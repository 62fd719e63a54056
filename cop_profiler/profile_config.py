"""What ``profile_model`` is told (``ProfileConfig``) and what one run did (``ProfileReport``). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from cop_profiler.effort import EffortRule
from cop_profiler.sampling import SamplingRule
from cop_profiler.timer import TimingPolicy


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile."""

    # Batch sizes to time every operator at (powers of two 1..2^k by default).
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    # CPU intra-op thread counts (1..cores by default).
    threads: tuple[int, ...] = (1, 2)
    # Devices: "cpu" and, where a GPU is present, "cuda".
    devices: tuple[str, ...] = ("cpu",)
    # Measurement policy for operators and calibration runs.
    policy: TimingPolicy = TimingPolicy()
    # Batch sizes of the whole-model calibration (at every thread count), moved into the range of
    # ``batches`` (``calibration_sizes``); empty disables calibration.
    calibration_batches: tuple[int, ...] = (1, 8)
    # Re-time operators even when the DB has them.
    force: bool = False
    # Passes at the end of each round that re-time points still noisy or implausibly slow with more threads,
    # keeping the faster measurement: interference on a shared machine comes in bursts, a later try often
    # misses it.
    retries: int = 3
    # Which batch sizes of the grid are timed and which left to interpolation (tolerance 0: all timed).
    sampling: SamplingRule = SamplingRule()
    # Which points are timed again, by their operator's share of the model's time (whole models: share 1).
    effort: EffortRule = EffortRule()

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches={self.batches}: need at least one batch size >= 1")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads={self.threads}: need at least one thread count >= 1")

    def calibration_sizes(self) -> tuple[int, ...]:
        """The calibration's batch sizes, each moved into the range of ``batches``: outside it the operator
        sum is extrapolated, and a fit to it corrected the model by the extrapolation's error (a grid of
        1,2,4 was calibrated at 8, a grid of 4 alone at 1 and 8 against one flat point), and a grid kept
        small because the model does not fit in memory at larger batches still ran it at batch 8."""
        lo, hi = min(self.batches), max(self.batches)
        return tuple(sorted({min(max(b, lo), hi) for b in self.calibration_batches}))


@dataclass(frozen=True)
class ProfileReport:
    """What one profiling run did."""

    model_ref: str
    # "fx" or "recorded".
    traced_with: str
    # Operator calls in one forward.
    nodes: int
    # Distinct operators of the model.
    operators: int
    # Operators timed in this run.
    new_operators: int
    # Operators found in the DB and not timed again.
    reused_operators: int
    # (operator, batch, threads, device) points timed in this run.
    points: int
    # Measurements flagged noisy in this run.
    noisy: int
    # Seconds spent timing operators (and overhead calibration).
    operator_seconds: float
    # Seconds spent on the whole-model calibration.
    calibration_seconds: float
    # Calibration (factor, offset seconds) per device and thread count.
    factors: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # Grid points of the new operators left to interpolation (see ``sampling``).
    interpolated: int = 0
