"""The autoscaler's metrics: what their help texts say they measure."""

from __future__ import annotations

from autoscaler.metrics import AutoscalerMetrics


def test_decision_seconds_says_it_times_decide_alone():
    # loop.tick starts its clock after observe and reads it before act
    help_text = AutoscalerMetrics().decision_seconds.help
    assert "decide" in help_text and "observing and acting not counted" in help_text


def test_running_instances_say_which_are_the_deployment_and_which_variants():
    from autoscaler.decide import Plan
    from autoscaler.snapshot import FunctionState, Node, Snapshot, Variant

    parent = Variant("f", 4, 1.0, 0.0, 2**28, "a", 1, pinned=True)
    same_config = Variant("f-b4-c1000-g0-a-0", 4, 1.0, 0.0, 2**28, "a", 2)
    fs = FunctionState("f", 0.1, variants=(parent, same_config))
    metrics = AutoscalerMetrics()
    metrics.record_tick(Snapshot(0.0, (fs,), (Node("a", 4, 2**33),)), Plan.invalid("test", 0.0), 0.01)
    text = metrics.registry.render()
    series = 'faas_infer_autoscaler_instances{function_name="f.openfaas-fn",config="b4-c1000-g0",kind="%s"} %d'
    assert series % ("deployment", 1) in text and series % ("variant", 2) in text


def test_held_variants_are_counted_under_their_missing_parent():
    from autoscaler.decide import Plan
    from autoscaler.snapshot import Node, Orphan, Snapshot, Variant

    held = Orphan(Variant("f-b4-c500-g0-a-0", 4, 0.5, 0.0, 2**28, "a", 2), "f", "its parent f is not listed")
    metrics = AutoscalerMetrics()
    metrics.record_tick(Snapshot(0.0, (), (Node("a", 4, 2**33),), held=(held,)), Plan.invalid("test", 0.0), 0.01)
    text = metrics.registry.render()
    assert 'faas_infer_autoscaler_instances{function_name="f.openfaas-fn",config="b4-c500-g0",kind="held"} 2' in text
    assert 'faas_infer_autoscaler_allocated_cpu_cores{function_name="f.openfaas-fn"} 1' in text


def test_planned_instances_sum_a_configuration_over_its_nodes():
    from autoscaler.decide import FunctionPlan, Plan, Target
    from autoscaler.snapshot import FunctionState, Node, Snapshot

    targets = (Target("f", "b1-c500-g0", "a", 3), Target("f", "b1-c500-g0", "b", 2))
    plan = Plan(True, "test", 0.0, (FunctionPlan("f", 100.0, 200.0, 0.0, targets, 1.0, "r"),))
    metrics = AutoscalerMetrics()
    metrics.record_tick(Snapshot(0.0, (FunctionState("f", 0.1),), (Node("a", 4, 2**33),)), plan, 0.01)
    assert 'faas_infer_autoscaler_planned_instances{function_name="f.openfaas-fn",config="b1-c500-g0"} 5' \
        in metrics.registry.render()


def test_stale_variants_of_a_function_left_as_it_runs_stay_counted(redis_client):
    # a tick a function is left as it runs (an unreadable label) updates none of its variants, which stay as stale:
    # stale_variants went to nothing then, and came back the tick after
    from autoscaler.config import AutoscalerConfig
    from autoscaler.loop import Autoscaler
    from autoscaler.snapshot import Node

    class Listing:
        def __init__(self, statuses):
            self.statuses = statuses

        def list_functions(self):
            return self.statuses

    labels = {"com.faas-infer.parent": "f", "com.faas-infer.batch": "4", "com.faas-infer.cpu": "0.5",
              "com.faas-infer.gpu": "0", "com.faas-infer.node": "n1"}

    class Predictor:
        def exec_seconds(self, model, batch, cpu, gpu):
            return None if gpu else 0.004 + 0.001 * batch

    # three instances at least: the plan keeps both variants
    parent = {"name": "f", "image": "new", "annotations": {"com.faas-infer.latency_slo": "100ms"}, "replicas": 1,
              "availableReplicas": 1, "labels": {"com.openfaas.scale.min": "3"}}
    ready = {"name": "f-b4-c500-g0-n1-0", "image": "old", "labels": labels, "replicas": 1, "availableReplicas": 1}
    starting = {**ready, "name": "f-b4-c500-g0-n1-1", "availableReplicas": 0}
    listing = Listing([parent, ready, starting])
    metrics = AutoscalerMetrics()
    config = AutoscalerConfig(keep_warm=0, cpu_steps=(0.5,), batch_sizes=(4,))
    scaler = Autoscaler(config, client=listing, redis=redis_client, predictor=Predictor(), metrics=metrics,
                        nodes=lambda: (Node("n1", 8, 2**34),))
    series = 'faas_infer_autoscaler_stale_variants{function_name="f.openfaas-fn",waiting="not_ready"} 1'
    scaler.tick(1000.0, dry_run=True)
    assert series in metrics.registry.render()  # the ready one waits for the one starting
    listing.statuses = [{**parent, "labels": {"com.openfaas.scale.min": "x"}}, ready, starting]
    plan, _ = scaler.tick(1005.0, dry_run=True)
    assert plan.function("f").unchanged and series in metrics.registry.render()
    listing.statuses = [ready, starting]  # its parent gone: nothing of it is told
    scaler.tick(1010.0, dry_run=True)
    assert "stale_variants{" not in metrics.registry.render()
