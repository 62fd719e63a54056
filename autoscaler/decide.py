"""decide: a pure function of a frozen snapshot, a predictor, the config, ``now`` and the guard memory.

Design (staged, exact where it matters). The direct program, integer instances per function x
configuration x node, does not solve at 100 functions x 100 nodes within a minute (shared/MEASURED.md).
Its cost, weighted resources, does not depend on which node an instance lands on, so it splits cleanly:

1. *Selection* (``selection``, ``ilp.solve_selection``): how many instances of which configuration each
   function runs, against pooled capacity. Exact (HiGHS in-process by default; CBC selectable), with a
   time limit; ~10-20 non-dominated configurations per function keep it at functions x 15 integer
   variables with every variable bounded by what covering alone needs, and the program is almost
   separable by function, so branch and bound closes fast. Its optimum is a lower bound of the direct
   program's (pooling relaxes the node constraints), and a proven bound is reported with every plan.
2. *Placement* (``ilp.solve_placement`` / ``greedy.pack_best_fit``): put the chosen instances on nodes.
   Exact (fewest nodes opened, running instances left in place) when groups x nodes is small
   (``placement_ilp_max_vars``); best-fit decreasing otherwise, which is what a large cluster of
   fractional-core instances on whole nodes needs: instances are small against nodes, so packing loses
   little, and it runs in milliseconds at 10k instances on 1,000 nodes. A function whose ``constraints``
   confine it to some nodes (``constraints.eligible``, by the nodes' labels) is offered the configurations
   those nodes can hold, is selected against their capacity as well (``selection.Pool``), and is placed
   on them only.
3. *Guard rails* (``guards``): demand and measured execution times held over ``scale_down_delay`` (the
   highest of each), running instances priced ``switch_margin`` lower (a configuration is swapped only for
   a real saving), instance bounds with keep-warm, step limits, and additions deferred where the stepped
   plan would overfill a node, and variants younger than ``min_variant_age`` kept (their resources counted).

When the solver fails or runs out of time without an answer, the greedy selection (cost per useful
throughput, fragment-penalised) is used and the plan says so. Why not decompose further: per-function
selection would be exact only while pooled capacity does not bind; the program handles the binding case.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from autoscaler.candidates import Candidate, config_key, enumerate_candidates, smallest
from autoscaler.config import AutoscalerConfig
from autoscaler.constraints import eligible
from autoscaler.greedy import pack_best_fit, select_greedy
from autoscaler.guards import held_demand, held_measurements, instance_bounds, limit_steps, redeployments
from autoscaler.ilp import Group, solve_placement, solve_selection
from autoscaler.plan import FunctionPlan, GuardMemory, Plan, Target
from autoscaler.predictor import Corrected, ExecPredictor
from autoscaler.selection import FunctionDemand, Pool, Selection, SelectionProblem, lower_bound
from autoscaler.snapshot import FunctionState, Snapshot, Variant
from autoscaler.variants import variant_age


@dataclass
class Usage:
    """Resources the instances decide does not plan hold: [cpu, gpu, memory] per node, and the (cpu, gpu,
    memory) of each instance whose node is not known (charged to nodes by ``settle``), with the nodes its
    constraints admit (None: any)."""

    nodes: defaultdict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
    unplaced: list[tuple[tuple[float, float, float], frozenset[str] | None]] = field(default_factory=list)

    def settle(self, nodes) -> None:
        """Charge the instances whose node is not known (a parent without a node label where there are
        several nodes) to the nodes, GPU instances first, each to the node with the most CPU left among
        those with its GPU and memory free, as a scheduler would place them: they hold resources on some
        node, and leaving them out let a plan fill every node around them (charged by CPU alone, a GPU
        parent's device went to a node without GPUs, and a variant was planned onto the device it holds).
        Only the nodes its constraints admit are considered, where any are listed (charged to the CPU node, a
        GPU-confined parent left the cores it holds on the GPU node to the plan)."""
        for item, allowed in sorted(self.unplaced, key=lambda x: (x[0][1], x[0][0], x[0][2]), reverse=True):
            admitted = [n for n in nodes if allowed is None or n.name in allowed] or list(nodes)
            if not admitted:
                break

            def room(n, item=item) -> tuple[bool, float, float]:
                held = self.nodes[n.name]
                left = (n.cpu - held[0], n.gpus - held[1], n.memory - held[2])
                return left[1] >= item[1] - 1e-9 and left[2] >= item[2], left[0], left[2]

            held = self.nodes[max(admitted, key=room).name]
            for i, amount in enumerate(item):
                held[i] += amount
        self.unplaced = []

# Refusals above this share of the arrivals (and 1/s) mean the function's instances are saturated.
SATURATED_SHARE = 0.01
# The capacity factor never goes below this (a stalled instance must not price every configuration at 0).
MIN_FACTOR = 0.05
# Refusals are read as saturation only while the instances admit at least this share of the capacity the
# factor allows (below it they are bursts at low load: 20/s admitted of a modelled 667/s once drove the
# factor to its floor)...
LOADED_SHARE = 0.25
# ...and the factor does not recover while they admit this share or more (no evidence of spare capacity).
BUSY_SHARE = 0.6
# Share of the way a capacity factor moves toward each new saturated reading.
FACTOR_STEP = 0.5
# A reading is taken only under sustained load: arrivals over the last few seconds within this ratio of the
# rate window's average (either way). When load falls, the window's average of admitted requests takes in
# idle seconds while its refusals still count: read then, one overload left the factor at 0.12 a minute
# after the last request, and the autoscaler added instances with nothing arriving; a burst from idle is
# the same reading the other way round.
STEADY_RATIO = 1.25
# Seconds over which a capacity factor learnt under saturation recovers toward 1 (e-folding time).
FACTOR_RECOVERY_SECONDS = 600.0


def decide(snapshot: Snapshot, predictor: ExecPredictor, config: AutoscalerConfig, now: float,
           memory: GuardMemory | None = None) -> Plan:
    """The plan for ``now``; an invalid plan (with its reason) when the snapshot cannot support one."""
    memory = memory or GuardMemory()
    if not snapshot.nodes:
        return Plan.invalid("no nodes in the snapshot: " + "; ".join(snapshot.problems), now, memory)
    broken = [p for p in snapshot.problems if p.startswith("openfaas")]
    if broken:
        return Plan.invalid("; ".join(broken), now, memory)
    if now - snapshot.taken_at > config.max_snapshot_age:
        return Plan.invalid(f"snapshot is {now - snapshot.taken_at:.0f}s old (max_snapshot_age="
                            f"{config.max_snapshot_age:g}s)", now, memory)
    deployed, redeployed_at, fresh = redeployments(snapshot.functions, memory.deployed, memory.redeployed_at, now,
                                                   config.scale_down_delay)
    # a parent missing while its variants are held keeps its createdAt: created again (faasd's update), it is
    # deployed anew, its variants kept for scale_down_delay, not a function never seen whose variants go at once
    waiting = _by_parent(snapshot.held)
    deployed.update((name, at) for name, at in memory.deployed.items() if name in waiting)
    redeployed_at.update((name, at) for name, at in memory.redeployed_at.items()
                         if name in waiting and now - at < config.scale_down_delay)
    history = {k: v for k, v in memory.demand_history.items() if k not in fresh}
    timings = {k: v for k, v in memory.measured_history.items() if k not in fresh}
    factors = {k: v for k, v in memory.capacity_factors.items() if k not in fresh}
    unready = {v.name: memory.unready_since.get(v.name, now) for fs in snapshot.functions for v in fs.variants
               if not v.pinned and v.ready < v.replicas}
    starting = {fs.name for fs in snapshot.functions
                if any(now - unready.get(v.name, -math.inf) < config.min_variant_age for v in fs.variants)}
    settling = {fs.name for fs in snapshot.functions} \
        if memory.started is not None and now - memory.started < config.scale_down_delay else set()
    settling |= set(redeployed_at)
    fixed = Usage()
    kept: list[FunctionPlan] = []
    demands: list[FunctionDemand] = []
    context: dict[str, tuple[FunctionState, float, float, dict[tuple[str, str], int]]] = {}
    shapes = sorted({(n.cpu, n.memory, n.gpus) for n in snapshot.nodes})
    remarks: list[str] = []  # said with the plan's reason
    told: dict[str, str] = {}  # said with a function's own reason
    default_node = snapshot.nodes[0].name if len(snapshot.nodes) == 1 else ""
    told.update({name: f"; {why}" for name, why in fresh.items()})
    for orphan in snapshot.orphans:  # until act deletes them
        _use(fixed, orphan.variant.node or default_node, orphan.variant, orphan.variant.replicas)
    for h in snapshot.held:  # a parent not listed for less than orphan_grace
        _use(fixed, h.variant.node or default_node, h.variant, h.variant.replicas)
    for parent, reasons in sorted(_by_parent(snapshot.held).items()):
        remarks.append(f"{parent}: {len(reasons)} variant(s) held as they run: {reasons[0]}")
    confinement = _confinement(snapshot)
    own_shapes: dict[frozenset[str] | None, list[tuple[float, int, int]]] = {None: shapes}
    for fs in snapshot.functions:
        allowed, notes = confinement[fs.name]
        for v in fs.variants:
            if v.pinned:
                _use(fixed, v.node or default_node, v, v.replicas, allowed)
        if fs.unreadable or fs.rate is None:
            kept.append(_unchanged(fs, fs.unreadable or "no arrival rate observed"))
            _use_all(fixed, fs, default_node, allowed)
            continue
        raw = fs.rate + fs.queue_depth / config.drain_seconds
        history[fs.name], held = held_demand(history.get(fs.name, ()), now, raw, config.scale_down_delay)
        model = fs.model or fs.name
        timings[fs.name], measured = held_measurements(timings.get(fs.name, ()), now, fs.measured,
                                                       config.scale_down_delay)
        pred = Corrected(predictor, {model: measured}) if measured else predictor
        remarks.extend(f"{fs.name}: {note}" for note in notes)
        if allowed is not None and not allowed:
            kept.append(_unchanged(fs, f"no node satisfies its constraints {list(fs.spec.get('constraints') or ())}"))
            _use_all(fixed, fs, default_node, allowed)
            continue
        if allowed not in own_shapes:  # once per node subset, not per function
            own_shapes[allowed] = sorted({(n.cpu, n.memory, n.gpus) for n in snapshot.nodes if n.name in allowed})
        own = own_shapes[allowed]
        cands = enumerate_candidates(model, fs.slo, fs.memory, pred, config.batch_sizes, config.cpu_steps,
                                     config.gpu_steps, config.beta, own)
        if not cands:
            why = _infeasible(fs, model, pred, config, own)
            if not _unneeded(fs, held, config):
                kept.append(_unchanged(fs, why))
                _use_all(fixed, fs, default_node, allowed)
                continue
            # nothing to price its variants by, but nothing for them to serve either: they go (stepped, young
            # ones kept), or idle variants of a model whose times were lost held their cores for good
            current = _current(fs, default_node)
            demands.append(FunctionDemand(fs.name, (), 0.0, 0, 0, _running_counts(current), allowed))
            context[fs.name] = (fs, held, 0.0, current)
            told[fs.name] = told.get(fs.name, "") + f"; no demand over scale_down_delay, so no variants although {why}"
            continue
        pinned_cap, pinned_n = 0.0, 0
        for v in fs.variants:
            if v.pinned:
                pinned_cap += v.replicas * _useful_rate(pred, model, v, fs.slo, config.batch_sizes)
                pinned_n += v.replicas
        factors[fs.name] = factor = _capacity_factor(fs, pinned_cap, cands, pred, model,
                                                     factors.get(fs.name), now)
        if factor[0] < 1.0:
            pinned_cap *= factor[0]
            cands = [dataclasses.replace(c, r_max=c.r_max * factor[0]) for c in cands]
        low, high = instance_bounds(fs, config)
        if _parent_down(fs):  # nothing reaches the queue: its variants would idle
            low = high = 0
        variant_demand = max(0.0, held - pinned_cap / (1.0 + config.headroom)) if high else 0.0
        current = _current(fs, default_node)
        demands.append(FunctionDemand(fs.name, tuple(cands), variant_demand, max(0, low - pinned_n),
                                      max(0, high - pinned_n), _running_counts(current), allowed))
        context[fs.name] = (fs, held, pinned_cap, current)
    fixed.settle(snapshot.nodes)
    held = fixed.nodes
    nodes = [(n.name, n.cpu - held[n.name][0], n.gpus - held[n.name][1], n.memory - held[n.name][2])
             for n in snapshot.nodes]
    problem = SelectionProblem(tuple(demands), sum(max(0.0, n[1]) for n in nodes),
                               sum(max(0.0, n[2]) for n in nodes), sum(max(0.0, n[3]) for n in nodes),
                               config.headroom, config.switch_margin, _pools(demands, nodes))
    selection = _select(problem, config)
    placed, unplaced, placement = _place(problem, selection, context, nodes, config)
    plans = [dataclasses.replace(p, reason=p.reason + told[p.name]) if p.name in told else p
             for p in kept + _guarded(problem, selection, placed, unplaced, context, nodes, config, factors,
                                      snapshot.taken_epoch, default_node, starting, settling)]
    complete = not selection.shortfall and all(sum(selection.counts.get(f.name, {}).values()) >= f.min_count
                                                for f in problem.functions)
    bound = max(lower_bound(problem), selection.bound) if complete else 0.0
    cost = sum(p.cost for p in plans if not p.unchanged)
    reason = "; ".join([f"{len(demands)} functions planned, {len(kept)} left as they run", *remarks])
    return Plan(True, reason, now, tuple(plans),
                selection.solver, selection.status, placement, cost, bound, selection.cost,
                GuardMemory(*(_alive(m, snapshot) for m in (history, timings, factors)), unready,
                            memory.started, deployed, redeployed_at))


def _capacity_factor(fs: FunctionState, pinned_cap: float, cands: list[Candidate], pred, model: str,
                     before: tuple[float, float] | None, now: float) -> tuple[float, float]:
    """(factor, time): how much of the modelled capacity the function's instances really serve.

    The model prices an instance by its handler's batch time alone; what the instance does around it (HTTP,
    parsing, the queue) also costs, and on a busy host far more (measured here: an MLP instance modelled at
    1,880 requests/s refused requests at 770). Instances that refuse requests while they admit at least
    ``LOADED_SHARE`` of what the factor says they serve are saturated, so what they admit is their real
    capacity: the reading is admitted / modelled (ready instances only), and each moves the factor
    ``FACTOR_STEP`` of the way (readings are noisy while instances come and go). Refusals at lower load are
    bursts (a queue that overflowed), which say nothing about capacity, and so are refusals that stopped,
    or a load that rose or fell within the window (``STEADY_RATIO``). The factor recovers toward 1 over
    ``FACTOR_RECOVERY_SECONDS`` only while the instances run below ``BUSY_SHARE`` of what it allows: spare
    capacity is the only evidence that they serve more, and recovering without it removed an instance,
    saw refusals and added it back every 90 s at a steady load."""
    rate, refused = fs.rate or 0.0, fs.refused_rate
    factor, at = before if before is not None else (1.0, now)
    by_key = {c.key: c for c in cands}
    modelled = pinned_cap
    for v in fs.variants:
        if not v.pinned:  # only instances ready to serve: one still starting admits nothing yet
            c = by_key.get(config_key(v.batch, v.cpu, v.gpu))
            t = pred.exec_seconds(model, v.batch, v.cpu, v.gpu)
            modelled += min(v.ready, v.replicas) * (c.r_max if c else (v.batch / t if t else 0.0))
    admitted = max(0.0, rate - refused)
    saturated = refused > max(1.0, SATURATED_SHARE * rate) and _sustained(fs)
    if modelled > 0 and saturated and admitted >= LOADED_SHARE * factor * modelled:
        seen = min(1.0, max(MIN_FACTOR, admitted / modelled))
        return factor + FACTOR_STEP * (seen - factor), now
    if modelled > 0 and admitted >= BUSY_SHARE * factor * modelled:
        return factor, now  # as busy as the factor allows: no evidence that they serve more
    return 1.0 - (1.0 - factor) * math.exp(-max(0.0, now - at) / FACTOR_RECOVERY_SECONDS), now


def _sustained(fs: FunctionState) -> bool:
    """Refusals still going on over the last few seconds, at an arrival rate the rate window's average
    holds (True when the short window is unknown)."""
    if fs.recent_rate is None:
        return True
    rate, recent = fs.rate or 0.0, fs.recent_rate
    return (fs.recent_refused > max(1.0, SATURATED_SHARE * recent)
            and rate > 0 and 1 / STEADY_RATIO <= recent / rate <= STEADY_RATIO)


def _alive(memory: dict, snapshot: Snapshot) -> dict:
    """``memory`` of the functions the snapshot lists, or whose variants it holds: a deleted function's demand,
    timings and capacity factor were kept for good (a function deployed again under its name inherited them:
    variants for demand it never had, a factor learnt by another model), and functions that come and go grew
    them without end."""
    alive = {fs.name for fs in snapshot.functions} | {h.parent for h in snapshot.held}
    return {name: value for name, value in memory.items() if name in alive}


def _by_parent(held) -> dict[str, list[str]]:
    """{parent: the reasons its variants are held}."""
    out: dict[str, list[str]] = {}
    for h in held:
        out.setdefault(h.parent, []).append(h.reason)
    return out


def _unneeded(fs: FunctionState, held: float, config: AutoscalerConfig) -> bool:
    """True when the function's variants serve nothing it needs: no demand held over the scale-down delay,
    and its own deployment alone meets its lower instance bound (or is scaled to zero, so nothing reaches
    them)."""
    if held > 0 or not any(not v.pinned for v in fs.variants):
        return False
    low, _ = instance_bounds(fs, config)
    return low <= sum(v.replicas for v in fs.variants if v.pinned) or _parent_down(fs)


def _running_counts(current: dict[tuple[str, str], int]) -> tuple[tuple[str, int], ...]:
    """Instances running per configuration key, over all nodes."""
    counts: dict[str, int] = defaultdict(int)
    for (key, _), n in current.items():
        counts[key] += n
    return tuple(sorted(counts.items()))


def _useful_rate(pred, model: str, v: Variant, slo: float, batch_sizes: tuple[int, ...]) -> float:
    """Requests per second a pinned instance serves within the SLO: at its own batch size when that batch
    meets INFless's rule (t <= SLO/2, or SLO for b = 1), else at the largest smaller batch that does (its
    admission keeps its batches that small under load); 0 when none does or nothing is known."""
    best = 0.0
    for b in sorted({v.batch, *(b for b in batch_sizes if b < v.batch)}):
        t = pred.exec_seconds(model, b, v.cpu, v.gpu)
        if t and t <= (slo / 2 if b > 1 else slo):
            best = max(best, b / t)
    return best


def _infeasible(fs: FunctionState, model: str, pred, config: AutoscalerConfig,
                shapes: list[tuple[float, int, int]]) -> str:
    """Why a function has no candidate: an instance's memory no node has, nothing known of its model, or an
    SLO no configuration meets."""
    largest = max((memory for _, memory, _ in shapes), default=0)
    if fs.memory > largest:
        return (f"its memory limit ({fs.memory / 2**30:.2f} GiB) is more than any node has (the largest "
                f"{largest / 2**30:.2f} GiB)")
    known = any(pred.exec_seconds(model, min(config.batch_sizes), c, 0.0) for c in config.cpu_steps)
    if not known:
        return (f"no execution time known for model {model} (no COP profile, no measured batches yet): "
                "its instances' measured batches will price it once it serves; a torch model (a handler folder "
                "with model.py) can be profiled first with faas-infer profile and passed as profile_db")
    return f"no configuration meets latency_slo={fs.slo:g}s"


def _select(problem: SelectionProblem, config: AutoscalerConfig) -> Selection:
    if config.solver == "greedy":
        return select_greedy(problem)
    size = sum(len(f.candidates) for f in problem.functions)
    if size > config.ilp_max_variables:
        greedy = select_greedy(problem)
        return Selection(greedy.counts, f"greedy ({size} variables > ilp_max_variables)", greedy.cost,
                         greedy.shortfall, 0.0, "greedy")
    selection = solve_selection(problem, config.solver, config.solver_time_limit, config.mip_gap)
    if selection.ok:
        return selection
    fallback = select_greedy(problem)
    return Selection(fallback.counts, f"fallback ({selection.status})", fallback.cost, fallback.shortfall,
                     0.0, "greedy")


def _pools(demands: list[FunctionDemand], nodes: list[tuple[str, float, float, float]]) -> tuple[Pool, ...]:
    """A pool per distinct set of nodes some function is confined to, holding every function confined
    within it, with the free resources of those nodes."""
    pools = []
    for subset in sorted({f.nodes for f in demands if f.nodes is not None}, key=sorted):
        free = [n for n in nodes if n[0] in subset]
        held = frozenset(f.name for f in demands if f.nodes is not None and f.nodes <= subset)
        pools.append(Pool(",".join(sorted(subset)), sum(max(0.0, n[1]) for n in free),
                          sum(max(0.0, n[2]) for n in free), sum(max(0.0, n[3]) for n in free), held))
    return tuple(pools)


def _place(problem, selection, context, nodes, config):
    groups = []
    for f in problem.functions:
        by_key = {c.key: c for c in f.candidates}
        current = context[f.name][3]
        for key, n in sorted(selection.counts.get(f.name, {}).items()):
            c = by_key[key]
            here = tuple((node, m) for (k, node), m in sorted(current.items()) if k == key)
            groups.append(Group(f.name, key, n, c.cpu, c.gpu, c.memory, here, f.nodes))
    free = [n for n in nodes if n[1] > 0]
    if config.solver != "greedy" and groups and len(groups) * len(free) <= config.placement_ilp_max_vars:
        exact = solve_placement(groups, free, config.solver, config.solver_time_limit)
        if exact is not None:
            return exact, {}, "exact"
    placed, unplaced = pack_best_fit(groups, free)
    return placed, unplaced, "best-fit"


def _young(fs: FunctionState, config: AutoscalerConfig, epoch: float,
           default_node: str) -> dict[tuple[str, str], int]:
    """Instances per (configuration, node) of variants younger than ``min_variant_age`` (by createdAt)."""
    def young(v: Variant) -> bool:
        age = variant_age(v, epoch)
        return age is not None and age < config.min_variant_age

    return _current(fs, default_node, young)


def _guarded(problem, selection, placed, unplaced, context, nodes, config, factors,
             epoch: float, default_node: str, starting: set[str] = frozenset(),
             settling: set[str] = frozenset()) -> list[FunctionPlan]:
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
        down = _parent_down(fs)
        shortfall = 0.0 if down else max(0.0, held * (1 + config.headroom) - capacity)
        reason = _reason(selection, held, capacity, unplaced, f.name, shortfall, factors.get(f.name))
        if down:
            reason += "; its own deployment is scaled to zero and requests reach the queue only through it: no variants"
        if unwatched.get(f.name):
            reason += (f"; {unwatched[f.name]} instance(s) kept: the autoscaler watches demand for "
                       f"scale_down_delay={config.scale_down_delay:g}s after it starts before it removes any")
        if deferred.get(f.name):
            reason += f"; {sum(deferred[f.name].values())} instance(s) kept until the instances replacing them are ready"
        if shortfall > 1e-6:
            reason += _why_short(f, sum(t.count for t in targets), free)
        missing = f.min_count - sum(t.count for t in targets)
        if missing > 0:
            reason += f"; below its minimum instances (com.openfaas.scale.min) by {missing}: no room left for them"
        plans.append(FunctionPlan(f.name, held, capacity, cost, targets, shortfall, reason))
    return plans


def _keep_unwatched(fs: FunctionState, current: dict[tuple[str, str], int], stepped: dict[tuple[str, str], int],
                    config: AutoscalerConfig) -> int:
    """Raise ``stepped`` back toward ``current`` (the removals a loop that has not yet watched demand for
    scale_down_delay puts off), but never above the function's most variants: no demand held before the
    restart can justify instances over com.openfaas.scale.max, nor variants of a parent scaled to zero (nothing
    reaches them); kept there, they outlived a lowered maximum for the whole delay. Returns how many were kept."""
    room = 0 if _parent_down(fs) else max(0, instance_bounds(fs, config)[1]
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
    ready = _current(fs, default_node, lambda v: v.ready >= v.replicas > 0)
    removals = {g: min(n - stepped.get(g, 0), ready.get(g, 0)) for g, n in current.items() if stepped.get(g, 0) < n}
    removals = {g: n for g, n in removals.items() if n > 0}
    if not removals or _parent_down(fs):
        return {}
    if starting or any(n > current.get(g, 0) for g, n in stepped.items()):
        for g, n in removals.items():
            stepped[g] = stepped.get(g, 0) + n
        return removals
    return {}


def _parent_down(fs: FunctionState) -> bool:
    """The function's own deployment is scaled to zero: requests reach the shared queue only through it
    (the gateway routes to the parent), so variants would get nothing until it scales up."""
    return any(v.pinned for v in fs.variants) and not any(v.pinned and v.replicas > 0 for v in fs.variants)


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


def _current(fs: FunctionState, default_node: str,
             which: Callable[[Variant], bool] = lambda v: True) -> dict[tuple[str, str], int]:
    """Instances per (configuration, node) of the function's variants (those ``which`` accepts)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for v in fs.variants:
        if not v.pinned and which(v):
            out[(config_key(v.batch, v.cpu, v.gpu), v.node or default_node)] += v.replicas
    return dict(out)


def _unchanged(fs: FunctionState, reason: str) -> FunctionPlan:
    targets = tuple(Target(fs.name, config_key(v.batch, v.cpu, v.gpu), v.node, v.replicas)
                    for v in fs.variants if not v.pinned)
    return FunctionPlan(fs.name, fs.rate or 0.0, 0.0, 0.0, targets, 0.0, reason, unchanged=True)


def _use(usage: Usage, node: str, v: Variant, n: int, allowed: frozenset[str] | None = None) -> None:
    """Charge ``n`` instances of ``v`` to ``node`` (to ``usage.unplaced`` when the node is not known, to be
    charged to one of the ``allowed`` nodes: any when None or none is)."""
    if node:
        for i, amount in enumerate(v.reserved()):
            usage.nodes[node][i] += amount * n
    else:
        usage.unplaced.extend([(tuple(float(a) for a in v.reserved()), allowed)] * n)


def _use_all(usage: Usage, fs: FunctionState, default_node: str, allowed: frozenset[str] | None = None) -> None:
    for v in fs.variants:
        if not v.pinned:
            _use(usage, v.node or default_node, v, v.replicas, allowed)


def _confinement(snapshot: Snapshot) -> dict[str, tuple[frozenset[str] | None, list[str]]]:
    """``constraints.eligible`` of every function, judged once per distinct list of constraints (each
    judgement reads every node's labels: one per function cost seconds at 1,000 x 1,000)."""
    judged: dict[tuple[str, ...], tuple[frozenset[str] | None, list[str]]] = {}
    out = {}
    for fs in snapshot.functions:
        key = tuple(str(c) for c in fs.spec.get("constraints") or ())
        if key not in judged:
            judged[key] = eligible(key, snapshot.nodes)
        out[fs.name] = judged[key]
    return out


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

