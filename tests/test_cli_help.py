"""Every ``faas-infer`` command and benchmark explains its flags: ``--help`` prints and exits 0."""

from __future__ import annotations

import pytest

from faas_infer.cli import _bench_modules, _command_modules, main


@pytest.mark.parametrize("argv", [[name] for name in sorted(_command_modules())]
                         + [["bench", name] for name in sorted(_bench_modules())])
def test_help_prints_every_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out
