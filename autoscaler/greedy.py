"""Greedy answers to both stages: the fallback selection and best-fit packing onto nodes.

Selection: across all functions the purchase with the lowest cost per *useful* throughput,
``cost / min(r_max, remaining)``, so a big instance that would mostly sit idle on the last few requests
per second loses to a small one (the fragment penalty) and a contended pool goes to the cheapest requests
first; then the minimum instances with what is left; the fill rule
(``sum r_min <= demand``) and the instance bounds are kept; what does not fit is shortfall.

Packing: instances go largest first (GPU, then CPU, then memory) to the node where they leave the least
CPU free (best fit), after every group has first been given back the nodes it already runs on. GPU shares
are packed per device; with power-of-two shares best fit loses nothing on a device.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass

from autoscaler.ilp import Group
from autoscaler.selection import Selection, SelectionProblem, selection_cost


class _Buyer:
    """One function's purchases so far and what it still needs."""

    def __init__(self, f, cover: float, pools: list[list[float]]) -> None:
        """``pools``: the [cpu, gpu, memory] left in every pool ``f`` draws from (shared with other buyers)."""
        self.f, self.remaining, self.fill_left, self.pools = f, cover, f.demand, pools
        self.chosen: dict[str, int] = {}
        self.total = 0

    def affordable(self, c, n: int) -> int:
        """How many of ``c`` (at most ``n``) the bounds, the fill rule and the pooled resources allow."""
        n = min(n, self.f.max_count - self.total)
        if c.r_min > 0:
            n = min(n, math.floor((self.fill_left + 1e-9) / c.r_min))
        for cpu_left, gpu_left, mem_left in self.pools:
            n = min(n, math.floor((cpu_left + 1e-9) / c.cpu), math.floor((mem_left + 1e-9) / c.memory))
            if c.gpu:
                n = min(n, math.floor((gpu_left + 1e-9) / c.gpu))
        return max(n, 0)

    def _options(self) -> list:
        return [c for c in self.f.candidates if self.affordable(c, 1) > 0]

    def for_demand(self) -> tuple[float, object, int] | None:
        """(cost per useful request/s, candidate, how many) of the next purchase covering demand, or None:
        the lowest cost per *useful* throughput, ``cost / min(r_max, remaining)`` (a big instance that would
        mostly idle on the last few requests loses to a small one)."""
        options = self._options() if self.remaining > 1e-9 else []
        if not options:
            return None
        c = min(options, key=lambda c: (c.cost / min(c.r_max, self.remaining), c.cost))
        n = self.affordable(c, max(1, math.floor(self.remaining / c.r_max)))
        return c.cost / min(c.r_max, self.remaining), c, n

    def for_minimum(self) -> tuple[object, int] | None:
        """(candidate, how many) of the instances still missing from the minimum, or None: the cheapest,
        and the smallest among equals (with free CPU every CPU configuration costs 0)."""
        options = self._options() if self.total < self.f.min_count else []
        if not options:
            return None
        c = min(options, key=lambda c: (c.cost, c.gpu, c.cpu, c.memory, -c.r_max))
        return c, self.affordable(c, self.f.min_count - self.total)

    def buy(self, c, n: int) -> None:
        self.chosen[c.key] = self.chosen.get(c.key, 0) + n
        self.total += n
        self.remaining -= n * c.r_max
        self.fill_left -= n * c.r_min
        for pool in self.pools:
            pool[0] -= n * c.cpu
            pool[1] -= n * c.gpu
            pool[2] -= n * c.memory


def select_greedy(problem: SelectionProblem) -> Selection:
    """Stage one, greedily; never fails (shortfall records what could not be covered).

    Demand first, across all functions the purchase with the lowest cost per useful request/s next; then,
    with what is left, every function's minimum instances (the ILP's order too: a request waiting beats a
    warm idle instance, ``selection.below_min_penalty``). Taking functions in turn instead let the first one
    listed spend a contended node on its dear requests (one 2-CPU node: a ResNet served 401/s and an MLP at
    20,000/s none; the ILP served the MLP in full). The ILP weighs each function's shortfall by its own
    penalty, so under contention the two can still split a pool differently."""
    pools = [(p.functions, [p.cpu, p.gpu, p.memory]) for p in problem.every_pool()]
    buyers = [_Buyer(f, problem.cover(f), [left for names, left in pools if f.name in names])
              for f in problem.functions if f.candidates]
    heap = [(step[0], i) for i, b in enumerate(buyers) if (step := b.for_demand()) is not None]
    heapq.heapify(heap)
    while heap:
        ratio, i = heapq.heappop(heap)
        step = buyers[i].for_demand()
        if step is None:
            continue
        if step[0] > ratio + 1e-12 and heap and step[0] > heap[0][0]:
            heapq.heappush(heap, (step[0], i))  # others got cheaper to serve meanwhile: their turn first
            continue
        buyers[i].buy(step[1], step[2])
        following = buyers[i].for_demand()
        if following is not None:
            heapq.heappush(heap, (following[0], i))
    for b in buyers:
        while (step := b.for_minimum()) is not None:
            b.buy(*step)
    counts = {b.f.name: b.chosen for b in buyers if b.chosen}
    shortfall = {b.f.name: b.remaining for b in buyers if b.remaining > 1e-6}
    return Selection(counts, "greedy", selection_cost(problem, counts), shortfall, 0.0, "greedy")


@dataclass
class _Bin:
    name: str
    cpu: float
    memory: float
    devices: list[float]


def _devices(gpus: float) -> list[float]:
    """A node's free GPU as devices: whole ones, and the part of one a running instance leaves (0.75 free
    was no device at all, and a 0.5 share found no node)."""
    whole = int(gpus + 1e-9)
    part = gpus - whole
    return [1.0] * whole + ([part] if part > 1e-9 else [])


def pack_best_fit(groups: list[Group], nodes: list[tuple[str, float, float, float]]
                  ) -> tuple[dict[tuple[str, str], dict[str, int]], dict[tuple[str, str], int]]:
    """Place every group's instances; returns ({(fn, key): {node: n}}, {(fn, key): unplaced})."""
    bins = {name: _Bin(name, cpu, memory, _devices(gpus)) for name, cpu, gpus, memory in nodes}
    # (free CPU, names) sorted by free CPU: of every node, and of the nodes of each subset some group is
    # confined to (scanning every node for one of a few GPU nodes cost a pass over the cluster per instance)
    index: dict[frozenset[str] | None, tuple[list[float], list[str]]] = {}
    within: dict[str, list[tuple[list[float], list[str]]]] = {name: [] for name in bins}
    for subset in [None, *sorted({g.nodes for g in groups if g.nodes is not None}, key=sorted)]:
        order = sorted((n for n in bins if subset is None or n in subset), key=lambda n: bins[n].cpu)
        index[subset] = ([bins[n].cpu for n in order], order)
        for name in order:
            within[name].append(index[subset])
    placed: dict[tuple[str, str], dict[str, int]] = {}
    unplaced: dict[tuple[str, str], int] = {}

    def put(g: Group, b: _Bin) -> None:
        for free, order in within[b.name]:
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
        for free, order in within[b.name]:
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
            b = bins.get(name) if g.nodes is None or name in g.nodes else None
            while b is not None and n > 0 and left[id(g)] > 0 and fits(g, b):
                put(g, b)
                n -= 1
                left[id(g)] -= 1
    for g in todo:
        free, order = index[g.nodes]
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
