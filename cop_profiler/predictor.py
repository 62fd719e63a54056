"""The torch-free latency predictor used by the batch policy and the autoscaler.

A model's latency for (batch b, CPU threads c, GPU share g) is composed from its stored operator graph:
operator latencies (interpolated from the profiled points) summed along chains and maxed across parallel
branches (see ``graph.compose``), plus the calibrated cost of each non-leaf module call, corrected by the
model's calibration ``factor * composed + offset`` (fitted to whole-model runs at profile time; identity
when absent). On a
GPU share g the full-GPU latency is divided by g (time-slicing). Answers are cached per configuration.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from cop_profiler import hardware
from cop_profiler.db import DEFAULT_DB_PATH, ProfileDB, normalize_ref, profile_command
from cop_profiler.errors import NoProfileError
from cop_profiler.graph import OpGraph, compose
from cop_profiler.interp import OpCurve

logger = logging.getLogger(__name__)

MODULE_CALL = "module_call"


@dataclass(frozen=True)
class Prediction:
    """A predicted latency for one configuration."""

    # Seconds for one batch.
    seconds: float
    # True when some operator was queried outside its profiled batches or thread counts.
    extrapolated: bool


@dataclass(frozen=True)
class _DeviceProfile:
    curves: dict[str, OpCurve]
    overhead: OpCurve | None
    # (factor, offset) per calibrated thread count.
    corrections: dict[int, tuple[float, float]]

    def correction(self, threads: int) -> tuple[float, float]:
        """The correction of the nearest calibrated thread count at or below ``threads`` (else the lowest)."""
        if not self.corrections:
            return 1.0, 0.0
        below = [c for c in self.corrections if c <= threads]
        return self.corrections[max(below) if below else min(self.corrections)]


class ModelPredictor:
    """Predicts one model's batch latency on this (or a named) machine from the profile DB."""

    def __init__(self, model_ref: str, graph: OpGraph, profiles: dict[str, _DeviceProfile],
                 hardware_id: str | None = None) -> None:
        self.model_ref = model_ref
        # The machine whose profiles these are, when named (``--hardware-id``); None: this machine.
        self.hardware_id = hardware_id
        self.graph = graph
        self._profiles = profiles
        self._cache: dict[tuple[int, int, str, float], Prediction] = {}

    @classmethod
    def load(cls, db_path: str = DEFAULT_DB_PATH, model_ref: str = "", hardware_id: str | None = None,
             devices: tuple[str, ...] = ("cpu", "cuda")) -> "ModelPredictor":
        """Read a model's graph and its operators' timings; NoProfileError when CPU timings are missing."""
        if not os.path.exists(db_path):
            hint = profile_command(model_ref or "MODEL", db_path)
            raise NoProfileError(f"no profile DB at {db_path}: run `{hint}` first")
        with ProfileDB(db_path, readonly=True) as db:
            graph = db.model_graph(model_ref)
            profiles = {}
            for device in devices:
                hw = _hardware_for(device, hardware_id)
                if hw is None:
                    continue
                loaded = _load_device(db, graph, model_ref, hw, device)
                if loaded is not None:
                    profiles[device] = loaded
                elif device == "cpu":
                    raise NoProfileError(_missing_message(db, graph, model_ref, hw, hardware_id is not None))
        return cls(normalize_ref(model_ref), graph, profiles, hardware_id)

    def devices(self) -> tuple[str, ...]:
        """Devices with complete profiles."""
        return tuple(self._profiles)

    def predict(self, batch: int, threads: int, device: str = "cpu", gpu_share: float = 1.0) -> Prediction:
        """Seconds for a batch of ``batch`` with ``threads`` CPU threads (or a ``gpu_share`` of a GPU)."""
        if batch < 1 or threads < 1:
            raise ValueError(f"batch={batch}, threads={threads}: both must be >= 1")
        if not 0 < gpu_share <= 1:
            raise ValueError(f"gpu_share={gpu_share}: must be in (0, 1]")
        key = (batch, threads, device, gpu_share)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._predict(batch, threads, device, gpu_share)
        return cached

    def prior(self, threads: int, device: str = "cpu", gpu_share: float = 1.0) -> Callable[[int], float]:
        """A ``batch -> seconds`` function, e.g. for ``batcher.policy.ExecTimeModel(prior=...)``."""
        return lambda batch: self.predict(batch, threads, device, gpu_share).seconds

    def _predict(self, batch: int, threads: int, device: str, gpu_share: float) -> Prediction:
        profile = self._profiles.get(device)
        if profile is None:
            where = "this machine" if self.hardware_id is None else f"hardware {self.hardware_id!r}"
            raise NoProfileError(f"model {self.model_ref!r} has no {device} profile on {where} "
                                 f"(profiled devices: {', '.join(self._profiles) or 'none'})")
        threads = threads if device == "cpu" else 1
        extrapolated = False

        def cost(key: str) -> float:
            nonlocal extrapolated
            est = profile.curves[key].at(batch, threads)
            extrapolated = extrapolated or est.extrapolated
            return est.seconds

        seconds = compose(self.graph, cost)
        if profile.overhead is not None:
            seconds += self.graph.containers * profile.overhead.at(1, threads).seconds
        factor, offset = profile.correction(threads)
        seconds = max(seconds * factor + offset, 0.0)
        return Prediction(seconds / (gpu_share if device != "cpu" else 1.0), extrapolated)


def _hardware_for(device: str, hardware_id: str | None) -> str | None:
    """The hardware key of ``device`` profiles: given (``CPU`` or ``CPU | GPU``) or detected here."""
    if hardware_id is not None:
        if device == "cpu":
            return hardware_id.split(" | ")[0]
        return hardware_id if " | " in hardware_id else None
    if device == "cpu":
        return hardware.cpu_id()
    report = hardware.gpus()
    return hardware.hardware_id(device, report.devices[0].name) if report.devices else None


def _load_device(db: ProfileDB, graph: OpGraph, model_ref: str, hw: str, device: str) -> _DeviceProfile | None:
    keys = graph.op_keys()
    timings = db.timings(keys, hw, device)
    if set(timings) != keys:
        return None
    invariant = {o.key for o in graph.ops if o.invariant}
    curves = {k: OpCurve(points, k in invariant) for k, points in timings.items()}
    overheads = db.overheads(hw, device, MODULE_CALL)
    overhead = OpCurve({(1, t): s for t, s in overheads.items()}) if overheads else None
    return _DeviceProfile(curves, overhead, db.calibrations(model_ref, hw, device))


def _missing_message(db: ProfileDB, graph: OpGraph, model_ref: str, hw: str, named: bool) -> str:
    keys = graph.op_keys()
    have = len(db.timings(keys, hw, "cpu"))
    others = [h for h in db.hardware_ids() if h != hw]
    where = f" (the DB has timings from: {'; '.join(others)})" if others else ""
    return (f"no CPU timings for {len(keys) - have} of {len(keys)} operators of {normalize_ref(model_ref)!r} on "
            f"hardware {hw!r}{where}: run `{profile_command(normalize_ref(model_ref), db.path)}` on "
            f"{'that' if named else 'this'} machine")
