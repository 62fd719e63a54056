"""A real tiny model profiled into a DB and predicted within a loose tolerance; operator reuse; progress."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cop_profiler.db import ProfileDB
from cop_profiler.hardware import cpu_id
from cop_profiler.predictor import ModelPredictor
from cop_profiler.profiler import ProfileConfig, profile_model
from cop_profiler.whole import measure_model
from cop_profiler.sampling import SamplingRule
from cop_profiler.timer import TimingPolicy
from cop_profiler.tracer import trace

# The fastest block, for operators and model alike: interference from the rest of a suite sharing two CPUs
# only ever adds time (a median once read a 24 µs model as 96 µs), and this file checks composition, not noise.
POLICY = TimingPolicy(warmup=2, min_block=0.001, blocks=5, estimator="min")
CONFIG = ProfileConfig(batches=(1, 4, 16), threads=(1,), policy=POLICY, calibration_batches=())


def mlp(width=256):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, width), nn.ReLU(), nn.Linear(width, 10)).eval()


def example(b):
    return torch.randn(b, 128)


def test_profiled_model_is_predicted_within_tolerance(tmp_path):
    model, path = mlp(), str(tmp_path / "p.sqlite")
    with ProfileDB(path) as db:
        report = profile_model(trace(model, example), model, example, db, "tiny", CONFIG)
    assert report.operators == 3 and report.new_operators == 3 and report.points == 9
    predictor = ModelPredictor.load(path, "tiny")
    for b in (4, 16):
        measured = measure_model(model, example, b, 1, POLICY).median
        predicted = predictor.predict(b, 1)
        assert not predicted.extrapolated
        # Loose on purpose: the suite shares 2 CPUs with other jobs; the benchmark measures accuracy.
        assert 0.33 < predicted.seconds / measured < 3.0


def test_shared_operators_are_not_timed_again(tmp_path):
    path, calls = str(tmp_path / "p.sqlite"), []
    with ProfileDB(path) as db:
        first = mlp()
        profile_model(trace(first, example), first, example, db, "one", CONFIG)
        second = nn.Sequential(mlp(), nn.ReLU()).eval()  # same operators plus a ReLU on a new shape
        report = profile_model(trace(second, example), second, example, db, "two", CONFIG,
                               lambda done, total, label: calls.append((done, total)))
        assert db.models() == ["one", "two"]
        assert db.overheads(cpu_id(), "cpu", "module_call")
    assert report.reused_operators == 3 and report.new_operators == 1
    assert calls[-1] == (3, 3)


def test_batch_sizes_between_checked_ones_are_interpolated_not_timed(tmp_path):
    model, path = mlp(), str(tmp_path / "p.sqlite")
    config = ProfileConfig(batches=(1, 2, 4, 8, 16, 32), threads=(1,), policy=POLICY, calibration_batches=(),
                           sampling=SamplingRule(tolerance=0.9))
    with ProfileDB(path) as db:
        report = profile_model(trace(model, example), model, example, db, "sparse", config)
        again = profile_model(trace(model, example), model, example, db, "sparse", config)
    assert report.interpolated > 0 and report.points + report.interpolated == 3 * 6
    assert again.new_operators == 0 and again.points == 0  # what was left out is not missing
    predictor = ModelPredictor.load(path, "sparse")
    assert not any(predictor.predict(b, 1).extrapolated for b in (2, 3, 16, 32))


def test_calibration_is_stored_and_bounded(tmp_path):
    model, path = mlp(64), str(tmp_path / "p.sqlite")
    config = ProfileConfig(batches=(1, 2), threads=(1,), policy=POLICY, calibration_batches=(1,))
    with ProfileDB(path) as db:
        report = profile_model(trace(model, example), model, example, db, "cal", config)
        (factor, offset), = db.calibrations("cal", cpu_id(), "cpu").values()
    assert (factor, offset) == pytest.approx(report.factors["cpu"][1]) and 0.9 <= factor <= 1.6 and offset == 0.0


@pytest.mark.gpu
def test_cuda_profile_and_prediction(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model, path = mlp(), str(tmp_path / "g.sqlite")
    config = ProfileConfig(batches=(1, 8), threads=(1,), devices=("cpu", "cuda"), policy=POLICY,
                           calibration_batches=(1,))
    with ProfileDB(path) as db:
        profile_model(trace(model, example), model, example, db, "gpu", config)
    predictor = ModelPredictor.load(path, "gpu")
    assert "cuda" in predictor.devices()
    assert predictor.predict(8, 1, "cuda", 0.5).seconds > predictor.predict(8, 1, "cuda").seconds


@pytest.mark.gpu
def test_cuda_profiling_leaves_the_model_on_the_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model, path = mlp(64), str(tmp_path / "g.sqlite")
    config = ProfileConfig(batches=(1, 4), threads=(1,), devices=("cuda", "cpu"), policy=POLICY,
                           calibration_batches=(1,))
    with ProfileDB(path) as db:  # cuda first: its calibration ran before the CPU's
        report = profile_model(trace(model, example), model, example, db, "gpu-first", config)
    assert set(report.factors) == {"cuda", "cpu"}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_timing_off_the_cpu_moves_a_copy_of_the_model_not_the_model():
    """``Module.to`` is in place: timing the whole model on another device must not move the caller's
    model there (its modules are the CPU operators). The meta device stands in for a GPU here."""
    from cop_profiler.whole import measure_grid, warm_weights

    model = mlp(16)
    config = ProfileConfig(batches=(1, 2), threads=(1,), policy=TimingPolicy(warmup=1, min_block=0.0, blocks=1,
                                                                             max_blocks=1), retries=0)
    warm_weights(model, example, config, "meta")
    measure_grid(model, example, [(1, 1)], config, "meta")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert measure_model(model, example, 2, 1, config.policy).median > 0  # still runs on the CPU


def test_calibration_fit_is_affine_with_a_non_negative_offset():
    from cop_profiler.whole import _fit

    factor, offset = _fit([(1.0, 1.3), (8.0, 9.0)])
    assert factor == pytest.approx(1.1) and offset == pytest.approx(0.2)
    factor, offset = _fit([(1.0, 0.8), (8.0, 12.0)])  # would need a negative offset: ratio only
    assert offset == 0.0 and factor == pytest.approx((0.8 * 1.5) ** 0.5)
    assert _fit([(1.0, 0.5), (2.0, 1.0)]) == (0.9, 0.0)
    assert _fit([(1.0, 9.0)]) == (1.6, 0.0)  # clamped
    # Several thread counts' points in one fit: a point off the line pulls the fit, it does not own it.
    line = [(1.0, 1.3), (8.0, 9.0), (0.5, 0.75), (4.0, 4.6)]
    assert _fit(line) == pytest.approx((1.1, 0.2))
    factor, offset = _fit(line[:-1] + [(4.0, 5.5)])
    assert 1.1 < factor < 1.25 and 0.0 <= offset < 0.3


def test_one_calibration_fits_every_thread_count(tmp_path):
    model, path = mlp(64), str(tmp_path / "p.sqlite")
    config = ProfileConfig(batches=(1, 4), threads=(1, 2), policy=POLICY, calibration_batches=(1, 4))
    with ProfileDB(path) as db:
        report = profile_model(trace(model, example), model, example, db, "both", config)
        stored = db.calibrations("both", cpu_id(), "cpu")
    assert set(stored) == {1, 2} and stored[1] == stored[2] == pytest.approx(report.factors["cpu"][1])


def test_heavy_operators_get_a_second_pass_tiny_ones_no_retry():
    from cop_profiler.effort import EffortRule
    from cop_profiler.profiler import _retry_points, _Run
    from cop_profiler.timer import Measurement

    def m(seconds, noisy=False):
        return Measurement(seconds, 0.0, 1, 3, noisy)

    kept = {("big", 1, 1): m(1.0), ("big", 8, 1): m(4.0), ("tiny", 1, 1): m(0.001, True), ("tiny", 8, 1): m(0.002),
            ("mid", 1, 1): m(0.1, True), ("mid", 8, 1): m(0.2)}
    timed = {k: {(b, c): v.median for (key, b, c), v in kept.items() if key == k} for k in ("big", "tiny", "mid")}
    run = _Run(dict(kept), timed, {}, {"big": 1, "tiny": 1, "mid": 1}, {p: 1 for p in kept})
    todo = _retry_points(run, set(kept), EffortRule(passes=2, heavy_share=0.5, light_share=0.01))
    assert todo == {"big": [(1, 1), (8, 1)], "mid": [(1, 1)]}
    run.tries.update({("big", 1, 1): 2, ("big", 8, 1): 2})
    assert _retry_points(run, set(kept), EffortRule(passes=2, heavy_share=0.5, light_share=0.01)) == {"mid": [(1, 1)]}


def test_whole_model_grid_takes_the_passes_and_keeps_every_point():
    from cop_profiler.effort import EffortRule
    from cop_profiler.whole import measure_grid

    model, calls = mlp(64), []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    config = ProfileConfig(batches=(1, 4), threads=(1,), policy=TimingPolicy(warmup=1, min_block=0.0, blocks=1,
                                                                            max_blocks=1),
                           retries=0, effort=EffortRule(passes=2))
    got = measure_grid(model, example, [(1, 1), (4, 1)], config)
    assert set(got) == {(1, 1), (4, 1)}
    assert calls.count(1) == calls.count(4) == 4  # two passes of (warm-up + one block) per point


def test_calibration_passes_are_split_around_the_operator_timing(tmp_path):
    from cop_profiler.effort import EffortRule
    from cop_profiler.whole import first_calibration_pass

    model, calls = mlp(64), []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    policy = TimingPolicy(warmup=1, min_block=0.0, blocks=1, max_blocks=1)
    config = ProfileConfig(batches=(1, 2), threads=(1,), policy=policy, calibration_batches=(1, 2), retries=0,
                           effort=EffortRule(passes=2))
    first = first_calibration_pass(model, example, config, "cpu")
    assert set(first) == {(1, 1), (2, 1)} and calls.count(1) == calls.count(2) == 2  # one pass: warm-up + block
    hook.remove()
    # The whole model runs before any operator is timed and after all of them: one pass each.
    traced, events = trace(model, example), []
    model.register_forward_pre_hook(lambda module, args: events.append("M"))
    for layer in model:
        layer.register_forward_pre_hook(lambda module, args: events.append("o"))
    with ProfileDB(str(tmp_path / "p.sqlite")) as db:
        report = profile_model(traced, model, example, db, "split", config)
    runs = "".join(events).replace("Mooo", "M")  # a whole-model run calls its three layers
    # one untimed call first (``warm_weights``), then the first pass, the operators, the second pass
    assert runs.startswith("MMMMMo") and runs.endswith("oMMMM") and runs.count("M") == 9
    assert report.calibration_seconds > 0
    # Single-pass effort, or a GPU (the model's modules are the CPU operators'), gets no early pass.
    single = ProfileConfig(batches=(1,), threads=(1,), policy=policy, effort=EffortRule(passes=1))
    assert first_calibration_pass(model, example, single, "cpu") is None
    assert first_calibration_pass(model, example, config, "cuda") is None


def test_an_earlier_pass_counts_as_the_first_and_the_faster_is_kept():
    from cop_profiler.effort import EffortRule
    from cop_profiler.whole import measure_grid
    from cop_profiler.timer import Measurement

    model, calls = mlp(64), []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    config = ProfileConfig(batches=(1,), threads=(1,), policy=TimingPolicy(warmup=1, min_block=0.0, blocks=1,
                                                                           max_blocks=1),
                           retries=0, effort=EffortRule(passes=2))
    slow, fast = Measurement(10.0, 0.0, 1, 1, False), Measurement(1e-12, 0.0, 1, 1, False)
    assert measure_grid(model, example, [(1, 1)], config, earlier={(1, 1): slow})[1, 1].median < 10.0
    assert len(calls) == 2  # one more pass (warm-up + one block), not two
    assert measure_grid(model, example, [(1, 1)], config, earlier={(1, 1): fast})[1, 1] is fast


def test_the_model_and_each_operator_are_first_called_at_the_largest_batch_with_the_most_threads():
    from cop_profiler.profiler import _measure_op
    from cop_profiler.whole import warm_weights

    model, seen = mlp(64), []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].shape[0], torch.get_num_threads())))
    policy = TimingPolicy(warmup=1, min_block=0.0, blocks=1, max_blocks=1)
    config = ProfileConfig(batches=(1, 2, 4), threads=(1, 2), policy=policy)
    warm_weights(model, example, config, "cpu")
    assert seen == [(4, 2)]
    traced = trace(model, example)
    first = next(iter(traced.instances.values()))
    found = _measure_op(first, [(b, c) for b in (1, 2, 4) for c in (1, 2)], config, "cpu")
    assert list(found)[0] == (4, 2) and len(found) == 6


def test_points_still_implausible_after_every_retry_are_stored_at_what_makes_them_so():
    from cop_profiler.profiler import _cap_implausible, _Run
    from cop_profiler.timer import Measurement

    def m(ms, noisy=False):
        return Measurement(ms / 1e3, 0.0, 1, 3, noisy)

    def capped(points, tries=2, cores=2):
        run = _Run(dict(points), {"k": {(b, c): x.median for (_, b, c), x in points.items()}}, {})
        run.tries = {p: tries for p in points}
        _cap_implausible(run, "k", "Linear", "cpu", cores)
        return run

    # 2 threads 20x slower than 1 at batch 2, noisy each try (a core held by another process); batch 1 plausible
    kept = {("k", 1, 1): m(1.0), ("k", 1, 2): m(0.7), ("k", 2, 1): m(1.5), ("k", 2, 2): m(30.0, noisy=True)}
    run = capped(kept)
    assert run.kept["k", 2, 2].median == pytest.approx(1.5e-3) and run.kept["k", 2, 2].noisy
    assert run.timed["k"][2, 2] == pytest.approx(1.5e-3) and run.kept["k", 1, 2].median == pytest.approx(0.7e-3)
    assert run.capped == ["cpu Linear b=2 t=2: 30.000 ms stored as 1.500 ms"]
    # kept as measured: quiet (the operator's own slowdown), timed once, or more threads than cores
    quiet = {**kept, ("k", 2, 2): m(30.0)}
    assert capped(quiet).kept["k", 2, 2].median == pytest.approx(30e-3) and not capped(quiet).capped
    assert not capped(kept, tries=1).capped and not capped(kept, cores=1).capped


def test_calibration_runs_inside_the_profiled_batch_sizes(tmp_path):
    class Small(nn.Module):
        """A model that cannot run above batch 4 (as one too large for memory there)."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            if x.shape[0] > 4:
                raise ValueError(f"batch {x.shape[0]}: out of memory")
            return self.fc(x)

    # `profile --batches 1,2,4` calibrated at batch 1 and 8 all the same: it ran the model at a batch it
    # was not profiled for, and fitted the correction to an operator sum extrapolated there
    model, path = Small().eval(), str(tmp_path / "p.sqlite")
    config = ProfileConfig(batches=(1, 2, 4), threads=(1,), policy=POLICY, calibration_batches=(1, 8))
    assert config.calibration_sizes() == (1, 4)
    assert ProfileConfig(batches=(16, 32), calibration_batches=(1, 8)).calibration_sizes() == (16,)
    assert ProfileConfig(calibration_batches=()).calibration_sizes() == ()
    with ProfileDB(path) as db:
        report = profile_model(trace(model, example), model, example, db, "small", config)
    assert set(report.factors["cpu"]) == {1}
