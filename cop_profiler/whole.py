"""Whole-model runs: timing a model at (batch, threads) points, the per-model calibration fitted to them, and
the untimed warm-ups that put torch and the weights in the state a serving process reaches.

The calibration fits measured = factor * composed + offset over the whole model timed at a few cheap batch
sizes (``ProfileConfig.calibration_batches``) at every thread count, in two passes kept by the faster
(``first_calibration_pass`` before the operators are timed, the second after); ``predict --plot`` and
``bench cop`` time their reference with ``measure_model`` / ``measure_grid`` by the same rules.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import replace
from typing import Callable, Iterator

import torch

from cop_profiler import hardware
from cop_profiler.db import ProfileDB
from cop_profiler.errors import USER_ERRORS, ModelRunError, first_line
from cop_profiler.predictor import ModelPredictor
from cop_profiler.profile_config import ProfileConfig
from cop_profiler.recorder import call_args
from cop_profiler.timer import Measurement, TimingPolicy, implausible, measure, quieter
from cop_profiler.tracer import check_example


def hardware_of(device: str) -> str:
    return hardware.cpu_id() if device == "cpu" else hardware.hardware_id(device)


def on_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The model itself on the CPU, else a copy of it on ``device``: ``Module.to`` moves a module in place, and
    the caller's model must stay on the CPU (its modules are the CPU operators, timed again and calibrated
    after a GPU run; a second call, or CPU timing by the caller, found them on the GPU)."""
    return model if device == "cpu" else copy.deepcopy(model).to(device)


def sync_of(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


# Bounds of the calibration factor. Running inside the model only adds time to an operator (cold caches,
# dispatch between operators): slow-downs measured here were 1.0-1.5x, and a whole model never ran more
# than a few percent faster than its operators' sum in quiet runs. A fit outside the bounds says the
# calibration runs were disturbed (shared machine), so it is clamped rather than trusted.
MIN_FACTOR, MAX_FACTOR = 0.9, 1.6


def warm_weights(model: torch.nn.Module, example: Callable[[int], object], config: ProfileConfig, device: str) -> None:
    """Call the model once, untimed, at the grid's largest batch with the most threads, so that it is
    timed in the state a serving process reaches after its first large batch, as its operators are (they
    are timed from the largest batch and the most threads down). Measured here with MKL: one 2-thread
    call of the MLP example at batch 16 or more made every later call of the same weights 15-20% faster,
    one thread and batch 1 included, and it stayed so; a 1-thread call at any batch, or the same call
    on a copy of the weights, did not. Without it, the calibration timed the MLP in the slow state and
    ``bench cop``, timing it after batch 32, in the fast one: MAPE 17-23% in five runs, the
    operators' sum alone 10-14%."""
    threads = max(config.threads) if device == "cpu" else 1
    torch.set_num_threads(threads)
    target = on_device(model, device)
    batch = max(config.batches)
    given = call_args(check_example(example, batch))
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in given)
    with torch.inference_mode(), _model_runs(batch, threads, device):
        target(*args)
        sync = sync_of(device)
        if sync is not None:
            sync()


@contextlib.contextmanager
def _model_runs(batch: int, threads: int, device: str) -> Iterator[None]:
    """Report what the user's model raises when run whole as a ModelRunError: traced at batches 2 and 3 only,
    a model can first fail here (an assertion on the batch size went up as a traceback)."""
    try:
        yield
    except USER_ERRORS as exc:  # noqa: BLE001 - user code, and torch failing inside it (out of memory)
        where = f"{threads} thread(s)" if device == "cpu" else device
        raise ModelRunError(f"the model fails on its example input (batch {batch}, {where}): "
                            f"{type(exc).__name__}: {first_line(exc)}") from exc


def measure_model(model: torch.nn.Module, example: Callable[[int], object], batch: int, threads: int,
                  policy: TimingPolicy, device: str = "cpu", retries: int = 0) -> Measurement:
    """Whole-model latency at one configuration (the calibration's and the benchmark's reference); ``model``
    must already be on ``device`` (only the inputs are moved)."""
    torch.set_num_threads(threads)
    # an example_input failing at a batch no earlier run asked of it (predict --plot's) is a TraceError too
    given = call_args(check_example(example, batch))
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in given)
    with torch.inference_mode(), _model_runs(batch, threads, device):
        m = measure(lambda: model(*args), policy, sync=sync_of(device))
        for _ in range(retries):
            if not m.noisy:
                break
            m = quieter(m, measure(lambda: model(*args), policy, sync=sync_of(device)))
    return m


def measure_grid(model: torch.nn.Module, example: Callable[[int], object], points: list[tuple[int, int]],
                 config: ProfileConfig, device: str = "cpu",
                 earlier: dict[tuple[int, int], Measurement] | None = None) -> dict[tuple[int, int], Measurement]:
    """Whole-model latency at each (batch, threads) point, by the operators' rules with a share of 1: in
    passes over all the points, ``config.effort.passes`` at least, then again where still noisy or
    implausible (up to ``config.retries`` more), keeping the faster measurement of each point. ``earlier``:
    a pass over the points made before (it counts as the first). Off the CPU a copy of the model is timed."""
    target = on_device(model, device)
    kept: dict[tuple[int, int], Measurement] = dict(earlier or {})
    todo = list(points)
    for attempt in range(1 if earlier else 0, config.effort.passes + config.retries):
        for b, c in todo:
            m = measure_model(target, example, b, c, config.policy, device)
            kept[b, c] = m if (b, c) not in kept else quieter(kept[b, c], m)
        if attempt + 1 < config.effort.passes:
            continue
        todo = sorted({p for p, m in kept.items() if m.noisy} | implausible({p: m.median for p, m in kept.items()}))
        if not todo:
            break
    return kept


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(factor, offset) of measured = factor * composed + offset, offset >= 0 (context only adds time).

    Least squares on relative residuals over all the (composed, measured) points; when the composed times
    do not spread (one point) or the offset would be negative, the factor alone is fitted (geometric mean
    of the ratios). The factor is clamped.
    """
    def clamp(f: float) -> float:
        return min(max(f, MIN_FACTOR), MAX_FACTOR)

    ratio_only = (clamp(math.exp(sum(math.log(m / c) for c, m in points) / len(points))), 0.0)
    weights = [1.0 / (m * m) for _, m in points]
    sw = sum(weights)
    swc = sum(w * c for w, (c, _) in zip(weights, points))
    swm = sum(w * m for w, (_, m) in zip(weights, points))
    spread = sw * sum(w * c * c for w, (c, _) in zip(weights, points)) - swc * swc
    if spread <= 1e-12 * swc * swc:
        return ratio_only
    factor = clamp((sw * sum(w * c * m for w, (c, m) in zip(weights, points)) - swc * swm) / spread)
    offset = (swm - factor * swc) / sw
    return (factor, offset) if offset >= 0 else ratio_only


def calibration_points(config: ProfileConfig, device: str) -> list[tuple[int, int]]:
    threads = config.threads if device == "cpu" else (1,)
    return [(b, c) for c in threads for b in config.calibration_sizes()]


def first_calibration_pass(model: torch.nn.Module, example: Callable[[int], object], config: ProfileConfig,
                           device: str) -> dict[tuple[int, int], Measurement] | None:
    """The calibration's first pass, run before the operators are timed so that its passes are minutes
    apart rather than back to back (None when the effort rule asks for a single pass, and on a GPU, whose
    calibration runs once, after its operators): of two passes kept by the
    faster, one slow stretch of a shared host now spoils a point only if it also covers the other.
    Measured here: a calibration of two adjacent passes fitted a factor of 1.18 to a ResNet whose
    operators' plain sum was within 5% of the model over the whole grid timed a minute later, and pushed
    its MAPE to 16%."""
    if not config.calibration_batches or config.effort.passes < 2 or device != "cpu":
        return None
    one = replace(config, retries=0, effort=replace(config.effort, passes=1))
    return measure_grid(model, example, calibration_points(config, device), one, device)


def calibrate_model(model: torch.nn.Module, example: Callable[[int], object], db: ProfileDB, model_ref: str,
                    config: ProfileConfig, device: str,
                    earlier: dict[tuple[int, int], Measurement] | None = None) -> dict[int, tuple[float, float]]:
    """Fit (factor, offset) so that factor * composed + offset matches the model, and store it per thread count.

    One fit over every thread count: how much slower an operator runs inside the model than alone (caches,
    dispatch between operators) is the model's, not the thread count's, and fitting each thread count on its
    own two points let their noise through (a 2-thread run of a recurrent model waits on a thread join per
    time step, and is the noisiest of all).
    """
    hw = hardware_of(device)
    threads = config.threads if device == "cpu" else (1,)
    measured = measure_grid(model, example, calibration_points(config, device), config, device, earlier)
    # the old calibration is dropped only now: an interrupted run leaves it in place
    db.clear_calibrations(model_ref, hw, device)
    predictor = ModelPredictor.load(db.path, model_ref, hw if device == "cpu" else None, (device,))
    fit = _fit([(predictor.predict(b, c, device).seconds, m.median) for (b, c), m in measured.items()])
    detail = f"batches={list(config.calibration_sizes())} threads={list(threads)}"
    for c in threads:
        db.put_calibration(model_ref, hw, device, *fit, detail, c)
    return {c: fit for c in threads}


# Seconds torch runs untimed, once per process, before the first operator is timed (``warm_up``).
WARM_UP_SECONDS = 1.0
_warmed_up = False


def warm_up(threads: tuple[int, ...], seconds: float = WARM_UP_SECONDS) -> None:
    """Run torch at every thread count for ``seconds``, once per process: the first second of a process
    (its thread pool starting, the allocator growing, the host ramping up) ran whatever was timed first
    slower. Measured here (``bench cop --models mlp``, five alternating runs each): MAPE 6.6-35.8% (median
    8.9%) without it, 4.1-9.2% (median 6.2%) with one second; three seconds did no better."""
    global _warmed_up
    if _warmed_up:
        return
    _warmed_up = True
    a = torch.randn(256, 256)
    saved = torch.get_num_threads()
    try:
        for c in threads:
            torch.set_num_threads(c)
            stop = time.perf_counter() + seconds / len(threads)
            while time.perf_counter() < stop:
                a @ a
    finally:
        torch.set_num_threads(saved)
