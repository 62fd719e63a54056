"""The sparse feed-forward DNN in the style of the MIT/IEEE GraphChallenge, generated with a fixed seed.

GraphChallenge (Kepner et al., sparse DNN challenge): N neurons in every layer, 32 connections per neuron,
weights 1/16, a bias of -0.3 (N=1024), -0.35 (4096), -0.4 (16384) or -0.45 (65536), and
``Y[l+1] = min(max(W[l] Y[l] + b, 0), 32)``. The challenge's RadiX-Net topologies have structured
connectivity; ours has the same kind of structure made explicit: neurons sit on a ring, each connects to
``connections`` inputs within ``window`` ring positions (plus rare long-range links), and every layer's
neurons are relabelled by a random permutation so that the locality is hidden from index order and a
partitioner has to find it from the connectivity.

Activations are held as (neurons, batch) float32 arrays, so a worker's rows are contiguous in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsd.errors import ConfigError

_BIAS = {1024: -0.3, 4096: -0.35, 16384: -0.4, 65536: -0.45}
# Largest ymax: activations are float32, and a ceiling past its largest value (inf) lets them overflow.
YMAX_LIMIT = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ModelSpec:
    """What the generator builds; the same spec gives the same model on every machine."""

    # Neurons per layer (the input and output width too).
    neurons: int = 1024
    # Number of sparse layers.
    layers: int = 120
    # Seed of every random choice.
    seed: int = 0
    # Inputs per neuron (GraphChallenge: 32).
    connections: int = 32
    # Half-width of the ring window a neuron draws its inputs from.
    window: int = 16
    # Probability that an input is a long-range link to anywhere in the previous layer.
    long_range: float = 0.01
    # Relative spread of the weights around 1/16; 0 gives GraphChallenge's constant weights.
    weight_jitter: float = 0.0
    # Activation ceiling (GraphChallenge: 32).
    ymax: float = 32.0

    def __post_init__(self) -> None:
        rules = [(self.neurons >= 2, "neurons", self.neurons, "must be >= 2"),
                 (self.layers >= 1, "layers", self.layers, "must be >= 1"),
                 (1 <= self.connections <= 2 * self.window + 1, "connections", self.connections,
                  f"must be 1..2*window+1 ({2 * self.window + 1})"),
                 (2 * self.window + 1 <= self.neurons, "window", self.window,
                  f"must be < neurons/2 (neurons={self.neurons})"),
                 (0.0 <= self.long_range <= 1.0, "long_range", self.long_range, "must be in [0, 1]"),
                 (0.0 <= self.weight_jitter < 1.0, "weight_jitter", self.weight_jitter, "must be in [0, 1)"),
                 (0 < self.ymax <= YMAX_LIMIT, "ymax", self.ymax, f"must be a number in (0, {YMAX_LIMIT:g}]")]
        for ok, key, value, rule in rules:
            if not ok:
                raise ConfigError(f"{key}={value}: {rule}")

    @property
    def bias(self) -> float:
        """GraphChallenge's bias for this width (-0.3 for sizes it does not list)."""
        return _BIAS.get(self.neurons, -0.3)

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """From ``"neurons=1024,layers=120,seed=0"`` (any field; missing ones keep their defaults)."""
        kinds = {"neurons": int, "layers": int, "seed": int, "connections": int, "window": int,
                 "long_range": float, "weight_jitter": float, "ymax": float}
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = item.partition("=")
            key = key.strip()
            if key not in kinds:
                raise ConfigError(f"FSD_MODEL={text!r}: unknown field {key!r} (known: {', '.join(kinds)})")
            try:
                values[key] = kinds[key](raw)
            except ValueError:
                raise ConfigError(f"FSD_MODEL={text!r}: {key}={raw!r} is not a {kinds[key].__name__}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"FSD_MODEL={text!r}: {exc}") from None


@dataclass(frozen=True)
class SparseLayer:
    """One layer's weights in CSR form: row i holds the inputs of output neuron i."""

    indptr: np.ndarray   # int64, rows + 1
    indices: np.ndarray  # int32, column (input neuron) of every weight
    data: np.ndarray     # float32, the weights

    @property
    def rows(self) -> int:
        """Output neurons."""
        return len(self.indptr) - 1

    def select(self, rows: np.ndarray) -> "SparseLayer":
        """The sub-matrix of ``rows`` (in that order), columns unchanged."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseLayer(indptr, self.indices[take], self.data[take])


@dataclass(frozen=True)
class SparseModel:
    """The whole network: ``layers[l]`` maps layer l's activations to layer l+1's."""

    spec: ModelSpec
    layers: tuple[SparseLayer, ...]

    @property
    def bias(self) -> float:
        """Bias added to every neuron."""
        return self.spec.bias


def matmul(layer: SparseLayer, x: np.ndarray) -> np.ndarray:
    """``W @ x`` for CSR ``W`` and dense ``x`` of shape (columns, batch); rows with no weights give 0."""
    out = np.zeros((layer.rows, x.shape[1]), dtype=np.float32)
    if len(layer.data) == 0:
        return out
    products = layer.data[:, None] * x[layer.indices]
    nonempty = np.flatnonzero(np.diff(layer.indptr))
    out[nonempty] = np.add.reduceat(products, layer.indptr[nonempty], axis=0)
    return out


def activate(z: np.ndarray, bias: float, ymax: float) -> np.ndarray:
    """GraphChallenge's activation: ``min(max(z + b, 0), ymax)``, in place."""
    z += np.float32(bias)
    np.clip(z, 0.0, ymax, out=z)
    return z


def forward(model: SparseModel, x: np.ndarray) -> np.ndarray:
    """Unpartitioned inference: (batch, neurons) in, (batch, neurons) out. The reference for workers."""
    y = np.ascontiguousarray(x.T, dtype=np.float32)
    for layer in model.layers:
        y = activate(matmul(layer, y), model.bias, model.spec.ymax)
    return np.ascontiguousarray(y.T)


def generate(spec: ModelSpec) -> SparseModel:
    """Build the model of ``spec``; deterministic for a given spec."""
    labels = [_permutation(spec, 0)]
    layers = []
    for l in range(1, spec.layers + 1):
        labels.append(_permutation(spec, l))
        layers.append(_layer(spec, l, labels[l - 1], labels[l]))
    return SparseModel(spec, tuple(layers))


def _permutation(spec: ModelSpec, layer: int) -> np.ndarray:
    """Label of the neuron at each ring position of ``layer``."""
    return np.random.default_rng([spec.seed, layer, 0]).permutation(spec.neurons)


def _layer(spec: ModelSpec, l: int, inputs: np.ndarray, outputs: np.ndarray) -> SparseLayer:
    rng = np.random.default_rng([spec.seed, l, 1])
    n, k, w = spec.neurons, spec.connections, spec.window
    offsets = np.argsort(rng.random((n, 2 * w + 1)), axis=1)[:, :k] - w
    positions = (np.arange(n)[:, None] + offsets) % n
    far = rng.random((n, k)) < spec.long_range
    positions[far] = rng.integers(0, n, int(far.sum()))
    columns = np.empty((n, k), dtype=np.int32)
    columns[outputs] = inputs[positions]
    columns.sort(axis=1)
    weights = np.full((n, k), 1.0 / 16, dtype=np.float32)
    if spec.weight_jitter:
        weights *= (1 + spec.weight_jitter * rng.uniform(-1, 1, (n, k))).astype(np.float32)
    return SparseLayer(np.arange(n + 1, dtype=np.int64) * k, columns.ravel(), weights.ravel())


def inputs(spec: ModelSpec, batch: int, seed: int = 0) -> np.ndarray:
    """A (batch, neurons) batch of binary inputs, about a quarter ones (like thresholded MNIST pixels)."""
    rng = np.random.default_rng([spec.seed, seed, 2])
    return (rng.random((batch, spec.neurons)) < 0.25).astype(np.float32)
