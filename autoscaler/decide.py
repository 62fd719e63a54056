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
3. *Guard rails* (``guards``, applied in ``stepping``): demand and measured execution times held over
   ``scale_down_delay`` (the highest of each), running instances priced ``switch_margin`` lower (a
   configuration is swapped only for a real saving), instance bounds with keep-warm, step limits, and
   additions deferred where the stepped plan would overfill a node, and variants younger than
   ``min_variant_age`` kept (their resources counted). Candidates are priced at the ``capacity`` factor
   the function's instances were seen to serve.

When the solver fails or runs out of time without an answer, the greedy selection (cost per useful
throughput, fragment-penalised) is used and the plan says so. Why not decompose further: per-function
selection would be exact only while pooled capacity does not bind; the program handles the binding case.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

from autoscaler.candidates import config_key, enumerate_candidates
from autoscaler.capacity import capacity_factor, useful_rate
from autoscaler.config import AutoscalerConfig
from autoscaler.constraints import eligible
from autoscaler.greedy import pack_best_fit, select_greedy
from autoscaler.guards import held_demand, held_measurements, instance_bounds, redeployments
from autoscaler.ilp import Group, solve_placement, solve_selection
from autoscaler.plan import FunctionPlan, GuardMemory, Plan, Target
from autoscaler.predictor import Corrected, ExecPredictor
from autoscaler.selection import FunctionDemand, Pool, Selection, SelectionProblem, lower_bound
from autoscaler.snapshot import FunctionState, Snapshot
from autoscaler.stepping import guarded
from autoscaler.usage import Usage, current_instances, parent_down, use, use_all


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
        use(fixed, orphan.variant.node or default_node, orphan.variant, orphan.variant.replicas)
    for h in snapshot.held:  # a parent not listed for less than orphan_grace
        use(fixed, h.variant.node or default_node, h.variant, h.variant.replicas)
    for parent, reasons in sorted(_by_parent(snapshot.held).items()):
        remarks.append(f"{parent}: {len(reasons)} variant(s) held as they run: {reasons[0]}")
    confinement = _confinement(snapshot)
    own_shapes: dict[frozenset[str] | None, list[tuple[float, int, int]]] = {None: shapes}
    for fs in snapshot.functions:
        allowed, notes = confinement[fs.name]
        for v in fs.variants:
            if v.pinned:
                use(fixed, v.node or default_node, v, v.replicas, allowed)
        if fs.unreadable or fs.rate is None:
            kept.append(_unchanged(fs, fs.unreadable or "no arrival rate observed"))
            use_all(fixed, fs, default_node, allowed)
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
            use_all(fixed, fs, default_node, allowed)
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
                use_all(fixed, fs, default_node, allowed)
                continue
            # nothing to price its variants by, but nothing for them to serve either: they go (stepped, young
            # ones kept), or idle variants of a model whose times were lost held their cores for good
            current = current_instances(fs, default_node)
            demands.append(FunctionDemand(fs.name, (), 0.0, 0, 0, _running_counts(current), allowed))
            context[fs.name] = (fs, held, 0.0, current)
            told[fs.name] = told.get(fs.name, "") + f"; no demand over scale_down_delay, so no variants although {why}"
            continue
        pinned_cap, pinned_n = 0.0, 0
        for v in fs.variants:
            if v.pinned:
                pinned_cap += v.replicas * useful_rate(pred, model, v, fs.slo, config.batch_sizes)
                pinned_n += v.replicas
        factors[fs.name] = factor = capacity_factor(fs, pinned_cap, cands, pred, model,
                                                     factors.get(fs.name), now)
        if factor[0] < 1.0:
            pinned_cap *= factor[0]
            cands = [dataclasses.replace(c, r_max=c.r_max * factor[0]) for c in cands]
        low, high = instance_bounds(fs, config)
        if parent_down(fs):  # nothing reaches the queue: its variants would idle
            low = high = 0
        variant_demand = max(0.0, held - pinned_cap / (1.0 + config.headroom)) if high else 0.0
        current = current_instances(fs, default_node)
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
             for p in kept + guarded(problem, selection, placed, unplaced, context, nodes, config, factors,
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
    return low <= sum(v.replicas for v in fs.variants if v.pinned) or parent_down(fs)


def _running_counts(current: dict[tuple[str, str], int]) -> tuple[tuple[str, int], ...]:
    """Instances running per configuration key, over all nodes."""
    counts: dict[str, int] = defaultdict(int)
    for (key, _), n in current.items():
        counts[key] += n
    return tuple(sorted(counts.items()))


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


def _unchanged(fs: FunctionState, reason: str) -> FunctionPlan:
    targets = tuple(Target(fs.name, config_key(v.batch, v.cpu, v.gpu), v.node, v.replicas)
                    for v in fs.variants if not v.pinned)
    return FunctionPlan(fs.name, fs.rate or 0.0, 0.0, 0.0, targets, 0.0, reason, unchanged=True)


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


