"""usage: resources charged per node (and settled where the node is unknown), instances per configuration."""

from __future__ import annotations

from autoscaler.snapshot import FunctionState, Node, Variant
from autoscaler.usage import Usage, current_instances, parent_down, use, use_all

GiB = 1024**3


def test_an_instance_on_a_known_node_is_charged_there_and_one_without_is_settled_where_it_fits():
    nodes = (Node("cpu", 4, 8 * GiB), Node("gpu", 4, 8 * GiB, 1))
    usage = Usage()
    use(usage, "cpu", Variant("a", 1, 1.0, 0.0, GiB, "cpu"), 2)
    use(usage, "", Variant("g", 1, 1.0, 1.0, GiB, ""), 1)  # a GPU instance whose node is not known...
    use(usage, "", Variant("c", 1, 0.5, 0.0, GiB, ""), 1, frozenset({"cpu"}))  # ...and one confined to "cpu"
    assert usage.nodes["cpu"] == [2.0, 0.0, 2 * GiB] and len(usage.unplaced) == 2
    usage.settle(nodes)
    assert usage.unplaced == []
    assert usage.nodes["gpu"] == [1.0, 1.0, GiB]  # the one node with its GPU free
    assert usage.nodes["cpu"] == [2.5, 0.0, 3 * GiB]  # where its constraints admit it, though "gpu" has more CPU


def test_variants_are_counted_per_configuration_and_node_and_the_deployment_is_not():
    parent = Variant("f", 4, 1.0, 0.0, GiB, "n1", 1, pinned=True)
    fs = FunctionState("f", 0.1, variants=(parent, Variant("f-a", 4, 1.0, 0.0, GiB, "n1", 2, ready=1),
                                           Variant("f-b", 4, 1.0, 0.0, GiB, "", 1, ready=1)))
    assert current_instances(fs, "n1") == {("b4-c1000-g0", "n1"): 3}
    assert current_instances(fs, "n1", lambda v: v.ready >= v.replicas) == {("b4-c1000-g0", "n1"): 1}
    usage = Usage()
    use_all(usage, fs, "n1")
    assert usage.nodes["n1"] == [3.0, 0.0, 3 * GiB]  # the variants only: the deployment is charged apart


def test_a_deployment_scaled_to_zero_is_down_and_a_function_without_one_is_not():
    up = Variant("f", 4, 1.0, 0.0, GiB, "n1", 1, pinned=True)
    assert not parent_down(FunctionState("f", 0.1, variants=(up,)))
    assert parent_down(FunctionState("f", 0.1, variants=(Variant("f", 4, 1.0, 0.0, GiB, "n1", 0, pinned=True),)))
    assert not parent_down(FunctionState("f", 0.1))
