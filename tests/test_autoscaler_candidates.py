"""Candidate configurations: INFless's rules and dominance."""

from __future__ import annotations

import pytest

from autoscaler.candidates import Candidate, enumerate_candidates, prune_dominated
from autoscaler_fakes import GiB, LinearPredictor

SHAPES = [(8, 16 * GiB, 0)]


def cands(slo=0.1, shapes=SHAPES, predictor=None, **kw):
    return enumerate_candidates("m", slo, 256 * 1024**2, predictor or LinearPredictor(), (1, 2, 4, 8, 16, 32, 64),
                                (0.5, 1, 2, 4), (0.25, 0.5, 1.0), 0.1, shapes)


@pytest.mark.parametrize("slo", [0.02, 0.05, 0.1, 0.5])
def test_every_candidate_follows_infless_rules(slo):
    out = cands(slo)
    assert out
    for c in out:
        if c.batch > 1:
            assert c.t_exec <= slo / 2 + 1e-12
            assert c.r_min == pytest.approx(c.batch / (slo - c.t_exec))
            assert c.timeout == pytest.approx(slo - c.t_exec)
        else:
            assert c.t_exec <= slo and c.r_min == 0 and c.timeout == 0
        assert c.r_max == pytest.approx(c.batch / c.t_exec)
        assert c.cost == pytest.approx(0.1 * c.cpu + c.gpu)


def test_dominated_configurations_are_dropped():
    cheap = Candidate(4, 1.0, 0.0, 0.01, 400, 40, 0.09, 0.1, 1)
    worse = Candidate(4, 2.0, 0.0, 0.02, 200, 40, 0.08, 0.2, 1)  # costs more, serves less
    other = Candidate(1, 1.0, 0.0, 0.004, 250, 0, 0, 0.1, 1)  # serves less but is easier to fill
    kept = prune_dominated([cheap, worse, other])
    assert worse not in kept and cheap in kept and other in kept


def test_gpu_configurations_only_with_gpu_nodes():
    assert all(c.gpu == 0 for c in cands())
    assert any(c.gpu > 0 for c in cands(shapes=[(8, 16 * GiB, 1)]))


def test_nothing_fits_when_memory_or_slo_cannot_be_met():
    assert cands(shapes=[(8, 128 * 1024**2, 0)]) == []
    assert cands(slo=0.001) == []
    assert enumerate_candidates("unknown", 0.1, 1, LinearPredictor(), (1,), (1,), (), 0.1, SHAPES) == []


def test_key_names_the_configuration():
    c = Candidate(16, 0.5, 0.25, 0.01, 1, 1, 0.1, 0.3, 1)
    assert c.key == "b16-c500-g25"
