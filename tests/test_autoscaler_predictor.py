"""Execution-time sources: the profile table, chaining and online correction by measurements."""

from __future__ import annotations

import pytest

from autoscaler.predictor import Chain, CopPredictor, Corrected, TablePredictor
from autoscaler.snapshot import Measurement

TABLE = TablePredictor({"functions/m": {"1x1": 0.010, "4x1": 0.020, "16x1": 0.050, "1x2": 0.006, "4x2": 0.011,
                                        "16x2": 0.027, "gpu": {"1": 0.002, "16": 0.004}}})


def test_table_interpolates_batch_and_scales_cpu():
    assert TABLE.exec_seconds("m", 4, 1, 0) == pytest.approx(0.020)
    assert TABLE.exec_seconds("m", 2, 1, 0) == pytest.approx(0.010 + 0.010 / 3)
    assert TABLE.exec_seconds("m", 32, 1, 0) == pytest.approx(0.050 + 16 * 0.030 / 12)  # last slope
    assert TABLE.exec_seconds("m", 4, 0.5, 0) == pytest.approx(0.040)  # quota throttling
    assert TABLE.exec_seconds("m", 4, 2, 0) == pytest.approx(0.011)
    four = TABLE.exec_seconds("m", 4, 4, 0)
    assert four < 0.011  # Amdahl fitted on 1 and 2 threads
    assert TABLE.exec_seconds("m", 16, 1, 0.5) == pytest.approx(0.008)
    assert TABLE.exec_seconds("other", 1, 1, 0) is None


def test_example_profiles_load():
    table = TablePredictor.load()
    assert set(table.models()) == {"resnet", "lstm", "textcnn", "mlp"}
    assert table.exec_seconds("functions/mlp", 64, 1, 0) > table.exec_seconds("functions/mlp", 1, 1, 0)


def test_corrected_uses_measurements():
    measured = {"m": (Measurement(4, 1.0, 0.0, 0.040),)}  # twice as slow as the table says
    corrected = Corrected(TABLE, measured)
    assert corrected.exec_seconds("m", 4, 1, 0) == pytest.approx(0.040)
    assert corrected.exec_seconds("m", 16, 1, 0) == pytest.approx(0.100)
    assert corrected.ratio("m") == pytest.approx(2.0)
    assert Corrected(TABLE, {}).exec_seconds("m", 4, 1, 0) == pytest.approx(0.020)


def test_an_untried_configuration_is_priced_at_the_upper_quartile_of_the_measured_slowdowns():
    table_time = TABLE.exec_seconds("m", 4, 1, 0)
    measured = {"m": tuple(Measurement(4, c, 0.0, r * TABLE.exec_seconds("m", 4, c, 0))
                           for c, r in ((0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (4.0, 2.0)))}
    corrected = Corrected(TABLE, measured)
    assert corrected.ratio("m") == pytest.approx(1.25)  # not the median's 1.0: untried ones look no better
    assert corrected.exec_seconds("m", 16, 1, 0) == pytest.approx(1.25 * TABLE.exec_seconds("m", 16, 1, 0))
    assert corrected.exec_seconds("m", 4, 1, 0) == pytest.approx(table_time)  # measured: as measured


def test_measurements_alone_predict_without_a_prior():
    corrected = Corrected(TablePredictor({}), {"x": (Measurement(2, 1, 0, 0.01), Measurement(8, 1, 0, 0.03))})
    assert corrected.exec_seconds("x", 4, 1, 0) == pytest.approx(0.01 + 0.02 / 3)
    assert corrected.exec_seconds("x", 4, 2, 0) is None


def test_chain_takes_the_first_answer():
    assert Chain(TablePredictor({}), TABLE).exec_seconds("m", 1, 1, 0) == pytest.approx(0.010)


def test_a_profile_written_while_the_autoscaler_runs_is_used_from_the_next_preload(tmp_path):
    from cop_profiler import hardware
    from cop_profiler.db import ProfileDB, Timing
    from cop_profiler.graph import OpGraph, OpNode
    from cop_profiler.opspec import OperatorSpec

    path = str(tmp_path / "profiles.sqlite")
    with ProfileDB(path):
        pass
    cop = CopPredictor(path)
    cop.preload(["functions/toy"])
    assert cop.exec_seconds("functions/toy", 1, 1.0, 0.0) is None
    op = OperatorSpec.create("A", "sig-a")
    with ProfileDB(path) as db:  # faas-infer profile, meanwhile
        db.put_model("functions/toy", OpGraph((OpNode(0, op.key),), (op,)))
        db.put_timing(op.key, hardware.cpu_id(), "cpu", 1, 1, Timing(0.004))
    cop.preload(["functions/toy"])
    assert cop.exec_seconds("functions/toy", 1, 1.0, 0.0) == pytest.approx(0.004, rel=0.1)


def test_cop_throttles_cpu_time_by_a_fractional_quota_but_not_gpu_time():
    from cop_profiler.predictor import Prediction

    class _Profile:  # the loaded ModelPredictor's interface: pure arithmetic here
        def predict(self, batch, threads, device="cpu", gpu_share=1.0):
            return Prediction((0.010 if device == "cpu" else 0.002) / (gpu_share if device != "cpu" else 1.0), False)

    cop = CopPredictor("/nonexistent.sqlite")
    cop._models["m"] = _Profile()
    assert cop.exec_seconds("m", 4, 0.5, 0.0) == pytest.approx(0.020)
    assert cop.exec_seconds("m", 4, 2.0, 0.0) == pytest.approx(0.010)
    assert cop.exec_seconds("m", 4, 0.5, 0.5) == pytest.approx(0.004)
