"""The dispatch policy, pure: how long a batch may wait, and whether a new request can still meet its SLO.

INFless's rule: a request waits at most ``batch_timeout`` for its batch to fill, then the batch runs for
``t_exec(b)``; both together must stay within the SLO, so without an explicit timeout the policy waits
``latency_slo - t_exec(max_batch_size)``. Execution time comes from ``ExecTimeModel``, fitted as
``a*n + b`` over recent batches (as BentoML's dispatcher does) and optionally seeded by a prior such as
the COP predictor, so the first requests are judged by a prediction rather than by nothing.
"""

from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass
from typing import Callable, Deque

# Waiting this long for company costs little and lets concurrent arrivals share a batch.
DEFAULT_TIMEOUT_WITHOUT_SLO = 0.005


@dataclass(frozen=True)
class BatchConfig:
    """The live batch settings of one instance."""

    # Largest batch handed to handle_batch (>= 1; 1 disables batching).
    max_batch_size: int = 8
    # Longest wait for a batch to fill, counted from its oldest request; None derives it from the SLO.
    batch_timeout: float | None = None
    # Target end-to-end latency in seconds (queueing + execution); None disables SLO admission.
    latency_slo: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size={self.max_batch_size}: must be >= 1")
        if self.batch_timeout is not None and not (0 <= self.batch_timeout < math.inf):
            raise ValueError(f"batch_timeout={self.batch_timeout}: must be a finite number >= 0")
        if self.latency_slo is not None and not (0 < self.latency_slo < math.inf):
            raise ValueError(f"latency_slo={self.latency_slo}: must be a finite number > 0")


@dataclass(frozen=True)
class Admission:
    """Whether to queue a request, with the prediction behind the answer."""

    # True to queue it, False to refuse it now.
    admitted: bool
    # Predicted seconds until its response (None when nothing is known yet).
    predicted: float | None
    # Why it was refused, for the caller's error message ("" when admitted).
    reason: str = ""


class ExecTimeModel:
    """Execution seconds of a batch of ``n``: the median of recent batches of that size once it has been
    seen ``min_samples`` times, else a line ``a*n + b`` fitted through the per-size medians weighted by
    how often each size was seen, else the prior.

    With one size seen, every size is priced at its time: a fixed cost, as if batching were free (or
    along the prior's shape, scaled to that time, when there is a prior). Priced proportionally instead,
    an instance that had only run batches of 1 (50 ms, whatever the size, 100 ms SLO) predicted 400 ms for
    a batch of 8, refused what would have formed one (154 of 236 requests at 50 req/s) and never measured
    anything larger.

    A size seen once or twice is not trusted alone: one slow batch of 32 during a burst, taken as the
    truth, made admission refuse the queues that would have formed batches of 32 again, so the estimate
    never recovered (measured: an instance stuck near 1.25k req/s refusing 20% while its p99 was 19 ms,
    where the same instance otherwise served 1.6k with none refused). An underestimate corrects itself
    as the larger batches run; an overestimate did not.
    """

    def __init__(self, per_size: int = 16, prior: Callable[[int], float] | None = None,
                 min_samples: int = 3) -> None:
        self._recent: dict[int, Deque[float]] = {}
        self._per_size = per_size
        self._min_samples = min_samples
        self._lock = threading.Lock()
        self._medians: dict[int, float] = {}
        self._fit: tuple[float, float] | None = None
        # Predictions made since the last observation, by batch size: admission asks for the same few sizes
        # with every request, and between two batches the answer cannot change.
        self._predicted: dict[int, float | None] = {}
        self._prior = prior

    @property
    def prior(self) -> Callable[[int], float] | None:
        """Seconds by batch size used until batches have been seen (None: nothing is known until then)."""
        return self._prior

    @prior.setter
    def prior(self, prior: Callable[[int], float] | None) -> None:
        with self._lock:
            self._prior = prior
            self._predicted = {}

    def observe(self, n: int, seconds: float) -> None:
        """Record that a batch of ``n`` took ``seconds``."""
        with self._lock:
            recent = self._recent.setdefault(n, collections.deque(maxlen=self._per_size))
            recent.append(seconds)
            ordered = sorted(recent)
            self._medians[n] = ordered[len(ordered) // 2]
            self._fit = None
            self._predicted = {}

    def predict(self, n: int) -> float | None:
        """Predicted seconds for a batch of ``n``; None when there is neither data nor a prior."""
        try:
            return self._predicted[n]
        except KeyError:
            pass
        with self._lock:
            predicted = self._predicted  # replaced, not cleared, by ``observe``: a late store here is dropped
            predicted[n] = value = self._predict(n)
        return value

    def _predict(self, n: int) -> float | None:
        """``predict`` without the memo (called under the lock)."""
        if n in self._medians and (len(self._recent[n]) >= self._min_samples or len(self._medians) < 2):
            return self._medians[n]
        fit = self._linear_fit()
        if fit is not None:
            a, b = fit
            return max(a * n + b, 0.0)
        if self._medians:
            size, seconds = next(iter(self._medians.items()))
            scale = self._prior(size) if self._prior is not None else 0.0
            return seconds * self._prior(n) / scale if scale > 0 else seconds
        return self._prior(n) if self._prior is not None else None

    def measured(self) -> bool:
        """True once a batch has been observed (per request on the admission path: no copy, no lock; a
        dict's truth is read whole)."""
        return bool(self._medians)

    def sizes(self) -> dict[int, float]:
        """Median seconds per observed batch size."""
        with self._lock:
            return dict(self._medians)

    def _linear_fit(self) -> tuple[float, float] | None:
        if self._fit is not None or len(self._medians) < 2:
            return self._fit
        points = [(n, t, len(self._recent[n])) for n, t in self._medians.items()]
        trusted = [p for p in points if p[2] >= self._min_samples]
        points = trusted if len(trusted) >= 2 else points
        total = sum(w for _, _, w in points)
        mean_n = sum(n * w for n, _, w in points) / total
        mean_t = sum(t * w for _, t, w in points) / total
        var = sum(w * (n - mean_n) ** 2 for n, _, w in points)
        slope = max(sum(w * (n - mean_n) * (t - mean_t) for n, t, w in points) / var, 0.0) if var else 0.0
        self._fit = (slope, max(mean_t - slope * mean_n, 0.0))
        return self._fit


def table_prior(points: dict[int, float]) -> Callable[[int], float]:
    """A prior from predicted (batch size -> seconds) points: linear between them, flat below the
    smallest, proportional above the largest. The autoscaler passes the COP prediction this way."""
    ordered = sorted(points.items())
    if not ordered:
        raise ValueError("exec_prior needs at least one batch:seconds point")

    def prior(n: int) -> float:
        if n <= ordered[0][0]:
            return ordered[0][1]
        for (n0, t0), (n1, t1) in zip(ordered, ordered[1:]):
            if n <= n1:
                return t0 + (t1 - t0) * (n - n0) / (n1 - n0)
        last_n, last_t = ordered[-1]
        return last_t * n / last_n

    return prior


class RateMeter:
    """Arrivals per second, exponentially decayed with time constant ``tau`` (times are passed in)."""

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = tau
        self._rate = 0.0
        self._last: float | None = None
        self._lock = threading.Lock()

    def add(self, now: float, count: int = 1) -> float:
        """Record ``count`` arrivals at ``now``; returns the rate as of ``now``, these arrivals included."""
        with self._lock:
            self._rate = rate = self._decayed(now) + count / self.tau
            self._last = now
        return rate

    def rate(self, now: float) -> float:
        """Arrivals per second as of ``now``."""
        with self._lock:
            return self._decayed(now)

    def _decayed(self, now: float) -> float:
        if self._last is None:
            return 0.0
        return self._rate * math.exp(-max(0.0, now - self._last) / self.tau)


def effective_timeout(config: BatchConfig, exec_model: ExecTimeModel, arrival_rate: float | None = None,
                      waiting: int = 1) -> float:
    """The wait for a batch to fill, given ``waiting`` requests already queued.

    An explicit ``batch_timeout`` is used as given. Otherwise the wait is bounded by INFless's rule (wait
    plus execution within the SLO: ``latency_slo - t_exec(b)``) and, within it, by the execution time of
    the batch that would run now, ``t_exec(waiting)``: waiting longer than the work it would amortise
    never pays (the ski-rental argument, 2-competitive). No wait at all when fewer than one arrival is
    expected within it: a lone request at low load runs at once. Measured on this CPU, waiting for full
    batches raised p50 several-fold at moderate load without raising the sustainable rate.
    """
    if config.batch_timeout is not None:
        return config.batch_timeout
    if config.max_batch_size == 1:
        return 0.0
    now_exec = exec_model.predict(max(1, min(waiting, config.max_batch_size)))
    if config.latency_slo is None:
        bound = DEFAULT_TIMEOUT_WITHOUT_SLO
    else:
        t_full = exec_model.predict(config.max_batch_size)
        bound = min(config.latency_slo / 2, 0.05) if t_full is None else max(0.0, config.latency_slo - t_full)
    wait = bound if now_exec is None else min(bound, now_exec)
    if arrival_rate is not None and arrival_rate * wait < 1.0:
        return 0.0
    return wait


def admit(queue_depth: int, busy_remaining: float, config: BatchConfig, exec_model: ExecTimeModel,
          max_queue: int, arrival_rate: float | None = None, share: float = 1.0) -> Admission:
    """Decide whether a new request, behind ``queue_depth`` others, can finish within the SLO.

    ``busy_remaining`` is the predicted time left of the batch running now (0 when idle). The request
    runs after ``queue_depth // b`` full batches; if its batch is the first it may also wait the timeout.
    Its own batch is priced at the size it will have when it starts, not the size it has now: everything
    arriving until then (at ``arrival_rate``) joins it, up to ``b``, and every request of a batch is
    answered when the whole batch ends. Priced at its present size, each later arrival lengthened the
    batch of those admitted before it: with t(n) = 20 ms x n, b = 8 and a 200 ms SLO, 8 of 9 requests
    admitted behind a running batch ended past the SLO (predicted at most 180 ms, answered at 340 ms).
    ``share`` (<= 1) is how much of the SLO the prediction may fill: less while recent requests ran late
    (``batcher.headroom``).
    """
    if queue_depth >= max_queue:
        return Admission(False, None, f"queue full: {queue_depth} requests waiting (max_queue={max_queue})")
    if config.latency_slo is None or (queue_depth == 0 and busy_remaining == 0):
        # An idle instance always runs the request: refusing helps nobody, and running it refreshes the
        # execution-time estimate (a stale estimate must never lock the instance into refusing).
        return Admission(True, None)
    b = config.max_batch_size
    t_full = exec_model.predict(b)
    if t_full is None:
        return Admission(True, None)
    ahead_batches = queue_depth // b
    fills_now = queue_depth + 1 >= b
    wait = 0.0 if ahead_batches or busy_remaining or fills_now else effective_timeout(config, exec_model, arrival_rate)
    starts_in = busy_remaining + ahead_batches * t_full + wait
    joining = (arrival_rate or 0.0) * starts_in
    size = min(b, queue_depth % b + 1 + (round(joining) if joining < b else b))  # the expected arrivals
    own = exec_model.predict(size) or t_full
    predicted = starts_in + own
    if predicted > share * config.latency_slo:
        bound = "" if share >= 1 else f"{share:.0%} of "
        late = "" if share >= 1 else "; recent requests ran past the SLO"
        return Admission(False, predicted,
                         f"predicted latency {predicted * 1000:.1f}ms exceeds {bound}latency_slo "
                         f"{config.latency_slo * 1000:.0f}ms ({queue_depth} requests queued{late})")
    return Admission(True, predicted)
