"""Per-rank programs derived from a model and a partition: what each worker computes, receives and sends.

For layer l, worker p computes its rows of ``W[l-1]`` over a local buffer: its own layer-(l-1) values
first, then one block per source rank in ascending rank order, each block holding the source's values
that p's rows read, in ascending neuron order. Both sides derive the same blocks, so messages carry
values only. The coordinator's plan scatters input blocks for layer 1 and gathers every rank's last layer.
No block is ever empty: a rank that owns none of the values a peer needs sends it nothing, and the peer
does not wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsd.model import SparseLayer, SparseModel
from fsd.partition import COORDINATOR, Partition


@dataclass(frozen=True)
class Step:
    """One layer on one worker."""

    # Layer computed (1..L).
    layer: int
    # Global ids of the layer's neurons this worker owns, ascending.
    rows: np.ndarray
    # Those rows' weights with columns indexing the local buffer.
    weights: SparseLayer
    # Ranks whose blocks follow the worker's own values in the buffer (COORDINATOR for layer 1).
    sources: tuple[int, ...]
    # Values in each source's block.
    counts: tuple[int, ...]
    # After computing: (destination rank, positions within ``rows``) for the next layer or the coordinator.
    sends: tuple[tuple[int, np.ndarray], ...]


@dataclass(frozen=True)
class WorkerProgram:
    """Everything a worker of one rank needs: its shard of the model and its message schedule."""

    rank: int
    workers: int
    bias: float
    ymax: float
    steps: tuple[Step, ...]
    # ``FsdConfig.deployment()`` it was built for ("" unchecked): a job sent for another is refused.
    deployment: str = ""

    @property
    def weights(self) -> int:
        """Non-zero weights in this shard."""
        return sum(len(s.weights.data) for s in self.steps)


@dataclass(frozen=True)
class CoordinatorPlan:
    """What the coordinator scatters and gathers."""

    workers: int
    neurons: int
    layers: int
    # scatter[p]: input neurons rank p's first-layer rows read, ascending.
    scatter: tuple[np.ndarray, ...]
    # gather[p]: last-layer neurons rank p owns, ascending (the order of its output block).
    gather: tuple[np.ndarray, ...]
    # ``FsdConfig.deployment()`` it was built for, sent with every job ("" unchecked).
    deployment: str = ""


def coordinator_plan(model: SparseModel, partition: Partition) -> CoordinatorPlan:
    """The coordinator's scatter and gather lists."""
    first, last = model.layers[0], len(model.layers)
    scatter = tuple(np.unique(first.select(partition.rows(1, p)).indices) for p in range(partition.workers))
    gather = tuple(partition.rows(last, p) for p in range(partition.workers))
    return CoordinatorPlan(partition.workers, model.spec.neurons, last, scatter, gather)


def worker_program(model: SparseModel, partition: Partition, rank: int) -> WorkerProgram:
    """The program of ``rank``."""
    steps = tuple(_step(model, partition, rank, l) for l in range(1, len(model.layers) + 1))
    return WorkerProgram(rank, partition.workers, model.bias, model.spec.ymax, steps)


def _step(model: SparseModel, partition: Partition, rank: int, l: int) -> Step:
    rows = partition.rows(l, rank)
    sub = model.layers[l - 1].select(rows)
    prev_owner = partition.owners[l - 1]
    needed = np.unique(sub.indices)
    position = np.full(model.spec.neurons, -1, dtype=np.int64)
    own = partition.rows(l - 1, rank) if l > 1 else np.zeros(0, dtype=np.int64)
    position[own] = np.arange(len(own))
    offset, sources, counts = len(own), [], []
    for src in sorted(set(prev_owner[needed].tolist()) - {rank}):
        block = needed[prev_owner[needed] == src]
        position[block] = offset + np.arange(len(block))
        offset += len(block)
        sources.append(src)
        counts.append(len(block))
    weights = SparseLayer(sub.indptr, position[sub.indices].astype(np.int32), sub.data)
    return Step(l, rows, weights, tuple(sources), tuple(counts), _sends(model, partition, rank, l, rows))


def _sends(model: SparseModel, partition: Partition, rank: int, l: int,
           rows: np.ndarray) -> tuple[tuple[int, np.ndarray], ...]:
    if l == len(model.layers):  # a rank owning no output neuron sends the coordinator nothing
        return ((COORDINATOR, np.arange(len(rows))),) if len(rows) else ()
    nxt = model.layers[l]
    consumer = np.repeat(partition.owners[l + 1], np.diff(nxt.indptr))
    mine = (partition.owners[l][nxt.indices] == rank) & (consumer != rank)
    pairs = np.unique(consumer[mine].astype(np.int64) * model.spec.neurons + nxt.indices[mine])
    dsts, cols = pairs // model.spec.neurons, pairs % model.spec.neurons
    return tuple((int(d), np.searchsorted(rows, cols[dsts == d])) for d in np.unique(dsts))
