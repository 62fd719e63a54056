"""`faas-infer profile` and `faas-infer predict` end to end (in process), with a tiny model and a small grid."""

from __future__ import annotations

import os

import pytest

from faas_infer.cli import main

TINY = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval(), lambda b: torch.randn(b, 16)

def bigger():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4), nn.Softmax(dim=1)).eval(), \\
        lambda b: torch.randn(b, 16)
'''

FAST = ["--batches", "1,2,4", "--threads", "1", "--blocks", "3", "--quiet"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, request):
    name = f"cop_tiny_{request.node.name}"
    (tmp_path / f"{name}.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_profile_then_predict_with_the_default_db(workdir, capsys):
    assert main(["profile", f"{workdir}:build", *FAST]) == 0
    out, err = capsys.readouterr()
    assert "traced with torch.fx" in out and "3 distinct operators" in out
    assert os.path.exists(os.path.join(".faas-infer", "profiles.sqlite"))
    assert "GPU" in err or "gpu" in err  # the one-line no-GPU notice on this machine

    assert main(["profile", f"{workdir}:bigger", *FAST]) == 0
    out, _ = capsys.readouterr()
    assert "3 of 4 operators were already in the DB: not timed again" in out

    assert main(["predict", f"{workdir}:build", "--batch", "2"]) == 0
    out, _ = capsys.readouterr()
    assert "ms predicted (within the profiled points)" in out
    assert main(["predict", f"{workdir}:build", "--batch", "64"]) == 0
    assert "extrapolated" in capsys.readouterr().out


def test_predict_plot_writes_a_png(workdir, tmp_path, capsys):
    db = str(tmp_path / "x.sqlite")
    assert main(["profile", f"{workdir}:build", "--db", db, "--no-calibrate", *FAST]) == 0
    png = str(tmp_path / "p.png")
    assert main(["predict", f"{workdir}:build", "--db", db, "--plot", png, "--plot-batches", "1,4"]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "measured ms" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(workdir, tmp_path, capsys):
    assert main(["profile", f"{workdir}:nothing", "--db", str(tmp_path / "e.sqlite"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert main(["predict", f"{workdir}:build", "--db", str(tmp_path / "none.sqlite")]) == 1
    assert "no profile DB" in capsys.readouterr().err
