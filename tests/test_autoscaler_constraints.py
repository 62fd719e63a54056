"""Placement constraints against node labels (pure)."""

from __future__ import annotations

from autoscaler.constraints import eligible, hostname
from autoscaler.snapshot import Node

NODES = (Node("cpu-1", 8, 2**34), Node("gpu-1", 8, 2**34, 1, {"nvidia.com/gpu.present": "true", "zone": "a"}),
         Node("gpu-2", 8, 2**34, 2, {"nvidia.com/gpu.present": "true", "zone": "b"}))


def test_faas_netes_and_swarm_forms_select_the_same_nodes():
    for text in ("nvidia.com/gpu.present=true", "nvidia.com/gpu.present == true", " nvidia.com/gpu.present==true "):
        assert eligible([text], NODES) == (frozenset({"gpu-1", "gpu-2"}), [])
    assert eligible(["zone!=a"], NODES) == (frozenset({"cpu-1", "gpu-2"}), [])
    assert eligible(["nvidia.com/gpu.present=true", "zone=b"], NODES) == (frozenset({"gpu-2"}), [])
    assert eligible(["zone=c"], NODES) == (frozenset(), [])


def test_every_node_answers_to_its_hostname_and_a_variant_is_pinned_in_the_form_faas_netes_reads():
    # faas-netes splits a constraint on "=" and drops it unless that gives two parts: "key == value" pinned nothing
    assert hostname("gpu-2") == "kubernetes.io/hostname=gpu-2"
    assert eligible([hostname("gpu-2")], NODES) == (frozenset({"gpu-2"}), [])


def test_what_the_inventory_cannot_answer_is_left_out_and_said():
    assert eligible([], NODES) == (None, [])
    allowed, notes = eligible(["disk=ssd", "node.role", "zone=a"], NODES)
    assert allowed == frozenset({"gpu-1"})
    assert notes == ["constraint 'disk=ssd': no node in the inventory declares disk: not applied",
                     "constraint 'node.role' is not key=value, key==value or key!=value: not applied"]
    local = (Node("my-laptop", 2, 2**33),)  # the local inventory declares no labels (faasd ignores constraints)
    assert eligible(["nvidia.com/gpu.present=true"], local)[0] is None
