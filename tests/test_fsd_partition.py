"""Partitioners and the traffic metric."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.errors import ConfigError
from fsd.model import ModelSpec, generate
from fsd.partition import COORDINATOR, partition, traffic

MODEL = generate(ModelSpec(neurons=256, layers=6, seed=0))


@pytest.mark.parametrize("method", ["random", "connectivity"])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_every_layer_is_covered_and_balanced(method, workers):
    p = partition(MODEL, workers, method)
    assert len(p.owners) == 7 and np.all(p.owners[0] == COORDINATOR)
    for l in range(1, 7):
        sizes = p.sizes(l)
        assert sizes.sum() == 256 and len(sizes) == workers
        assert sizes.max() <= np.ceil(256 / workers * 1.05) and sizes.min() >= np.floor(256 / workers * 0.95)


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
