"""Profiling: time every distinct operator not yet in the DB over batch x threads x device, store the graph.

Operators already timed on this hardware are skipped (the report says how many), so a second model that
shares operators costs only its new ones. Of the batch grid, each operator's three smallest sizes and its largest
are timed, the sizes between only where interpolation does not predict them (``sampling``); an operator's
inputs are made once, for its largest batch, and cut down for the smaller ones. Per hardware, the cost of a
non-leaf module call is calibrated once. Per model, the whole model is timed at two cheap batch sizes (1 and
8) at every thread count and one affine correction measured = factor * composed + offset is fitted to all
of them: it absorbs what isolated timing misses (inter-operator cache effects, dispatch between operators).
On the CPU the calibration's first pass runs before the operators are timed, its second after (``whole``).
What to profile and what a run did are ``profile_config``'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch

from cop_profiler import hardware
from cop_profiler.db import ProfileDB, Timing
from cop_profiler.effort import EffortRule, shares
from cop_profiler.errors import USER_ERRORS, OperatorRunError, first_line
from cop_profiler.predictor import MODULE_CALL
from cop_profiler.profile_config import ProfileConfig, ProfileReport
from cop_profiler.reuse import NEAR, near
from cop_profiler.sampling import needed
from cop_profiler.timer import Measurement, TimingPolicy, implausible, measure, plausible_bound, quieter
from cop_profiler.tracer import OpInstance, TracedModel, split_copies, with_copies
from cop_profiler.whole import calibrate_model, first_calibration_pass, hardware_of, sync_of, warm_up, warm_weights

__all__ = ["ProfileConfig", "ProfileReport", "ProgressFn", "calibrate_module_call", "profile_model", "reuse_nearby"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


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
                found[b, c] = measure(fn, config.policy, sync=sync_of(device))
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
    hw = hardware_of(device)
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
    hw = hardware_of(device)
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
                db.clear_calibrations(model_ref, hardware_of(device), device)
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
    have = {} if config.force else db.timings(set(traced.instances), hardware_of(device), device)
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
