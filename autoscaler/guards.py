"""Guard rails, pure and clock-free: held demand and held execution times (scale-down delay), instance
bounds (min, max, keep-warm), step limits, and a function deployed anew under its name starting its memory
afresh. Each is a named config field of ``AutoscalerConfig`` with a
test on a synthetic clock.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

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


def redeployments(functions: Iterable[FunctionState], deployed: Mapping[str, str], since: Mapping[str, float],
                  now: float, delay: float) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(createdAt of each function's parent, when each new deployment still watched for ``delay`` was first
    seen, and why each function deployed anew since ``deployed`` was taken starts afresh).

    A function deleted and deployed again under its name between two ticks is listed in both, so its memory
    was kept: the old deployment's peak demand held variants for the whole delay, its measured times priced
    another image, and a capacity factor learnt by another model stayed until it recovered. A platform that
    recreates a function on update (faasd replaces its container) reads as a new deployment too, which starts
    over just the same. Without createdAt nothing is told, and a function listed once without it keeps the
    createdAt last seen and its watch (else the watch ended, removing at once, and a deployment anew after the
    gap went unnoticed)."""
    now_deployed, fresh = {}, {}
    for fs in functions:
        before = deployed.get(fs.name)
        created = str(fs.spec.get("createdAt") or "")
        if not created:
            if before is not None:
                now_deployed[fs.name] = before
            continue
        now_deployed[fs.name] = created
        if before is not None and before != created:
            fresh[fs.name] = (f"deployed anew (createdAt {created}, was {before}): its demand, measured times and "
                              f"capacity factor start afresh, and nothing is removed for {delay:g}s")
    watched = {name: at for name, at in since.items()
               if name in now_deployed and name not in fresh and now - at < delay}
    watched.update((name, now) for name in fresh)
    return now_deployed, watched, fresh
