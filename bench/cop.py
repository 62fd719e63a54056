"""COP accuracy: predicted versus measured whole-model latency over batch x threads, and profiling cost.

For the four example functions and the zoo architectures (cop_profiler/zoo.py), in one fresh profile DB
(so later models reuse earlier models' operators, as COP intends): profile operators (plus the per-model
calibration), then time the whole model over the full grid with the same timing policy and retry rules,
and compare on the full grid. Operators are timed at the grid's three smallest batches and its largest, and in between
only where interpolation misses (--tolerance); the whole model at every point.

The reference the predictions are scored against is not that one whole-model profile: on a shared host a
profile taken within a second or two can fall into a stretch where the host runs it slower (seen here: one
run timed the MLP no faster with two threads than with one at every batch, the next one 1.6x faster), and
scoring against it would count the host's noise as the predictor's error. Once every model is profiled,
the whole grid of every model is timed again in ``--reference-rounds`` rounds, each over all the models in
turn, so a point's rounds lie tens of seconds apart; a point's reference is its fastest reading over the
profile and the rounds (interference only ever adds time; the profiler keeps the faster reading the same
way). The whole-model profile is scored against the same reference (``whole %``): the error a profiler
timing the whole model at that cost would have had, the floor this host sets.

Reports MAPE per model (and of the operators' sum before the calibration), seconds of operator profiling
versus whole-model profiling, distinct operators, operator points timed and left to interpolation.

The models above share few operators (an operator is its type, parameters and per-item input shape), so
their operator profiling costs about what timing each whole model does: every distinct operator is timed
at the grid's largest batch, where most of a model's profiling time goes. The ``ceil`` column measures
that bound in each run: the whole-model grid's summed latency over the summed largest-batch latency of the
operators the model brought (those no model before it in the run holds); timing a point costs a few times
its latency for operators and whole models alike, so operator profiling that times the largest batch cannot
be cheaper than that by more than ``ceil``x, and smaller batches, calibration and per-operator set-up
come on top. The ``xtr %`` column says why the largest batch is timed: a profiler that stopped at a
quarter of it and extended each operator's line from its two largest timed sizes would predict the sum of
those lines, which is the line through the whole model's own reference at those sizes; ``xtr %`` is that
line's largest error at the sizes above them (batches 16 and 32 from 4 and 8 on the default grid). What COP saves is the second
function of an architecture. With ``--variants`` (the default) each model is then profiled again as such a
function, its head (the ``nn.Linear`` it calls last) replaced by a 100-class one with new weights, as a fine-tuned
copy for another label set would be, into the DB that holds every model above: only the new head is timed,
plus the variant's own calibration. Those rows are scored the same way and totalled apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from bench._argtypes import at_least
from cop_profiler.cliargs import add_timing, sampling_rule, timing_policy

HELP = "COP predictor accuracy (MAPE) and profiling cost versus whole-model profiling"

EXAMPLES = {"mlp": "functions/mlp", "lstm": "functions/lstm", "textcnn": "functions/textcnn",
            "resnet": "functions/resnet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--models, --batches, --threads, --estimator, --blocks, --tolerance, --no-calibrate, --reference-rounds,
    --no-variants, --db, --json."""
    parser.add_argument("--models", default="all",
                        help="comma-separated subset of mlp,lstm,textcnn,resnet,vgg,gru,transformer,mobilenet "
                             "(default all)")
    parser.add_argument("--batches", default="1,2,4,8,16,32", help="batch sizes (default 1,2,4,8,16,32)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--estimator", choices=("median", "min"), default="median",
                        help="timing statistic for operators and whole models alike (default median)")
    add_timing(parser, " for operators and whole models alike",
               ". The whole model is always timed over the full grid")
    parser.add_argument("--no-calibrate", action="store_true", help="pure operator sum (no whole-model factor)")
    parser.add_argument("--reference-rounds", type=at_least(0), default=3,
                        help="rounds over every model's grid after profiling, for the reference the predictions "
                             "are scored against (fastest reading of a point over its profile and the rounds; "
                             "0: the whole-model profile alone; default 3)")
    parser.add_argument("--no-variants", dest="variants", action="store_false",
                        help="skip the second function of each architecture (a new 100-class head, profiled "
                             "into the DB holding every model): what COP saves once an architecture is profiled")
    parser.add_argument("--db", help="profile DB to use (default: a fresh temporary one)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")


def _refs(choice: str) -> dict[str, str]:
    from cop_profiler.zoo import ZOO

    everything = {**EXAMPLES, **ZOO}
    names = list(everything) if choice == "all" else [n.strip() for n in choice.split(",") if n.strip()]
    unknown = [n for n in names if n not in everything]
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(unknown)} (choose from {', '.join(everything)})")
    return {n: everything[n] for n in names}


def _whole_model(loaded, config, batches, threads) -> dict:
    """Whole-model measurements over the grid, by the rules the calibration runs follow (``measure_grid``:
    the operators' rules for something holding all of the model's time)."""
    from cop_profiler.whole import measure_grid, warm_weights

    warm_weights(loaded.model, loaded.example_input, config, "cpu")
    return measure_grid(loaded.model, loaded.example_input, [(b, c) for c in threads for b in batches], config)


def _profile(name, loaded, db, config, batches, threads, variant_of: str | None = None) -> dict:
    """Profile one model's operators, then the whole model over the grid (the cost baseline)."""
    from cop_profiler.profiler import profile_model
    from cop_profiler.progress import Progress
    from cop_profiler.tracer import trace

    traced = trace(loaded.model, loaded.example_input)
    report = profile_model(traced, loaded.model, loaded.example_input, db, loaded.ref, config, Progress())
    start = time.perf_counter()
    whole = _whole_model(loaded, config, batches, threads)
    return {"name": name, "ref": loaded.ref, "loaded": loaded, "report": report, "whole": whole,
            "whole_s": time.perf_counter() - start, "variant_of": variant_of,
            "reference": {p: m.median for p, m in whole.items()}}


def _largest_batch_floors(runs: list[dict], db, batches: tuple[int, ...]) -> None:
    """Set each run's ``floor_s``: the summed latency of its new operators (those no earlier model of the run
    holds) at the largest batch, every thread count; a view-like operator's one point. Timing an operator
    at a point costs a few times its latency there, as timing the whole model at a point does, so a whole-
    model grid over this floor bounds how much cheaper operator profiling can be with the largest batch
    timed: the ``ceil`` column."""
    from cop_profiler import hardware

    hw, largest, seen = hardware.cpu_id(), max(batches), set()
    for run in runs:
        keys = db.model_graph(run["ref"]).op_keys()
        timings = db.timings(keys - seen, hw, "cpu")
        run["floor_s"] = sum(t for points in timings.values() for (b, _), t in points.items()
                             if b == largest or len(points) == 1)
        seen |= keys


VARIANT_CLASSES = 100


def _variant(loaded):
    """The same architecture with a new head (the ``nn.Linear`` called last in a forward pass) of
    VARIANT_CLASSES outputs and fixed-seed weights, under its own reference; None without a Linear."""
    import copy

    import torch

    from cop_profiler.modelref import LoadedModel
    from cop_profiler.recorder import call_args

    model = copy.deepcopy(loaded.model)
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: order.append(name))
             for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            model(*call_args(loaded.example_input(2)))
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        return None
    old = model.get_submodule(order[-1])
    torch.manual_seed(VARIANT_CLASSES)
    head = torch.nn.Linear(old.in_features, VARIANT_CLASSES, bias=old.bias is not None)
    head = head.to(dtype=old.weight.dtype, device=old.weight.device).eval()
    parent, _, leaf = order[-1].rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)
    return LoadedModel(f"{loaded.ref}#head{VARIANT_CLASSES}", model, loaded.example_input)


def _reference_rounds(runs: list[dict], config, rounds: int) -> None:
    """Time every model's grid ``rounds`` more times, each round over all the models in turn, keeping each
    point's fastest reading in its ``reference``."""
    from cop_profiler.whole import measure_model

    for r in range(rounds):
        print(f"== reference round {r + 1}/{rounds} ({len(runs)} models)", file=sys.stderr)
        for run in runs:
            loaded = run["loaded"]
            for (b, c) in run["reference"]:
                m = measure_model(loaded.model, loaded.example_input, b, c, config.policy)
                run["reference"][b, c] = min(run["reference"][b, c], m.median)


def _score(run: dict, db, batches, threads) -> dict:
    """Predictions, the whole-model profile and the operators' raw sum against the reference."""
    from cop_profiler.predictor import ModelPredictor

    report, whole, reference = run["report"], run["whole"], run["reference"]
    predictor = ModelPredictor.load(db.path, run["ref"], devices=("cpu",))
    fits = report.factors.get("cpu", {})
    errors, raw_errors, whole_errors, points = [], [], [], []
    for c in threads:
        factor, offset = fits.get(c, (1.0, 0.0))
        for b in batches:
            predicted = predictor.predict(b, c).seconds
            composed = (predicted - offset) / factor  # before the calibration: the operators' own sum
            truth = reference[b, c]
            errors.append(abs(predicted - truth) / truth)
            raw_errors.append(abs(composed - truth) / truth)
            whole_errors.append(abs(whole[b, c].median - truth) / truth)
            points.append({"batch": b, "threads": c, "reference_s": truth, "measured_s": whole[b, c].median,
                           "measured_noisy": whole[b, c].noisy, "predicted_s": predicted, "composed_s": composed})
    op_cost = report.operator_seconds + report.calibration_seconds
    extrap = _extrapolation_error(reference, batches, threads)
    return {"model": run["name"], "ref": run["ref"], "variant_of": run["variant_of"],
            "traced_with": report.traced_with, "nodes": report.nodes,
            "operators": report.operators, "new_operators": report.new_operators,
            "points_timed": report.points, "points_interpolated": report.interpolated,
            "operator_profile_s": op_cost, "calibration_s": report.calibration_seconds,
            "whole_model_profile_s": run["whole_s"],
            "whole_grid_latency_s": sum(m.median for m in whole.values()),
            "largest_batch_floor_s": run["floor_s"],
            "factor": fits.get(threads[0], (1.0, 0.0))[0],
            "calibration": {c: {"factor": f, "offset_ms": 1e3 * o} for c, (f, o) in fits.items()},
            "mape_pct": 100 * _mean(errors), "max_err_pct": 100 * max(errors),
            "uncalibrated_mape_pct": 100 * _mean(raw_errors),
            "whole_profile_mape_pct": 100 * _mean(whole_errors),
            "mape_by_threads": {c: 100 * _mean([e for e, p in zip(errors, points) if p["threads"] == c])
                                for c in threads},
            "extrapolation_err_pct": None if extrap is None else 100 * extrap,
            "noisy_measurements": sum(p["measured_noisy"] for p in points), "points": points}


def _extrapolation_error(reference: dict[tuple[int, int], float], batches: tuple[int, ...],
                         threads: tuple[int, ...]) -> float | None:
    """Largest relative error, over thread counts and the sizes above a quarter of the largest batch, of the
    straight line through the reference at the two largest sizes up to that quarter (None on a grid too
    small to have two sizes below it and one above)."""
    sizes = sorted(set(batches))
    below = [b for b in sizes if b <= sizes[-1] / 4]
    above = [b for b in sizes if b > sizes[-1] / 4]
    if len(below) < 2 or not above:
        return None
    (b0, b1), worst = below[-2:], 0.0
    for c in threads:
        slope = (reference[b1, c] - reference[b0, c]) / (b1 - b0)
        for b in above:
            line = reference[b1, c] + slope * (b - b1)
            worst = max(worst, abs(line - reference[b, c]) / reference[b, c])
    return worst


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _print(rows: list[dict], threads: tuple[int, ...]) -> None:
    by_threads = " ".join(f"{f't={c} %':>7}" for c in threads)
    head = (f"{'model':<14} {'traced':<8} {'calls':>5} {'ops':>4} {'new':>4} {'timed':>5} {'intp':>4} "
            f"{'op prof s':>9} {'whole s':>8} {'ceil':>5} {'xtr %':>5} "
            f"{'f(t1)':>6} {'raw %':>6} {'MAPE %':>7} {by_threads} {'max %':>6} {'whole %':>7} {'noisy':>5}")
    print(head)
    print("-" * len(head))
    firsts = [r for r in rows if not r["variant_of"]]
    _print_rows(firsts, threads)
    print("-" * len(head))
    print(f"operator profiling {_cost_line(firsts)}; "
          f"models within 10% MAPE: {sum(r['mape_pct'] <= 10 for r in firsts)}/{len(firsts)}; "
          f"raw = MAPE of the operators' sum before the calibration (f(t1): its factor); "
          f"ops = distinct operators, new = timed in this run, timed/intp = operator points timed / left to "
          f"interpolation, ceil = the whole-model grid's summed latency over the new operators' at the largest "
          f"batch (every thread count): the most operator profiling can save while it times the largest batch, "
          f"xtr = largest error of extending the whole model's line from a quarter of the largest batch to it "
          f"(why the largest batch is timed), "
          f"whole = MAPE of the whole-model profile itself against the same reference (this "
          f"host's noise floor), noisy = whole-model points still noisy after retries (spread > 10% of median)")
    seconds = [r for r in rows if r["variant_of"]]
    if seconds:
        print(f"\nsecond function of each architecture (new {VARIANT_CLASSES}-class head, profiled into the DB "
              "holding every model above)")
        print("-" * len(head))
        _print_rows(seconds, threads)
        print("-" * len(head))
        print(f"second functions: operator profiling {_cost_line(seconds)}; "
              f"within 10% MAPE: {sum(r['mape_pct'] <= 10 for r in seconds)}/{len(seconds)}; "
              f"all {len(rows)} functions: {_cost_line(rows)}")


def _ceiling(rows: list[dict]) -> str:
    """Whole-model grid latency over the new operators' largest-batch latency (``_largest_batch_floors``)."""
    floor = sum(r["largest_batch_floor_s"] for r in rows)
    return f"{sum(r['whole_grid_latency_s'] for r in rows) / floor:.2f}" if floor > 0 else "-"


def _extrap(row: dict) -> str:
    value = row.get("extrapolation_err_pct")
    return "-" if value is None else f"{value:.0f}"


def _cost_line(rows: list[dict]) -> str:
    ops = sum(r["operator_profile_s"] for r in rows)
    whole = sum(r["whole_model_profile_s"] for r in rows)
    return (f"{ops:.1f}s vs whole-model profiling {whole:.1f}s: {whole / ops if ops else float('inf'):.2f}x cheaper "
            f"(ceiling {_ceiling(rows)}x while every new operator is timed at the largest batch)")


def _print_rows(rows: list[dict], threads: tuple[int, ...]) -> None:
    for r in rows:
        per = " ".join(f"{r['mape_by_threads'][c]:>7.1f}" for c in threads)
        print(f"{r['model']:<14} {r['traced_with']:<8} {r['nodes']:>5} {r['operators']:>4} {r['new_operators']:>4} "
              f"{r['points_timed']:>5} {r['points_interpolated']:>4} "
              f"{r['operator_profile_s']:>9.2f} {r['whole_model_profile_s']:>8.2f} {_ceiling([r]):>5} {_extrap(r):>5} "
              f"{r['factor']:>6.3f} "
              f"{r['uncalibrated_mape_pct']:>6.1f} {r['mape_pct']:>7.1f} {per} {r['max_err_pct']:>6.1f} "
              f"{r['whole_profile_mape_pct']:>7.1f} {r['noisy_measurements']:>5}")


def run(args: argparse.Namespace) -> int:
    """Profile, measure, compare, print."""
    from cop_profiler.db import ProfileDB
    from cop_profiler.errors import CopError
    from cop_profiler.modelref import load_model
    from faas_infer.memory import retain_freed_memory

    retain_freed_memory()  # as served (the watchdog) and as profiled, for the whole-model runs too
    from cop_profiler.profiler import ProfileConfig

    batches = tuple(int(b) for b in args.batches.split(","))
    threads = tuple(int(c) for c in args.threads.split(","))
    policy = timing_policy(args, estimator=args.estimator)
    config = ProfileConfig(batches, threads, ("cpu",), policy, () if args.no_calibrate else (1, 8),
                           sampling=sampling_rule(args))
    refs = _refs(args.models)
    tmp = tempfile.TemporaryDirectory() if args.db is None else None
    path = args.db or os.path.join(tmp.name, "profiles.sqlite")
    if args.reference_rounds < 0:
        raise SystemExit(f"--reference-rounds={args.reference_rounds}: must be >= 0")
    try:
        with ProfileDB(path) as db:
            runs = []
            for name, ref in refs.items():
                print(f"== {name} ({ref})", file=sys.stderr)
                runs.append(_profile(name, load_model(ref), db, config, batches, threads))
            for first in list(runs) if args.variants else ():
                try:
                    variant = _variant(first["loaded"])
                    if variant is not None:
                        print(f"== {first['name']}, second function ({variant.ref})", file=sys.stderr)
                        runs.append(_profile(f"{first['name']}+head", variant, db, config, batches, threads,
                                             first["name"]))
                except (CopError, RuntimeError) as exc:  # a head the model's output does not end in
                    print(f"== {first['name']}: second function skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
            _largest_batch_floors(runs, db, batches)
            _reference_rounds(runs, config, args.reference_rounds)
            rows = [_score(run, db, batches, threads) for run in runs]
    finally:
        if tmp is not None:
            tmp.cleanup()
    _print(rows, threads)
    if args.json:
        from bench.common import write_json

        write_json(args.json, {"batches": batches, "threads": threads, "estimator": args.estimator,
                               "reference_rounds": args.reference_rounds, "variant_classes": VARIANT_CLASSES,
                               "rows": rows}, indent=1)
    return 0
