"""A model's operator graph and the composition of its latency from operator latencies.

Torch-free. Nodes are in execution (topological) order; a node without an operator is free (a tuple index,
a shape query). ``compose`` sums costs along chains and takes the maximum across parallel branches when
branches really run concurrently (``schedule="parallel"``). Eager PyTorch runs one operator at a time,
each using the whole intra-op thread pool, so traced models are ``serial``: every node is on the critical
path and the latency is the plain sum. Both rules are kept because the graph says which one holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from cop_profiler.opspec import OperatorSpec

SCHEDULES = ("serial", "parallel")


@dataclass(frozen=True)
class OpNode:
    """One executed call in the model."""

    # Position in execution order (also the node's id).
    id: int
    # Operator key in the profile DB; None for free nodes.
    op: str | None
    # Ids of the nodes whose outputs this node reads (model inputs and parameters are not nodes).
    inputs: tuple[int, ...] = ()
    # Human label, e.g. "stages.0.conv1" or "add".
    label: str = ""


@dataclass(frozen=True)
class OpGraph:
    """A model's operator graph with what the predictor needs besides operator timings."""

    # Nodes in execution order.
    nodes: tuple[OpNode, ...]
    # The distinct operators the nodes refer to.
    ops: tuple[OperatorSpec, ...] = ()
    # Calls of non-leaf modules (root included) per forward: each costs the calibrated module-call overhead.
    containers: int = 1
    # "serial" (eager: sum of all nodes) or "parallel" (branches overlap: critical path).
    schedule: str = "serial"
    # How the graph was obtained: "fx" or "recorded".
    traced_with: str = "fx"
    # Free-form notes (e.g. why torch.fx failed).
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: must be one of {SCHEDULES}")
        for node in self.nodes:
            if any(i >= node.id or i < 0 for i in node.inputs):
                raise ValueError(f"node {node.id} reads {node.inputs}: inputs must be earlier nodes")

    def op_keys(self) -> set[str]:
        """Keys of the operators used."""
        return {n.op for n in self.nodes if n.op is not None}

    def to_json(self) -> str:
        """Serialized form stored in the profile DB."""
        return json.dumps({
            "nodes": [[n.id, n.op, list(n.inputs), n.label] for n in self.nodes],
            "ops": [o.to_dict() for o in self.ops], "containers": self.containers,
            "schedule": self.schedule, "traced_with": self.traced_with, "notes": list(self.notes)})

    @classmethod
    def from_json(cls, text: str) -> "OpGraph":
        """Inverse of to_json."""
        data = json.loads(text)
        nodes = tuple(OpNode(int(i), op, tuple(inputs), label) for i, op, inputs, label in data["nodes"])
        return cls(nodes, tuple(OperatorSpec.from_dict(o) for o in data.get("ops", ())),
                   int(data.get("containers", 1)), data.get("schedule", "serial"),
                   data.get("traced_with", "fx"), tuple(data.get("notes", ())))


def compose(graph: OpGraph, cost: Callable[[str], float], schedule: str | None = None) -> float:
    """Latency of one forward: node costs summed along chains, max across branches (or summed if serial)."""
    schedule = schedule or graph.schedule
    if schedule == "serial":
        return sum(cost(n.op) for n in graph.nodes if n.op is not None)
    finish: dict[int, float] = {}
    for node in graph.nodes:
        start = max((finish[i] for i in node.inputs), default=0.0)
        finish[node.id] = start + (cost(node.op) if node.op is not None else 0.0)
    return max(finish.values(), default=0.0)
