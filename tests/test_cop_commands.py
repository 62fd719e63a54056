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

def tensor_not_function():
    return nn.Linear(16, 4), torch.randn(1, 16)

def failing_input():
    return nn.Linear(16, 4), lambda b: {}["missing"]

def bigger():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4), nn.Softmax(dim=1)).eval(), \\
        lambda b: torch.randn(b, 16)

class Picky(nn.Module):
    def __init__(self, rule):
        super().__init__()
        self.fc, self.rule = nn.Linear(16, 4), rule

    def forward(self, x):
        if x.sum() > -1e9 and not self.rule(x.shape[0]):  # on a value: fx cannot trace it
            raise ValueError(f"batch {x.shape[0]} not supported")
        return self.fc(x)

def odd_batch_fails():
    return Picky(lambda b: b % 2 == 0), lambda b: torch.randn(b, 16)

def large_batch_fails():
    return Picky(lambda b: b <= 3), lambda b: torch.randn(b, 16)

def plot_batch_fails():
    return Picky(lambda b: b != 5), lambda b: torch.randn(b, 16)

POOL = torch.randn(4, 16)

class Sampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return torch.multinomial(self.fc(x).softmax(1), 1)

def sampler():
    return Sampler().eval(), lambda b: torch.randn(b, 16)

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        return self.fc(input_ids * attention_mask)

def keywords():
    return TwoInputs().eval(), lambda b: {"input_ids": torch.randn(b, 16), "attention_mask": torch.ones(b, 16)}

class Wordy(nn.Module):
    def forward(self, x):
        raise RuntimeError("shapes do not match\\n  at layer 3\\n  (see the docs)")

def wordy():
    return Wordy(), lambda b: torch.randn(b, 16)

def wordy_builder():
    raise ValueError("no checkpoint\\nlooked in: a, b, c")

def pool_of_four():
    return nn.Linear(16, 4).eval(), lambda b: POOL[torch.arange(b)]
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


@pytest.mark.gpu
def test_the_profile_hint_of_a_predict_error_names_the_db_it_read(workdir, tmp_path, capsys):
    """Run as printed, the suggested command fills the DB predict read, not the default one."""
    db = str(tmp_path / "hint.sqlite")
    assert main(["predict", f"{workdir}:build", "--db", db]) == 1
    assert f"run `faas-infer profile {workdir}:build --db {db}` first" in capsys.readouterr().err
    assert main(["profile", f"{workdir}:bigger", "--db", db, *FAST]) == 0
    capsys.readouterr()
    assert main(["predict", f"{workdir}:build", "--db", db]) == 1
    hint = capsys.readouterr().err.split("run `")[1].split("`")[0]
    assert hint == f"faas-infer profile {workdir}:build --db {db}"
    assert main([*hint.split()[1:], *FAST]) == 0
    assert main(["predict", f"{workdir}:build", "--db", db]) == 0
    assert not os.path.exists(os.path.join(".faas-infer", "profiles.sqlite"))


def test_predict_plot_on_cuda_measures_the_model_on_the_gpu(workdir, tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    db, png = str(tmp_path / "g.sqlite"), str(tmp_path / "g.png")
    assert main(["profile", f"{workdir}:build", "--db", db, *FAST]) == 0
    capsys.readouterr()
    assert main(["predict", f"{workdir}:build", "--db", db, "--device", "cuda", "--plot", png,
                 "--plot-batches", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "of a GPU" in out and os.path.exists(png)


def test_bad_models_dbs_and_plot_paths_are_one_line_errors(workdir, tmp_path, capsys):
    def error(argv, code=1):
        assert main(argv) == code
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
        return err.splitlines()[-1]

    db = str(tmp_path / "ok.sqlite")
    assert "not a function of the batch size" in error(["profile", f"{workdir}:tensor_not_function", "--db", db, *FAST])
    assert "example_input(batch_size) failed: KeyError" in error(["profile", f"{workdir}:failing_input", "--db", db,
                                                                  *FAST])
    folder = tmp_path / "noneout"
    folder.mkdir()
    (folder / "model.py").write_text("def build_model():\n    return None\n\ndef example_input(b):\n    return b\n")
    assert "returned NoneType: expected an nn.Module" in error(["profile", str(folder), "--db", db, *FAST])
    (tmp_path / "afile").write_text("")
    assert "cannot create the profile DB there" in error(["profile", f"{workdir}:build", "--db",
                                                          str(tmp_path / "afile" / "p.sqlite"), *FAST])
    assert main(["profile", f"{workdir}:build", "--db", db, *FAST]) == 0
    capsys.readouterr()
    assert "must end in .png" in error(["predict", f"{workdir}:build", "--db", db, "--batch", "2", "--threads", "1",
                                        "--plot", str(tmp_path / "x.txt")])
    assert "does not exist" in error(["predict", f"{workdir}:build", "--db", db, "--batch", "2", "--threads", "1",
                                      "--plot", str(tmp_path / "nodir" / "x.png")])
    with open(db, "r+b") as f:  # a valid header over broken pages
        f.seek(4096)
        f.write(b"\xff" * 8192)
    err = error(["predict", f"{workdir}:build", "--db", db, "--batch", "2", "--threads", "1"])
    assert db in err


def test_a_model_raising_at_some_batch_size_is_a_one_line_error(workdir, tmp_path, capsys):
    def error(argv):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
        return err.splitlines()[-1]

    db = str(tmp_path / "p.sqlite")
    # traced at batch 2 and 3; a ValueError at 3 (or at the largest batch, first run when profiling starts)
    # went up as a traceback
    assert "(batch 3): ValueError: batch 3 not supported" in error(["profile", f"{workdir}:odd_batch_fails",
                                                                   "--db", db, *FAST])
    assert "batch 4" in error(["profile", f"{workdir}:large_batch_fails", "--db", db, *FAST])
    assert main(["profile", f"{workdir}:plot_batch_fails", "--db", db, "--batches", "1,2", *FAST[2:]]) == 0
    capsys.readouterr()
    assert "batch 5" in error(["predict", f"{workdir}:plot_batch_fails", "--db", db, "--plot",
                               str(tmp_path / "p.png"), "--plot-batches", "1,5"])
    # an example_input that cannot make a plot's batch (a pool of four samples, indexed past its end at 8)
    # went up as a traceback: the profile checks only its own largest batch
    assert main(["profile", f"{workdir}:pool_of_four", "--db", db, *FAST]) == 0
    capsys.readouterr()
    assert "IndexError" in error(["predict", f"{workdir}:pool_of_four", "--db", db, "--plot",
                                  str(tmp_path / "q.png"), "--plot-batches", "1,8"])


def test_a_model_profiled_from_two_projects_folders_of_one_name_is_each_its_own(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "shared.sqlite")
    for project, width in (("a", 8), ("b", 512)):
        folder = tmp_path / project / "m"
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(
            "import torch\nfrom torch import nn\n\ndef build_model():\n    torch.manual_seed(0)\n"
            f"    return nn.Sequential(nn.Linear(16, {width}), nn.ReLU(), nn.Linear({width}, {width})).eval()\n\n"
            "def example_input(b):\n    return torch.randn(b, 16)\n")
        monkeypatch.chdir(tmp_path / project)
        assert main(["profile", "m", "--db", db, *FAST, "--no-calibrate"]) == 0
    capsys.readouterr()
    from cop_profiler.db import ProfileDB

    with ProfileDB(db) as opened:
        monkeypatch.chdir(tmp_path / "a")
        small = opened.model_graph("m")
        monkeypatch.chdir(tmp_path / "b")
        large = opened.model_graph("m")
    assert "512" not in " ".join(op.signature for op in small.ops)
    assert "512" in " ".join(op.signature for op in large.ops)


EXITING = '''
import sys
import torch
from torch import nn

class Quits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        sys.exit("forward gave up")

def build_exits():
    sys.exit(3)

def input_exits():
    return nn.Linear(4, 2), lambda b: sys.exit("no data")

def forward_exits():
    return Quits(), lambda b: torch.randn(b, 4)
'''


@pytest.mark.parametrize("function, cause", [("build_exits", "SystemExit: 3"), ("input_exits", "SystemExit: no data"),
                                             ("forward_exits", "SystemExit: forward gave up")])
def test_user_code_calling_sys_exit_is_a_one_line_error(tmp_path, function, cause):
    # user code that calls sys.exit() ended the command with its status and no "error:" line (exit code 3 and
    # nothing at all, or the bare message): SystemExit is not an Exception
    import subprocess
    import sys

    (tmp_path / "cop_exiting.py").write_text(EXITING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-m", "faas_infer.cli", "profile", f"cop_exiting:{function}",
                           "--db", str(tmp_path / "p.sqlite"), *FAST], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.splitlines()[-1].startswith("error: "), proc.stderr
    assert cause in proc.stderr.splitlines()[-1]


def test_predict_on_another_applications_sqlite_file_leaves_it_alone(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert main(["predict", "pkg.mod:build", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "not a profile DB" in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_an_operator_failing_on_generated_inputs_is_named(workdir, tmp_path, capsys):
    # multinomial, run alone on the profiler's random values (some negative), raised a bare torch message
    # ("torch failed while profiling: probability tensor contains ... element < 0") naming no operator
    assert main(["profile", f"{workdir}:sampler", "--db", str(tmp_path / "s.sqlite"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
    assert ("operator multinomial fails when run alone on the profiler's generated inputs (batch 4, 1 thread(s)): "
            "RuntimeError") in err


def test_multi_line_user_errors_and_a_dict_for_several_arguments_are_one_helpful_line(workdir, tmp_path, capsys):
    def error(ref):
        assert main(["profile", ref, "--db", str(tmp_path / "w.sqlite"), *FAST]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
        assert err.count("error: ") == 1 and err.rstrip("\n").endswith(err.splitlines()[-1]), err
        return err.splitlines()[-1]

    # the whole message went out, over several lines (torch's run to pages)
    assert error(f"{workdir}:wordy").endswith("RuntimeError: shapes do not match")
    assert error(f"{workdir}:wordy_builder").endswith("ValueError: no checkpoint")
    # a dict is the one positional argument; a forward of several said only "missing ... 'attention_mask'"
    assert "return a tuple of them in order" in error(f"{workdir}:keywords")


def test_no_calibrate_predicts_the_plain_operator_sum_after_a_calibrated_run(workdir, tmp_path, capsys):
    # the correction of the earlier, calibrated run stayed in force: --no-calibrate promises factor 1
    from cop_profiler import hardware
    from cop_profiler.db import ProfileDB

    db = str(tmp_path / "c.sqlite")
    assert main(["profile", f"{workdir}:build", "--db", db, *FAST]) == 0
    with ProfileDB(db, readonly=True) as opened:
        assert opened.calibrations(f"{workdir}:build", hardware.cpu_id(), "cpu")
    assert main(["profile", f"{workdir}:build", "--db", db, *FAST, "--no-calibrate"]) == 0
    with ProfileDB(db, readonly=True) as opened:
        assert opened.calibrations(f"{workdir}:build", hardware.cpu_id(), "cpu") == {}
    capsys.readouterr()


def test_predict_for_another_machine_names_that_machine_not_this_one(tmp_path, capsys):
    # with --hardware-id naming another machine, the errors said "no cuda profile on this machine" and "run
    # `faas-infer profile` on this machine": the profiles asked for are that machine's
    from cop_profiler.db import ProfileDB, Timing
    from cop_profiler.graph import OpGraph, OpNode
    from cop_profiler.opspec import OperatorSpec

    db = str(tmp_path / "p.sqlite")
    op = OperatorSpec.create("relu", "function:torch.relu|args=(T(float32,[-1, 8]))|kwargs={}")
    with ProfileDB(db) as opened:
        opened.put_model("pkg.mod:build", OpGraph((OpNode(0, op.key),), (op,)))
        opened.put_timings(op.key, "Other CPU", "cpu", {(1, 1): Timing(0.001), (2, 1): Timing(0.002)})
    assert main(["predict", "pkg.mod:build", "--db", db, "--hardware-id", "Other CPU", "--batch", "2"]) == 0
    assert "2.000 ms predicted" in capsys.readouterr().out
    assert main(["predict", "pkg.mod:build", "--db", db, "--hardware-id", "Other CPU | Some GPU",
                 "--device", "cuda"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert "has no cuda profile on hardware 'Other CPU | Some GPU'" in err and "this machine" not in err, err
    assert main(["predict", "pkg.mod:build", "--db", db, "--hardware-id", "Third CPU"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert "on hardware 'Third CPU'" in err and "on that machine" in err and "this machine" not in err, err
