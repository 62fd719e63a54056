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
4. Rebalance: the cheapest moves bring every worker back to floor(n/W) or ceil(n/W) neurons per layer,
   so no worker idles and none is left empty when W is close to n.

The affinity graph of step 1 is sparse (CSR), so memory grows with the connections, not with n^2.
"""

from __future__ import annotations

import math

import numpy as np

from fsd.model import SparseLayer, SparseModel
from fsd.partition import COORDINATOR, Partition, check_workers, consumer_counts

# Neuron pairs expanded at once while building the affinity graph: bounds its working memory.
_PAIRS_PER_CHUNK = 1 << 18
# Cheapest-looking candidates re-scored exactly for each rebalancing move.
_RESCORED = 16


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
    for l in range(1, len(owners)):
        rebalance_layer(model, owners, l, workers)
    return Partition(workers, tuple(owners), "connectivity")


def _shared(pattern: SparseLayer, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct rows of ``pattern`` that share a column, as sorted keys ``row * n + other`` with
    the number of columns each pair shares: the sparse form of ``P @ P.T`` without its diagonal."""
    entries = np.unique(np.repeat(np.arange(pattern.rows, dtype=np.int64), np.diff(pattern.indptr)) * n
                        + pattern.indices)  # a repeated input counts once, as in the 0/1 matrix
    by_column = _transpose_pattern(SparseLayer(
        np.concatenate([[0], np.cumsum(np.bincount(entries // n, minlength=pattern.rows))]).astype(np.int64),
        (entries % n).astype(np.int32), np.ones(len(entries), dtype=np.float32)), n)
    degree = np.diff(by_column.indptr)
    total_keys, total_counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    for d in np.unique(degree[degree > 1]).tolist():
        # Columns read by exactly d rows, a chunk at a time: their (row, other) pairs, d * d per column.
        group = np.flatnonzero(degree == d)
        for cols in np.array_split(group, max(1, len(group) * d * d // _PAIRS_PER_CHUNK)):
            members = by_column.indices[by_column.indptr[cols][:, None] + np.arange(d)].astype(np.int64)
            pairs = (members[:, :, None] * n + members[:, None, :]).ravel()
            unique, count = np.unique(pairs[pairs // n != pairs % n], return_counts=True)
            total_keys, inverse = np.unique(np.concatenate([total_keys, unique]), return_inverse=True)
            total_counts = np.bincount(inverse, weights=np.concatenate([total_counts, count]),
                                       minlength=len(total_keys)).astype(np.int64)
    return total_keys, total_counts


def affinity_graph(layer: SparseLayer, following: SparseLayer | None) -> SparseLayer:
    """The neuron graph ``grow`` works on, in CSR form: row i lists the neurons sharing an input or a
    consumer with neuron i, weighted by how many they share. Memory grows with the connections, not n^2."""
    n = layer.rows
    keys, weights = _shared(layer, n)
    if following is not None:
        consumers = _transpose_pattern(following, n)  # row i: the next layer's neurons reading neuron i
        more_keys, more_weights = _shared(consumers, n)
        keys, inverse = np.unique(np.concatenate([keys, more_keys]), return_inverse=True)
        weights = np.bincount(inverse, weights=np.concatenate([weights, more_weights])).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n, minlength=n))]).astype(np.int64)
    return SparseLayer(indptr, (keys % n).astype(np.int32), weights.astype(np.float64))


def grow(layer: SparseLayer, following: SparseLayer | None, workers: int) -> np.ndarray:
    """Greedy graph growing of the layer's neurons into ``workers`` balanced parts."""
    n = layer.rows
    affinity = affinity_graph(layer, following)
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
            start, end = affinity.indptr[node], affinity.indptr[node + 1]
            to_part[affinity.indices[start:end]] += affinity.data[start:end]
            to_assigned[affinity.indices[start:end]] += affinity.data[start:end]
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


def rebalance_layer(model: SparseModel, owners: list[np.ndarray], l: int, workers: int) -> int:
    """Move the cheapest neurons of layer ``l`` until every worker owns floor(n/W) or ceil(n/W) of them
    (refinement's tolerance may leave a part larger or smaller, even empty when W is close to n); returns
    how many moved."""
    layer, own, prev = model.layers[l - 1], owners[l], owners[l - 1]
    low, high = len(own) // workers, -(-len(own) // workers)
    sizes = np.bincount(own, minlength=workers)
    if sizes.min() >= low and sizes.max() <= high:
        return 0
    cnt_in = consumer_counts(layer, own, workers, len(prev))
    cnt_out = (consumer_counts(model.layers[l], owners[l + 1], workers, len(own))
               if l < len(model.layers) else None)
    delta = _deltas(layer, own, prev, cnt_in, cnt_out, workers)  # shortlists; the chosen move is re-scored
    moved = np.zeros(len(own), dtype=bool)
    count = 0
    while sizes.min() < low or sizes.max() > high:
        if sizes.max() > high:
            donor = int(np.argmax(sizes))
            receiver = int(np.argmin(np.where(sizes < high, sizes, np.iinfo(np.int64).max)))
        else:
            receiver = int(np.argmin(sizes))
            donor = int(np.argmax(np.where(sizes > low, sizes, -1)))
        candidates = np.flatnonzero((own == donor) & ~moved)
        if not len(candidates):
            candidates = np.flatnonzero(own == donor)
        shortlist = candidates[np.argsort(delta[candidates, receiver], kind="stable")[:_RESCORED]]
        exact = [_delta_one(layer.indices[layer.indptr[i]:layer.indptr[i + 1]], donor, prev, cnt_in,
                            None if cnt_out is None else cnt_out[i])[receiver] for i in shortlist.tolist()]
        i = int(shortlist[int(np.argmin(exact))])
        cols = layer.indices[layer.indptr[i]:layer.indptr[i + 1]]
        np.subtract.at(cnt_in, (cols, donor), 1)
        np.add.at(cnt_in, (cols, receiver), 1)
        own[i], moved[i] = receiver, True
        sizes[donor] -= 1
        sizes[receiver] += 1
        count += 1
    return count


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
