"""Which batch sizes an operator is timed at: grid ends always, the middle ones only where interpolation fails."""

from __future__ import annotations

import pytest

from cop_profiler.sampling import SamplingRule, needed

GRID = (1, 2, 4, 8, 16, 32)


def run(cost, threads=(1,), rule=SamplingRule()):
    """Time ``cost(b, c)`` wherever ``needed`` asks until it asks for nothing; the timed points and rounds."""
    timed, rounds = {}, 0
    while points := needed(GRID, threads, timed, rule):
        rounds += 1
        for b, c in points:
            assert (b, c) not in timed, "a timed point is never asked for again"
            timed[b, c] = cost(b, c)
    return timed, rounds


def test_affine_operators_are_timed_at_the_ends_and_one_check():
    timed, rounds = run(lambda b, c: (0.001 + 0.0005 * b) / c, threads=(1, 2))
    assert sorted(timed) == [(1, 1), (1, 2), (8, 1), (8, 2), (32, 1), (32, 2)]
    assert rounds == 1


def test_a_kink_is_refined_where_interpolation_fails_only():
    # Flat (fixed cost) up to batch 8, then linear: the chord 1-32 misses batch 8, so both halves are checked.
    timed, rounds = run(lambda b, c: 0.002 + 0.001 * max(0, b - 8))
    assert sorted(b for b, _ in timed) == [1, 4, 8, 16, 32]
    assert rounds == 2


def test_curved_operators_get_the_whole_grid():
    timed, _ = run(lambda b, c: 0.001 * b ** 1.6)
    assert sorted(b for b, _ in timed) == list(GRID)


def test_a_check_must_pass_at_every_thread_count():
    # Linear with one thread, a step with two: batch 8 is off the chord for two threads only.
    timed, _ = run(lambda b, c: 0.001 * b if c == 1 else 0.001 * (b if b <= 8 else 4 * b), threads=(1, 2))
    assert {b for b, c in timed if c == 1} == {b for b, c in timed if c == 2}
    assert len({b for b, _ in timed}) > 3


def test_tiny_differences_pass_as_jitter_and_zero_tolerance_times_everything():
    timed, _ = run(lambda b, c: 3e-6 if b != 8 else 4e-6)  # 33% off, but a microsecond
    assert sorted(b for b, _ in timed) == [1, 8, 32]
    timed, _ = run(lambda b, c: 0.001 * b, rule=SamplingRule(tolerance=0.0))
    assert sorted(b for b, _ in timed) == list(GRID)


def test_points_already_timed_are_used_and_small_grids_are_timed_whole():
    assert needed(GRID, (1,), {(1, 1): 1.0, (8, 1): 8.0, (32, 1): 32.0}) == []
    assert needed((1, 4), (1, 2), {(1, 1): 1.0}) == [(1, 2), (4, 1), (4, 2)]
    assert needed((1, 4, 16), (1,), {}) == [(1, 1), (4, 1), (16, 1)]


def test_rule_is_validated():
    for bad in ({"tolerance": -0.1}, {"tolerance": 1.0}, {"slack": -1.0}):
        with pytest.raises(ValueError):
            SamplingRule(**bad)
