"""decide's guard stage: the selected and placed plan stepped, kept safe and explained per function.

Pure. From the placement (``decide``) to each function's ``FunctionPlan``: step limits, variants younger
than ``min_variant_age`` kept, removals put off while a loop that just started has not watched demand for
``scale_down_delay`` (``_keep_unwatched``) or while replacements start (``_make_before_break``), additions
held back where the node would overfill, and the reason the plan gives.
"""

from __future__ import annotations

from collections import defaultdict

from autoscaler.candidates import Candidate, config_key, smallest
from autoscaler.config import AutoscalerConfig
from autoscaler.guards import instance_bounds, limit_steps
from autoscaler.plan import FunctionPlan, Target
from autoscaler.selection import Selection
from autoscaler.snapshot import FunctionState, Variant
from autoscaler.usage import current_instances, parent_down
from autoscaler.variants import variant_age


def guarded(problem, selection, placed, unplaced, context, nodes, config, factors,
             epoch: float, default_node: str, starting: set[str] = frozenset(),
             settling: set[str] = frozenset()) -> list[FunctionPlan]:
    """Each planned function's ``FunctionPlan``: its placed instances stepped and guarded, with its reason."""
    free = {name: [cpu, gpu, mem] for name, cpu, gpu, mem in nodes}
    unwatched: dict[str, int] = {}
    stepped_all: dict[str, dict[tuple[str, str], int]] = {}
    deferred: dict[str, dict[tuple[str, str], int]] = {}
    by_fn: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for (fn, key), where in placed.items():
        for node, n in where.items():
            by_fn[fn][(key, node)] = n
    for f in problem.functions:
        fs, held, pinned_cap, current = context[f.name]
        target = by_fn[f.name]
        by_key = {c.key: c for c in f.candidates}
        stepped, _, _ = limit_steps(current, target, config.max_step_up, config.max_step_down,
                                    rank_up=lambda k: by_key[k[0]].r_max if k[0] in by_key else 0.0)
        for group, n in _young(fs, config, epoch, default_node).items():  # kept, their resources counted
            stepped[group] = max(stepped.get(group, 0), n)
        if f.name in settling:  # demand before the loop began is unknown: nothing removed for it yet
            unwatched[f.name] = _keep_unwatched(fs, current, stepped, config)
        deferred[f.name] = _make_before_break(fs, current, stepped, f.name in starting, default_node)
        stepped_all[f.name] = stepped
        for (key, node), n in stepped.items():
            _hold(free, node, _resources(key, by_key, fs), n)
    for f in problem.functions:  # a swap on a full node: the removal there first, or the addition never fits
        fs, current, stepped = context[f.name][0], context[f.name][3], stepped_all[f.name]
        adds = {node for (key, node), n in stepped.items() if n > current.get((key, node), 0)}
        by_key = {c.key: c for c in f.candidates}
        for (key, node), n in list(deferred[f.name].items()):
            if node in adds and _overfull(free, node):
                stepped[(key, node)] -= n
                del deferred[f.name][(key, node)]
                _hold(free, node, _resources(key, by_key, fs), -n)
    plans = []
    for f in problem.functions:
        fs, held, pinned_cap, current = context[f.name]
        by_key = {c.key: c for c in f.candidates}
        stepped = stepped_all[f.name]
        for (key, node), n in sorted(stepped.items()):
            extra = n - current.get((key, node), 0)
            res = _resources(key, by_key, fs)
            while extra > 0 and _overfull(free, node):
                stepped[(key, node)] -= 1  # this node cannot hold the addition until a removal lands
                extra -= 1
                _hold(free, node, res, -1)
        targets = tuple(Target(f.name, key, node, n, by_key.get(key)) for (key, node), n in sorted(stepped.items())
                        if n > 0)
        capacity = pinned_cap + sum(t.count * _r_max(t.key, by_key, fs) for t in targets)
        cost = sum(t.count * (by_key[t.key].cost if t.key in by_key else _variant_cost(fs, t.key, config))
                   for t in targets)
        down = parent_down(fs)
        shortfall = 0.0 if down else max(0.0, held * (1 + config.headroom) - capacity)
        reason = _reason(selection, held, capacity, unplaced, f.name, shortfall, factors.get(f.name))
        if down:
            reason += "; its own deployment is scaled to zero and requests reach the queue only through it: no variants"
        if unwatched.get(f.name):
            reason += (f"; {unwatched[f.name]} instance(s) kept: the autoscaler watches demand for "
                       f"scale_down_delay={config.scale_down_delay:g}s after it starts before it removes any")
        if deferred.get(f.name):
            reason += (f"; {sum(deferred[f.name].values())} instance(s) kept until the instances replacing them "
                       "are ready")
        if shortfall > 1e-6:
            reason += _why_short(f, sum(t.count for t in targets), free)
        missing = f.min_count - sum(t.count for t in targets)
        if missing > 0:
            reason += f"; below its minimum instances (com.openfaas.scale.min) by {missing}: no room left for them"
        plans.append(FunctionPlan(f.name, held, capacity, cost, targets, shortfall, reason))
    return plans


def _young(fs: FunctionState, config: AutoscalerConfig, epoch: float,
           default_node: str) -> dict[tuple[str, str], int]:
    """Instances per (configuration, node) of variants younger than ``min_variant_age`` (by createdAt)."""
    def young(v: Variant) -> bool:
        age = variant_age(v, epoch)
        return age is not None and age < config.min_variant_age

    return current_instances(fs, default_node, young)


def _keep_unwatched(fs: FunctionState, current: dict[tuple[str, str], int], stepped: dict[tuple[str, str], int],
                    config: AutoscalerConfig) -> int:
    """Raise ``stepped`` back toward ``current`` (the removals a loop that has not yet watched demand for
    scale_down_delay puts off), but never above the function's most variants: no demand held before the
    restart can justify instances over com.openfaas.scale.max, nor variants of a parent scaled to zero (nothing
    reaches them); kept there, they outlived a lowered maximum for the whole delay. Returns how many were kept."""
    room = 0 if parent_down(fs) else max(0, instance_bounds(fs, config)[1]
                                         - sum(v.replicas for v in fs.variants if v.pinned))
    room -= sum(stepped.values())
    kept = 0
    for group, n in sorted(current.items()):
        back = min(n - stepped.get(group, 0), room - kept)
        if back > 0:
            stepped[group] = stepped.get(group, 0) + back
            kept += back
    return kept


def _hold(free: dict[str, list[float]], node: str, res: tuple[float, float, float], n: int) -> None:
    """Take ``n`` instances' resources from what ``node`` has free (negative ``n`` gives them back)."""
    if node in free:
        for i in range(3):
            free[node][i] -= res[i] * n


def _overfull(free: dict[str, list[float]], node: str) -> bool:
    """``node`` holds more than it has (a known node only)."""
    return node in free and any(x < -1e-9 for x in free[node])


def _make_before_break(fs: FunctionState, current: dict[tuple[str, str], int], stepped: dict[tuple[str, str], int],
                       starting: bool, default_node: str) -> dict[tuple[str, str], int]:
    """Removals of ready instances that ``stepped`` makes, put off (``stepped`` raised back for them) while
    the function adds instances or has some ``starting``: a replacement serves before what it replaces stops
    (a swap that deleted first answered 503s while the new instance started). Starting means some variant
    has had fewer replicas ready than it has for less than ``min_variant_age`` (new, grown or restarted),
    so one that never gets ready (a crash loop, a pod that stays Pending) holds nothing up for longer.
    Instances that are not ready are never kept for this. Returns what was put off."""
    ready = current_instances(fs, default_node, lambda v: v.ready >= v.replicas > 0)
    removals = {g: min(n - stepped.get(g, 0), ready.get(g, 0)) for g, n in current.items() if stepped.get(g, 0) < n}
    removals = {g: n for g, n in removals.items() if n > 0}
    if not removals or parent_down(fs):
        return {}
    if starting or any(n > current.get(g, 0) for g, n in stepped.items()):
        for g, n in removals.items():
            stepped[g] = stepped.get(g, 0) + n
        return removals
    return {}


def _reason(selection: Selection, held: float, capacity: float, unplaced, fn: str, shortfall: float,
            factor: tuple[float, float] | None = None) -> str:
    parts = [f"demand {held:.1f}/s, capacity {capacity:.1f}/s ({selection.status})"]
    if factor is not None and factor[0] < 0.995:
        parts.append(f"capacity x{factor[0]:.2f} of the model's (its instances refused requests)")
    lost = sum(n for (f, _), n in unplaced.items() if f == fn)
    if lost:
        parts.append(f"{lost} instances found no node")
    if shortfall > 1e-6:
        parts.append(f"short {shortfall:.1f}/s")
    return "; ".join(parts)


def _why_short(f, planned: int, free: dict[str, list[float]]) -> str:
    """What keeps a short function from more instances: its instance limit, or no node with room for its
    smallest configuration ("" when neither: the selection chose to, for a cheaper plan elsewhere)."""
    if planned >= f.max_count:
        return f" (at its most instances, {f.max_count}: com.openfaas.scale.max)"
    if not f.candidates or not free:
        return ""
    small = smallest(f.candidates)
    need = (small.cpu - 1e-9, small.gpu - 1e-9, small.memory)
    if any(all(r[i] >= need[i] for i in range(3)) for r in free.values()):
        return ""
    short = [name for i, name in enumerate(("CPU", "GPU", "memory")) if not any(r[i] >= need[i] for r in free.values())]
    what = " and ".join(short) if short else "all it needs together"
    return (f" (no node has room for another instance: the smallest needs {small.cpu:g} CPU, {small.gpu:g} GPU, "
            f"{small.memory / 2**30:.2f} GiB; no node has the {what} left after the running instances and this plan)")


def _variant_of(fs: FunctionState, key: str) -> Variant | None:
    return next((v for v in fs.variants if config_key(v.batch, v.cpu, v.gpu) == key), None)


def _resources(key: str, by_key: dict[str, Candidate], fs: FunctionState) -> tuple[float, float, float]:
    c = by_key.get(key)
    if c is not None:
        return c.cpu, c.gpu, float(c.memory)
    v = _variant_of(fs, key)
    return (v.cpu, v.gpu, float(v.memory)) if v else (0.0, 0.0, 0.0)


def _r_max(key: str, by_key: dict[str, Candidate], fs: FunctionState) -> float:
    c = by_key.get(key)
    return c.r_max if c is not None else 0.0  # a kept non-candidate is not counted on to meet the SLO


def _variant_cost(fs: FunctionState, key: str, config: AutoscalerConfig) -> float:
    v = _variant_of(fs, key)
    return config.beta * v.cpu + v.gpu if v else 0.0
