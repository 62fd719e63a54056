"""bench fsd's arguments: checked before anything is started."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bench import fsd
from helpers import REPO


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    fsd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_good_lists_parse():
    args = _parse("--workers", "1,3", "--channels", "s3", "--partitioners", "random,connectivity")
    assert (args.workers, args.channels, args.partitioners, args.batch) == ("1,3", "s3", "random,connectivity", 16)


@pytest.mark.parametrize("argv", [
    ("--channels", "foo"),  # was benchmarked as S3 in rows labelled 'foo'
    ("--partitioners", "connectivity,metis"),  # failed with a traceback after connectivity's runs
    ("--workers", "2,x"), ("--workers", "0"), ("--batch", "0"), ("--repeat", "0"), ("--layers", "0"),
    # -1 billed negative GB-seconds: the single function cost less than its invocation; nan wrote bad JSON
    ("--single-memory-mb", "-1"), ("--single-memory-mb", "0"), ("--single-memory-mb", "nan"),
    ("--single-memory-mb", "inf"), ("--single-memory-mb", "2GB"),
])
def test_bad_arguments_are_refused_naming_the_value(argv):
    with pytest.raises(argparse.ArgumentError, match=repr(argv[1].split(",")[-1])):
        _parse(*argv)


def test_the_command_refuses_a_bad_memory_in_one_line():
    out = subprocess.run([sys.executable, "-m", "faas_infer.cli", "bench", "fsd", "--single-memory-mb", "-1"],
                         env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
        "faas-infer bench fsd: error: argument --single-memory-mb: '-1': must be a number of MB > 0")
    assert _parse("--single-memory-mb", "512").single_memory_mb == 512.0


def test_a_model_or_worker_count_breaking_a_rule_is_refused_before_anything_starts(capsys):
    assert fsd.run(_parse("--neurons", "64", "--layers", "2", "--workers", "2,100")) == 2
    assert "workers=100: must be 1..64" in capsys.readouterr().err
    assert fsd.run(_parse("--neurons", "10")) == 2
    assert "window=16: must be < neurons/2 (neurons=10)" in capsys.readouterr().err
