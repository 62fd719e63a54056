"""stepping: decide's guard stage (steps, young variants, make-before-break, full nodes, a restarted loop)
on synthetic snapshots."""

from __future__ import annotations

import dataclasses

from autoscaler.config import AutoscalerConfig
from autoscaler.candidates import config_key
from autoscaler.decide import decide
from autoscaler.plan import GuardMemory
from autoscaler.snapshot import Node, Variant
from autoscaler_fakes import GiB, LinearPredictor, fn, snapshot

PREDICTOR = LinearPredictor(scale={"slow": 4.0})


def config(**kw):
    kw.setdefault("max_step_up", 1000)
    kw.setdefault("max_step_down", 1000)
    return AutoscalerConfig(**kw)


def _carried_out(make, ticks, cfg):
    """Each tick's plan carried out exactly, its instances ready at once."""
    state, memory, plan = {}, None, None
    for i in range(ticks):
        t = 30.0 * i
        plan = decide(make(state, t), PREDICTOR, cfg, t, memory)
        memory = plan.memory
        state = {fp.name: tuple(Variant(f"{fp.name}-{x.key}-{k}", x.candidate.batch, x.candidate.cpu, x.candidate.gpu,
                                        x.candidate.memory, x.node, 1, ready=1)
                                for x in fp.targets for k in range(x.count)) for fp in plan.functions}
    return plan


EPOCH = 1_800_000_000.0


def _running(plan, name="f", ready=True, created=EPOCH):
    from datetime import datetime, timezone

    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat()
    return tuple(Variant(f"{name}-{t.key}-{t.node}", t.candidate.batch, t.candidate.cpu, t.candidate.gpu,
                         t.candidate.memory, t.node, t.count, ready=t.count if ready else 0,
                         status={"createdAt": stamp})
                 for t in plan.function(name).targets if t.key != STALE_KEY)


STALE_KEY = config_key(64, 4.0, 0.0)


def _groups(plan, name="f"):
    return {t.key: t.count for t in plan.function(name).targets}


def _at(snap, seconds):
    return dataclasses.replace(snap, taken_epoch=EPOCH + seconds)


def test_a_replacement_serves_before_what_it_replaces_is_removed():
    nodes = (Node("n1", 8, 16 * GiB),)
    stale = Variant("f-stale", 64, 4.0, 0.0, 256 * 1024**2, "n1", 1, ready=1)  # no longer the plan's choice
    first = decide(snapshot([fn("f", 500.0, variants=(stale,))], nodes), PREDICTOR, config(), 0.0)
    groups = _groups(first)
    assert groups[STALE_KEY] == 1 and len(groups) > 1  # the new instances are added, the old one kept
    assert "1 instance(s) kept until the instances replacing them are ready" in first.function("f").reason
    starting = _running(first, ready=False)
    second = decide(_at(snapshot([fn("f", 500.0, variants=(stale, *starting))], nodes, 5.0), 5.0), PREDICTOR,
                    config(), 5.0, first.memory)
    assert _groups(second).get(STALE_KEY) == 1  # still starting: kept
    ready = _running(first)
    third = decide(_at(snapshot([fn("f", 500.0, variants=(stale, *ready))], nodes, 10.0), 10.0), PREDICTOR,
                   config(), 10.0, second.memory)
    assert STALE_KEY not in _groups(third)  # the replacement serves: removed
    # one that never gets ready holds nothing up past min_variant_age (a crash loop, a Pending pod)
    late = decide(_at(snapshot([fn("f", 500.0, variants=(stale, *starting))], nodes, 40.0), 40.0), PREDICTOR,
                  config(), 40.0, second.memory)
    assert STALE_KEY not in _groups(late)


def test_an_instance_that_never_gets_ready_is_removed_and_keeps_no_other():
    stuck = Variant("f-stuck", 8, 1.0, 0.0, 256 * 1024**2, "n1", 1, ready=0,
                    status={"createdAt": "2020-01-01T00:00:00+00:00"})
    ready = tuple(Variant(f"f-r{i}", 8, 1.0, 0.0, 256 * 1024**2, "n1", 1, ready=1) for i in range(3))
    snap = _at(snapshot([fn("f", 0.0, variants=(*ready, stuck), idle_seconds=1e6)], (Node("n1", 8, 16 * GiB),),
                        600.0), 600.0)
    plan = decide(snap, PREDICTOR, config(keep_warm=0, min_variant_age=0), 600.0)
    assert plan.function("f").instances() == 0


def test_a_short_function_gives_up_room_another_needs_and_a_lowered_maximum_holds():
    cfg = config(keep_warm=0, min_variant_age=0)
    nodes = (Node("n1", 4, 16 * GiB),)
    plan = _carried_out(lambda s, t: snapshot([fn("f", 3000.0, variants=s.get("f", ())),
                                               fn("slow", 0.0 if t < 60 else 200.0, slo=2.0,
                                                  variants=s.get("slow", ()))], nodes, t), 15, cfg)
    assert plan.function("slow").instances() > 0
    plan = _carried_out(lambda s, t: snapshot([fn("f", 6000.0, variants=s.get("f", ()),
                                                  max_instances=8 if t < 60 else 2)], (Node("n1", 32, 64 * GiB),), t),
                        10, cfg)
    assert plan.function("f").instances() <= 2


def test_on_a_full_node_a_swap_removes_first():
    nodes = (Node("n1", 4, 16 * GiB),)  # the stale instance holds every core
    stale = Variant("f-stale", 64, 4.0, 0.0, 256 * 1024**2, "n1", 1, ready=1)
    plan = decide(snapshot([fn("f", 500.0, variants=(stale,))], nodes), PREDICTOR, config(), 0.0)
    assert STALE_KEY not in _groups(plan) and "kept until" not in plan.function("f").reason


def test_a_parent_scaled_to_zero_runs_no_variants():
    parent = Variant("f", 8, 1.0, 0.0, 256 * 1024**2, "a", 0, pinned=True)  # scaled to zero
    warm = Variant("f-warm", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, ready=1)
    plan = decide(snapshot([fn("f", 0.0, variants=(parent, warm), min_instances=1)]), PREDICTOR, config(), 0.0)
    fp = plan.function("f")
    assert fp.instances() == 0 and "scaled to zero" in fp.reason
    busy = decide(snapshot([fn("f", 300.0, variants=(dataclasses.replace(parent, replicas=1, ready=1),))]),
                  PREDICTOR, config(), 0.0)
    after = decide(snapshot([fn("f", 0.0, variants=(parent,))], taken_at=10.0), PREDICTOR, config(), 10.0,
                   busy.memory)  # the demand held from before it went to zero is no shortfall
    assert after.function("f").shortfall == 0.0 and "short" not in after.function("f").reason
    up = dataclasses.replace(parent, replicas=1, ready=1)
    assert decide(snapshot([fn("f", 0.0, variants=(up,), min_instances=2)]), PREDICTOR, config(), 0.0
                  ).function("f").instances() == 1  # with its parent up, the minimum holds again


def test_front_doors_hold_their_requests_on_the_node_not_their_limits():
    from autoscaler.variants import parse_parent

    status = {"name": "p0", "replicas": 1, "availableReplicas": 1, "limits": {"cpu": "1", "memory": "512Mi"},
              "requests": {"cpu": "250m", "memory": "256Mi"}}
    door = parse_parent(status, 1, "n1")
    assert (door.cpu, door.reserved()) == (1.0, (0.25, 0.0, 256 * 1024**2))
    nodes = (Node("n1", 2, 16 * GiB),)

    def busy_plan(reserved_cpu):
        doors = [dataclasses.replace(door, name=f"p{i}", reserved_cpu=reserved_cpu) for i in range(4)]
        fns = [fn(f"p{i}", 0.0 if i else 2000.0, variants=(d,)) for i, d in enumerate(doors)]
        return decide(snapshot(fns, nodes), PREDICTOR, config(), 0.0).function("p0")

    unlimited = parse_parent({"name": "u", "requests": {"cpu": "2", "memory": "2Gi"}}, 512 * 1024**2, "n1")
    assert unlimited.reserved() == (2.0, 0.0, 2 * 1024**3)  # requests without limits: what it requests
    assert busy_plan(0.25).instances() > 0  # four front doors hold 1 of 2 cores: room for variants
    full = busy_plan(None)  # held by their limits: 4 cores of 2
    assert full.instances() == 0 and "no node has room" in full.reason


def test_a_variant_grown_in_place_is_starting_until_its_new_replicas_are_ready():
    nodes, old = (Node("n1", 8, 16 * GiB),), {"createdAt": "2020-01-01T00:00:00+00:00"}
    new_key = config_key(16, 0.5, 0.0)
    stale = Variant("f-stale", 64, 4.0, 0.0, 256 * 1024**2, "n1", 1, ready=1, status=old)
    keep = Variant("f-new", 16, 0.5, 0.0, 256 * 1024**2, "n1", 1, ready=1, status=old)  # running for years
    first = decide(_at(snapshot([fn("f", 600.0, variants=(stale, keep))], nodes), 0.0), PREDICTOR, config(), 0.0)
    assert _groups(first)[new_key] == 2 and _groups(first)[STALE_KEY] == 1
    grown = dataclasses.replace(keep, replicas=2, ready=1)  # scaled 1 -> 2, the new replica not ready yet
    second = decide(_at(snapshot([fn("f", 600.0, variants=(stale, grown))], nodes, 5.0), 5.0), PREDICTOR,
                    config(), 5.0, first.memory)
    assert _groups(second).get(STALE_KEY) == 1


def test_a_full_node_releases_only_the_removals_on_it():
    old = {"createdAt": "2020-01-01T00:00:00+00:00"}
    s1 = Variant("f-s1", 64, 4.0, 0.0, 256 * 1024**2, "n1", 1, ready=1, status=old)
    s2 = Variant("f-s2", 64, 4.0, 0.0, 256 * 1024**2, "n2", 1, ready=1, status=old)
    nodes = (Node("n1", 12, 32 * GiB), Node("n2", 4, 8 * GiB))
    plan = decide(_at(snapshot([fn("f", 1000.0, variants=(s1, s2))], nodes), 0.0), PREDICTOR, config(), 0.0)
    placed = {(t.key, t.node): t.count for t in plan.function("f").targets}
    assert all(node == "n2" for (key, node) in placed if key != STALE_KEY)  # the additions take n2's room
    assert placed.get((STALE_KEY, "n1")) == 1 and (STALE_KEY, "n2") not in placed


def test_a_restarted_loop_removes_nothing_before_it_has_watched_the_demand_for_the_delay():
    # variants a previous autoscaler started and was holding; this one began at 1000 and sees a lull
    parent = Variant("m", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, pinned=True, ready=1)
    running = tuple(Variant(f"m-b1-c500-g0-a-{i}", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, ready=1) for i in range(3))
    snap = lambda now: snapshot([fn("m", 1.0, variants=(parent, *running))], taken_at=now)  # noqa: E731
    cfg = config(scale_down_delay=60.0, min_variant_age=0, keep_warm=0)
    first = decide(snap(1000.0), PREDICTOR, cfg, 1000.0, GuardMemory(started=1000.0))
    assert first.function("m").instances() == 3 and "3 instance(s) kept" in first.function("m").reason
    later = decide(snap(1061.0), PREDICTOR, cfg, 1061.0, first.memory)
    assert later.function("m").instances() == 0 and later.memory.started == 1000.0
    assert decide(snap(1000.0), PREDICTOR, cfg, 1000.0).function("m").instances() == 0  # one decision: from scratch


def test_a_restarted_loop_still_keeps_a_function_within_its_most_instances_and_removes_variants_of_a_parent_at_zero():
    # what the unknown demand held before the restart could justify is bounded by com.openfaas.scale.max, and a
    # parent scaled to zero passes nothing to its variants whatever the demand was
    parent = Variant("m", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, pinned=True, ready=1)
    running = tuple(Variant(f"m-b1-c500-g0-a-{i}", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, ready=1) for i in range(4))
    cfg = config(scale_down_delay=60.0, min_variant_age=0, keep_warm=0)
    capped = decide(snapshot([fn("m", 1.0, variants=(parent, *running), max_instances=3)], taken_at=1000.0),
                    PREDICTOR, cfg, 1000.0, GuardMemory(started=1000.0))
    assert capped.function("m").instances() == 2, capped.function("m").reason  # 3 with the parent
    assert "2 instance(s) kept" in capped.function("m").reason
    at_zero = dataclasses.replace(parent, replicas=0, ready=0)
    down = decide(snapshot([fn("m", 1.0, variants=(at_zero, *running))], taken_at=1000.0), PREDICTOR, cfg, 1000.0,
                  GuardMemory(started=1000.0))
    assert down.function("m").instances() == 0 and "kept" not in down.function("m").reason
