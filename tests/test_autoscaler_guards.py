"""Guard rails on a synthetic clock: scale-down delay, step limits, keep-warm, min/max instances."""

from __future__ import annotations

from autoscaler.config import AutoscalerConfig
from autoscaler.decide import decide
from autoscaler.guards import held_demand, instance_bounds, limit_steps
from autoscaler.snapshot import Variant
from autoscaler_fakes import LinearPredictor, fn, snapshot

PREDICTOR = LinearPredictor()


def run_ticks(rates, cfg, start=0.0, step=5.0):
    """Feed rates tick by tick, carrying the running variants and the guard memory; returns plans."""
    memory, variants, plans = None, (), []
    for i, rate in enumerate(rates):
        now = start + i * step
        plan = decide(snapshot([fn("f", rate, variants=variants)], taken_at=now), PREDICTOR, cfg, now, memory)
        memory = plan.memory
        fp = plan.function("f")
        variants = tuple(Variant(f"f-{t.key}-{t.node}", t.candidate.batch, t.candidate.cpu, t.candidate.gpu,
                                 t.candidate.memory, t.node, t.count, ready=t.count) for t in fp.targets)
        plans.append(fp)
    return plans


def test_held_demand_is_the_window_maximum():
    history, held = held_demand((), 0.0, 100.0, 30.0)
    history, held = held_demand(history, 10.0, 5.0, 30.0)
    assert held == 100.0
    history, held = held_demand(history, 30.0, 5.0, 30.0)
    assert held == 5.0 and len(history) == 2


def test_scale_down_waits_for_the_delay_then_sheds():
    cfg = AutoscalerConfig(scale_down_delay=30, max_step_down=100, max_step_up=100)
    plans = run_ticks([800, 800, 20, 20, 20, 20, 20, 20, 20, 20], cfg)  # a tick every 5 s
    high = plans[1].capacity
    assert all(p.capacity == high for p in plans[2:7])  # t=10..30: still within 30 s of the peak at t=5
    assert plans[8].capacity < high  # t=40: the peak is older than the delay


def test_capacity_rises_at_once_but_in_steps():
    cfg = AutoscalerConfig(max_step_up=2, max_step_down=100, cpu_steps=(1.0,), batch_sizes=(1,))
    plans = run_ticks([10, 3000, 3000, 3000, 3000, 3000], cfg)
    counts = [p.instances() for p in plans]
    assert counts[0] == 1
    assert all(b - a <= 2 for a, b in zip(counts, counts[1:]))
    assert counts[1] == 3 and counts[-1] > counts[1]
    assert plans[1].shortfall > 0


def test_removals_are_step_limited():
    cfg = AutoscalerConfig(max_step_down=1, max_step_up=100, scale_down_delay=0, cpu_steps=(1.0,), batch_sizes=(1,))
    plans = run_ticks([3000, 10, 10, 10], cfg)
    counts = [p.instances() for p in plans]
    assert counts[0] > 3 and counts[1:] == [counts[0] - 1, counts[0] - 2, counts[0] - 3]


def test_keep_warm_after_recent_traffic_only():
    cfg = AutoscalerConfig(keep_warm=1, keep_warm_window=600)
    warm = decide(snapshot([fn("f", 0.0, idle_seconds=120.0)]), PREDICTOR, cfg, 0.0).function("f")
    cold = decide(snapshot([fn("f", 0.0, idle_seconds=1200.0)]), PREDICTOR, cfg, 0.0).function("f")
    assert warm.instances() == 1 and warm.targets[0].candidate.batch == 1
    assert cold.instances() == 0


def test_min_and_max_instances():
    cfg = AutoscalerConfig(max_step_up=100, cpu_steps=(1.0,), batch_sizes=(1,))
    assert instance_bounds(fn("f", 1.0, min_instances=2, max_instances=3), cfg) == (2, 3)
    low = decide(snapshot([fn("f", 1.0, min_instances=3)]), PREDICTOR, cfg, 0.0).function("f")
    assert low.instances() == 3
    capped = decide(snapshot([fn("f", 5000.0, max_instances=2)]), PREDICTOR, cfg, 0.0).function("f")
    assert capped.instances() == 2 and capped.shortfall > 0


def test_limit_steps_prefers_ranked_additions():
    stepped, up, down = limit_steps({("x", "a"): 2}, {("y", "a"): 3, ("z", "a"): 1}, 2, 1,
                                    rank_up=lambda k: {"y": 1.0, "z": 5.0}[k[0]])
    assert stepped == {("x", "a"): 1, ("z", "a"): 1, ("y", "a"): 1}
    assert (up, down) == (2, 1)
