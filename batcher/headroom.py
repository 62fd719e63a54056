"""How much of the SLO admission may fill, steered by the latencies admitted requests got. Pure.

Admission (``policy.admit``) queues a request when its predicted latency is within the SLO. Its prediction
is built from the execution-time model's recent medians; past capacity the queue sits right at that bound,
so any batch slower than the median pushes the requests behind it over the SLO. Measured on 2 vCPUs with
the MLP example at batch 64 and a 50 ms SLO, offered 5,500-6,500 req/s (past capacity): the instance shed
with 503 as it should, yet single batches stretched from 10 ms to as much as 52 ms while the load
generator, the HTTP loop and the handler all wanted the two cores, and the client's p99 reached 94-131 ms.

``Headroom`` closes the loop on what the SLO is about: it keeps the latencies (queueing plus execution) of
recently answered requests, and when their high quantile exceeds the SLO it lowers the share of the SLO
that admission may fill, multiplicatively and damped; when the quantile is back under the SLO the share
grows back, to all of it. While nothing runs late it stays at 1, so an instance that keeps its SLO is
never made to refuse more than before; modelling errors of any kind (a slow tail, a lagging median,
hand-offs the model does not time) are corrected by what they cost.
"""

from __future__ import annotations

import threading
from typing import Iterable


class Headroom:
    """The share of the SLO (``min_share``..1) that a request's predicted latency may fill to be admitted."""

    def __init__(self, quantile: float = 0.99, min_samples: int = 200, interval: float = 0.25,
                 max_age: float = 2.0, gain: float = 0.5, min_share: float = 0.4, few_samples: int = 20) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile={quantile}: must be in (0, 1]")
        if min_samples < 1:
            raise ValueError(f"min_samples={min_samples}: must be >= 1")
        if interval < 0 or max_age <= interval:
            raise ValueError(f"interval={interval}, max_age={max_age}: need 0 <= interval < max_age")
        if not 0 < gain <= 1:
            raise ValueError(f"gain={gain}: must be in (0, 1]")
        if not 0 < min_share <= 1:
            raise ValueError(f"min_share={min_share}: must be in (0, 1]")
        if not 1 <= few_samples <= min_samples:
            raise ValueError(f"few_samples={few_samples}: must be in 1..min_samples ({min_samples})")
        # The latency quantile held to the SLO (the SLO is a tail target).
        self.quantile = quantile
        # A step needs this many answers since the previous step...
        self.min_samples = min_samples
        # ...and this many seconds: each step is judged on requests admitted under the share before it.
        self.interval = interval
        # With no step for this many seconds (too few answers: the load is gone) the share is 1 again.
        self.max_age = max_age
        # ...so at a rate too low to gather ``min_samples`` within it, a step is taken on this many once they
        # span half of ``max_age`` (at 50 req/s the share was otherwise back to 1 before every step).
        self.few_samples = few_samples
        # Damping: each step multiplies the share by (SLO / observed quantile) ** gain.
        self.gain = gain
        # The share never falls below this: an overload must not leave an instance refusing nearly all.
        self.min_share = min_share
        self._fresh: list[float] = []
        self._share = 1.0
        self._at = float("-inf")
        self._gathering = float("-inf")  # when the first answer not yet judged came
        self._lock = threading.Lock()

    def observe(self, now: float, latencies: Iterable[float], slo: float) -> None:
        """Record the latencies (seconds, queueing plus execution) of requests answered at ``now``."""
        if slo <= 0:
            return
        with self._lock:
            if not self._fresh:
                self._gathering = now
            self._fresh.extend(latency / slo for latency in latencies)
            n = len(self._fresh)
            if (n >= self.min_samples and now - self._at >= self.interval) or \
                    (n >= self.few_samples and now - self._gathering >= self.max_age / 2):
                self._step(now)

    def share(self, now: float) -> float:
        """The share of the SLO admission may fill now."""
        if now - self._at > self.max_age:
            return 1.0
        return self._share

    def _step(self, now: float) -> None:
        ordered = sorted(self._fresh)
        self._fresh = []
        observed = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
        share = self.share(now)  # a stale share starts again from 1
        if observed > 0:
            share *= (1.0 / observed) ** self.gain
        self._share = min(1.0, max(self.min_share, share))
        self._at = now
