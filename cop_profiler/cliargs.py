"""Arguments shared by ``faas-infer profile``, ``faas-infer predict`` and ``bench cop`` (torch-free)."""

from __future__ import annotations

import argparse

from cop_profiler.db import DEFAULT_DB_PATH
from cop_profiler.errors import CopError
from cop_profiler.hardware import cpu_count
from cop_profiler.modelref import InputSpec, parse_shape
from cop_profiler.sampling import SamplingRule
from cop_profiler.timer import TimingPolicy


def int_list(text: str) -> tuple[int, ...]:
    """``1,2,4`` as a tuple of positive ints (argparse type)."""
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 1,2,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers >= 1")
    return tuple(sorted(set(values)))


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1) (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number like 0.05") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1)")
    return value


def default_threads() -> tuple[int, ...]:
    """1..cores."""
    return tuple(range(1, cpu_count() + 1))


def add_common(parser: argparse.ArgumentParser) -> None:
    """--db and the input flags for bare module:function models."""
    parser.add_argument("--db", default=DEFAULT_DB_PATH,
                        help=f"profile DB (SQLite) path (default {DEFAULT_DB_PATH} under the current directory)")
    parser.add_argument("--input-shape", help="per-item input shape for a bare module:function model, e.g. 3x64x64")
    parser.add_argument("--input-dtype", default="float32", help="input dtype with --input-shape (default float32)")
    parser.add_argument("--input-high", type=positive_int, default=2,
                        help="exclusive upper bound of integer inputs with --input-shape (default 2)")


def add_timing(parser: argparse.ArgumentParser, scope: str = "", whole_model: str = "") -> None:
    """--blocks and --tolerance (``timing_policy`` and ``sampling_rule`` read them back); ``scope`` says
    what --blocks applies to, ``whole_model`` ends --tolerance's help."""
    blocks, most, tolerance = TimingPolicy().blocks, TimingPolicy().max_blocks, SamplingRule().tolerance
    parser.add_argument("--blocks", type=positive_int, default=blocks,
                        help=f"timed blocks per point at least{scope} (more while noisy, up to {most}); "
                             f"default {blocks}")
    parser.add_argument("--tolerance", type=fraction, default=tolerance,
                        help="operators: leave a batch size to interpolation when interpolating from its "
                             "neighbours predicted a timed middle size within this relative error "
                             f"(default {tolerance:g}; 0 times every batch size){whole_model}")


def timing_policy(args: argparse.Namespace, **fields: object) -> TimingPolicy:
    """The TimingPolicy of --blocks (and ``fields``)."""
    return TimingPolicy(blocks=args.blocks, max_blocks=max(args.blocks, TimingPolicy().max_blocks), **fields)


def sampling_rule(args: argparse.Namespace) -> SamplingRule:
    """The SamplingRule of --tolerance."""
    return SamplingRule(args.tolerance)


def input_spec(args: argparse.Namespace) -> InputSpec | None:
    """The InputSpec the flags describe, or None."""
    if not args.input_shape:
        return None
    return InputSpec(parse_shape(args.input_shape), args.input_dtype, args.input_high)


def fail(exc: CopError) -> int:
    """Print a COP error as one line and return the exit status."""
    import sys

    print(f"error: {exc}", file=sys.stderr)
    return 1
