"""capacity: the factor learnt from refusals under sustained load, through decide on synthetic snapshots."""

from __future__ import annotations

import pytest

from autoscaler.config import AutoscalerConfig
from autoscaler.decide import decide
from autoscaler.snapshot import Variant
from autoscaler_fakes import LinearPredictor, fn, snapshot

PREDICTOR = LinearPredictor(scale={"slow": 4.0})


def config(**kw):
    kw.setdefault("max_step_up", 1000)
    kw.setdefault("max_step_down", 1000)
    return AutoscalerConfig(**kw)


def test_instances_that_refuse_requests_are_priced_by_what_they_admit():
    parent = Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)  # modelled: 8 / 12 ms = 667/s
    calm = decide(snapshot([fn("m", 500.0, variants=(parent,))]), PREDICTOR, config(), 0.0)
    assert calm.function("m").instances() == 0  # the model says the parent suffices
    busy = decide(snapshot([fn("m", 500.0, variants=(parent,), refused_rate=200.0)]), PREDICTOR, config(), 0.0)
    plan = busy.function("m")
    assert plan.instances() > 0 and "capacity x0.7" in plan.reason  # admits 300 of 667: half way to 0.45
    later = decide(snapshot([fn("m", 500.0, variants=(parent,))], taken_at=5.0), PREDICTOR, config(), 5.0,
                   busy.memory)
    assert later.function("m").cost == pytest.approx(plan.cost)  # learnt: not undone when refusals stop
    loaded = decide(snapshot([fn("m", 500.0, variants=(parent,))], taken_at=10_000.0), PREDICTOR,
                    config(scale_down_delay=0.0), 10_000.0, later.memory)
    assert loaded.function("m").cost == pytest.approx(plan.cost)  # busy: no evidence of spare capacity
    quiet = decide(snapshot([fn("m", 100.0, variants=(parent,))], taken_at=20_000.0), PREDICTOR,
                   config(scale_down_delay=0.0), 20_000.0, loaded.memory)
    assert quiet.memory.capacity_factors["m"][0] > 0.99  # spare capacity: recovered toward the model


def test_refusals_in_a_burst_at_low_load_teach_nothing():
    parent = Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)  # modelled 667/s
    burst = decide(snapshot([fn("m", 20.0, variants=(parent,), refused_rate=5.0)]), PREDICTOR, config(), 0.0)
    assert burst.memory.capacity_factors["m"][0] == 1.0


def test_refusals_read_while_load_falls_or_bursts_teach_nothing():
    parent = Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)  # modelled 667/s

    def factor(rate, refused, recent, recent_refused):
        state = fn("m", rate, variants=(parent,), refused_rate=refused, recent_rate=recent,
                   recent_refused=recent_refused)
        return decide(snapshot([state]), PREDICTOR, config(), 0.0).memory.capacity_factors["m"][0]

    # Sustained: 500/s over the window and over the last seconds, 200/s refused in both: a reading.
    assert factor(500.0, 200.0, 510.0, 190.0) < 0.8
    # The load ended 15 s into the 20 s window: its average admits little while its refusals still count.
    assert factor(400.0, 200.0, 0.0, 0.0) == 1.0
    # Refusals stopped in the last seconds (the instances caught up), or the load is falling fast.
    assert factor(500.0, 200.0, 500.0, 0.0) == 1.0
    assert factor(500.0, 200.0, 250.0, 100.0) == 1.0
    # A burst from idle: the window's average takes in idle seconds.
    assert factor(150.0, 60.0, 600.0, 240.0) == 1.0


def test_an_instance_still_starting_does_not_lower_what_the_others_are_judged_to_serve():
    parent = Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)
    starting = Variant("m-b8-c1000-g0-a-0", 8, 1.0, 0.0, 256 * 1024**2, "a", 1, ready=0)
    alone = decide(snapshot([fn("m", 500.0, variants=(parent,), refused_rate=200.0)]), PREDICTOR, config(), 0.0)
    both = decide(snapshot([fn("m", 500.0, variants=(parent, starting), refused_rate=200.0)]), PREDICTOR,
                  config(), 0.0)
    assert both.memory.capacity_factors["m"][0] == pytest.approx(alone.memory.capacity_factors["m"][0])
