"""Profile torch models operator by operator into the profile DB.

MODEL is a handler folder (functions/mlp: model.py with build_model() and example_input(batch_size)) or
module:function returning an nn.Module or (model, example_input); a bare module takes --input-shape.
Every distinct operator (type, parameters, per-item input shape) is timed over --batches x --threads
(and the GPU where NVML and torch see one): the three smallest batches and the largest always, the sizes between only
where interpolation does not predict them within --tolerance; operators already in the DB for this
hardware are skipped.
The DB defaults to .faas-infer/profiles.sqlite under the current directory (--db to change it).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from cop_profiler.cliargs import (add_common, add_timing, default_threads, fail, input_spec, int_list, sampling_rule,
                                  timing_policy)
from cop_profiler.errors import first_line
from cop_profiler.hardware import cpu_count

HELP = "profile a torch model's operators (COP) into the profile DB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL..., --db, --batches, --threads, --device, --force, --no-calibrate, input flags."""
    parser.add_argument("models", nargs="+", metavar="MODEL", help="handler folder or module:function")
    add_common(parser)
    parser.add_argument("--batches", type=int_list, default=(1, 2, 4, 8, 16, 32),
                        help="batch sizes to time (default 1,2,4,8,16,32)")
    parser.add_argument("--threads", type=int_list, default=None, help="CPU thread counts (default 1..cores)")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="auto: CPU plus the GPU when one is usable; cpu: CPU only (default auto)")
    add_timing(parser)
    parser.add_argument("--force", action="store_true", help="re-time operators already in the DB")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="skip the whole-model calibration (factor 1: pure operator sum)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def devices(choice: str) -> tuple[tuple[str, ...], str]:
    """Devices to profile and a one-line notice when the GPU is left out."""
    if choice == "cpu":
        return ("cpu",), ""
    from cop_profiler.hardware import gpus

    report = gpus()
    if not report.devices:
        return ("cpu",), report.notice
    import torch

    if not torch.cuda.is_available():
        return ("cpu",), f"GPU {report.devices[0].name} found, but torch has no CUDA support; profiling CPU only"
    return ("cpu", "cuda"), ""


def summary(report) -> str:
    """One paragraph about one profiled model."""
    how = "torch.fx" if report.traced_with == "fx" else "eager recording (torch.fx failed)"
    lines = [f"{report.model_ref}: traced with {how}: {report.nodes} calls, {report.operators} distinct operators",
             f"  timed {report.new_operators} new operators ({report.points} points, {report.noisy} noisy; "
             f"{report.interpolated} left to interpolation) in {report.operator_seconds:.1f}s"]
    if report.reused_operators:
        lines.append(f"  {report.reused_operators} of {report.operators} operators were already in the DB: "
                     "not timed again")
    for device, fits in report.factors.items():
        text = ", ".join(f"{c} thread(s): {f:.3f} x sum {o * 1e3:+.3f} ms" for c, (f, o) in sorted(fits.items()))
        lines.append(f"  {device} calibration (whole model vs operator sum): {text} "
                     f"({report.calibration_seconds:.1f}s)")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Profile each model in turn."""
    from cop_profiler.db import ProfileDB
    from cop_profiler.errors import CopError
    from cop_profiler.modelref import load_model
    from cop_profiler.profiler import ProfileConfig, profile_model
    from cop_profiler.progress import Progress
    from cop_profiler.tracer import check_example, trace

    devs, notice = devices(args.device)
    if notice:
        print(notice, file=sys.stderr)
    over = [c for c in args.threads or () if c > cpu_count()]
    if over:
        print(f"note: --threads {','.join(map(str, over))} exceeds this machine's {cpu_count()} cores: those points "
              "time threads sharing cores, and predictions between them are interpolated from them", file=sys.stderr)
    policy = timing_policy(args)
    config = ProfileConfig(args.batches, args.threads or default_threads(), devs, policy,
                           () if args.no_calibrate else (1, 8), args.force, sampling=sampling_rule(args))
    try:
        with ProfileDB(args.db) as db:
            for ref in args.models:
                loaded = load_model(ref, input_spec(args))
                traced = trace(loaded.model, loaded.example_input)
                check_example(loaded.example_input, max(config.batches))
                report = profile_model(traced, loaded.model, loaded.example_input, db, ref, config,
                                       Progress(enabled=not args.quiet))
                print(summary(report))
    except CopError as exc:
        return fail(exc)
    except sqlite3.DatabaseError as exc:  # a file that opened but cannot be written or read through
        return fail(CopError(f"{args.db}: the profile DB failed: {exc}"))
    except (RuntimeError, MemoryError) as exc:  # torch: e.g. a batch too large for this machine's memory
        return fail(CopError(f"torch failed while profiling (batches {list(config.batches)}): {first_line(exc)}"))
    print(f"profiles stored in {args.db}")
    return 0
