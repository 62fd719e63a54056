"""Partitioners and the traffic metric."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fsd.connectivity import affinity_graph, grow
from fsd.errors import ConfigError
from fsd.model import ModelSpec, generate
from fsd.partition import COORDINATOR, partition, traffic

MODEL = generate(ModelSpec(neurons=256, layers=6, seed=0))


@pytest.mark.parametrize("method", ["random", "connectivity"])
@pytest.mark.parametrize("workers", [1, 2, 3, 8, 100, 255, 256])
def test_every_layer_is_covered_and_balanced(method, workers):
    p = partition(MODEL, workers, method)
    assert len(p.owners) == 7 and np.all(p.owners[0] == COORDINATOR)
    for l in range(1, 7):
        sizes = p.sizes(l)
        assert sizes.sum() == 256 and len(sizes) == workers
        assert sizes.max() <= -(-256 // workers) and sizes.min() >= 256 // workers  # none idle, none empty


@pytest.mark.parametrize("workers", [40, 63, 64])
def test_workers_close_to_the_neuron_count_all_get_neurons(workers):
    model = generate(ModelSpec(neurons=64, layers=3, seed=1, weight_jitter=0.3))
    p = partition(model, workers, "connectivity")
    assert all(set(p.sizes(l).tolist()) <= {64 // workers, -(-64 // workers)} for l in range(1, 4))


def test_the_affinity_graph_is_sparse():
    model = generate(ModelSpec(neurons=4096, layers=2, seed=0))
    tracemalloc.start()
    try:
        grow(model.layers[0], model.layers[1], 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, peak  # dense n x n matrices took over 200 MB here (310 MB RSS)


def test_the_sparse_affinity_graph_counts_shared_inputs_and_consumers():
    layer, following = MODEL.layers[0], MODEL.layers[1]
    n = layer.rows
    dense = np.zeros((n, n))
    dense[np.repeat(np.arange(n), np.diff(layer.indptr)), layer.indices] = 1
    after = np.zeros((n, n))
    after[np.repeat(np.arange(n), np.diff(following.indptr)), following.indices] = 1
    expected = dense @ dense.T + after.T @ after
    np.fill_diagonal(expected, 0)
    graph = affinity_graph(layer, following)
    got = np.zeros((n, n))
    got[np.repeat(np.arange(n), np.diff(graph.indptr)), graph.indices] = graph.data
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_connectivity_moves_at_least_3x_fewer_values_than_random(workers):
    model = generate(ModelSpec(neurons=512, layers=6, seed=0))  # at 256 x 6, W=2 gives only 2.8x
    smart = traffic(model, partition(model, workers, "connectivity")).exchange
    rand = traffic(model, partition(model, workers, "random")).exchange
    assert rand >= 3 * smart, (smart, rand)


def test_one_worker_exchanges_nothing_and_partitions_are_deterministic():
    t = traffic(MODEL, partition(MODEL, 1, "connectivity"))
    assert t.exchange == 0 and t.scatter == 256 and t.gather == 256
    a, b = partition(MODEL, 4, "connectivity"), partition(MODEL, 4, "connectivity")
    assert all(np.array_equal(x, y) for x, y in zip(a.owners, b.owners))


def test_bad_partition_settings():
    with pytest.raises(ConfigError, match="partitioner='metis'"):
        partition(MODEL, 2, "metis")
    with pytest.raises(ConfigError, match="workers=0: must be 1..256"):
        partition(MODEL, 0, "random")
