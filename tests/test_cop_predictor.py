"""The torch-free predictor on a synthetic profile DB: composition, overheads, calibration, hardware, caching."""

from __future__ import annotations

import subprocess
import sys

import pytest

from batcher.policy import ExecTimeModel
from cop_profiler.db import ProfileDB, Timing
from cop_profiler.errors import NoProfileError
from cop_profiler.graph import OpGraph, OpNode
from cop_profiler.opspec import OperatorSpec
from cop_profiler.predictor import MODULE_CALL, ModelPredictor

HW = "Test CPU x2"
A = OperatorSpec.create("A", "sig-a")
B = OperatorSpec.create("B", "sig-b")
V = OperatorSpec.create("view", "sig-v", invariant=True)


@pytest.fixture
def db_path(tmp_path):
    path = str(tmp_path / "p.sqlite")
    graph = OpGraph((OpNode(0, A.key), OpNode(1, B.key, (0,)), OpNode(2, V.key, (1,)), OpNode(3, A.key, (2,))),
                    (A, B, V), containers=2)
    with ProfileDB(path) as db:
        db.put_model("functions/toy", graph)
        for c, speed in ((1, 1.0), (2, 0.5)):
            for b in (1, 2, 4):
                db.put_timing(A.key, HW, "cpu", b, c, Timing(0.001 * b * speed))
                db.put_timing(B.key, HW, "cpu", b, c, Timing(0.010 * speed))
            db.put_overhead(HW, "cpu", c, MODULE_CALL, 0.0001)
        db.put_timing(V.key, HW, "cpu", 1, 1, Timing(0.0005))
    return path


def test_prediction_sums_operators_and_container_calls(db_path):
    p = ModelPredictor.load(db_path, "functions/toy", HW).predict(4, 1)
    assert p.seconds == pytest.approx(2 * 0.004 + 0.010 + 0.0005 + 2 * 0.0001)
    assert not p.extrapolated


def test_calibration_factor_scales_the_prediction(db_path):
    with ProfileDB(db_path) as db:
        db.put_calibration("functions/toy", HW, "cpu", 1.5, 0.001, threads=2)
        db.put_calibration("functions/toy", HW, "cpu", 1.1, 0.0, threads=1)
    predictor = ModelPredictor.load(db_path, "./functions/toy/", HW)
    p = predictor.predict(1, 2)
    assert p.seconds == pytest.approx(1.5 * (2 * 0.0005 + 0.005 + 0.0005 + 2 * 0.0001) + 0.001)
    assert predictor.predict(1, 1).seconds == pytest.approx(1.1 * (2 * 0.001 + 0.010 + 0.0005 + 2 * 0.0001))
    assert predictor.predict(1, 3).seconds == pytest.approx(p.seconds)  # nearest calibrated count below


def test_between_and_beyond_profiled_points(db_path):
    predictor = ModelPredictor.load(db_path, "functions/toy", HW)
    assert not predictor.predict(3, 1).extrapolated
    assert predictor.predict(8, 1).extrapolated
    assert predictor.predict(4, 4).extrapolated
    assert predictor.predict(8, 1).seconds > predictor.predict(4, 1).seconds


def test_other_hardware_never_mixes(db_path):
    with pytest.raises(NoProfileError, match="Test CPU x2") as err:
        ModelPredictor.load(db_path, "functions/toy", "Other CPU x64")
    assert f"run `faas-infer profile functions/toy --db {db_path}`" in str(err.value)


def test_missing_model_and_missing_db(db_path, tmp_path):
    with pytest.raises(NoProfileError, match="not in"):
        ModelPredictor.load(db_path, "functions/other", HW)
    with pytest.raises(NoProfileError, match="no profile DB"):
        ModelPredictor.load(str(tmp_path / "none.sqlite"), "functions/toy", HW)


def test_gpu_without_profile_and_bad_arguments(db_path):
    predictor = ModelPredictor.load(db_path, "functions/toy", HW)
    assert predictor.devices() == ("cpu",)
    with pytest.raises(NoProfileError, match="no cuda profile"):
        predictor.predict(1, 1, "cuda", 0.5)
    for bad in ({"batch": 0, "threads": 1}, {"batch": 1, "threads": 0}):
        with pytest.raises(ValueError):
            predictor.predict(**bad)
    with pytest.raises(ValueError, match="gpu_share"):
        predictor.predict(1, 1, "cpu", 0.0)


def test_gpu_share_divides_full_gpu_latency(tmp_path):
    path = str(tmp_path / "g.sqlite")
    with ProfileDB(path) as db:
        db.put_model("m", OpGraph((OpNode(0, A.key),), (A,), containers=0))
        db.put_timing(A.key, HW, "cpu", 1, 1, Timing(0.01))
        db.put_timing(A.key, HW + " | GPU X", "cuda", 1, 1, Timing(0.002))
    predictor = ModelPredictor.load(path, "m", HW + " | GPU X")
    assert predictor.devices() == ("cpu", "cuda")
    assert predictor.predict(1, 4, "cuda", 0.5).seconds == pytest.approx(0.004)


def test_answers_are_cached_and_feed_the_batch_policy(db_path):
    predictor = ModelPredictor.load(db_path, "functions/toy", HW)
    assert predictor.predict(2, 1) is predictor.predict(2, 1)
    model = ExecTimeModel(prior=predictor.prior(threads=2))
    assert model.predict(4) == pytest.approx(predictor.predict(4, 2).seconds)


def test_predictor_does_not_import_torch():
    code = ("import sys, cop_profiler.predictor, cop_profiler.db, cop_profiler.hardware; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
