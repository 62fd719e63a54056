"""Profiling: time every distinct operator not yet in the DB over batch x threads x device, store the graph.

Operators already timed on this hardware are skipped (the report says how many), so a second model that
shares operators costs only its new ones. Per hardware, the cost of a non-leaf module call is calibrated
once. Per model and thread count, the whole model is timed at two cheap points (batch 1 and 8) and an affine
correction measured = factor * composed + offset is stored: it absorbs what isolated timing misses
(inter-operator cache effects, dispatch and thread-pool wake-ups between operators).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cop_profiler import hardware
from cop_profiler.db import ProfileDB, Timing
from cop_profiler.predictor import MODULE_CALL, ModelPredictor
from cop_profiler.recorder import call_args
from cop_profiler.timer import Measurement, TimingPolicy, implausible, measure, quieter
from cop_profiler.tracer import TracedModel

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

# Bounds of the calibration factor. Running inside the model only adds time to an operator (cold caches,
# dispatch between operators): slow-downs measured here were 1.0-1.5x, and a whole model never ran more
# than a few percent faster than its operators' sum in quiet runs. A fit outside the bounds says the
# calibration runs were disturbed (shared machine), so it is clamped rather than trusted.
MIN_FACTOR, MAX_FACTOR = 0.9, 1.6


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile."""

    # Batch sizes to time every operator at (powers of two 1..2^k by default).
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    # CPU intra-op thread counts (1..cores by default).
    threads: tuple[int, ...] = (1, 2)
    # Devices: "cpu" and, where a GPU is present, "cuda".
    devices: tuple[str, ...] = ("cpu",)
    # Measurement policy for operators and calibration runs.
    policy: TimingPolicy = TimingPolicy()
    # Batch sizes of the whole-model calibration (at every thread count); empty disables calibration.
    calibration_batches: tuple[int, ...] = (1, 8)
    # Re-time operators even when the DB has them.
    force: bool = False
    # Passes at the end that re-time points still noisy or implausibly slow with more threads, keeping
    # the faster measurement: interference on a shared machine comes in bursts, a later try often misses it.
    retries: int = 3

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches={self.batches}: need at least one batch size >= 1")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads={self.threads}: need at least one thread count >= 1")


@dataclass(frozen=True)
class ProfileReport:
    """What one profiling run did."""

    model_ref: str
    # "fx" or "recorded".
    traced_with: str
    # Operator calls in one forward.
    nodes: int
    # Distinct operators of the model.
    operators: int
    # Operators timed in this run.
    new_operators: int
    # Operators found in the DB and not timed again.
    reused_operators: int
    # (operator, batch, threads, device) points timed in this run.
    points: int
    # Measurements flagged noisy in this run.
    noisy: int
    # Seconds spent timing operators (and overhead calibration).
    operator_seconds: float
    # Seconds spent on the whole-model calibration.
    calibration_seconds: float
    # Calibration (factor, offset seconds) per device and thread count.
    factors: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _hardware(device: str) -> str:
    return hardware.cpu_id() if device == "cpu" else hardware.hardware_id(device)


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


def _todo(traced: TracedModel, db: ProfileDB, config: ProfileConfig, device: str) -> dict[str, list]:
    """Missing (threads, batch) points per operator key on ``device``."""
    hw = _hardware(device)
    have = {} if config.force else db.timings(set(traced.instances), hw, device)
    threads = config.threads if device == "cpu" else (1,)
    todo = {}
    for key, inst in traced.instances.items():
        grid = [(threads[0], config.batches[0])] if inst.spec.invariant else [
            (c, b) for c in threads for b in config.batches]
        missing = [(c, b) for c, b in grid if (b, c) not in have.get(key, {})]
        if missing:
            todo[key] = missing
    return todo


def _time_points(traced: TracedModel, db: ProfileDB, config: ProfileConfig, device: str,
                 todo: dict[str, list], progress: ProgressFn, done: int, total: int) -> tuple[int, int]:
    """Time the missing points (inputs built once per operator and batch), then retry the noisy ones."""
    hw, kept = _hardware(device), {}
    for attempt in range(1 + config.retries):
        for key, points in todo.items():
            inst = traced.instances[key]
            for b in sorted({b for _, b in points}):
                fn = inst.bind(b, device)
                for c in sorted(c for c, pb in points if pb == b):
                    torch.set_num_threads(c)
                    with torch.inference_mode():
                        m = measure(fn, config.policy, sync=_sync(device))
                    old = kept.get((key, b, c))
                    kept[(key, b, c)] = m = m if old is None else quieter(old, m)
                    db.put_timing(key, hw, device, b, c, Timing(m.median, m.iqr, m.noisy))
                    if attempt == 0:
                        done += 1
                    progress(done, total, f"{device} b={b} t={c} {inst.spec.name} {m.median * 1e3:.3f}ms"
                             + (f" (retry {attempt})" if attempt else ""))
                del fn
        todo = _retry_points(kept)
        if not todo:
            break
    return done, sum(m.noisy for m in kept.values())


def _retry_points(kept: dict[tuple[str, int, int], Measurement]) -> dict[str, list]:
    """Points to time again: noisy ones, and those implausibly slow next to their neighbours."""
    by_op: dict[str, dict[tuple[int, int], float]] = {}
    for (key, b, c), m in kept.items():
        by_op.setdefault(key, {})[(b, c)] = m.median
    todo: dict[str, list] = {}
    for key, times in by_op.items():
        bad = implausible(times) | {(b, c) for b, c in times if kept[(key, b, c)].noisy}
        for b, c in sorted(bad):
            todo.setdefault(key, []).append((c, b))
    return todo


def calibrate_module_call(db: ProfileDB, device: str, threads: tuple[int, ...], policy: TimingPolicy) -> None:
    """Store the cost of calling an empty non-leaf module, once per hardware, device and thread count."""
    hw = _hardware(device)
    have = db.overheads(hw, device, MODULE_CALL)

    class _Empty(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    empty, x = _Empty(), torch.zeros(1)
    for c in threads:
        if c not in have:
            torch.set_num_threads(c)
            with torch.inference_mode():
                m = measure(lambda: empty(x), TimingPolicy(policy.warmup, max(policy.min_block, 0.002), 7))
            db.put_overhead(hw, device, c, MODULE_CALL, m.median)


def measure_model(model: torch.nn.Module, example: Callable[[int], object], batch: int, threads: int,
                  policy: TimingPolicy, device: str = "cpu", retries: int = 0) -> Measurement:
    """Whole-model latency at one configuration (the calibration's and the benchmark's reference)."""
    torch.set_num_threads(threads)
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in call_args(example(batch)))
    with torch.inference_mode():
        m = measure(lambda: model(*args), policy, sync=_sync(device))
        for _ in range(retries):
            if not m.noisy:
                break
            m = quieter(m, measure(lambda: model(*args), policy, sync=_sync(device)))
    return m


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(factor, offset) of measured = factor * composed + offset, offset >= 0 (context only adds time).

    Two distinct points give the line through the extremes; when its offset would be negative (or there is
    one point) the factor alone is fitted (geometric mean of the ratios). The factor is clamped.
    """
    def clamp(f: float) -> float:
        return min(max(f, MIN_FACTOR), MAX_FACTOR)

    ratio_only = (clamp(math.exp(sum(math.log(m / c) for c, m in points) / len(points))), 0.0)
    if len({c for c, _ in points}) < 2:
        return ratio_only
    (c0, m0), (c1, m1) = min(points), max(points)
    factor = clamp((m1 - m0) / (c1 - c0))
    offset = sum(m - factor * c for c, m in points) / len(points)
    return (factor, offset) if offset >= 0 else ratio_only


def calibrate_model(model: torch.nn.Module, example: Callable[[int], object], db: ProfileDB, model_ref: str,
                    config: ProfileConfig, device: str) -> dict[int, tuple[float, float]]:
    """Fit and store, per thread count, (factor, offset) so that factor * composed + offset matches the model."""
    hw = _hardware(device)
    db.clear_calibrations(model_ref, hw, device)
    predictor = ModelPredictor.load(db.path, model_ref, hw if device == "cpu" else None, (device,))
    target = model if device == "cpu" else model.to(device)
    fits = {}
    for c in config.threads if device == "cpu" else (1,):
        points = []
        for b in config.calibration_batches:
            measured = measure_model(target, example, b, c, config.policy, device, config.retries).median
            points.append((predictor.predict(b, c, device).seconds, measured))
        fits[c] = _fit(points)
        db.put_calibration(model_ref, hw, device, *fits[c], f"batches={list(config.calibration_batches)}", c)
    return fits


def profile_model(traced: TracedModel, model: torch.nn.Module, example: Callable[[int], object], db: ProfileDB,
                  model_ref: str, config: ProfileConfig, progress: ProgressFn = lambda *a: None) -> ProfileReport:
    """Time the model's missing operators, store its graph, calibrate it; restores torch's thread count."""
    saved_threads = torch.get_num_threads()
    db.put_model(model_ref, traced.graph)
    todo = {d: _todo(traced, db, config, d) for d in config.devices}
    total = sum(len(p) for t in todo.values() for p in t.values())
    new = set().union(*(set(t) for t in todo.values())) if todo else set()
    start, done, noisy = time.perf_counter(), 0, 0
    try:
        for device in config.devices:
            calibrate_module_call(db, device, config.threads if device == "cpu" else (1,), config.policy)
            done, n = _time_points(traced, db, config, device, todo[device], progress, done, total)
            noisy += n
        op_seconds = time.perf_counter() - start
        factors = {}
        if config.calibration_batches:
            for device in config.devices:
                factors[device] = calibrate_model(model, example, db, model_ref, config, device)
    finally:
        torch.set_num_threads(saved_threads)
    if total == 0:
        progress(1, 1, "all operators already profiled")
    return ProfileReport(model_ref, traced.graph.traced_with, len(traced.graph.nodes), len(traced.instances),
                         len(new), len(traced.instances) - len(new), total, noisy, op_seconds,
                         time.perf_counter() - start - op_seconds, factors, traced.graph.notes)
