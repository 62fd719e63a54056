"""decide on synthetic snapshots: SLOs kept, capacity never exceeded, demand covered, fallback, no decision."""

from __future__ import annotations

import dataclasses
import random

import pytest

import autoscaler.decide as decide_module
from autoscaler.config import AutoscalerConfig
from autoscaler.decide import decide
from autoscaler.plan import GuardMemory
from autoscaler.selection import Selection
from autoscaler.candidates import config_key
from autoscaler.snapshot import Measurement, Node, Orphan, Variant
from autoscaler_fakes import GiB, LinearPredictor, fn, snapshot

PREDICTOR = LinearPredictor(scale={"slow": 4.0})


def config(**kw):
    kw.setdefault("max_step_up", 1000)
    kw.setdefault("max_step_down", 1000)
    return AutoscalerConfig(**kw)


def random_snapshot(seed: int, n_functions: int = 12, n_nodes: int = 5):
    rng = random.Random(seed)
    nodes = [Node(f"n{j}", rng.choice((2, 4, 8)), rng.choice((4, 8)) * GiB, rng.choice((0, 0, 1)))
             for j in range(n_nodes)]
    functions = [fn(f"f{i}", rng.uniform(0, 400), slo=rng.choice((0.03, 0.05, 0.1, 0.2))) for i in range(n_functions)]
    return snapshot(functions, nodes)


def check(plan, snap, cfg):
    assert plan.valid, plan.reason
    used = {n.name: [0.0, 0.0, 0] for n in snap.nodes}
    states = {f.name: f for f in snap.functions}
    for fp in plan.functions:
        slo = states[fp.name].slo
        for t in fp.targets:
            c = t.candidate
            assert c.t_exec <= (slo / 2 if c.batch > 1 else slo) + 1e-12
            assert c.timeout + c.t_exec <= slo + 1e-12
            used[t.node][0] += c.cpu * t.count
            used[t.node][1] += c.gpu * t.count
            used[t.node][2] += c.memory * t.count
        assert fp.capacity + fp.shortfall >= fp.demand * (1 + cfg.headroom) - 1e-6
    for n in snap.nodes:
        assert used[n.name][0] <= n.cpu + 1e-9 and used[n.name][1] <= n.gpus + 1e-9
        assert used[n.name][2] <= n.memory


@pytest.mark.parametrize("solver", ["highs", "cbc", "greedy"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_plans_keep_slos_capacity_and_cover_demand(solver, seed):
    snap = random_snapshot(seed)
    cfg = config(solver=solver)
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    assert sum(fp.shortfall for fp in plan.functions) == pytest.approx(0, abs=1e-6)
    assert plan.cost >= plan.bound - 1e-9
    if solver != "greedy":
        assert plan.status in ("optimal", "feasible")


def test_ilp_is_no_worse_than_greedy():
    snap = random_snapshot(7, 20, 6)
    exact = decide(snap, PREDICTOR, config(solver="highs"), 0.0)
    greedy = decide(snap, PREDICTOR, config(solver="greedy"), 0.0)
    assert exact.status == "optimal"
    assert exact.cost <= greedy.cost * (1 + 1e-3) + 1e-9


def test_overload_becomes_shortfall_not_overcommit():
    snap = snapshot([fn("hot", 100000.0)], [Node("small", 2, 4 * GiB)])
    cfg = config()
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    assert plan.function("hot").shortfall > 0
    assert "no node has room for another instance" in plan.function("hot").reason
    assert plan.bound <= plan.cost  # covering all of it would cost more, but it is not covered


def test_the_bound_is_of_the_selection_the_guard_rails_step_toward():
    plan = decide(snapshot([fn("f", 3000.0)]), PREDICTOR, config(max_step_up=1), 0.0)
    assert plan.function("f").instances() == 1 and plan.cost < plan.selection_cost
    assert 0 < plan.bound <= plan.selection_cost and plan.gap == pytest.approx(plan.selection_cost / plan.bound - 1)


def test_a_minimum_no_node_holds_is_missed_and_said_and_memory_named_when_it_binds():
    snap = snapshot([fn("warm", 0.0, min_instances=40)], [Node("small", 2, 4 * GiB)])
    plan = decide(snap, PREDICTOR, config(), 0.0)
    assert "below its minimum instances (com.openfaas.scale.min) by" in plan.function("warm").reason
    assert plan.bound <= plan.cost + 1e-9
    big = snapshot([fn("hot", 100000.0, memory=3 * GiB)], [Node("roomy", 64, 8 * GiB)])
    reason = decide(big, PREDICTOR, config(), 0.0).function("hot").reason
    assert "no node has the memory left" in reason


def test_a_short_function_at_its_instance_limit_says_so():
    snap = snapshot([fn("hot", 100000.0)], [Node("big", 64, 64 * GiB)])
    plan = decide(snap, PREDICTOR, config(max_instances=2), 0.0)
    assert plan.function("hot").shortfall > 0 and "at its most instances" in plan.function("hot").reason


def test_solver_failure_falls_back_to_greedy(monkeypatch):
    monkeypatch.setattr(decide_module, "solve_selection",
                        lambda *a, **k: Selection({}, "failed: Not Solved / No Solution Found", 0.0))
    snap = random_snapshot(4)
    cfg = config(solver="highs")
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    assert plan.status.startswith("fallback") and plan.solver == "greedy"


def test_tiny_time_limit_still_gives_a_valid_plan():
    snap = random_snapshot(5, 40, 8)
    cfg = config(solver="highs", solver_time_limit=0.001)
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)


def test_large_problems_select_greedily_with_a_bound():
    snap = random_snapshot(6, 30, 5)
    plan = decide(snap, PREDICTOR, config(ilp_max_variables=10), 0.0)
    assert plan.status.startswith("greedy (") and plan.bound > 0 and plan.gap is not None


def test_no_decision_without_nodes_or_on_stale_data():
    plan = decide(snapshot([fn("a", 1.0)], nodes=()), PREDICTOR, config(), 0.0)
    assert not plan.valid and "no nodes" in plan.reason
    plan = decide(snapshot([fn("a", 1.0)], taken_at=0.0), PREDICTOR, config(max_snapshot_age=30), 31.0)
    assert not plan.valid and "old" in plan.reason


def test_unknown_load_or_impossible_slo_leaves_a_function_as_it_runs():
    running = (Variant("a-b1-c1000-g0-a-0", 1, 1.0, 0.0, 256 * 1024**2, "a"),)
    snap = snapshot([fn("a", None, variants=running), fn("tight", 10.0, slo=0.001)])
    plan = decide(snap, PREDICTOR, config(), 0.0)
    a, tight = plan.function("a"), plan.function("tight")
    assert a.unchanged and a.instances() == 1 and "no arrival rate" in a.reason
    assert tight.unchanged and "latency_slo" in tight.reason


def test_measured_exec_times_correct_the_prediction():
    base = decide(snapshot([fn("m", 300.0)]), PREDICTOR, config(), 0.0).function("m")
    slow = [Measurement(b, c, 0.0, 3 * PREDICTOR.exec_seconds("m", b, c, 0.0)) for b in (1, 4) for c in (0.5, 1.0)]
    corrected = decide(snapshot([fn("m", 300.0, measured=tuple(slow))]), PREDICTOR, config(), 0.0).function("m")
    assert corrected.cost > base.cost


def test_pinned_parent_counts_as_capacity_and_uses_its_node():
    parent = Variant("m", 1, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)
    alone = decide(snapshot([fn("m", 150.0)]), PREDICTOR, config(), 0.0).function("m")
    with_parent = decide(snapshot([fn("m", 150.0, variants=(parent,))]), PREDICTOR, config(), 0.0).function("m")
    assert with_parent.cost < alone.cost
    assert all(t.candidate.key and t.count for t in with_parent.targets)


def test_current_configuration_is_kept_when_nothing_changes():
    snap = random_snapshot(8, 6, 3)
    first = decide(snap, PREDICTOR, config(), 0.0)
    variants = {fp.name: tuple(Variant(f"{fp.name}-{t.key}-{t.node}", t.candidate.batch, t.candidate.cpu,
                                       t.candidate.gpu, t.candidate.memory, t.node, t.count) for t in fp.targets)
                for fp in first.functions}
    again = snapshot([fn(f.name, f.rate, slo=f.slo, variants=variants[f.name]) for f in snap.functions], snap.nodes)
    second = decide(again, PREDICTOR, config(), 1.0, first.memory)
    for a, b in zip(first.functions, second.functions):
        assert sorted((t.key, t.node, t.count) for t in a.targets) == sorted((t.key, t.node, t.count) for t in b.targets)


def churn(cfg, ticks: int = 10, wobble: float = 0.05) -> list[int]:
    """Instances started or stopped per tick when a parent's measured time alternates by +-``wobble``
    at a steady demand (noise, as seen live), carrying out each plan exactly."""
    parent = Variant("f", 8, 1.0, 0.0, 256 * 1024**2, "n1", 1, pinned=True)
    running, memory, out = (), None, []
    for i in range(ticks):
        factor = 1 + wobble if i % 2 else 1 - wobble
        measured = (Measurement(8, 1.0, 0.0, factor * PREDICTOR.exec_seconds("f", 8, 1.0, 0.0)),)
        snap = snapshot([fn("f", 1000.0, variants=(parent, *running), measured=measured)],
                        (Node("n1", 8, 16 * GiB),), taken_at=5.0 * i)
        plan = decide(snap, PREDICTOR, cfg, 5.0 * i, memory)
        memory = plan.memory
        targets = {(t.key, t.node): t for t in plan.function("f").targets}
        before = {(config_key(v.batch, v.cpu, v.gpu), v.node) for v in running for _ in range(v.replicas)}
        out.append(sum(abs(t.count - sum(1 for v in running if (config_key(v.batch, v.cpu, v.gpu), v.node) == k))
                       for k, t in targets.items()) + sum(1 for k in before if k not in targets))
        running = tuple(Variant(f"f-{t.key}-{k}", t.candidate.batch, t.candidate.cpu, t.candidate.gpu,
                                t.candidate.memory, t.node, 1, ready=1) for t in targets.values() for k in range(t.count))
    return out


def test_noise_in_measured_times_does_not_swap_configurations_back_and_forth():
    steady = churn(config())
    # after the first slower reading is held (and the swap it made has finished: its removal waits a tick
    # for the replacement), nothing moves
    assert sum(steady[3:]) == 0, steady
    assert sum(churn(config(switch_margin=0.0, scale_down_delay=0.0))[2:]) > 0  # without the guards it churns


def test_orphaned_and_held_variants_hold_their_resources_until_removed():
    node = Node("n1", 2, 16 * GiB)
    orphan = Orphan(Variant("gone-b1-c1000-g0-n1-0", 1, 1.5, 0.0, 256 * 1024**2, "n1", 1), "gone", "gone")
    free = decide(snapshot([fn("m", 400.0)], (node,)), PREDICTOR, config(), 0.0)
    held = decide(dataclasses.replace(snapshot([fn("m", 400.0)], (node,)), orphans=(orphan,)), PREDICTOR, config(), 0.0)
    # a variant whose parent is missing for less than orphan_grace (left as it runs) holds them the same way
    waiting = decide(dataclasses.replace(snapshot([fn("m", 400.0)], (node,)), held=(orphan,)), PREDICTOR,
                     config(), 0.0)
    used = lambda plan: sum(t.count * t.candidate.cpu for t in plan.function("m").targets)  # noqa: E731
    assert used(free) > 0.5 and used(held) <= 0.5 + 1e-9 and used(waiting) <= 0.5 + 1e-9


def test_a_pinned_parent_counts_only_at_a_batch_size_that_meets_the_slo():
    slow = Variant("m", 64, 1.0, 0.0, 256 * 1024**2, "a", pinned=True)  # 68 ms a batch of 64 > SLO/2
    plan = decide(snapshot([fn("m", 0.0, variants=(slow,))]), PREDICTOR, config(keep_warm=0), 0.0)
    assert plan.function("m").capacity == pytest.approx(32 / PREDICTOR.exec_seconds("m", 32, 1.0, 0.0))


def test_a_model_without_any_timing_says_so():
    plan = decide(snapshot([fn("unknown", 10.0)]), PREDICTOR, config(), 0.0)  # the predictor knows nothing
    x = plan.function("unknown")
    assert x.unchanged and "no execution time known for model unknown" in x.reason


def test_a_memory_limit_no_node_has_is_named_as_the_reason():
    plan = decide(snapshot([fn("big", 10.0, memory=32 * GiB)]), PREDICTOR, config(), 0.0)  # nodes: 8, 16 GiB
    big = plan.function("big")
    assert big.unchanged and "memory limit (32.00 GiB) is more than any node has (the largest 16.00 GiB)" in big.reason
    assert "latency_slo" not in big.reason


def test_parents_without_a_node_on_a_multi_node_cluster_still_hold_cpu():
    """Four 1-CPU parents with no node label fill two 2-CPU nodes: no variant fits beside them."""
    parents = [fn(f"p{i}", 5000.0, variants=(Variant(f"p{i}", 1, 1.0, 0.0, 256 * 1024**2, "", pinned=True),))
               for i in range(4)]
    nodes = (Node("n1", 2, 8 * GiB), Node("n2", 2, 8 * GiB))
    plan = decide(snapshot(parents, nodes), PREDICTOR, config(), 0.0)
    assert plan.valid, plan.reason
    assert sum(t.candidate.cpu * t.count for fp in plan.functions for t in fp.targets) == 0
    assert all(fp.shortfall > 0 for fp in plan.functions)
    roomy = decide(snapshot(parents, (Node("n1", 4, 8 * GiB), Node("n2", 4, 8 * GiB))), PREDICTOR, config(), 0.0)
    placed = [sum(t.candidate.cpu * t.count for t in fp.targets if t.node == n) for n in ("n1", "n2")
              for fp in roomy.functions]
    assert 0 < sum(placed) <= 4 + 1e-9  # the 4 CPUs the parents leave, not 8


def test_a_function_with_an_unreadable_slo_is_left_as_it_runs_with_the_reason():
    running = Variant("f-b4-c500-g0-a", 4, 0.5, 0.0, 256 * 1024**2, "a", 2)
    fs = fn("f", 500.0, slo=0.0, variants=(running,), unreadable="annotation com.faas-infer.latency_slo='abc' ...")
    plan = decide(snapshot([fs]), PREDICTOR, config(), 0.0)
    fp = plan.function("f")
    assert fp.unchanged and fp.reason.startswith("annotation com.faas-infer.latency_slo='abc'")
    assert [(t.key, t.count) for t in fp.targets] == [(config_key(4, 0.5, 0.0), 2)]


def test_a_gpu_parent_without_a_node_is_charged_to_a_node_with_a_gpu():
    parent = Variant("g", 1, 1.0, 1.0, 256 * 1024**2, "", pinned=True)
    nodes = (Node("cpu-node", 16, 32 * GiB), Node("gpu-node", 8, 32 * GiB, 1))
    plan = decide(snapshot([fn("g", 50000.0, variants=(parent,))], nodes), PREDICTOR, config(), 0.0)
    assert plan.valid, plan.reason
    assert not [t for t in plan.function("g").targets if t.candidate.gpu]  # its node's one device is its own


CONSTRAINED_NODES = (Node("cpu-node-1", 16, 32 * GiB),
                     Node("gpu-node-1", 4, 16 * GiB, 1, {"nvidia.com/gpu.present": "true"}))


@pytest.mark.parametrize("solver", ["highs", "greedy"])
@pytest.mark.parametrize("placement_vars", [10000, 0])  # the exact placement, then best fit
@pytest.mark.parametrize("constraint", ["nvidia.com/gpu.present=true", "nvidia.com/gpu.present == true"])
def test_a_constrained_function_is_planned_only_on_the_nodes_its_constraints_admit(solver, placement_vars, constraint):
    """docker/kubernetes's GPU function (constrained to nodes with nvidia.com/gpu.present) got CPU variants on
    the CPU node: their pods, carrying the parent's constraint too, would never have been scheduled."""
    snap = snapshot([fn("resnet-gpu", 3000.0, spec={"constraints": [constraint]}), fn("mlp", 3000.0)],
                    CONSTRAINED_NODES)
    cfg = config(solver=solver, placement_ilp_max_vars=placement_vars)
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    assert plan.function("resnet-gpu").targets
    assert {t.node for t in plan.function("resnet-gpu").targets} == {"gpu-node-1"}
    assert "cpu-node-1" in {t.node for t in plan.function("mlp").targets}


@pytest.mark.parametrize("solver", ["highs", "greedy"])
def test_the_selection_buys_for_a_confined_function_only_what_its_nodes_hold(solver):
    """Pooled over every node, the selection counted the CPU node's cores for the GPU-confined function, bought
    instances only the CPU node could hold, and placement then left them unplaced: the shortfall now comes
    from the selection, against the confined nodes' capacity, and the free function still gets the rest."""
    snap = snapshot([fn("pinned", 1e6, spec={"constraints": ["kubernetes.io/hostname=gpu-node-1"]}),
                     fn("mlp", 100.0)], CONSTRAINED_NODES)
    cfg = config(solver=solver, gpu_steps=(), placement_ilp_max_vars=0)
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    pinned = plan.function("pinned")
    assert {t.node for t in pinned.targets} == {"gpu-node-1"} and pinned.shortfall > 0
    assert sum(t.candidate.cpu * t.count for t in pinned.targets) <= 4 + 1e-9
    assert plan.function("mlp").targets and plan.function("mlp").shortfall == pytest.approx(0, abs=1e-6)


def test_constraints_no_node_meets_or_no_node_can_answer():
    snap = snapshot([fn("nowhere", 100.0, spec={"constraints": ["nvidia.com/gpu.present=false"]}),
                     fn("unlabelled", 100.0, spec={"constraints": ["disk=ssd"]})], CONSTRAINED_NODES)
    plan = decide(snap, PREDICTOR, config(), 0.0)
    assert plan.function("nowhere").unchanged and "no node satisfies its constraints" in plan.function("nowhere").reason
    assert plan.function("unlabelled").targets  # no node declares "disk": the constraint cannot be judged here
    assert "unlabelled: constraint 'disk=ssd': no node in the inventory declares disk: not applied" in plan.reason


@pytest.mark.parametrize("solver", ["highs", "greedy"])
def test_a_confined_parent_without_a_node_is_charged_to_a_node_its_constraints_admit(solver):
    """docker/kubernetes's GPU parent (2 cores, no node label, confined to the GPU node) was charged to the CPU
    node, the one with the most CPU left: the plan gave its variants all 4 cores of the GPU node, 2 of which
    the parent holds, and one pod stayed Pending."""
    parent = Variant("resnet-gpu", 8, 2.0, 0.0, 256 * 1024**2, "", pinned=True)
    snap = snapshot([fn("resnet-gpu", 1e6, spec={"constraints": ["nvidia.com/gpu.present=true"]},
                        variants=(parent,))], CONSTRAINED_NODES)
    cfg = config(solver=solver, gpu_steps=())
    plan = decide(snap, PREDICTOR, cfg, 0.0)
    check(plan, snap, cfg)
    targets = plan.function("resnet-gpu").targets
    assert targets and {t.node for t in targets} == {"gpu-node-1"}
    assert sum(t.candidate.cpu * t.count for t in targets) <= 4 - 2 + 1e-9


def test_a_deleted_function_leaves_nothing_in_the_guard_memory():
    # loaded, then deleted, then deployed again under its name with no traffic: it starts from nothing
    loaded = decide(snapshot([fn("m", 400.0), fn("other", 10.0)]), PREDICTOR, config(), 0.0)
    assert "m" in loaded.memory.demand_history
    gone = decide(snapshot([fn("other", 10.0)]), PREDICTOR, config(), 5.0, loaded.memory)
    assert "m" not in gone.memory.demand_history and "m" not in gone.memory.capacity_factors
    again = decide(snapshot([fn("m", 0.0, idle_seconds=None), fn("other", 10.0)]), PREDICTOR, config(keep_warm=0),
                   10.0, gone.memory)
    assert again.function("m").demand == 0.0 and not again.function("m").targets


def test_idle_variants_of_a_model_without_timings_are_removed():
    # its variants never served (or their times were lost): nothing prices them, but nothing arrives either
    parent = Variant("unknown", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, pinned=True, ready=1)
    idle = tuple(Variant(f"unknown-b1-c500-g0-a-{i}", 1, 0.5, 0.0, 256 * 1024**2, "a", 1, ready=1) for i in range(3))
    plan = decide(snapshot([fn("unknown", 0.0, variants=(parent, *idle))]), PREDICTOR,
                  config(min_variant_age=0), 0.0)
    x = plan.function("unknown")
    assert not x.unchanged and not x.targets and "no execution time known" in x.reason
    loaded = decide(snapshot([fn("unknown", 5.0, variants=(parent, *idle))]), PREDICTOR, config(), 0.0)
    assert loaded.function("unknown").unchanged  # while it has demand, what runs is kept
    low = decide(snapshot([fn("unknown", 0.0, variants=(parent, *idle), min_instances=3)]), PREDICTOR,
                 config(min_variant_age=0), 0.0)
    assert low.function("unknown").unchanged  # its minimum needs them


def test_a_function_deployed_anew_under_its_name_between_two_ticks_starts_its_guard_memory_afresh():
    # loaded with refusals (a capacity factor learnt, 500/s held), then deleted and deployed again under its name
    # within one tick (a new createdAt, the old variants adopted) with a light load: the old deployment's peak no
    # longer holds instances after the delay and its capacity factor no longer prices the new one
    def parent(created):
        return Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", 1, pinned=True, ready=1)

    def state(created, rate, variants=(), **kw):
        return fn("m", rate, variants=(parent(created), *variants), spec={"createdAt": created}, **kw)

    cfg = config(scale_down_delay=60.0, min_variant_age=0, keep_warm=0)
    busy = decide(snapshot([state("2026-01-01T00:00:00Z", 500.0, refused_rate=200.0)]), PREDICTOR, cfg, 0.0)
    assert busy.memory.capacity_factors["m"][0] < 1.0 and busy.function("m").instances() > 0
    running = tuple(Variant(f"m-{t.key}-{i}", t.candidate.batch, t.candidate.cpu, t.candidate.gpu,
                            t.candidate.memory, t.node, 1, ready=1)
                    for t in busy.function("m").targets for i in range(t.count))
    same = decide(snapshot([state("2026-01-01T00:00:00Z", 10.0, running)], taken_at=5.0), PREDICTOR, cfg, 5.0,
                  busy.memory)
    assert same.function("m").demand == pytest.approx(500.0)  # the same deployment: its peak is held
    anew = decide(snapshot([state("2026-01-01T00:00:04Z", 10.0, running)], taken_at=5.0), PREDICTOR, cfg, 5.0,
                  busy.memory)
    plan = anew.function("m")
    assert plan.demand == pytest.approx(10.0) and anew.memory.capacity_factors["m"][0] == 1.0
    assert "deployed anew (createdAt 2026-01-01T00:00:04Z, was 2026-01-01T00:00:00Z)" in plan.reason
    assert plan.instances() == len(running)  # its variants are kept while its own demand is watched
    assert anew.memory.redeployed_at == {"m": 5.0}
    watched = decide(snapshot([state("2026-01-01T00:00:04Z", 10.0, running)], taken_at=30.0), PREDICTOR, cfg, 30.0,
                     anew.memory)
    assert watched.function("m").instances() == len(running) and "deployed anew" not in watched.function("m").reason
    after = decide(snapshot([state("2026-01-01T00:00:04Z", 10.0, running)], taken_at=66.0), PREDICTOR, cfg, 66.0,
                   watched.memory)
    assert after.function("m").instances() == 0 and after.memory.redeployed_at == {}
    # the old deployment's memory would have held them: its 500/s was seen at 0, within the delay until 60
    held = decide(snapshot([state("2026-01-01T00:00:00Z", 10.0, running)], taken_at=30.0), PREDICTOR, cfg, 30.0,
                  same.memory)
    assert held.function("m").instances() > 0


def test_a_listing_without_its_createdat_neither_ends_the_watch_of_a_new_deployment_nor_hides_the_next_one():
    # a parent listed once without createdAt (a provider's hiccup) ended the watch of its new deployment (its variants
    # removed at once) and forgot the createdAt it had, so a deployment anew after that went unnoticed
    def state(created, variants=()):
        spec = {"createdAt": created} if created else {}
        parent = Variant("m", 8, 1.0, 0.0, 256 * 1024**2, "a", 1, pinned=True, ready=1)
        return fn("m", 10.0, variants=(parent, *variants), spec=spec)

    cfg = config(scale_down_delay=60.0, min_variant_age=0, keep_warm=0)
    running = (Variant("m-b8-c1000-g0-a-0", 8, 1.0, 0.0, 256 * 1024**2, "a", 1, ready=1),)
    first = decide(snapshot([state("2026-01-01T00:00:00Z", running)]), PREDICTOR, cfg, 0.0, GuardMemory(started=-100.0))
    anew = decide(snapshot([state("2026-01-01T00:00:04Z", running)], taken_at=5.0), PREDICTOR, cfg, 5.0,
                  first.memory)
    assert anew.memory.redeployed_at == {"m": 5.0}
    lost = decide(snapshot([state("", running)], taken_at=10.0), PREDICTOR, cfg, 10.0, anew.memory)
    assert lost.memory.redeployed_at == {"m": 5.0} and lost.memory.deployed == {"m": "2026-01-01T00:00:04Z"}
    assert lost.function("m").instances() == len(running)  # still watched: nothing removed
    again = decide(snapshot([state("2026-01-01T00:00:09Z", running)], taken_at=15.0), PREDICTOR, cfg, 15.0,
                   lost.memory)
    assert again.memory.redeployed_at == {"m": 15.0}
    assert "deployed anew (createdAt 2026-01-01T00:00:09Z, was 2026-01-01T00:00:04Z)" in again.function("m").reason
