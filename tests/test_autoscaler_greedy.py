"""Greedy selection (the fallback) and best-fit packing."""

from __future__ import annotations

from autoscaler.candidates import Candidate
from autoscaler.greedy import pack_best_fit, select_greedy
from autoscaler.ilp import Group
from autoscaler.selection import FunctionDemand, SelectionProblem

GiB = 1024**3
BIG = Candidate(32, 1.0, 0.0, 0.04, 800, 533, 0.06, 0.1, GiB)
SMALL = Candidate(1, 0.5, 0.0, 0.004, 125, 0, 0, 0.05, GiB)


def test_fragment_penalty_prefers_small_instances_for_the_remainder():
    p = SelectionProblem((FunctionDemand("f", (BIG, SMALL), 1000.0),), 100, 0, 100 * GiB, 0.0)
    s = select_greedy(p)
    assert s.counts["f"][BIG.key] == 1
    assert s.counts["f"][SMALL.key] == 2  # 200/s left: two small beat a second big one
    assert not s.shortfall


def test_fill_rule_and_max_count_are_kept():
    p = SelectionProblem((FunctionDemand("f", (BIG, SMALL), 300.0, max_count=2),), 100, 0, 100 * GiB, 0.0)
    s = select_greedy(p)
    assert BIG.key not in s.counts["f"]  # 300/s cannot keep a b=32 instance filled (r_min 533)
    assert s.counts["f"][SMALL.key] == 2 and s.shortfall["f"] > 0


def test_pool_exhaustion_is_shortfall():
    p = SelectionProblem((FunctionDemand("f", (SMALL,), 1000.0),), 1.0, 0, 100 * GiB, 0.0)
    s = select_greedy(p)
    assert s.counts["f"][SMALL.key] == 2 and s.shortfall["f"] > 0


def test_best_fit_packs_tightly_keeps_current_and_reports_unplaced():
    groups = [Group("f", "a", 3, 2.0, 0.0, GiB, (("big", 1),)), Group("g", "b", 2, 1.0, 0.5, GiB),
              Group("h", "c", 1, 32.0, 0.0, GiB)]
    nodes = [("small", 2.0, 0.0, 8 * GiB), ("big", 8.0, 1.0, 8 * GiB)]
    placed, unplaced = pack_best_fit(groups, nodes)
    assert placed[("f", "a")]["big"] >= 1
    assert placed[("g", "b")] == {"big": 2}  # GPU shares only on the GPU node, two halves on one device
    assert unplaced == {("h", "c"): 1}
    for name, cpu, _, _ in nodes:
        used = sum(n * g.cpu for g in groups for (fn, key), where in placed.items()
                   if (fn, key) == (g.fn, g.key) for node, n in where.items() if node == name)
        assert used <= cpu


SLOW = Candidate(1, 1.0, 0.0, 0.005, 200, 0, 0, 0.1, GiB)  # 200/s per core
FAST = Candidate(8, 1.0, 0.0, 0.0008, 10000, 0, 0, 0.1, GiB)  # 10,000/s per core


def test_a_contended_pool_goes_to_the_cheapest_requests_whatever_the_order():
    """As the ILP ranks them: the function listed first no longer spends the pool on its dear requests."""
    for order in ((0, 1), (1, 0)):
        functions = (FunctionDemand("resnet", (SLOW,), 2000.0), FunctionDemand("mlp", (FAST,), 20000.0))
        p = SelectionProblem(tuple(functions[i] for i in order), 2.0, 0, 100 * GiB, 0.0)
        s = select_greedy(p)
        assert s.counts == {"mlp": {FAST.key: 2}}
        assert s.shortfall == {"resnet": 2000.0}


def test_demand_comes_before_minimum_instances_as_in_the_ilp():
    """A request waiting beats a warm idle instance (selection.below_min_penalty): minimums get what is left."""
    functions = (FunctionDemand("mlp", (FAST,), 15000.0), FunctionDemand("resnet", (SLOW,), 0.0, min_count=2))
    s = select_greedy(SelectionProblem(functions, 3.0, 0, 100 * GiB, 0.0))
    assert s.counts == {"mlp": {FAST.key: 2}, "resnet": {SLOW.key: 1}}
    assert not s.shortfall


def test_a_minimum_gets_the_smallest_instance_when_cpu_is_free():
    """With beta=0 every CPU configuration costs 0; the minimum must not take the largest one."""
    big = Candidate(1, 4.0, 0.0, 0.001, 1000, 0, 0, 0.0, GiB)
    small = Candidate(1, 0.5, 0.0, 0.004, 250, 0, 0, 0.0, GiB)
    s = select_greedy(SelectionProblem((FunctionDemand("h", (big, small), 0.0, min_count=3),), 16.0, 0, 100 * GiB, 0.0))
    assert s.counts == {"h": {small.key: 3}}


def test_best_fit_uses_the_part_of_a_device_a_running_instance_leaves():
    placed, unplaced = pack_best_fit([Group("f", "b4-c500-g50", 1, 0.5, 0.5, GiB)], [("gpu1", 4.0, 0.75, 8 * GiB)])
    assert placed == {("f", "b4-c500-g50"): {"gpu1": 1}} and not unplaced


def test_best_fit_keeps_confined_groups_on_their_nodes_with_overlapping_subsets():
    """Groups confined to overlapping node subsets each get the tightest of their own nodes, a running instance
    on a node its group may no longer use is not kept there, and what its nodes cannot hold is unplaced even
    where other nodes have room."""
    nodes = [("a", 1.0, 0.0, 8 * GiB), ("b", 2.0, 0.0, 8 * GiB), ("c", 3.0, 0.0, 8 * GiB), ("d", 64.0, 0.0, 8 * GiB)]
    groups = [Group("ab", "k", 2, 1.0, 0.0, GiB, (("c", 1),), frozenset({"a", "b"})),
              Group("bc", "k", 3, 1.0, 0.0, GiB, (), frozenset({"b", "c"})),
              Group("free", "k", 2, 1.0, 0.0, GiB)]
    placed, unplaced = pack_best_fit(groups, nodes)
    assert placed[("ab", "k")] == {"a": 1, "b": 1}
    assert set(placed[("bc", "k")]) <= {"b", "c"} and sum(placed[("bc", "k")].values()) == 3
    assert unplaced == {}
    placed, unplaced = pack_best_fit([Group("ab", "k", 4, 1.0, 0.0, GiB, (), frozenset({"a", "b"}))], nodes)
    assert placed[("ab", "k")] == {"a": 1, "b": 2} and unplaced == {("ab", "k"): 1}
