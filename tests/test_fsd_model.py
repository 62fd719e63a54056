"""The GraphChallenge-style generator and the CSR math."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.errors import ConfigError
from fsd.model import ModelSpec, activate, forward, generate, inputs, matmul


def _dense(layer, columns):
    out = np.zeros((layer.rows, columns), dtype=np.float32)
    for i in range(layer.rows):
        for k in range(layer.indptr[i], layer.indptr[i + 1]):
            out[i, layer.indices[k]] += layer.data[k]
    return out


def test_same_spec_same_model_and_graphchallenge_shape():
    spec = ModelSpec(neurons=128, layers=3, seed=7)
    a, b = generate(spec), generate(spec)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.indices, lb.indices) and np.array_equal(la.data, lb.data)
    assert len(a.layers) == 3 and all(np.all(np.diff(l.indptr) == 32) for l in a.layers)
    assert np.all(a.layers[0].data == np.float32(1 / 16)) and a.bias == -0.3
    assert not np.array_equal(generate(ModelSpec(128, 3, seed=8)).layers[0].indices, a.layers[0].indices)


def test_forward_matches_dense_math():
    spec = ModelSpec(neurons=96, layers=3, seed=1, weight_jitter=0.5)
    model, x = generate(spec), inputs(spec, 5)
    y = x.T.copy()
    for layer in model.layers:
        y = np.clip(_dense(layer, 96) @ y + spec.bias, 0, spec.ymax)
    np.testing.assert_allclose(forward(model, x), y.T, rtol=1e-5, atol=1e-6)
    assert forward(model, x).any()


def test_select_and_empty_rows():
    layer = generate(ModelSpec(64, 1, window=8, connections=8)).layers[0]
    rows = np.array([5, 2, 60])
    sub = layer.select(rows)
    x = np.random.default_rng(0).random((64, 3)).astype(np.float32)
    np.testing.assert_allclose(matmul(sub, x), matmul(layer, x)[rows], rtol=1e-6)
    empty = layer.select(np.zeros(0, dtype=np.int64))
    assert matmul(empty, x).shape == (0, 3)
    assert np.array_equal(activate(np.array([-1.0, 0.5, 40.0], np.float32), 0.0, 32.0), [0, 0.5, 32])


def test_spec_parse_and_rules():
    assert ModelSpec.parse("neurons=256, layers=4,seed=2") == ModelSpec(neurons=256, layers=4, seed=2)
    assert ModelSpec.parse("") == ModelSpec()
    with pytest.raises(ConfigError, match="unknown field 'depth'"):
        ModelSpec.parse("depth=3")
    with pytest.raises(ConfigError, match="layers='x' is not a int"):
        ModelSpec.parse("layers=x")
    with pytest.raises(ConfigError, match="connections=40: must be 1..2\\*window\\+1"):
        ModelSpec(connections=40)
