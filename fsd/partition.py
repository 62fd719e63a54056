"""Layer-wise row (neuron) partitions, the random partitioner, and the traffic a partition causes.

A partition gives every neuron of every layer an owner: ``owners[0]`` (the model's input) belongs to the
coordinator (-1), ``owners[l]`` for l = 1..L to workers 0..W-1. Worker p computes the neurons of layer l
it owns, so it needs every input column of those rows: the ones owned by another worker cross the
channel. This is the hypergraph (connectivity - 1) metric: input neuron j is a net joining its owner and
the owners of its consumers, and it is sent once to every other part the net touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsd.errors import ConfigError
from fsd.model import SparseLayer, SparseModel

COORDINATOR = -1


@dataclass(frozen=True)
class Partition:
    """Owners of every neuron of every layer."""

    # Number of workers.
    workers: int
    # owners[l][i] = rank owning neuron i of layer l; owners[0] is all COORDINATOR.
    owners: tuple[np.ndarray, ...]
    # Which partitioner made it ("random", "connectivity").
    method: str = ""

    def rows(self, layer: int, rank: int) -> np.ndarray:
        """Neurons of ``layer`` owned by ``rank``, ascending."""
        return np.flatnonzero(self.owners[layer] == rank)

    def sizes(self, layer: int) -> np.ndarray:
        """Neurons per worker in ``layer``."""
        return np.bincount(self.owners[layer], minlength=self.workers)


@dataclass(frozen=True)
class Traffic:
    """Activation values that cross function boundaries per sample, by kind."""

    # Input values the coordinator scatters to workers.
    scatter: int
    # Values exchanged between workers, summed over layers.
    exchange: int
    # Output values gathered back by the coordinator.
    gather: int


def consumer_counts(layer: SparseLayer, owners: np.ndarray, workers: int, columns: int) -> np.ndarray:
    """(columns, workers): how many rows owned by each worker read each input column."""
    rows = np.repeat(np.arange(layer.rows), np.diff(layer.indptr))
    flat = layer.indices.astype(np.int64) * workers + owners[rows]
    return np.bincount(flat, minlength=columns * workers).reshape(columns, workers)


def layer_volume(layer: SparseLayer, owners_in: np.ndarray, owners_out: np.ndarray, workers: int) -> int:
    """Values sent to compute one layer: for each input, the parts reading it other than its owner."""
    counts = consumer_counts(layer, owners_out, workers, len(owners_in)) > 0
    own = owners_in >= 0
    counts[np.flatnonzero(own), owners_in[own]] = False
    return int(counts.sum())


def traffic(model: SparseModel, partition: Partition) -> Traffic:
    """What ``partition`` sends per sample (the coordinator owns the input and receives the output)."""
    volumes = [layer_volume(layer, partition.owners[l], partition.owners[l + 1], partition.workers)
               for l, layer in enumerate(model.layers)]
    return Traffic(scatter=volumes[0], exchange=sum(volumes[1:]), gather=model.spec.neurons)


def random_partition(model: SparseModel, workers: int, seed: int = 0) -> Partition:
    """Balanced random owners for every layer: the baseline that ignores connectivity."""
    check_workers(workers, model.spec.neurons)
    rng = np.random.default_rng([seed, workers, 3])
    n = model.spec.neurons
    owners = [np.full(n, COORDINATOR, dtype=np.int32)]
    owners += [(rng.permutation(n) % workers).astype(np.int32) for _ in model.layers]
    return Partition(workers, tuple(owners), "random")


def check_workers(workers: int, neurons: int) -> None:
    """A ``ConfigError`` unless 1 <= workers <= neurons."""
    if not 1 <= workers <= neurons:
        raise ConfigError(f"workers={workers}: must be 1..{neurons} (neurons per layer)")


def partition(model: SparseModel, workers: int, method: str, seed: int = 0) -> Partition:
    """Partition ``model`` with the partitioner named ``method`` ("connectivity" or "random")."""
    if method == "random":
        return random_partition(model, workers, seed)
    if method == "connectivity":
        from fsd.connectivity import connectivity_partition

        return connectivity_partition(model, workers)
    raise ConfigError(f"partitioner={method!r}: must be 'connectivity' or 'random'")
