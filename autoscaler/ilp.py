"""The integer programs, and the only module that imports PuLP.

Two programs, both built whole, named constraint by constraint, solved with an explicit solver (HiGHS
through ``highspy`` in-process, or CBC), ``msg=False``, a time limit and a relative gap; the answer is
trusted only by ``prob.sol_status`` (after a time-limited solve ``LpStatus[prob.status]`` may still read
"Optimal" for a merely feasible answer), and anything without a solution is reported as failed so the
caller falls back to greedy.

- ``solve_selection``: stage one (see ``selection``), integer instances per function x configuration
  against pooled capacity. Variables are bounded by what covering alone could need, which keeps branch
  and bound short.
- ``solve_placement``: stage two for small clusters, integer instances per group x node, every node's
  CPU, GPU and memory kept, fewest nodes opened, instances left where they already run when it costs
  nothing more.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

from autoscaler.selection import Selection, SelectionProblem, selection_cost

@dataclass(frozen=True)
class Group:
    """Identical instances to place: one function's configuration, with its per-instance resources."""

    fn: str
    key: str
    count: int
    cpu: float
    gpu: float
    memory: float
    # {node: instances of this group running there now}
    current: tuple[tuple[str, int], ...] = ()
    # Nodes its instances may use (the function's constraints); None: any.
    nodes: frozenset[str] | None = None


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)[:40]


def _solver(pulp, solver: str, time_limit: float, gap: float):
    if solver == "cbc":
        with warnings.catch_warnings():  # PuLP 3 deprecates its bundled CBC; it is still the one installed
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=max(1, math.ceil(time_limit)), gapRel=gap, threads=1)
    if solver == "highs":
        return pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=gap, threads=1)
    raise ValueError(f"solver={solver!r}: must be highs or cbc")


def _outcome(pulp, prob) -> str:
    if prob.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    return f"failed: {pulp.LpStatus.get(prob.status, prob.status)} / {pulp.LpSolution.get(prob.sol_status)}"


def _dual_bound(prob) -> float | None:
    try:
        return float(prob.solverModel.getInfo().mip_dual_bound)
    except Exception:  # noqa: BLE001 - CBC (a subprocess) exposes no bound through PuLP
        return None


def solve_selection(problem: SelectionProblem, solver: str = "highs", time_limit: float = 1.0,
                    gap: float = 1e-3) -> Selection:
    """Stage one solved exactly (within ``gap``); a ``failed`` Selection when no solution came back."""
    import pulp

    prob = pulp.LpProblem("select", pulp.LpMinimize)
    objective: dict = {}
    variables: dict[tuple[int, str], object] = {}
    pool_cpu: dict = {}
    pool_gpu: dict = {}
    pool_mem: dict = {}
    for i, f in enumerate(problem.functions):
        if not f.candidates:
            continue
        cover = problem.cover(f)
        covered: dict = {}
        filled: dict = {}
        counted: dict = {}
        for j, c in enumerate(f.candidates):
            upper = max(f.min_count, math.ceil(cover / c.r_max - 1e-9))
            if c.r_min > 0:
                upper = min(upper, math.floor(problem.fill_limit(f) / c.r_min + 1e-9))
            upper = min(upper, f.max_count)
            if upper <= 0:
                continue
            var = prob.add_variable(f"n_{i}_{j}", 0, upper, cat=pulp.LpInteger)
            variables[(i, c.key)] = var
            objective[var] = c.cost
            running = min(dict(f.current).get(c.key, 0), upper)
            if running and problem.stickiness:
                # The running instances of this configuration cost a little less (a swap must save more than
                # the margin); they serve no more than r_max, so the cover below counts them at that
                kept = prob.add_variable(f"kept_{i}_{j}", 0, running)  # min(n, running) at the optimum
                objective[kept] = -c.cost * problem.stickiness
                prob += kept - var <= 0, f"kept_{i}_{j}"
            covered[var] = c.r_max
            if c.r_min > 0:
                filled[var] = c.r_min
            counted[var] = 1
            pool_cpu[var] = c.cpu
            pool_mem[var] = c.memory / 1e9
            if c.gpu:
                pool_gpu[var] = c.gpu
        tag = f"{i}_{_name(f.name)}"
        if cover > 0:
            short = prob.add_variable(f"short_{i}", 0, cover)
            objective[short] = problem.penalty(f)
            prob += pulp.LpAffineExpression({**covered, short: 1.0}) >= cover, f"cover_{tag}"
        if filled:
            prob += pulp.LpAffineExpression(filled) <= problem.fill_limit(f), f"fill_{tag}"
        if counted:
            if f.min_count > 0:  # soft: a full pool must not make every function's program infeasible
                below = prob.add_variable(f"below_min_{i}", 0, f.min_count)
                objective[below] = problem.below_min_penalty(f)
                prob += pulp.LpAffineExpression({**counted, below: 1.0}) >= f.min_count, f"min_{tag}"
            prob += pulp.LpAffineExpression(counted) <= f.max_count, f"max_{tag}"
    if not variables:
        return Selection({}, "optimal", 0.0, solver=solver)
    prob += pulp.LpAffineExpression(objective)
    by_function: dict[str, list] = {}  # a pool's terms from its own functions' variables, not from all of them
    for (i, _), var in variables.items():
        by_function.setdefault(problem.functions[i].name, []).append(var)
    for p_i, pool in enumerate(problem.every_pool()):
        held = [var for name in sorted(pool.functions) for var in by_function.get(name, ())]
        tag = f"_{p_i}_{_name(pool.name)}" if pool.name else ""  # the pool of every node: pool_cpu, ...
        for kind, terms, capacity in (("cpu", pool_cpu, pool.cpu), ("memory", pool_mem, pool.memory / 1e9),
                                      ("gpu", pool_gpu, pool.gpu)):
            mine = {var: terms[var] for var in held if var in terms}
            if mine:
                prob += pulp.LpAffineExpression(mine) <= capacity, f"pool_{kind}{tag}"
    try:
        prob.solve(_solver(pulp, solver, time_limit, gap))
    except pulp.PulpSolverError as exc:
        return Selection({}, f"failed: {exc}", 0.0, solver=solver)
    status = _outcome(pulp, prob)
    if status.startswith("failed"):
        return Selection({}, status, 0.0, solver=solver)
    counts: dict[str, dict[str, int]] = {}
    for (i, key), var in variables.items():
        n = int(round(var.varValue or 0))
        if n:
            counts.setdefault(problem.functions[i].name, {})[key] = n
    shortfall = {}
    for i, f in enumerate(problem.functions):
        by_key = {c.key: c for c in f.candidates}
        served = sum(by_key[k].r_max * n for k, n in counts.get(f.name, {}).items())
        if problem.cover(f) - served > 1e-6 and f.candidates:
            shortfall[f.name] = problem.cover(f) - served
    cost = selection_cost(problem, counts)
    bound = _dual_bound(prob)
    # The solver's bound is on the sticky, penalised objective. Running configurations are only ever
    # discounted, so it is below every plan's true cost too; it bounds the optimum when nothing is short.
    bound = min(bound, cost) if bound is not None and not shortfall else 0.0
    return Selection(counts, status, cost, shortfall, max(bound, 0.0), solver)


def solve_placement(groups: list[Group], nodes: list[tuple[str, float, float, float]], solver: str = "highs",
                    time_limit: float = 1.0) -> dict[tuple[str, str], dict[str, int]] | None:
    """Stage two exactly: {(fn, key): {node: instances}}, or None when the solver found no placement.

    ``nodes`` are (name, cpu, gpus, memory) free for this plan.
    """
    import pulp

    prob = pulp.LpProblem("place", pulp.LpMinimize)
    used = {name: prob.add_variable(f"used_{j}", cat=pulp.LpBinary) for j, (name, *_rest) in enumerate(nodes)}
    y: dict[tuple[int, str], object] = {}
    objective: dict = {var: 1.0 for var in used.values()}
    for g_i, g in enumerate(groups):
        current = dict(g.current)
        row: dict = {}
        for j, (name, cpu, gpus, memory) in enumerate(nodes):
            if g.cpu > cpu or g.gpu > gpus or g.memory > memory or (g.nodes is not None and name not in g.nodes):
                continue
            var = prob.add_variable(f"y_{g_i}_{j}", 0, g.count, cat=pulp.LpInteger)
            y[(g_i, name)] = var
            row[var] = 1
            if current.get(name):
                kept = prob.add_variable(f"keep_{g_i}_{j}", 0, min(current[name], g.count))
                prob += kept - var <= 0, f"keep_{g_i}_{j}"
                objective[kept] = -0.01
        if not row:
            return None
        prob += pulp.LpAffineExpression(row) == g.count, f"place_{g_i}_{_name(g.fn)}"
    for j, (name, cpu, gpus, memory) in enumerate(nodes):
        on = [(g_i, groups[g_i]) for g_i in range(len(groups)) if (g_i, name) in y]
        if not on:
            continue
        prob += pulp.LpAffineExpression({y[(g_i, name)]: g.cpu for g_i, g in on}) - cpu * used[name] <= 0, \
            f"cpu_{j}_{_name(name)}"
        prob += pulp.LpAffineExpression({y[(g_i, name)]: g.memory / 1e9 for g_i, g in on}) \
            - memory / 1e9 * used[name] <= 0, f"memory_{j}_{_name(name)}"
        gpu_terms = {y[(g_i, name)]: g.gpu for g_i, g in on if g.gpu}
        if gpu_terms:
            prob += pulp.LpAffineExpression(gpu_terms) - gpus * used[name] <= 0, f"gpu_{j}_{_name(name)}"
    prob += pulp.LpAffineExpression(objective)
    try:
        prob.solve(_solver(pulp, solver, time_limit, 1e-4))
    except pulp.PulpSolverError:
        return None
    if _outcome(pulp, prob).startswith("failed"):
        return None
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (g_i, name), var in y.items():
        n = int(round(var.varValue or 0))
        if n:
            g = groups[g_i]
            out.setdefault((g.fn, g.key), {})[name] = n
    return out
