"""Greedy answers to both stages: the fallback selection and best-fit packing onto nodes.

Selection: each function in turn buys the configuration with the lowest cost per *useful* throughput,
``cost / min(r_max, remaining)``, so a big instance that would mostly sit idle on the last few requests
per second loses to a small one (the fragment penalty); the fill rule (``sum r_min <= demand``) and the
instance bounds are kept; pooled capacity is spent in order and what does not fit is shortfall.

Packing: instances go largest first (GPU, then CPU, then memory) to the node where they leave the least
CPU free (best fit), after every group has first been given back the nodes it already runs on. GPU shares
are packed per device; with power-of-two shares best fit loses nothing on a device.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from autoscaler.ilp import Group
from autoscaler.selection import Selection, SelectionProblem, selection_cost


def select_greedy(problem: SelectionProblem) -> Selection:
    """Stage one, greedily; never fails (shortfall records what could not be covered)."""
    cpu_left, gpu_left, mem_left = problem.cpu, problem.gpu, problem.memory
    counts: dict[str, dict[str, int]] = {}
    shortfall: dict[str, float] = {}
    for f in problem.functions:
        if not f.candidates:
            continue
        remaining = problem.cover(f)
        fill_left = f.demand
        chosen: dict[str, int] = {}
        total = 0

        def affordable(c, n: int) -> int:
            n = min(n, f.max_count - total)
            if c.r_min > 0:
                n = min(n, math.floor((fill_left + 1e-9) / c.r_min))
            n = min(n, math.floor((cpu_left + 1e-9) / c.cpu), math.floor((mem_left + 1e-9) / c.memory))
            if c.gpu:
                n = min(n, math.floor((gpu_left + 1e-9) / c.gpu))
            return max(n, 0)

        while remaining > 1e-9 or total < f.min_count:
            options = [c for c in f.candidates if affordable(c, 1) > 0]
            if not options:
                break
            if remaining > 1e-9:
                best = min(options, key=lambda c: (c.cost / min(c.r_max, remaining), c.cost))
                n = affordable(best, max(1, math.floor(remaining / best.r_max)))
            else:
                best = min(options, key=lambda c: (c.cost, -c.r_max))
                n = affordable(best, f.min_count - total)
            chosen[best.key] = chosen.get(best.key, 0) + n
            total += n
            remaining -= n * best.r_max
            fill_left -= n * best.r_min
            cpu_left -= n * best.cpu
            gpu_left -= n * best.gpu
            mem_left -= n * best.memory
        if chosen:
            counts[f.name] = chosen
        if remaining > 1e-6:
            shortfall[f.name] = remaining
    return Selection(counts, "greedy", selection_cost(problem, counts), shortfall, 0.0, "greedy")


@dataclass
class _Bin:
    name: str
    cpu: float
    memory: float
    devices: list[float]


def pack_best_fit(groups: list[Group], nodes: list[tuple[str, float, float, float]]
                  ) -> tuple[dict[tuple[str, str], dict[str, int]], dict[tuple[str, str], int]]:
    """Place every group's instances; returns ({(fn, key): {node: n}}, {(fn, key): unplaced})."""
    bins = {name: _Bin(name, cpu, memory, [1.0] * int(gpus)) for name, cpu, gpus, memory in nodes}
    order = sorted(bins, key=lambda n: bins[n].cpu)
    free = [bins[n].cpu for n in order]
    placed: dict[tuple[str, str], dict[str, int]] = {}
    unplaced: dict[tuple[str, str], int] = {}

    def put(g: Group, b: _Bin) -> None:
        i = bisect.bisect_left(free, b.cpu)
        while order[i] != b.name:
            i += 1
        del free[i], order[i]
        b.cpu -= g.cpu
        b.memory -= g.memory
        if g.gpu:
            device = min((d for d in range(len(b.devices)) if b.devices[d] >= g.gpu - 1e-9),
                         key=lambda d: b.devices[d])
            b.devices[device] -= g.gpu
        j = bisect.bisect_left(free, b.cpu)
        free.insert(j, b.cpu)
        order.insert(j, b.name)
        slot = placed.setdefault((g.fn, g.key), {})
        slot[b.name] = slot.get(b.name, 0) + 1

    def fits(g: Group, b: _Bin) -> bool:
        return (b.cpu >= g.cpu - 1e-9 and b.memory >= g.memory - 1e-9
                and (not g.gpu or any(d >= g.gpu - 1e-9 for d in b.devices)))

    todo = sorted(groups, key=lambda g: (-g.gpu, -g.cpu, -g.memory))
    left = {id(g): g.count for g in todo}
    for g in todo:
        for name, n in g.current:
            b = bins.get(name)
            while b is not None and n > 0 and left[id(g)] > 0 and fits(g, b):
                put(g, b)
                n -= 1
                left[id(g)] -= 1
    for g in todo:
        while left[id(g)] > 0:
            i = bisect.bisect_left(free, g.cpu - 1e-9)
            while i < len(order) and not fits(g, bins[order[i]]):
                i += 1
            if i == len(order):
                unplaced[(g.fn, g.key)] = left[id(g)]
                break
            put(g, bins[order[i]])
            left[id(g)] -= 1
    return placed, unplaced
