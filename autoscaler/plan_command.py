"""``faas-infer plan``: observe once, decide once, print the plan and the API calls it would make.

Nothing is changed. Settings as for ``faas-infer autoscale``. One decision starts with no guard memory: no
demand or timings held over the scale-down delay, no capacity learnt from refusals, so it can differ from
what a running autoscaler decides (its reasons are on its /metrics, ``last_decision_info``).
"""

from __future__ import annotations

import argparse
import json
import time

from autoscaler.flags import LOOP_ONLY, add_config_arguments, config_from_args
from autoscaler.plan import FunctionPlan, Plan

HELP = "print one autoscaling decision (nothing is changed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer plan`."""
    add_config_arguments(parser, exclude=LOOP_ONLY)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    """One dry-run tick; exit 1 when there is no decision."""
    from autoscaler.loop import Autoscaler

    scaler = Autoscaler(config_from_args(args))
    start = time.perf_counter()
    plan, todo = scaler.tick(time.monotonic(), dry_run=True)
    seconds = time.perf_counter() - start
    # ready replicas as the API lists them, the parent's and its variants' (Redis heartbeats need --redis-url)
    running = {f.name: sum(v.ready for v in f.variants) for f in scaler.last_snapshot.functions} \
        if scaler.last_snapshot else {}
    if args.json:
        print(json.dumps({"valid": plan.valid, "reason": plan.reason, "status": plan.status,
                          "cost": plan.cost, "selection_cost": plan.selection_cost, "bound": plan.bound, "functions": [
                              {"name": f.name, "running": running.get(f.name), "demand": f.demand,
                               "capacity": f.capacity, "cost": f.cost,
                               "reason": f.reason, "targets": [{"config": t.key, "node": t.node, "count": t.count}
                                                               for t in f.targets]} for f in plan.functions],
                          "changes": [{"kind": c.kind, "name": c.name, "replicas": c.replicas} for c in todo]},
                         indent=2))
        return 0 if plan.valid else 1
    if not plan.valid:
        print(f"no decision: {plan.reason}")
        return 1
    print(f"plan: {plan.status} selection ({plan.solver}), {plan.placement} placement, weighted resources "
          f"{plan.cost:.3f} ({quality(plan)}), decided in {seconds * 1000:.0f} ms")
    print(f"{'function':<20} {'running':>7} {'demand/s':>9} {'capacity/s':>10}  planned variants")
    for f in plan.functions:
        groups = ", ".join(f"{t.count}x {t.key}@{t.node or '-'}" for t in f.targets) or none_planned(f)
        now = running.get(f.name)
        print(f"{f.name:<20} {'-' if now is None else now:>7} {f.demand:9.1f} {f.capacity:10.1f}  {groups}   "
              f"({f.reason})")
    print(f"changes ({len(todo)}):" if todo else "changes: none")
    print("(one decision from scratch: a running autoscaler also holds demand and timings over "
          "scale_down_delay and learns capacity from refusals; its own reasons: last_decision_info on its /metrics)")
    for c in todo:
        print(f"  {c.kind:<10} {c.name} replicas={c.replicas}")
    return 0


def quality(plan: Plan) -> str:
    """The selection's cost against its proven bound, said of the selection where the plan's cost differs."""
    if plan.gap is not None:
        text = f"bound {plan.bound:.3f}, gap {100 * plan.gap:.2f}%"
    elif any(f.shortfall > 1e-6 for f in plan.functions):
        text = "no bound: demand left short"
    else:
        text = "no bound"
    if abs(plan.selection_cost - plan.cost) > 1e-9:
        text = f"the selection's {plan.selection_cost:.3f} before placement and guard rails: {text}"
    return text


def none_planned(f: FunctionPlan) -> str:
    """Why a function has no variants: left as it runs, short of room, or served by its own deployment."""
    if f.unchanged:
        return "none (left as it runs)"
    if f.shortfall <= 1e-6 and 0 < f.demand <= f.capacity:
        return "none (the parent suffices)"
    return "none" if f.demand > 0 else "none (no demand)"
