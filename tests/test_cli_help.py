"""Every ``faas-infer`` command and benchmark explains its flags: ``--help`` prints and exits 0."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from faas_infer.cli import _bench_modules, _command_modules, main
from helpers import REPO


@pytest.mark.parametrize("argv", [[name] for name in sorted(_command_modules())]
                         + [["bench", name] for name in sorted(_bench_modules())])
def test_help_prints_every_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action) for every option of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_flag_says_what_it_does_and_its_default():
    from faas_infer.cli import build_parser

    gaps = []
    for path, action in options(build_parser()):
        flag = " ".join((*path, action.option_strings[-1]))
        text = (action.help or "") % {"default": action.default, "prog": "faas-infer"}
        # The default as "default X" (or "default: X"), not only inside the description of a choice.
        if action.nargs != 0 and action.default not in (None, "", [], ()) and not re.search(r"\bdefault[: ]", text):
            gaps.append(f"{flag}: no default in {text!r}")
        if len(re.sub(r"\(?\bdefault\b[^)]*\)?", "", text).split()) < 2:
            gaps.append(f"{flag}: says only its default: {text!r}")
    assert not gaps, "\n".join(gaps)


def test_watchdog_help_names_every_setting(capsys):
    """The watchdog has no flags: its --help lists the environment WatchdogConfig reads."""
    import dataclasses

    from watchdog.config import WatchdogConfig

    with pytest.raises(SystemExit):
        main(["watchdog", "--help"])
    out = capsys.readouterr().out
    assert [f.name for f in dataclasses.fields(WatchdogConfig) if not re.search(rf"\b{f.name}\b", out)] == []


def test_python_m_watchdog_help_prints_the_same_help_and_serves_nothing(tmp_path, capsys):
    # It started the server (or failed for want of a handler) instead.
    with pytest.raises(SystemExit) as exit_:
        main(["watchdog", "--help"])
    assert exit_.value.code == 0
    expected = capsys.readouterr().out.split("\n", 1)[1]  # all but the usage line, which names the program
    done = subprocess.run([sys.executable, "-m", "watchdog", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m watchdog [-h]") and done.stdout.split("\n", 1)[1] == expected


@pytest.mark.parametrize("argv, env", [(["--log-level", "LOUD", "top", "--once"], {}),
                                       (["top", "--once"], {"LOG_LEVEL": "loud"})])
def test_a_bad_log_level_is_a_usage_error_not_a_traceback(argv, env):
    """The console script, as a user runs it: --log-level or $LOG_LEVEL naming no level."""
    script = os.path.join(os.path.dirname(sys.executable), "faas-infer")
    done = subprocess.run([script, *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": REPO, **env})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "argument --log-level: " in done.stderr and "not a logging level (one of DEBUG, INFO" in done.stderr


@pytest.mark.parametrize("argv, prog", [(["-m", "provider", "--port", "1"], "provider: configuration error: "),
                                        (["-m", "autoscaler"], "autoscaler: "),
                                        (["-m", "ops.prometheus", "--run-dir", "x", "--provider-url", "y"],
                                         "prometheus: ")])
def test_every_entry_point_refuses_a_bad_log_level_in_one_line(argv, prog, tmp_path):
    """``python -m autoscaler`` is the autoscaler image's command, ``python -m provider`` what up runs:
    $LOG_LEVEL naming no level was logging's ValueError traceback in each."""
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                          env={**os.environ, "PYTHONPATH": REPO, "LOG_LEVEL": "loud"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == prog + "LOG_LEVEL='loud': not a logging level (one of DEBUG, INFO, WARNING, ERROR, " \
                                 "CRITICAL, in any case)\n"
