"""Which batch sizes an operator is timed at: the smallest and the largest always, the middle ones only where
interpolation fails."""

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


def test_affine_operators_are_timed_at_the_smallest_sizes_the_largest_and_one_check():
    timed, rounds = run(lambda b, c: (0.001 + 0.0005 * b) / c, threads=(1, 2))
    assert sorted(timed) == [(b, c) for b in (1, 2, 4, 16, 32) for c in (1, 2)]
    assert rounds == 1


def test_the_smallest_sizes_are_timed_however_straight_the_line():
    line = lambda b, c: 0.001 * b  # noqa: E731
    assert sorted(b for b, _ in run(line, rule=SamplingRule(dense=1))[0]) == [1, 8, 32]
    assert sorted(b for b, _ in run(line, rule=SamplingRule(dense=2))[0]) == [1, 2, 8, 32]
    assert sorted(b for b, _ in run(line)[0]) == [1, 2, 4, 16, 32]  # three by default
    # a jump between the two smallest sizes (a kernel change), which a chord from 1 would have hidden
    timed, _ = run(lambda b, c: 0.001 if b == 1 else 0.0024 * b / 2)
    assert timed[2, 1] == pytest.approx(0.0024)


def test_a_kink_is_refined_where_interpolation_fails_only():
    # Slope 1 ms per item up to batch 16, 3 ms after: the chord 2-64 misses 16, so both halves are checked,
    # and each is straight: 4 is left to interpolation between 2 and 8 (two smallest sizes always timed).
    grid = (1, 2, 4, 8, 16, 32, 64)
    timed, rounds = {}, 0
    while points := needed(grid, (1,), timed, SamplingRule(dense=2)):
        rounds += 1
        timed.update({p: 0.001 * min(p[0], 16) + 0.003 * max(0, p[0] - 16) for p in points})
    assert sorted(b for b, _ in timed) == [1, 2, 8, 16, 32, 64]
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
    timed, _ = run(lambda b, c: 3e-6 if b != 8 else 4e-6, rule=SamplingRule(dense=2))  # 33% off, but a microsecond
    assert sorted(b for b, _ in timed) == [1, 2, 8, 32]
    timed, _ = run(lambda b, c: 0.001 * b, rule=SamplingRule(tolerance=0.0))
    assert sorted(b for b, _ in timed) == list(GRID)


def test_points_already_timed_are_used_and_small_grids_are_timed_whole():
    assert needed(GRID, (1,), {(1, 1): 1.0, (2, 1): 2.0, (4, 1): 4.0, (16, 1): 16.0, (32, 1): 32.0}) == []
    assert needed(GRID, (1,), {(1, 1): 1.0, (4, 1): 4.0, (16, 1): 16.0, (32, 1): 32.0}) == [(2, 1)]
    assert needed((1, 4), (1, 2), {(1, 1): 1.0}) == [(1, 2), (4, 1), (4, 2)]
    assert needed((1, 4, 16), (1,), {}) == [(1, 1), (4, 1), (16, 1)]


def test_rule_is_validated():
    for bad in ({"tolerance": -0.1}, {"tolerance": 1.0}, {"slack": -1.0}, {"dense": 0}):
        with pytest.raises(ValueError):
            SamplingRule(**bad)
