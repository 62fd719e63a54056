"""Autoscaler decision benchmark: decision time versus size, optimality gap, and resources versus a uniform
OpenFaaS-style baseline, all on the example functions' measured CPU profiles.

Workload: functions cycle through the four example models (resnet, lstm, textcnn, mlp) with their
stack.yml SLOs times a random factor in [0.8, 2], request rates log-uniform over three decades, scaled so
the uniform baseline would use about 60% of the cluster's cores; nodes have 16, 32 or 64 cores and 4 GiB
per core. Decision time is one call of ``autoscaler.decide.decide`` (candidates, selection, placement and
guard rails), measured by this benchmark, never by the tests.

Baseline ("uniform"): one fixed configuration per function, the one stack.yml deploys (1 core, no
batching), replicas = ceil(demand x (1 + headroom) / its throughput), at least one (OpenFaaS scales on
request rate and keeps scale.min = 1). Both plans leave the same headroom over each instance's throughput
and every configuration of ours meets INFless's SLO rules, which is the "equal SLO attainment" here
(by construction, not by simulated traffic).

Bound ("at most"): the largest saving any plan could show on these profiles, from ``ideal_cost``: every
function's demand served by its cheapest configuration per request in fractional instances. When it is
below a target, no autoscaler meets that target on these profiles; only other hardware (a GPU, where
batching gains are larger) or other models would.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time

from bench._argtypes import at_least, seconds

HELP = "autoscaler decision time vs size (ILP, greedy), optimality gap, resources vs a uniform baseline"

MODELS = {"resnet": 0.200, "lstm": 0.100, "textcnn": 0.100, "mlp": 0.050}
SIZES = ((10, 10), (50, 50), (100, 100), (200, 200), (500, 500), (1000, 1000))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer bench plan`."""
    parser.add_argument("--sizes", default=",".join(f"{f}x{n}" for f, n in SIZES),
                        help="functions x nodes to decide, comma-separated (default 10x10 .. 1000x1000)")
    parser.add_argument("--solvers", default="highs,cbc,greedy", help="solvers to time (default highs,cbc,greedy)")
    parser.add_argument("--time-limit", type=seconds, default=2.0, help="solver time limit in seconds (default 2)")
    parser.add_argument("--repeat", type=at_least(1), default=3,
                        help="decisions per size and solver; the median is kept (default 3)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the synthetic workload (SLO factors, request rates; default 1)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="draw decision time versus size to FILE.png")


def workload(n_functions: int, n_nodes: int, seed: int, predictor, headroom: float = 0.2,
             utilisation: float = 0.6):
    """A synthetic snapshot on the example profiles (see the module docstring)."""
    from autoscaler.snapshot import FunctionState, Node, Snapshot

    rng = random.Random(seed)
    nodes = tuple(Node(f"node{j}", c, c * 4 * 1024**3) for j, c in
                  enumerate(rng.choice((16, 32, 64)) for _ in range(n_nodes)))
    specs = []
    for i in range(n_functions):
        model = list(MODELS)[i % len(MODELS)]
        specs.append((f"{model}-{i}", model, MODELS[model] * rng.uniform(0.8, 2.0), 10 ** rng.uniform(0, 3)))
    base = sum(uniform_cost(predictor, m, rate, headroom, beta=1.0) for _, m, _, rate in specs)
    scale = utilisation * sum(n.cpu for n in nodes) / base
    functions = tuple(FunctionState(name, slo, model, rate=rate * scale, idle_seconds=0.0, memory=256 * 1024**2)
                      for name, model, slo, rate in specs)
    return Snapshot(0.0, functions, nodes)


def uniform_cost(predictor, model: str, rate: float, headroom: float, beta: float) -> float:
    """Weighted resources of the uniform baseline for one function (1 core, batch 1, scaled on rate)."""
    t = predictor.exec_seconds(model, 1, 1.0, 0.0)
    return beta * 1.0 * max(1, math.ceil(rate * (1 + headroom) * t - 1e-9))


def ideal_cost(predictor, function, config, shapes) -> float:
    """A lower bound on any plan's weighted resources for one function: its demand (with the same
    headroom) served entirely by its cheapest configuration per request, in fractional instances (no
    rounding up, no keep-warm instance, perfect packing). ``uniform_cost / ideal_cost`` is therefore the
    largest saving any autoscaler could show on these profiles."""
    from autoscaler.candidates import enumerate_candidates

    cands = enumerate_candidates(function.model, function.slo, function.memory, predictor, config.batch_sizes,
                                 config.cpu_steps, config.gpu_steps, config.beta, shapes)
    if not cands:
        return float("inf")
    return function.rate * (1 + config.headroom) * min(c.cost / c.r_max for c in cands)


def _timed(snapshot, predictor, config, repeat: int):
    from autoscaler.decide import decide

    times, plan = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        plan = decide(snapshot, predictor, config, 0.0)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], plan


def scale_rows(args, predictor) -> list[dict]:
    """Decision time and quality for every size and solver."""
    from autoscaler.config import AutoscalerConfig

    rows = []
    for size in args.sizes.split(","):
        n_f, n_n = (int(x) for x in size.lower().split("x"))
        snapshot = workload(n_f, n_n, args.seed, predictor)
        for solver in args.solvers.split(","):
            config = AutoscalerConfig(solver=solver, solver_time_limit=args.time_limit, max_instances=10_000,
                                      max_step_up=10_000, max_step_down=10_000)
            seconds, plan = _timed(snapshot, predictor, config, args.repeat if solver != "cbc" else 1)
            base = sum(uniform_cost(predictor, f.model, f.rate, config.headroom, config.beta)
                       for f in snapshot.functions)
            shapes = sorted({(n.cpu, n.memory, n.gpus) for n in snapshot.nodes})
            ideal = sum(ideal_cost(predictor, f, config, shapes) for f in snapshot.functions)
            rows.append({
                "functions": n_f, "nodes": n_n, "solver": solver, "seconds": round(seconds, 4),
                "status": plan.status, "placement": plan.placement, "cost": round(plan.cost, 3),
                "bound": round(plan.bound, 3), "gap": None if plan.gap is None else round(plan.gap, 5),
                "instances": sum(f.instances() for f in plan.functions),
                "shortfall": round(sum(f.shortfall for f in plan.functions), 2),
                "uniform_cost": round(base, 3), "saving": round(base / plan.cost, 2) if plan.cost else None,
                "ideal_saving": round(base / ideal, 2) if ideal else None})
            r = rows[-1]
            gap = "-" if r["gap"] is None else f"{100 * r['gap']:.2f}%"
            print(f"{n_f:>5} x {n_n:<5} {solver:<7} {seconds * 1000:9.1f} ms  {r['status']:<10} "
                  f"{r['placement']:<9} cost {r['cost']:9.2f}  bound {r['bound']:9.2f}  "
                  f"gap {gap:>7}  inst {r['instances']:6d}  uniform/ours {r['saving']}x  "
                  f"(at most {r['ideal_saving']}x)", flush=True)
    return rows


def example_rows(predictor) -> list[dict]:
    """The four example functions alone, at several request rates: ours versus uniform, per function."""
    from autoscaler.candidates import enumerate_candidates
    from autoscaler.config import AutoscalerConfig
    from autoscaler.decide import decide
    from autoscaler.snapshot import FunctionState, Node, Snapshot

    config = AutoscalerConfig(max_instances=10_000, max_step_up=10_000, max_step_down=10_000)
    rows = []
    for rate in (10.0, 100.0, 1000.0, 10000.0):
        functions = tuple(FunctionState(m, slo, m, rate=rate, idle_seconds=0.0, memory=256 * 1024**2)
                          for m, slo in MODELS.items())
        plan = decide(Snapshot(0.0, functions, (Node("n", 512, 2048 * 1024**3),)), predictor, config, 0.0)
        by_name = {f.name: f for f in functions}
        for fp in plan.functions:
            base = uniform_cost(predictor, fp.name, rate, config.headroom, config.beta)
            ideal = ideal_cost(predictor, by_name[fp.name], config, [(512, 2048 * 1024**3, 0)])
            configs = ", ".join(f"{t.count}x{t.key}" for t in fp.targets)
            cands = enumerate_candidates(fp.name, MODELS[fp.name], 256 * 1024**2, predictor, config.batch_sizes,
                                         config.cpu_steps, config.gpu_steps, config.beta, [(512, 2048 * 1024**3, 0)])
            rows.append({"function": fp.name, "rate": rate, "uniform_cores": round(base / config.beta, 2),
                         "ours_cores": round(fp.cost / config.beta, 2),
                         "saving": round(base / fp.cost, 2), "ideal_saving": round(base / ideal, 2),
                         "plan": configs, "candidates": len(cands)})
            r = rows[-1]
            print(f"{r['function']:<8} {rate:>8.0f}/s  uniform {r['uniform_cores']:7.1f} cores  ours "
                  f"{r['ours_cores']:7.2f} cores  {r['saving']:5.2f}x (at most {r['ideal_saving']:5.2f}x)  {configs}")
        total_base = sum(r["uniform_cores"] for r in rows[-4:])
        total_ours = sum(r["ours_cores"] for r in rows[-4:])
        print(f"{'all four':<8} {rate:>8.0f}/s  uniform {total_base:7.1f} cores  ours {total_ours:7.2f} cores  "
              f"{total_base / total_ours:5.2f}x")
    return rows


def plot(rows: list[dict], path: str) -> None:
    """Decision time versus functions (= nodes) per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for solver in sorted({r["solver"] for r in rows}):
        pts = [(r["functions"], r["seconds"]) for r in rows if r["solver"] == solver]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=solver)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("functions (= nodes)")
    ax.set_ylabel("decision seconds")
    ax.set_title("faas-infer autoscaler: decision time")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    """Print both tables; write JSON and the plot when asked."""
    from autoscaler.predictor import TablePredictor

    predictor = TablePredictor.load()
    print("== decision time and quality (weighted resources = beta*CPU + GPU, beta=0.1) ==")
    rows = scale_rows(args, predictor)
    print("\n== example functions: ours vs uniform (1 core, batch 1, scaled on rate), same headroom ==")
    examples = example_rows(predictor)
    if args.json:
        from bench.common import write_json

        write_json(args.json, {"scale": rows, "examples": examples})
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0
