"""What running instances hold: resources charged per node, and instances counted per (configuration, node).

Pure; shared by ``decide`` (resources the plan does not choose: pinned parents, orphans, functions left as
they run) and its guard stage (``stepping``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from autoscaler.candidates import config_key
from autoscaler.snapshot import FunctionState, Variant


@dataclass
class Usage:
    """Resources the instances decide does not plan hold: [cpu, gpu, memory] per node, and the (cpu, gpu,
    memory) of each instance whose node is not known (charged to nodes by ``settle``), with the nodes its
    constraints admit (None: any)."""

    nodes: defaultdict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
    unplaced: list[tuple[tuple[float, float, float], frozenset[str] | None]] = field(default_factory=list)

    def settle(self, nodes) -> None:
        """Charge the instances whose node is not known (a parent without a node label where there are
        several nodes) to the nodes, GPU instances first, each to the node with the most CPU left among
        those with its GPU and memory free, as a scheduler would place them: they hold resources on some
        node, and leaving them out let a plan fill every node around them (charged by CPU alone, a GPU
        parent's device went to a node without GPUs, and a variant was planned onto the device it holds).
        Only the nodes its constraints admit are considered, where any are listed (charged to the CPU node, a
        GPU-confined parent left the cores it holds on the GPU node to the plan)."""
        for item, allowed in sorted(self.unplaced, key=lambda x: (x[0][1], x[0][0], x[0][2]), reverse=True):
            admitted = [n for n in nodes if allowed is None or n.name in allowed] or list(nodes)
            if not admitted:
                break

            def room(n, item=item) -> tuple[bool, float, float]:
                held = self.nodes[n.name]
                left = (n.cpu - held[0], n.gpus - held[1], n.memory - held[2])
                return left[1] >= item[1] - 1e-9 and left[2] >= item[2], left[0], left[2]

            held = self.nodes[max(admitted, key=room).name]
            for i, amount in enumerate(item):
                held[i] += amount
        self.unplaced = []


def use(usage: Usage, node: str, v: Variant, n: int, allowed: frozenset[str] | None = None) -> None:
    """Charge ``n`` instances of ``v`` to ``node`` (to ``usage.unplaced`` when the node is not known, to be
    charged to one of the ``allowed`` nodes: any when None or none is)."""
    if node:
        for i, amount in enumerate(v.reserved()):
            usage.nodes[node][i] += amount * n
    else:
        usage.unplaced.extend([(tuple(float(a) for a in v.reserved()), allowed)] * n)


def use_all(usage: Usage, fs: FunctionState, default_node: str, allowed: frozenset[str] | None = None) -> None:
    """Charge every variant of ``fs`` (not its own deployment) where it runs."""
    for v in fs.variants:
        if not v.pinned:
            use(usage, v.node or default_node, v, v.replicas, allowed)


def current_instances(fs: FunctionState, default_node: str,
             which: Callable[[Variant], bool] = lambda v: True) -> dict[tuple[str, str], int]:
    """Instances per (configuration, node) of the function's variants (those ``which`` accepts)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for v in fs.variants:
        if not v.pinned and which(v):
            out[(config_key(v.batch, v.cpu, v.gpu), v.node or default_node)] += v.replicas
    return dict(out)


def parent_down(fs: FunctionState) -> bool:
    """The function's own deployment is scaled to zero: requests reach the shared queue only through it
    (the gateway routes to the parent), so variants would get nothing until it scales up."""
    return any(v.pinned for v in fs.variants) and not any(v.pinned and v.replicas > 0 for v in fs.variants)
