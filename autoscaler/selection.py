"""Stage one of a decision, as data: choose how many instances of which configuration each function runs.

Node capacity is pooled here (total CPU, GPU and memory; a configuration is only offered if one instance
fits some node), which keeps the program at functions x configurations variables instead of
functions x configurations x nodes. Both the exact program (``ilp``) and the greedy fallback (``greedy``)
take a ``SelectionProblem`` and answer a ``Selection``; ``lower_bound`` is a proven bound on both.

Per function f with candidates k (instances n_fk, integer):
    minimise   sum cost_k n_fk  +  penalty * shortfall_f  +  below_min_penalty * below_f
    cover_f:   sum r_max_k n_fk + shortfall_f >= demand_f * (1 + headroom)
    fill_f:    sum r_min_k n_fk <= demand_f                  (INFless: every instance kept busy enough;
                                                             x (1 + stickiness) while instances run)
    count_f:   min_f <= sum n_fk + below_f,  sum n_fk <= max_f
               (below_f priced far above any instance, below unserved demand: the minimum is kept unless
               the pool cannot hold it beside the demand)
    pool:      sum cpu_k n_fk <= CPU, likewise GPU and memory
    pool_P:    the same over the functions confined to a subset P of the nodes, against P's capacity
               (exact for nested subsets, such as GPU nodes within all nodes; necessary otherwise)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoscaler.candidates import Candidate, smallest


@dataclass(frozen=True)
class FunctionDemand:
    """One function's part of the selection problem."""

    name: str
    # Non-dominated feasible configurations (may be empty: then the function is left out).
    candidates: tuple[Candidate, ...]
    # Requests per second to serve (before headroom).
    demand: float
    min_count: int = 0
    max_count: int = 64
    # Instances running now per candidate key ((key, count), ...): up to that many of a configuration are
    # priced ``SelectionProblem.stickiness`` lower, so that noise does not churn (and an extra instance of
    # a running configuration costs what a new one of another does).
    current: tuple[tuple[str, int], ...] = ()
    # Nodes its instances may run on (its placement constraints, ``constraints.eligible``); None: any.
    nodes: frozenset[str] | None = None


@dataclass(frozen=True)
class Pool:
    """Capacity of a subset of the nodes, shared by the functions whose instances may use only those nodes:
    pooling every node let the selection buy for a GPU-constrained function capacity only CPU nodes had."""

    name: str
    cpu: float
    gpu: float
    memory: float
    # The functions held to it (those whose eligible nodes all lie in the subset).
    functions: frozenset[str]


@dataclass(frozen=True)
class SelectionProblem:
    """Functions with demands and candidates, against pooled capacity."""

    functions: tuple[FunctionDemand, ...]
    cpu: float
    gpu: float
    memory: float
    headroom: float = 0.2
    # Relative discount on the cost of configurations running now (``AutoscalerConfig.switch_margin``).
    stickiness: float = 1e-3
    # Subsets of the nodes some functions are confined to, besides the pool of all of them.
    pools: tuple[Pool, ...] = ()

    def every_pool(self) -> tuple[Pool, ...]:
        """The pool of all the nodes (named "", holding every function), then ``pools``."""
        whole = Pool("", self.cpu, self.gpu, self.memory, frozenset(f.name for f in self.functions))
        return (whole, *self.pools)

    def cover(self, f: FunctionDemand) -> float:
        """Capacity (requests per second) the function should get."""
        return f.demand * (1.0 + self.headroom)

    def fill_limit(self, f: FunctionDemand) -> float:
        """The most the instances' ``r_min`` may add up to: the demand, and ``stickiness`` more while the
        function runs instances (hysteresis: instances kept a little underfilled are not swapped for
        others at every few percent of noise in their measured times)."""
        return f.demand * (1.0 + self.stickiness) if f.current else f.demand

    def below_min_penalty(self, f: FunctionDemand) -> float:
        """Price of one instance missing from the function's minimum: far above any instance (a minimum is
        kept while the pool holds it), below unserved demand (a request waiting beats a warm idle one).
        Where its instances cost nothing (``beta=0`` prices CPU at 0), one unserved request per second: a
        price of 0 let the solver drop the minimum."""
        dearest = max((c.cost for c in f.candidates), default=1.0)
        return 100.0 * dearest if dearest > 0 else self.penalty(f)

    def penalty(self, f: FunctionDemand) -> float:
        """Price of one unserved request per second: far above serving it with the worst candidate."""
        worst = max((c.cost / c.r_max for c in f.candidates), default=1.0)
        return 1000.0 * max(worst, 1e-6)


@dataclass(frozen=True)
class Selection:
    """Instances per (function, candidate key), with how they were found."""

    # {function: {candidate key: instances}}
    counts: dict[str, dict[str, int]]
    # "optimal" (proven within the gap), "feasible" (time limit), "greedy", or "failed: ..."
    status: str
    # Objective value: weighted resources (shortfall penalties excluded).
    cost: float
    # Requests per second not covered, per function (only when capacity or max instances ran out).
    shortfall: dict[str, float] = field(default_factory=dict)
    # A proven lower bound on the optimal cost (the solver's dual bound or ``lower_bound``).
    bound: float = 0.0
    solver: str = ""

    @property
    def ok(self) -> bool:
        """True when it holds an answer."""
        return not self.status.startswith("failed")


def lower_bound(problem: SelectionProblem) -> float:
    """A proven lower bound on the optimal objective (weighted resources, plus the penalties of what is left
    short), so on the cost of any selection that leaves nothing short: each function alone, its cover relaxed
    to fractions.

    A function with demand needs at least one instance (or pays its shortfall), and at least min_count
    while the pool holds every function's minimum in its smallest configuration and every demand at its
    leanest CPU per request (a minimum is soft: where the pool is tight it is missed, not paid for).
    """
    need = [0.0, 0.0, 0.0]
    for f in problem.functions:
        if not f.candidates:
            continue
        small = smallest(f.candidates)
        for i, amount in enumerate((small.cpu, small.gpu, small.memory)):
            need[i] += f.min_count * amount
        need[0] += problem.cover(f) * min(c.cpu / c.r_max for c in f.candidates)
    minimums_fit = need[0] <= problem.cpu + 1e-9 and need[1] <= problem.gpu + 1e-9 and need[2] <= problem.memory
    total = 0.0
    for f in problem.functions:
        if not f.candidates:
            continue
        cheapest = min(c.cost for c in f.candidates)
        best_ratio = min(c.cost / c.r_max for c in f.candidates)
        cover = problem.cover(f)
        fractional = cover * min(best_ratio, problem.penalty(f))
        one = min(cheapest, cover * problem.penalty(f)) if cover > 0 else 0.0
        total += max(fractional, one, f.min_count * cheapest if minimums_fit else 0.0)
    return total


def selection_cost(problem: SelectionProblem, counts: dict[str, dict[str, int]]) -> float:
    """Weighted resources of a selection."""
    total = 0.0
    for f in problem.functions:
        by_key = {c.key: c for c in f.candidates}
        total += sum(by_key[k].cost * n for k, n in counts.get(f.name, {}).items())
    return total
