"""The connectivity-aware partitioner: minimises activation values that cross workers.

FSD-Inference partitions each layer's hypergraph (a net per input neuron joining its consumers) with a
hypergraph partitioner. We get close with three steps and no external library:

1. Grow the first layer's parts greedily (GGGP, as in METIS's initial partitioning) on a neuron graph
   whose edge weights count shared inputs and shared consumers: each part starts next to the parts
   already grown and takes the unassigned neuron most connected to it.
2. Propagate forward: every later neuron goes to the worker owning most of its inputs, within capacity.
3. Refine each layer with Fiduccia-Mattheyses-style moves scored on the exact objective (the
   connectivity-1 volume of the layer's inputs plus that of its own outgoing nets), within a balance
   tolerance; moves are re-scored one at a time, so only improving moves are applied.
"""

from __future__ import annotations

import math

import numpy as np

from fsd.model import SparseLayer, SparseModel
from fsd.partition import COORDINATOR, Partition, check_workers, consumer_counts


def connectivity_partition(model: SparseModel, workers: int, imbalance: float = 0.05,
                           passes: int = 2) -> Partition:
    """Owners for every layer that keep connected neurons on the same worker."""
    n = model.spec.neurons
    check_workers(workers, n)
    owners = [np.full(n, COORDINATOR, dtype=np.int32)]
    if workers == 1:
        owners += [np.zeros(n, dtype=np.int32) for _ in model.layers]
        return Partition(1, tuple(owners), "connectivity")
    following = model.layers[1] if len(model.layers) > 1 else None
    owners.append(grow(model.layers[0], following, workers))
    for layer in model.layers[1:]:
        owners.append(follow_inputs(layer, owners[-1], workers))
    cap = math.ceil(n / workers * (1 + imbalance))
    floor = math.floor(n / workers * (1 - imbalance))
    for _ in range(passes):
        moved = sum(refine_layer(model, owners, l, workers, cap, floor) for l in range(1, len(owners)))
        if not moved:
            break
    return Partition(workers, tuple(owners), "connectivity")


def _dense(layer: SparseLayer, columns: int) -> np.ndarray:
    matrix = np.zeros((layer.rows, columns), dtype=np.float32)
    rows = np.repeat(np.arange(layer.rows), np.diff(layer.indptr))
    matrix[rows, layer.indices] = 1.0
    return matrix


def grow(layer: SparseLayer, following: SparseLayer | None, workers: int) -> np.ndarray:
    """Greedy graph growing of the layer's neurons into ``workers`` balanced parts."""
    n = layer.rows
    inputs = _dense(layer, n)
    affinity = inputs @ inputs.T
    if following is not None:
        consumers = _dense(following, n)
        affinity += consumers.T @ consumers
    np.fill_diagonal(affinity, 0.0)
    owners = np.full(n, -1, dtype=np.int32)
    to_assigned = np.zeros(n, dtype=np.float64)
    sizes = [n // workers + (1 if p < n % workers else 0) for p in range(workers)]
    for part, size in enumerate(sizes):
        to_part = np.zeros(n, dtype=np.float64)
        free = owners < 0
        seed = int(np.argmax(np.where(free, to_assigned, -np.inf))) if part else 0
        for _ in range(size):
            node = seed if not to_part.any() else int(np.argmax(np.where(free, to_part, -np.inf)))
            if not free[node]:
                node = int(np.flatnonzero(free)[0])
            owners[node] = part
            free[node] = False
            to_part += affinity[node]
            to_assigned += affinity[node]
    return owners


def follow_inputs(layer: SparseLayer, owners_in: np.ndarray, workers: int) -> np.ndarray:
    """Each neuron to the worker owning most of its inputs, strongest preferences first, within capacity."""
    n = layer.rows
    scores = consumer_counts(_transpose_pattern(layer, len(owners_in)), owners_in, workers, n)
    capacity = [n // workers + (1 if p < n % workers else 0) for p in range(workers)]
    order = np.argsort(-scores.max(axis=1), kind="stable")
    choices = np.argsort(-scores, axis=1, kind="stable").tolist()
    owners = np.empty(n, dtype=np.int32)
    for i in order.tolist():
        for p in choices[i]:
            if capacity[p]:
                capacity[p] -= 1
                owners[i] = p
                break
    return owners


def _transpose_pattern(layer: SparseLayer, columns: int) -> SparseLayer:
    """The pattern with rows and columns swapped (weights dropped): row j lists the consumers of input j."""
    rows = np.repeat(np.arange(layer.rows, dtype=np.int32), np.diff(layer.indptr))
    order = np.argsort(layer.indices, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(layer.indices, minlength=columns))]).astype(np.int64)
    return SparseLayer(indptr, rows[order], np.ones(len(order), dtype=np.float32))


def refine_layer(model: SparseModel, owners: list[np.ndarray], l: int, workers: int,
                 cap: int, floor: int) -> int:
    """Apply improving single-neuron moves to layer ``l``; returns how many were applied."""
    layer = model.layers[l - 1]
    own, prev = owners[l], owners[l - 1]
    cnt_in = consumer_counts(layer, own, workers, len(prev))
    cnt_out = (consumer_counts(model.layers[l], owners[l + 1], workers, len(own))
               if l < len(model.layers) else None)
    delta = _deltas(layer, own, prev, cnt_in, cnt_out, workers)
    best = delta.min(axis=1)
    sizes = np.bincount(own, minlength=workers)
    moved = 0
    for i in np.argsort(best, kind="stable")[: int((best < 0).sum())].tolist():
        cols = layer.indices[layer.indptr[i]:layer.indptr[i + 1]]
        exact = _delta_one(cols, int(own[i]), prev, cnt_in, None if cnt_out is None else cnt_out[i])
        exact[sizes >= cap] = 0
        target = int(np.argmin(exact))
        a = int(own[i])
        if exact[target] >= 0 or target == a or sizes[a] <= floor:
            continue
        np.subtract.at(cnt_in, (cols, a), 1)
        np.add.at(cnt_in, (cols, target), 1)
        own[i] = target
        sizes[a] -= 1
        sizes[target] += 1
        moved += 1
    return moved


def _deltas(layer: SparseLayer, own: np.ndarray, prev: np.ndarray, cnt_in: np.ndarray,
            cnt_out: np.ndarray | None, workers: int) -> np.ndarray:
    """(rows, workers): change of total volume if row i moved to worker b, all rows scored at once."""
    rows = np.repeat(np.arange(layer.rows), np.diff(layer.indptr))
    cols = layer.indices
    a = own[rows]
    removed = (cnt_in[cols, a] == 1) & (prev[cols] != a)
    added = (cnt_in[cols] == 0) & (prev[cols][:, None] != np.arange(workers)[None, :])
    delta = np.zeros((layer.rows, workers))
    np.add.at(delta, rows, added.astype(np.float64))
    delta -= np.bincount(rows, weights=removed, minlength=layer.rows)[:, None]
    if cnt_out is not None:
        present = cnt_out > 0
        delta += present[np.arange(layer.rows), own][:, None].astype(np.float64) - present
    delta[np.arange(layer.rows), own] = 0.0
    return delta


def _delta_one(cols: np.ndarray, a: int, prev: np.ndarray, cnt_in: np.ndarray,
               out_row: np.ndarray | None) -> np.ndarray:
    """Exact volume change of moving one row (inputs ``cols``) from ``a`` to each worker."""
    counts = cnt_in[cols]
    workers = counts.shape[1]
    owner = prev[cols][:, None]
    added = ((counts == 0) & (owner != np.arange(workers)[None, :])).sum(axis=0)
    removed = int(((counts[:, a] == 1) & (prev[cols] != a)).sum())
    delta = (added - removed).astype(np.float64)
    if out_row is not None:
        present = out_row > 0
        delta += float(present[a]) - present
    delta[a] = 0.0
    return delta
