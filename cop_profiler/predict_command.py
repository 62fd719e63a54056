"""Predict a profiled model's batch latency from the profile DB (no torch needed).

With --plot FILE.png the model is also built and measured over --plot-batches at --threads, and predicted
versus measured latency is drawn (this part needs torch).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys

from cop_profiler.cliargs import add_common, fail, input_spec, int_list
from cop_profiler.errors import first_line

HELP = "predict a model's batch latency from its operator profiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, --batch, --threads, --device, --gpu-share, --hardware-id, --plot, --plot-batches, --db."""
    parser.add_argument("model", metavar="MODEL", help="handler folder or module:function, as profiled")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="the device whose profiles predict the latency (default cpu)")
    parser.add_argument("--gpu-share", type=float, default=1.0, help="share of the GPU in (0, 1] (default 1)")
    parser.add_argument("--hardware-id", help="predict for another machine's profiles (default: this machine)")
    parser.add_argument("--plot", metavar="FILE.png", help="also measure the model and plot predicted vs measured")
    parser.add_argument("--plot-batches", type=int_list, default=(1, 2, 4, 8, 16, 32),
                        help="batch sizes of the plot (default 1,2,4,8,16,32)")
    add_common(parser)


def _plot(args: argparse.Namespace, predictor) -> None:
    from cop_profiler.modelref import load_model
    from cop_profiler.plot import draw
    from cop_profiler.whole import measure_model
    from cop_profiler.timer import TimingPolicy

    from faas_infer.memory import retain_freed_memory

    retain_freed_memory()  # as profiled and as served: measured without it, a CNN read 30-45% faster
    loaded = load_model(args.model, input_spec(args))
    model = loaded.model.to(args.device)  # measure_model moves the inputs only: on cuda a CPU model failed
    batches = list(args.plot_batches)
    predicted = [predictor.predict(b, args.threads, args.device, args.gpu_share).seconds for b in batches]
    measured = [measure_model(model, loaded.example_input, b, args.threads, TimingPolicy(),
                              args.device, retries=2).median for b in batches]
    print(f"{'batch':>6} {'predicted ms':>13} {'measured ms':>12} {'error':>7}")
    for b, p, m in zip(batches, predicted, measured):
        print(f"{b:>6} {p * 1e3:>13.3f} {m * 1e3:>12.3f} {100 * (p - m) / m:>+6.1f}%")
    draw(args.plot, f"{args.model}: {args.threads} thread(s), {args.device}", batches, predicted, measured)
    print(f"plot written to {args.plot}")


PLOT_FORMATS = (".png", ".svg", ".pdf")


def _check_plot_path(path: str) -> None:
    """Refuse a plot file that cannot be written, before the model is measured for it."""
    from cop_profiler.errors import CopError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.splitext(path)[1].lower() not in PLOT_FORMATS:
        raise CopError(f"--plot {path}: the file must end in {', '.join(PLOT_FORMATS)}")
    if not os.path.isdir(folder):
        raise CopError(f"--plot {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise CopError(f"--plot {path}: is a folder")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CopError(f"--plot {path}: not writable")


def run(args: argparse.Namespace) -> int:
    """Print the prediction (and draw the plot)."""
    from cop_profiler.errors import CopError
    from cop_profiler.predictor import ModelPredictor

    try:
        if args.plot:
            _check_plot_path(args.plot)
        predictor = ModelPredictor.load(args.db, args.model, args.hardware_id)
        p = predictor.predict(args.batch, args.threads, args.device, args.gpu_share)
    except CopError as exc:
        return fail(exc)
    except sqlite3.DatabaseError as exc:
        return fail(CopError(f"{args.db}: the profile DB failed: {exc}"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"{args.threads} thread(s), cpu" if args.device == "cpu" else f"{args.gpu_share:g} of a GPU"
    how = "extrapolated beyond the profiled points" if p.extrapolated else "within the profiled points"
    print(f"{predictor.model_ref}: batch {args.batch}, {where}: {p.seconds * 1e3:.3f} ms predicted ({how})")
    if args.plot:
        try:
            _plot(args, predictor)
        except CopError as exc:
            return fail(exc)
        except (RuntimeError, MemoryError, OSError) as exc:  # torch out of memory, the file system
            return fail(CopError(f"--plot: measuring or drawing failed: {type(exc).__name__}: {first_line(exc)}"))
    return 0
