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


def test_planned_instances_sum_a_configuration_over_its_nodes():
    from autoscaler.decide import FunctionPlan, Plan, Target
    from autoscaler.snapshot import FunctionState, Node, Snapshot

    targets = (Target("f", "b1-c500-g0", "a", 3), Target("f", "b1-c500-g0", "b", 2))
    plan = Plan(True, "test", 0.0, (FunctionPlan("f", 100.0, 200.0, 0.0, targets, 1.0, "r"),))
    metrics = AutoscalerMetrics()
    metrics.record_tick(Snapshot(0.0, (FunctionState("f", 0.1),), (Node("a", 4, 2**33),)), plan, 0.01)
    assert 'faas_infer_autoscaler_planned_instances{function_name="f.openfaas-fn",config="b1-c500-g0"} 5' \
        in metrics.registry.render()
