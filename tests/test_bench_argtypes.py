"""The benchmarks' shared flag types: a bad value is refused in one line, before anything starts."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bench._argtypes import at_least, seconds
from helpers import REPO


@pytest.mark.parametrize("argv, message", [
    # each ran: batching with --duration -1 reported p99 inf at every rate, nan started serving anyway
    (["batching", "--duration", "-1"], "argument --duration: '-1': must be a number of seconds > 0"),
    (["batching", "--duration", "nan"], "argument --duration: 'nan': must be a number of seconds > 0"),
    (["batching", "--bisect", "-1"], "argument --bisect: '-1': must be a whole number >= 0"),
    (["batching", "--tries", "0"], "argument --tries: '0': must be a whole number >= 1"),
    # queue measured nothing at --duration 0 (a share of 0 for every batch size), hung at --concurrency 0
    (["queue", "--duration", "0"], "argument --duration: '0': must be a number of seconds > 0"),
    (["queue", "--concurrency", "0"], "argument --concurrency: '0': must be a whole number >= 1"),
    # plan: a ConfigError traceback (solver_time_limit) and an IndexError traceback (no timing to take)
    (["plan", "--time-limit", "-1"], "argument --time-limit: '-1': must be a number of seconds > 0"),
    (["plan", "--repeat", "0"], "argument --repeat: '0': must be a whole number >= 1"),
    (["churn", "--ticks", "0"], "argument --ticks: '0': must be a whole number >= 1"),  # 'over 0 ticks'
    (["cop", "--reference-rounds", "-1"], "argument --reference-rounds: '-1': must be a whole number >= 0"),
])
def test_a_bad_flag_is_refused_in_one_line_before_the_benchmark_starts(argv, message):
    out = subprocess.run([sys.executable, "-m", "faas_infer.cli", "bench", *argv], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.splitlines()[-1] == f"faas-infer bench {argv[0]}: error: {message}", out.stderr


def test_good_values_parse():
    assert at_least(0)("0") == 0 and at_least(1)(" 12 ") == 12
    assert seconds("0.5") == 0.5 and seconds("3") == 3.0
    for bad in ("inf", "-0", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="'1.5': must be a whole number >= 1"):
        at_least(1)("1.5")
