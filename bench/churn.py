"""Autoscaler stability: instances started or stopped at a steady demand while measured times are noisy.

A pure simulation of ``autoscaler.decide.decide`` and ``autoscaler.act.changes`` (no processes, no clock):
one function with a pinned 1-core parent at batch 8 on an 8-core node, a steady request rate, and the
parent's measured batch time alternating by +-noise from tick to tick (what one instance's timings do on
a shared host). Each plan is carried out exactly (every planned instance becomes a running variant of
that configuration) and the next tick starts from it. Counted: instances started plus stopped after the
first tick, summed over every rate of the sweep, for the default guard rails and with them off
(``switch_margin=0``, ``scale_down_delay=0``). Execution times follow a linear model: 4 ms + 1 ms per
request on one core, 1 + 0.5 (c - 1) speed-up on c cores, half speed on half a core.
"""

from __future__ import annotations

import argparse
import dataclasses

from bench._argtypes import at_least

HELP = "autoscaler stability: instances started or stopped at a steady demand under measurement noise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `faas-infer bench churn`."""
    parser.add_argument("--noise", default="0.03,0.05,0.08",
                        help="relative swings of the parent's measured batch time, comma-separated "
                             "(default 0.03,0.05,0.08)")
    parser.add_argument("--rates", default="100,3000,20",
                        help="request rates swept, as start,stop,step in requests/s (default 100,3000,20)")
    parser.add_argument("--ticks", type=at_least(1), default=10, help="control ticks per rate, 5 s apart (default 10)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")


class LinearModel:
    """Execution seconds: (4 ms + 1 ms per request) on one core, Amdahl-like above, throttled below."""

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """Seconds of a batch of ``batch`` on ``cpu`` cores (no GPU in this benchmark)."""
        if gpu:
            return None
        t = 0.004 + 0.001 * batch
        return t / cpu if cpu <= 1 else t / (1 + 0.5 * (cpu - 1))


def changes_at(rate: float, noise: float, ticks: int, config) -> int:
    """Instances started or stopped over ``ticks`` ticks (the first, from nothing, not counted)."""
    from autoscaler.act import changes
    from autoscaler.decide import decide
    from autoscaler.snapshot import FunctionState, Measurement, Node, Snapshot, Variant
    from autoscaler.variants import variant_name

    model, memory = LinearModel(), 256 * 1024**2
    node = Node("n1", 8, 16 * 1024**3)
    parent = Variant("f", 8, 1.0, 0.0, memory, "n1", 1, pinned=True, ready=1)
    running: tuple = ()
    guard = None
    total = 0
    for i in range(ticks):
        factor = 1 + noise if i % 2 else 1 - noise
        measured = (Measurement(8, 1.0, 0.0, factor * model.exec_seconds("f", 8, 1.0, 0.0)),)
        state = FunctionState("f", 0.1, "f", rate, 0, 0.0, memory, variants=(parent, *running), measured=measured)
        snap = Snapshot(5.0 * i, (state,), (node,))
        plan = decide(snap, model, config, 5.0 * i, guard)
        guard = plan.memory
        if i:
            total += sum(c.kind in ("deploy", "delete") for c in changes(plan, snap, config))
        running = tuple(Variant(variant_name("f", t.key, t.node, k), t.candidate.batch, t.candidate.cpu, 0.0,
                                t.candidate.memory, t.node, 1, ready=1)
                        for t in plan.function("f").targets if t.candidate for k in range(t.count))
    return total


def run(args: argparse.Namespace) -> int:
    """Sweep rates for each noise level, with and without the guard rails; print the table."""
    import sys

    from autoscaler.config import AutoscalerConfig

    noises = [float(x) for x in args.noise.split(",") if x.strip()]
    start, stop, step = (float(x) for x in args.rates.split(","))
    rates = [start + k * step for k in range(int((stop - start) / step))]
    base = AutoscalerConfig(max_step_up=100, max_step_down=100, min_variant_age=0, metrics_port=0)
    settings = {"defaults": base,
                "guards off": dataclasses.replace(base, switch_margin=0.0, scale_down_delay=0.0)}
    rows = []
    for name, config in settings.items():
        for noise in noises:
            counts = []
            for k, rate in enumerate(rates):
                counts.append(changes_at(rate, noise, args.ticks, config))
                print(f"\r{name}, noise {noise:.0%}: {k + 1}/{len(rates)} rates", end="", file=sys.stderr)
            print(file=sys.stderr)
            rows.append({"setting": name, "noise": noise, "rates": len(rates), "ticks": args.ticks,
                         "changes": sum(counts), "rates_with_changes": sum(1 for c in counts if c)})
    print(f"{'setting':<12} {'noise':>6} {'rates':>6} {'changes':>8} {'rates w/ changes':>17}")
    for r in rows:
        print(f"{r['setting']:<12} {r['noise']:>6.0%} {r['rates']:>6} {r['changes']:>8} {r['rates_with_changes']:>17}")
    print(f"changes: instances started or stopped after the first tick, over {args.ticks} ticks per rate")
    if args.json:
        from bench.common import write_json

        write_json(args.json, {"rows": rows})
    return 0
