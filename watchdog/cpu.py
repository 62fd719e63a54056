"""How many cores an instance may use: its configured limit, else its cgroup quota, never above the machine."""

from __future__ import annotations

import math
import os


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """Cores allowed by the cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us``); None when unlimited or unknown."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may be scheduled on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def compute_threads(cpu_limit: float | None, quota: float | None, cores: int) -> int:
    """Intra-op threads: the limit (or quota) rounded up, at least 1, at most the usable cores."""
    limit = cpu_limit if cpu_limit is not None else quota
    if limit is None:
        return max(1, cores)
    return max(1, min(cores, math.ceil(limit - 1e-9)))
