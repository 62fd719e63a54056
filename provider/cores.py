"""CPU pinning: a replica with a ``cpu`` limit gets that many whole cores, spread over the least used ones."""

from __future__ import annotations

import math
import threading

import psutil


def cores_for(cpu_limit: float | None, available: int) -> int:
    """Whole cores for a limit: ``500m`` and ``1`` get 1, ``1.5`` gets 2; never more than the machine."""
    if cpu_limit is None or cpu_limit <= 0:
        return available
    return max(1, min(available, math.ceil(cpu_limit - 1e-9)))


class CoreAllocator:
    """Hands out core sets so that pinned replicas spread across the machine."""

    def __init__(self, cores: list[int] | None = None) -> None:
        self.cores = sorted(cores if cores is not None else psutil.Process().cpu_affinity())
        self._lock = threading.Lock()
        self._load = {c: 0 for c in self.cores}

    def allocate(self, count: int) -> list[int]:
        """``count`` cores, least loaded first; all cores when ``count`` covers the machine."""
        with self._lock:
            chosen = sorted(sorted(self.cores, key=lambda c: (self._load[c], c))[:count])
            for c in chosen:
                self._load[c] += 1
            return chosen

    def release(self, cores: list[int]) -> None:
        """Give back cores from ``allocate``."""
        with self._lock:
            for c in cores:
                if c in self._load and self._load[c] > 0:
                    self._load[c] -= 1
