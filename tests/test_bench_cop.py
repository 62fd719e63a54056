"""bench cop's cost ceiling: the new operators' largest-batch latency, against a real profile DB."""

from __future__ import annotations

from bench.cop import _ceiling, _extrapolation_error, _largest_batch_floors
from cop_profiler import hardware
from cop_profiler.db import ProfileDB, Timing
from cop_profiler.graph import OpGraph, OpNode


def _graph(*keys: str) -> OpGraph:
    return OpGraph(tuple(OpNode(i, k) for i, k in enumerate(keys)))


def test_floor_counts_each_new_operator_once_at_the_largest_batch_every_thread_count(tmp_path):
    hw = hardware.cpu_id()
    with ProfileDB(str(tmp_path / "p.sqlite")) as db:
        db.put_model("m1", _graph("conv", "conv", "relu", "view"))  # conv twice in one forward: timed once
        db.put_model("m2", _graph("conv", "fc"))  # conv is m1's
        db.put_timings("conv", hw, "cpu", {(1, 1): Timing(0.001), (32, 1): Timing(0.010), (32, 2): Timing(0.006)})
        db.put_timings("relu", hw, "cpu", {(4, 1): Timing(0.0001), (32, 1): Timing(0.0004),
                                           (32, 2): Timing(0.0003)})
        db.put_timings("view", hw, "cpu", {(1, 1): Timing(2e-6)})  # view-like: one point stands for all
        db.put_timings("fc", hw, "cpu", {(32, 1): Timing(0.002), (32, 2): Timing(0.001), (16, 2): Timing(0.5)})
        db.put_timings("elsewhere", hw, "other", {(32, 1): Timing(9.0)})
        runs = [{"ref": "m1"}, {"ref": "m2"}]
        _largest_batch_floors(runs, db, (1, 2, 4, 8, 16, 32))
    assert abs(runs[0]["floor_s"] - (0.016 + 0.0007 + 2e-6)) < 1e-12
    assert abs(runs[1]["floor_s"] - 0.003) < 1e-12


def test_ceiling_is_grid_latency_over_floor_and_says_so_when_nothing_was_timed():
    rows = [{"whole_grid_latency_s": 0.6, "largest_batch_floor_s": 0.2},
            {"whole_grid_latency_s": 0.3, "largest_batch_floor_s": 0.1}]
    assert _ceiling(rows) == "3.00"
    assert _ceiling(rows[:1]) == "3.00"
    assert _ceiling([{"whole_grid_latency_s": 0.3, "largest_batch_floor_s": 0.0}]) == "-"


def test_extrapolation_error_extends_the_line_through_the_two_sizes_below_a_quarter_of_the_largest():
    # Linear at one thread (no error); at two threads batch 32 takes half what the 4..8 line says.
    grid = (1, 2, 4, 8, 16, 32)
    reference = {(b, 1): 1e-3 + 1e-4 * b for b in grid}
    reference.update({(b, 2): 1e-3 + 1e-4 * b for b in grid})
    reference[32, 2] = (1e-3 + 1e-4 * 32) / 2
    assert abs(_extrapolation_error(reference, grid, (1, 2)) - 1.0) < 1e-9
    assert _extrapolation_error({(b, 1): 1e-3 * b for b in grid}, grid, (1,)) < 1e-9
    assert _extrapolation_error({(b, 1): 1e-3 for b in (1, 8)}, (1, 8), (1,)) is None
