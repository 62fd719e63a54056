"""Where execution times come from: a small Protocol, a profile table, the COP predictor, online correction.

decide needs one thing: the seconds a batch of ``b`` takes on ``c`` cores and GPU share ``g`` (None when
unknown, which rules the configuration out). ``TablePredictor`` interpolates measured profiles;
``CopPredictor`` adapts ``cop_profiler.predictor.ModelPredictor``; ``Corrected`` rescales either by the
execution times the running instances report through Redis, so a wrong prior is fixed within a tick.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import statistics
from typing import Iterable, Mapping, Protocol

from autoscaler.snapshot import Measurement

logger = logging.getLogger(__name__)

# How far a measurement may rescale a prediction (guards against one noisy sample).
MAX_CORRECTION = 4.0

EXAMPLE_PROFILES = os.path.join(os.path.dirname(__file__), "data", "example_profiles.json")


class ExecPredictor(Protocol):
    """What decide needs from a latency predictor."""

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """Seconds to run a batch of ``batch`` on ``cpu`` cores and GPU share ``gpu``; None if unknown."""


def model_key(model: str) -> str:
    """The short key of a model reference: ``functions/resnet`` -> ``resnet``."""
    return model.rstrip("/").rsplit("/", 1)[-1]


class TablePredictor:
    """Interpolates a table {model: {"b x threads": seconds, "gpu": {b: seconds at a full GPU}}}.

    Between measured batch sizes time is linear in ``b``; past the largest it extrapolates the last slope.
    CPU: below one core the quota throttles (time / cpu); above, Amdahl's law fitted on 1 and 2 threads.
    """

    def __init__(self, profiles: Mapping[str, Mapping[str, object]]) -> None:
        self._cpu: dict[str, dict[int, list[tuple[int, float]]]] = {}
        self._gpu: dict[str, list[tuple[int, float]]] = {}
        self._cache: dict[tuple[str, int, float, float], float | None] = {}
        for model, table in profiles.items():
            per_threads: dict[int, list[tuple[int, float]]] = {}
            for key, seconds in table.items():
                if key == "gpu":
                    self._gpu[model_key(model)] = sorted((int(b), float(s)) for b, s in seconds.items())  # type: ignore[union-attr]
                    continue
                batch, threads = (int(x) for x in key.split("x"))
                per_threads.setdefault(threads, []).append((batch, float(seconds)))  # type: ignore[arg-type]
            self._cpu[model_key(model)] = {t: sorted(points) for t, points in per_threads.items()}

    @classmethod
    def load(cls, path: str = EXAMPLE_PROFILES) -> "TablePredictor":
        """Read a JSON table (the default: the example functions measured on this kind of machine)."""
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return cls(doc.get("profiles", doc))

    def models(self) -> list[str]:
        """Models the table knows."""
        return sorted(self._cpu)

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """Interpolated seconds, or None for an unknown model or a GPU configuration without GPU data."""
        args = (model, batch, cpu, gpu)
        if args not in self._cache:
            self._cache[args] = self._compute(*args)
        return self._cache[args]

    def _compute(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        key = model_key(model)
        if gpu > 0:
            points = self._gpu.get(key)
            return None if not points else _interpolate(points, batch) / gpu
        tables = self._cpu.get(key)
        if not tables or 1 not in tables:
            return None
        t1 = _interpolate(tables[1], batch)
        if cpu <= 1.0:
            return t1 / cpu
        if cpu in tables:
            return _interpolate(tables[int(cpu)], batch) if float(cpu).is_integer() else None
        if 2 not in tables:
            return t1
        speedup = t1 / _interpolate(tables[2], batch)
        parallel = min(1.0, max(0.0, 2.0 * (1.0 - 1.0 / speedup)))
        return t1 * ((1.0 - parallel) + parallel / cpu)


def _upper_quartile(values: list[float]) -> float:
    """The 75th percentile (the median of one or two values)."""
    if len(values) < 3:
        return statistics.median(values)
    return statistics.quantiles(values, n=4, method="inclusive")[2]


def _interpolate(points: list[tuple[int, float]], batch: int) -> float:
    sizes = [b for b, _ in points]
    i = bisect.bisect_left(sizes, batch)
    if i < len(points) and sizes[i] == batch:
        return points[i][1]
    if i == 0:
        b0, t0 = points[0]
        return t0 * batch / b0 if batch < b0 else t0
    if i == len(points):
        if len(points) == 1:
            b0, t0 = points[0]
            return t0 * batch / b0
        (b0, t0), (b1, t1) = points[-2], points[-1]
        return t1 + max(0.0, (t1 - t0) / (b1 - b0)) * (batch - b1)
    (b0, t0), (b1, t1) = points[i - 1], points[i]
    return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)


class CopPredictor:
    """Adapter for ``cop_profiler.predictor.ModelPredictor`` (loaded per model from the profile DB)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._models: dict[str, object] = {}
        # The DB file's (mtime, size) at the last preload; None when it was not there.
        self._stamp: tuple[int, int] | None = None

    def preload(self, models: Iterable[str]) -> None:
        """Load every model's predictor now (I/O), so decide's calls stay in memory. Models found without a
        profile are looked for again once the DB file has changed: a profile written by ``faas-infer profile``
        while the autoscaler runs is used from the next tick (cached as missing, it never was)."""
        try:
            st = os.stat(self.db_path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._models = {m: p for m, p in self._models.items() if p is not None}
            self._stamp = stamp
        for model in models:
            self._get(model)

    def _get(self, model: str):
        if model not in self._models:
            try:
                from cop_profiler.predictor import ModelPredictor

                self._models[model] = ModelPredictor.load(self.db_path, model)
            except Exception as exc:  # noqa: BLE001 - a missing profile only rules the model out
                logger.debug("no COP prediction for %s: %s", model, exc)
                self._models[model] = None
        return self._models[model]

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """The COP prediction; on the CPU fractional CPU is throttled time and whole cores are threads. On a GPU
        the kernels' time is the GPU share's: a CPU quota below one core does not stretch it."""
        predictor = self._get(model)
        if predictor is None:
            return None
        threads = max(1, int(cpu))
        try:
            if gpu > 0:
                seconds = predictor.predict(batch, threads, device="cuda", gpu_share=gpu).seconds  # type: ignore[attr-defined]
            else:
                seconds = predictor.predict(batch, threads, device="cpu").seconds  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001
            logger.debug("COP prediction failed for %s b=%d c=%g g=%g: %s", model, batch, cpu, gpu, exc)
            return None
        return seconds / cpu if cpu < 1 and gpu <= 0 else seconds


class Chain:
    """The first predictor that knows the answer (e.g. COP, then the built-in table)."""

    def __init__(self, *predictors: ExecPredictor) -> None:
        self.predictors = predictors

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """The first non-None answer."""
        for predictor in self.predictors:
            seconds = predictor.exec_seconds(model, batch, cpu, gpu)
            if seconds is not None:
                return seconds
        return None


class Corrected:
    """A predictor rescaled by measured execution times (per model: the upper quartile of measured /
    predicted). An upper quartile, not the median: configurations that have run carry their own (often
    contended) measurements, and an untried one priced at the median ratio looked better than the running
    ones until it ran, so the autoscaler swapped configuration every 30-40 s under overload."""

    def __init__(self, base: ExecPredictor, measured: Mapping[str, Iterable[Measurement]]) -> None:
        self.base = base
        self._measured = {model: tuple(ms) for model, ms in measured.items()}
        self._ratio: dict[str, float] = {}

    def ratio(self, model: str) -> float:
        """Measured over predicted for ``model`` (1.0 without measurements)."""
        if model not in self._ratio:
            ratios = []
            for m in self._measured.get(model, ()):
                predicted = self.base.exec_seconds(model, m.batch, m.cpu, m.gpu)
                if predicted and m.seconds > 0:
                    ratios.append(m.seconds / predicted)
            ratio = _upper_quartile(ratios) if ratios else 1.0
            self._ratio[model] = min(MAX_CORRECTION, max(1.0 / MAX_CORRECTION, ratio))
        return self._ratio[model]

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """A measurement of exactly this configuration, else the corrected prediction."""
        for m in self._measured.get(model, ()):
            if m.batch == batch and abs(m.cpu - cpu) < 1e-6 and abs(m.gpu - gpu) < 1e-6:
                return m.seconds
        predicted = self.base.exec_seconds(model, batch, cpu, gpu)
        if predicted is None:
            return self._from_measurements(model, batch, cpu, gpu)
        return predicted * self.ratio(model)

    def _from_measurements(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        """Without a prior: scale the nearest measurement on the same resources (an upper bound in b)."""
        same = [m for m in self._measured.get(model, ()) if abs(m.cpu - cpu) < 1e-6 and abs(m.gpu - gpu) < 1e-6]
        if not same:
            return None
        points = sorted({m.batch: m.seconds for m in same}.items())
        smaller = [p for p in points if p[0] <= batch]
        if smaller and len(points) > 1:
            return _interpolate(points, batch)
        b0, t0 = smaller[-1] if smaller else points[0]
        return t0 * max(1.0, batch / b0)
