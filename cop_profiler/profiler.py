"""Profiling: time every distinct operator not yet in the DB over batch x threads x device, store the graph.

Operators already timed on this hardware are skipped (the report says how many), so a second model that
shares operators costs only its new ones. Of the batch grid, each operator's three smallest sizes and its largest
are timed, the sizes between only where interpolation does not predict them (``sampling``); an operator's
inputs are made once, for its largest batch, and cut down for the smaller ones. Per hardware, the cost of a
non-leaf module call is calibrated once. Per model, the whole model is timed at two cheap batch sizes (1 and
8) at every thread count and one affine correction measured = factor * composed + offset is fitted to all
of them: it absorbs what isolated timing misses (inter-operator cache effects, dispatch between operators).
On the CPU the calibration's first pass runs before the operators are timed, its second after.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch

from cop_profiler import hardware
from cop_profiler.db import ProfileDB, Timing
from cop_profiler.effort import EffortRule, shares
from cop_profiler.errors import USER_ERRORS, ModelRunError, OperatorRunError, first_line
from cop_profiler.predictor import MODULE_CALL, ModelPredictor
from cop_profiler.recorder import call_args
from cop_profiler.reuse import NEAR, near
from cop_profiler.sampling import SamplingRule, needed
from cop_profiler.timer import Measurement, TimingPolicy, implausible, measure, plausible_bound, quieter
from cop_profiler.tracer import OpInstance, TracedModel, check_example, split_copies, with_copies

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
    # Batch sizes of the whole-model calibration (at every thread count), moved into the range of
    # ``batches`` (``calibration_sizes``); empty disables calibration.
    calibration_batches: tuple[int, ...] = (1, 8)
    # Re-time operators even when the DB has them.
    force: bool = False
    # Passes at the end of each round that re-time points still noisy or implausibly slow with more threads,
    # keeping the faster measurement: interference on a shared machine comes in bursts, a later try often
    # misses it.
    retries: int = 3
    # Which batch sizes of the grid are timed and which left to interpolation (tolerance 0: all timed).
    sampling: SamplingRule = SamplingRule()
    # Which points are timed again, by their operator's share of the model's time (whole models: share 1).
    effort: EffortRule = EffortRule()

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches={self.batches}: need at least one batch size >= 1")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads={self.threads}: need at least one thread count >= 1")

    def calibration_sizes(self) -> tuple[int, ...]:
        """The calibration's batch sizes, each moved into the range of ``batches``: outside it the operator
        sum is extrapolated, and a fit to it corrected the model by the extrapolation's error (a grid of
        1,2,4 was calibrated at 8, a grid of 4 alone at 1 and 8 against one flat point), and a grid kept
        small because the model does not fit in memory at larger batches still ran it at batch 8."""
        lo, hi = min(self.batches), max(self.batches)
        return tuple(sorted({min(max(b, lo), hi) for b in self.calibration_batches}))


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
    # Grid points of the new operators left to interpolation (see ``sampling``).
    interpolated: int = 0


def _hardware(device: str) -> str:
    return hardware.cpu_id() if device == "cpu" else hardware.hardware_id(device)


def _on(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The model itself on the CPU, else a copy of it on ``device``: ``Module.to`` moves a module in place, and
    the caller's model must stay on the CPU (its modules are the CPU operators, timed again and calibrated
    after a GPU run; a second call, or CPU timing by the caller, found them on the GPU)."""
    return model if device == "cpu" else copy.deepcopy(model).to(device)


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


def _grid(inst: OpInstance, config: ProfileConfig, device: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(batches, threads) an operator is profiled over: one point for a view-like operator."""
    threads = config.threads if device == "cpu" else (1,)
    return ((config.batches[0],), threads[:1]) if inst.spec.invariant else (config.batches, threads)


def _next_points(traced: TracedModel, config: ProfileConfig, device: str,
                 timed: dict[str, dict[tuple[int, int], float]]) -> dict[str, list[tuple[int, int]]]:
    """(batch, threads) points to time next per operator key, given the timings so far (``sampling``)."""
    todo = {}
    for key, inst in traced.instances.items():
        batches, threads = _grid(inst, config, device)
        points = needed(batches, threads, timed.get(key, {}), config.sampling)
        if points:
            todo[key] = points
    return todo


def _measure_op(inst: OpInstance, points: list[tuple[int, int]], config: ProfileConfig,
                device: str) -> dict[tuple[int, int], Measurement]:
    """Time one operator at ``points``; its inputs are made once, for the largest batch, and cut down."""
    found: dict[tuple[int, int], Measurement] = {}
    with _operator_runs(inst, max(b for b, _ in points), device):
        bind = inst.binder(max(b for b, _ in points), device)
    for b in sorted({b for b, _ in points}, reverse=True):
        fn = bind(b)
        # The most threads first: the first call, at the largest batch with the most threads, brings the
        # weights to the state every later call sees (``warm_weights``).
        for c in sorted((c for pb, c in points if pb == b), reverse=True):
            torch.set_num_threads(c)
            with torch.inference_mode(), _operator_runs(inst, b, device, c):
                found[b, c] = measure(fn, config.policy, sync=_sync(device))
    return found


@contextlib.contextmanager
def _operator_runs(inst: OpInstance, batch: int, device: str, threads: int = 0) -> Iterator[None]:
    """Report what an operator raises when run alone as an OperatorRunError naming it: its inputs are made
    up (random values in [-1, 1), integers below the largest recorded), which some operators refuse
    (multinomial's probabilities, cholesky's matrices); the bare torch message named no operator."""
    try:
        yield
    except USER_ERRORS as exc:  # noqa: BLE001 - torch, on inputs it may refuse, or out of memory
        where = f"{threads} thread(s)" if device == "cpu" and threads else device
        raise OperatorRunError(f"operator {inst.spec.name} fails when run alone on the profiler's generated inputs "
                               f"(batch {batch}, {where}): {type(exc).__name__}: {first_line(exc)}") from exc


@dataclass
class _Run:
    """Bookkeeping of one device's timing run: what was measured, what is left to interpolation."""

    # Best measurement so far per (key, batch, threads) timed in this run.
    kept: dict[tuple[str, int, int], Measurement]
    # Seconds per (batch, threads) per key: the DB's timings plus this run's.
    timed: dict[str, dict[tuple[int, int], float]]
    # Grid points each operator was missing at the start (the progress total counts them all).
    missing: dict[str, int]
    # Calls per forward of each operator of the model.
    calls: dict[str, int] = field(default_factory=dict)
    # Times each (key, batch, threads) was measured in this run.
    tries: dict[tuple[str, int, int], int] = field(default_factory=dict)
    # Points stored below what was measured (``_cap_implausible``), described.
    capped: list[str] = field(default_factory=list)
    done: int = 0
    interpolated: int = 0


def _time_points(traced: TracedModel, db: ProfileDB, config: ProfileConfig, device: str, run: _Run,
                 progress: ProgressFn, total: int) -> None:
    """Time the operators round by round: each round the points ``sampling`` asks for, then retries of its
    noisy or implausible ones (interference comes in bursts: a later try often misses it)."""
    hw = _hardware(device)
    todo = _next_points(traced, config, device, run.timed)
    while todo:
        this_round: set[tuple[str, int, int]] = set()
        for attempt in range(1 + config.retries):
            for key, points in todo.items():
                inst = traced.instances[key]
                for (b, c), m in _measure_op(inst, points, config, device).items():
                    old = run.kept.get((key, b, c))
                    run.kept[key, b, c] = m = m if old is None else quieter(old, m)
                    run.tries[key, b, c] = run.tries.get((key, b, c), 0) + 1
                    run.timed.setdefault(key, {})[b, c] = m.median
                    if (key, b, c) not in this_round:
                        this_round.add((key, b, c))
                        run.done += 1
                    progress(run.done, total, f"{device} b={b} t={c} {inst.spec.name} {m.median * 1e3:.3f}ms"
                             + (f" (retry {attempt})" if attempt else ""))
            todo = _retry_points(run, this_round, config.effort)
            if not todo:
                break
        for key in {k for k, _, _ in this_round}:
            _cap_implausible(run, key, traced.instances[key].spec.name, device)
            db.put_timings(key, hw, device, {(b, c): Timing(m.median, m.iqr, m.noisy)
                                             for (k, b, c), m in run.kept.items() if k == key})
        todo = _next_points(traced, config, device, run.timed)
        _settle(traced, run, set(todo), {k for k, _, _ in this_round}, progress, total, device)


def _cap_implausible(run: "_Run", key: str, name: str, device: str, cores: int | None = None) -> None:
    """Points of ``key`` still implausibly slow (more threads or a smaller batch far slower) and still
    noisy after being timed again (another process held a core each time: its blocks disagree) are stored at
    the time that makes them so, the most interference can be blamed for, and ``run.capped`` says which.
    Kept as measured, one such point predicted a layer 20x slow at 2 threads on a busy host, and said it
    was within the profile. A quiet slow point is the operator's own (an LSTM's thread joins at batch 2:
    0.50 ms with 2 threads, 0.36 with 1, the whole model agreeing) and is kept, as is any point with more
    threads than ``cores`` (threads sharing cores are slower)."""
    cores = hardware.cpu_count() if cores is None else cores
    times = {(b, c): m.median for (k, b, c), m in run.kept.items() if k == key}
    for b, c in sorted(implausible(times)):
        m = run.kept[key, b, c]
        if not m.noisy or run.tries.get((key, b, c), 0) < 2 or (device == "cpu" and c > cores):
            continue
        bound = plausible_bound(times, (b, c))  # below times[b, c]: that made it implausible
        run.capped.append(f"{device} {name} b={b} t={c}: {times[b, c] * 1e3:.3f} ms stored as {bound * 1e3:.3f} ms")
        run.kept[key, b, c] = replace(m, median=bound)
        run.timed[key][b, c] = bound


def _settle(traced: TracedModel, run: _Run, pending: set[str], touched: set[str], progress: ProgressFn,
            total: int, device: str) -> None:
    """Count the grid points of finished operators that were left to interpolation as done."""
    for key in touched - pending:
        timed_here = sum(1 for k, _, _ in run.kept if k == key)
        skipped = run.missing.get(key, 0) - timed_here
        if skipped > 0:
            run.done += skipped
            run.interpolated += skipped
            progress(run.done, total, f"{device} {traced.instances[key].spec.name}: "
                     f"{skipped} point(s) left to interpolation")


def _retry_points(run: _Run, candidates: set[tuple[str, int, int]],
                  effort: EffortRule) -> dict[str, list[tuple[int, int]]]:
    """Of ``candidates``, the points to time again (``effort``): those of an operator with a large share of
    the model's time not yet timed in enough passes, and noisy ones or ones implausibly slow next to the
    operator's other points, unless the operator's share is tiny."""
    by_op: dict[str, dict[tuple[int, int], float]] = {}
    for (key, b, c), m in run.kept.items():
        by_op.setdefault(key, {})[(b, c)] = m.median
    share = shares(run.calls, run.timed) if run.calls else {}
    todo: dict[str, list[tuple[int, int]]] = {}
    for key, times in by_op.items():
        s = share.get(key, 1.0)
        bad = implausible(times) | {(b, c) for b, c in times if run.kept[(key, b, c)].noisy}
        again = {p for p in times if run.tries.get((key, *p), 0) < effort.passes_for(s)}
        for b, c in sorted(again | (bad if effort.retries(s) else set())):
            if (key, b, c) in candidates:
                todo.setdefault(key, []).append((b, c))
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
    target = _on(model, device)
    batch = max(config.batches)
    given = call_args(check_example(example, batch))
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in given)
    with torch.inference_mode(), _model_runs(batch, threads, device):
        target(*args)
        sync = _sync(device)
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
        m = measure(lambda: model(*args), policy, sync=_sync(device))
        for _ in range(retries):
            if not m.noisy:
                break
            m = quieter(m, measure(lambda: model(*args), policy, sync=_sync(device)))
    return m


def measure_grid(model: torch.nn.Module, example: Callable[[int], object], points: list[tuple[int, int]],
                 config: ProfileConfig, device: str = "cpu",
                 earlier: dict[tuple[int, int], Measurement] | None = None) -> dict[tuple[int, int], Measurement]:
    """Whole-model latency at each (batch, threads) point, by the operators' rules with a share of 1: in
    passes over all the points, ``config.effort.passes`` at least, then again where still noisy or
    implausible (up to ``config.retries`` more), keeping the faster measurement of each point. ``earlier``:
    a pass over the points made before (it counts as the first). Off the CPU a copy of the model is timed."""
    target = _on(model, device)
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


def _calibration_points(config: ProfileConfig, device: str) -> list[tuple[int, int]]:
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
    return measure_grid(model, example, _calibration_points(config, device), one, device)


def calibrate_model(model: torch.nn.Module, example: Callable[[int], object], db: ProfileDB, model_ref: str,
                    config: ProfileConfig, device: str,
                    earlier: dict[tuple[int, int], Measurement] | None = None) -> dict[int, tuple[float, float]]:
    """Fit (factor, offset) so that factor * composed + offset matches the model, and store it per thread count.

    One fit over every thread count: how much slower an operator runs inside the model than alone (caches,
    dispatch between operators) is the model's, not the thread count's, and fitting each thread count on its
    own two points let their noise through (a 2-thread run of a recurrent model waits on a thread join per
    time step, and is the noisiest of all).
    """
    hw = _hardware(device)
    threads = config.threads if device == "cpu" else (1,)
    measured = measure_grid(model, example, _calibration_points(config, device), config, device, earlier)
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


def reuse_nearby(traced: TracedModel, db: ProfileDB) -> TracedModel:
    """``traced`` with each module operator that the DB does not hold, but holds at a nearby copy count
    (``reuse.near``), referring to that stored operator instead; the graph's notes say which. Which operators
    the DB holds, not which this machine has timed, decides, so the stored graph (one per model, for every
    machine) is the same whichever machine profiles it: a machine lacking the stored operator's timings
    times it, at its own copy count. ``--force`` re-times the operators this returns."""
    stored = {spec.signature: spec for spec in db.operators().values()}
    keys = {spec.key for spec in stored.values()}
    alias: dict[str, OpInstance] = {}
    for key, inst in traced.instances.items():
        if inst.kind != "module" or key in keys:
            continue
        base, n = split_copies(inst.spec.signature)
        found = [(abs(math.log(m / n)), m, stored[sig]) for m in range(1, 2 * n + 2)
                 if near(m, n) and (sig := with_copies(base, m)) in stored]
        if found:
            _, m, spec = min(found, key=lambda f: f[:2])
            alias[key] = replace(inst, spec=spec, copies=m)
    if not alias:
        return traced
    instances = {alias[k].spec.key if k in alias else k: alias.get(k, inst) for k, inst in traced.instances.items()}
    nodes = tuple(replace(n, op=alias[n.op].spec.key) if n.op in alias else n for n in traced.graph.nodes)
    moved = sorted(f"{traced.instances[k].copies}->{a.copies}" for k, a in alias.items())
    note = (f"{len(alias)} operator(s) are the DB's at a nearby number of weight copies "
            f"(copies {', '.join(moved)}): the same operators, their cache distance within {NEAR}x")
    graph = replace(traced.graph, nodes=nodes, ops=tuple(i.spec for i in instances.values()),
                    notes=traced.graph.notes + (note,))
    return TracedModel(graph, instances)


def profile_model(traced: TracedModel, model: torch.nn.Module, example: Callable[[int], object], db: ProfileDB,
                  model_ref: str, config: ProfileConfig, progress: ProgressFn = lambda *a: None) -> ProfileReport:
    """Time the model's missing operators, store its graph, calibrate it; restores torch's thread count.
    The first call in a process warms torch up first (``warm_up``, not counted in the report's seconds).

    Freed memory is kept in the process as the watchdog keeps it (``faas_infer.memory``), so operators
    are timed under the allocator behaviour they will be served with."""
    from faas_infer.memory import retain_freed_memory

    retain_freed_memory()
    warm_up(config.threads)
    saved_threads = torch.get_num_threads()
    traced = reuse_nearby(traced, db)
    db.put_model(model_ref, traced.graph)
    runs = {d: _start_run(traced, db, config, d) for d in config.devices}
    total = sum(sum(r.missing.values()) for r in runs.values())
    new = set().union(*(set(r.missing) for r in runs.values()))
    try:
        start = time.perf_counter()
        if "cpu" in config.devices:
            warm_weights(model, example, config, "cpu")
        first = {d: first_calibration_pass(model, example, config, d) for d in config.devices}
        calibration_seconds = time.perf_counter() - start
        start, done = time.perf_counter(), 0
        for device, run in runs.items():
            calibrate_module_call(db, device, config.threads if device == "cpu" else (1,), config.policy)
            run.done = done
            _time_points(traced, db, config, device, run, progress, total)
            done = run.done
        op_seconds = time.perf_counter() - start
        factors = {}
        for device in config.devices:
            if config.calibration_batches:
                factors[device] = calibrate_model(model, example, db, model_ref, config, device, first[device])
            else:  # factor 1, as --no-calibrate says: an earlier run's correction stayed in force
                db.clear_calibrations(model_ref, _hardware(device), device)
        calibration_seconds += time.perf_counter() - start - op_seconds
    finally:
        torch.set_num_threads(saved_threads)
    if total == 0:
        progress(1, 1, "all operators already profiled")
    kept = [m for r in runs.values() for m in r.kept.values()]
    capped = [c for r in runs.values() for c in r.capped]
    notes = traced.graph.notes + ((
        f"{len(capped)} point(s) stayed implausibly slow and noisy when timed again (another process held a core) "
        f"and were stored at the time with fewer threads or a larger batch: {'; '.join(capped[:3])}"
        f"{'; ...' if len(capped) > 3 else ''}. On a quieter machine, profile again with --force",) if capped else ())
    return ProfileReport(model_ref, traced.graph.traced_with, len(traced.graph.nodes), len(traced.instances),
                         len(new), len(traced.instances) - len(new), len(kept), sum(m.noisy for m in kept),
                         op_seconds, calibration_seconds, factors, notes,
                         sum(r.interpolated for r in runs.values()))


def _start_run(traced: TracedModel, db: ProfileDB, config: ProfileConfig, device: str) -> _Run:
    """The DB's timings on this hardware (none with ``force``) and each operator's missing grid points."""
    have = {} if config.force else db.timings(set(traced.instances), _hardware(device), device)
    todo = _next_points(traced, config, device, have)
    missing = {}
    for key in todo:
        batches, threads = _grid(traced.instances[key], config, device)
        missing[key] = sum(1 for b in set(batches) for c in threads if (b, c) not in have.get(key, {}))
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op is not None:
            calls[node.op] = calls.get(node.op, 0) + 1
    return _Run({}, {k: dict(v) for k, v in have.items()}, missing, calls)
