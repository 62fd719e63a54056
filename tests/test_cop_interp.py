"""Interpolation of operator timings: exact points, linear between batches, threads, extrapolation flags."""

from __future__ import annotations

import pytest

from cop_profiler.interp import OpCurve

POINTS = {(1, 1): 1.0, (4, 1): 4.0, (16, 1): 8.0, (1, 2): 0.6, (4, 2): 2.0, (16, 2): 4.0}


def test_profiled_points_are_exact():
    curve = OpCurve(POINTS)
    assert curve.at(4, 1).seconds == pytest.approx(4.0)
    assert not curve.at(16, 2).extrapolated


def test_batch_is_interpolated_linearly_between_profiled_points():
    est = OpCurve(POINTS).at(2, 1)
    assert est.seconds == pytest.approx(2.0)  # on the line through (1,1) and (4,4)
    assert not est.extrapolated
    assert OpCurve(POINTS).at(8, 1).seconds == pytest.approx(4.0 + 4.0 * 4 / 12)  # a third of (4,4)-(16,8)
    affine = OpCurve({(1, 1): 1.5, (32, 1): 17.0})  # 1 + b/2: exact between far-apart points
    assert affine.at(8, 1).seconds == pytest.approx(5.0)


def test_beyond_the_largest_batch_is_extrapolated_along_the_last_slope():
    est = OpCurve(POINTS).at(64, 1)
    assert est.extrapolated
    assert est.seconds == pytest.approx(16.0)


def test_threads_between_profiled_counts_interpolate_and_beyond_hold():
    curve = OpCurve({(1, 1): 4.0, (1, 3): 2.0})
    assert curve.at(1, 2).seconds == pytest.approx(3.0)
    beyond = curve.at(1, 8)
    assert beyond.seconds == pytest.approx(2.0) and beyond.extrapolated


def test_single_point_and_invariant_operators():
    single = OpCurve({(1, 1): 0.5})
    assert single.at(1, 1) == single.at(1, 1) and not single.at(1, 1).extrapolated
    assert single.at(8, 1).extrapolated
    view = OpCurve({(1, 1): 1e-6}, invariant=True)
    assert view.at(32, 2).seconds == pytest.approx(1e-6) and not view.at(32, 2).extrapolated


def test_empty_curve_is_rejected():
    with pytest.raises(ValueError):
        OpCurve({})
