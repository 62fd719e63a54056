"""Guard rails, pure and clock-free: held demand and held execution times (scale-down delay), instance
bounds (min, max, keep-warm) and step limits. Each is a named config field of ``AutoscalerConfig`` with a
test on a synthetic clock.
"""

from __future__ import annotations

from typing import Callable, Mapping

from autoscaler.config import AutoscalerConfig
from autoscaler.snapshot import FunctionState, Measurement


def held_demand(history: tuple[tuple[float, float], ...], now: float, demand: float,
                delay: float) -> tuple[tuple[tuple[float, float], ...], float]:
    """Add ``demand`` at ``now``; return the history within ``delay`` and its maximum (KPA's window).

    Capacity therefore rises at once with demand and falls only after ``delay`` seconds of lower demand.
    """
    kept = tuple((t, d) for t, d in history if now - t < delay and t <= now) + ((now, demand),)
    return kept, max(d for _, d in kept)


def held_measurements(history: tuple[tuple[float, tuple[Measurement, ...]], ...], now: float,
                      measured: tuple[Measurement, ...], delay: float
                      ) -> tuple[tuple[tuple[float, tuple[Measurement, ...]], ...], tuple[Measurement, ...]]:
    """Add ``measured`` at ``now``; return the history within ``delay`` and, per (batch, cpu, gpu), the
    slowest time in it: capacity priced from measured times falls at once when they rise and comes back
    only after ``delay`` seconds of faster ones, like demand, so a few percent of noise in one instance's
    timings does not add an instance one tick and remove it the next."""
    kept = tuple((t, m) for t, m in history if now - t < delay and t <= now) + ((now, measured),)
    slowest: dict[tuple[int, float, float], float] = {}
    for _, ms in kept:
        for m in ms:
            key = (m.batch, m.cpu, m.gpu)
            slowest[key] = max(slowest.get(key, 0.0), m.seconds)
    return kept, tuple(Measurement(b, c, g, s) for (b, c, g), s in sorted(slowest.items()))


def instance_bounds(fs: FunctionState, config: AutoscalerConfig) -> tuple[int, int]:
    """(fewest, most) instances: labels over config, raised to keep_warm after recent traffic."""
    low = fs.min_instances if fs.min_instances is not None else config.min_instances
    high = fs.max_instances if fs.max_instances is not None else config.max_instances
    if fs.idle_seconds is not None and fs.idle_seconds <= config.keep_warm_window:
        low = max(low, config.keep_warm)
    return min(low, high), max(high, 1)


Key = tuple[str, str]  # (configuration key, node)


def limit_steps(current: Mapping[Key, int], target: Mapping[Key, int], max_up: int, max_down: int,
                rank_up: Callable[[Key], float] = lambda k: 0.0) -> tuple[dict[Key, int], int, int]:
    """Move from ``current`` toward ``target`` by at most ``max_up`` additions and ``max_down`` removals.

    Additions go first to the groups ``rank_up`` scores highest (e.g. most capacity per instance);
    removals come from the groups with the largest excess. Returns (stepped, deferred additions,
    deferred removals).
    """
    stepped = {k: n for k, n in current.items() if n > 0}
    ups = sorted(((k, target.get(k, 0) - current.get(k, 0)) for k in target if target[k] > current.get(k, 0)),
                 key=lambda kv: (-rank_up(kv[0]), kv[0]))
    downs = sorted(((k, current[k] - target.get(k, 0)) for k in current if current[k] > target.get(k, 0)),
                   key=lambda kv: (-kv[1], kv[0]))
    budget = max_up
    deferred_up = 0
    for k, n in ups:
        step = min(n, budget)
        if step:
            stepped[k] = stepped.get(k, 0) + step
        budget -= step
        deferred_up += n - step
    budget = max_down
    deferred_down = 0
    for k, n in downs:
        step = min(n, budget)
        stepped[k] -= step
        if stepped[k] == 0:
            del stepped[k]
        budget -= step
        deferred_down += n - step
    return stepped, deferred_up, deferred_down
