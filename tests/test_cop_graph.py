"""Graph composition on synthetic graphs: chains, parallel branches, residual joins; JSON round trip."""

from __future__ import annotations

import pytest

from cop_profiler.graph import OpGraph, OpNode, compose
from cop_profiler.opspec import OperatorSpec

COST = {"a": 1.0, "b": 2.0, "c": 5.0, "d": 0.5}


def graph(nodes, schedule="parallel"):
    return OpGraph(tuple(OpNode(i, op, tuple(ins)) for i, (op, ins) in enumerate(nodes)), schedule=schedule)


def test_chain_is_a_sum():
    g = graph([("a", []), ("b", [0]), ("c", [1])])
    assert compose(g, COST.__getitem__) == pytest.approx(8.0)
    assert compose(g, COST.__getitem__, "serial") == pytest.approx(8.0)


def test_parallel_branches_take_the_max_and_serial_sums_them():
    # a -> (b | c) -> d: TextCNN-like fan-out and concat.
    g = graph([("a", []), ("b", [0]), ("c", [0]), ("d", [1, 2])])
    assert compose(g, COST.__getitem__) == pytest.approx(1.0 + 5.0 + 0.5)
    assert compose(g, COST.__getitem__, "serial") == pytest.approx(1.0 + 2.0 + 5.0 + 0.5)


def test_residual_join_waits_for_the_longer_path():
    # x -> a -> b -> c ; shortcut x -> d ; join(add) reads c and d.
    g = graph([("a", []), ("b", [0]), ("c", [1]), ("d", []), ("a", [2, 3])])
    assert compose(g, COST.__getitem__) == pytest.approx(1 + 2 + 5 + 1)


def test_free_nodes_cost_nothing_but_keep_dependencies():
    g = graph([("c", []), (None, [0]), ("a", [1]), ("b", [])])
    assert compose(g, COST.__getitem__) == pytest.approx(6.0)
    assert compose(g, COST.__getitem__, "serial") == pytest.approx(8.0)
    assert g.op_keys() == {"a", "b", "c"}


def test_json_round_trip_keeps_everything():
    spec = OperatorSpec.create("Linear", "module:Linear(2,3)|args=(T(float32,[-1, 2]))")
    g = OpGraph((OpNode(0, spec.key, (), "fc"), OpNode(1, None, (0,), "getitem")), (spec,), 3, "serial",
                "recorded", ("fx failed",))
    assert OpGraph.from_json(g.to_json()) == g


def test_inputs_must_be_earlier_nodes():
    with pytest.raises(ValueError, match="inputs must be earlier"):
        OpGraph((OpNode(0, "a", (0,)),))
    with pytest.raises(ValueError, match="schedule"):
        OpGraph((), schedule="sideways")


def test_signature_key_is_stable_and_distinct():
    a = OperatorSpec.create("x", "sig-1")
    assert a.key == OperatorSpec.create("y", "sig-1").key
    assert a.key != OperatorSpec.create("x", "sig-2").key
