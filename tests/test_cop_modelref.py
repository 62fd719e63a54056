"""Model references: handler folders, module:function in its three forms, and clear errors."""

from __future__ import annotations

import pytest
import torch

from cop_profiler.errors import ModelRefError
from cop_profiler.modelref import InputSpec, load_model, parse_shape

MODELS = '''
import torch
from torch import nn

def pair():
    return nn.Linear(4, 2), lambda b: torch.randn(b, 4)

def bare():
    return nn.Linear(6, 2)

def broken():
    raise RuntimeError("no weights")

def not_a_model():
    return 42

def training():
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)), lambda b: torch.randn(b, 4)
'''


@pytest.fixture
def models_module(tmp_path, monkeypatch, request):
    name = f"cop_models_{request.node.name}"
    (tmp_path / f"{name}.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_handler_folder():
    loaded = load_model("functions/mlp")
    assert isinstance(loaded.model, torch.nn.Module)
    assert loaded.example_input(3).shape == (3, 256)


def test_handler_folder_is_a_package(tmp_path):
    # As the watchdog imports it: model.py may import its sibling modules relatively.
    (tmp_path / "layers.py").write_text("from torch import nn\n\ndef block():\n    return nn.Linear(5, 3)\n")
    (tmp_path / "model.py").write_text("import torch\nfrom .layers import block\n\ndef build_model():\n"
                                       "    return block()\n\ndef example_input(b):\n"
                                       "    return torch.randn(b, 5)\n")
    loaded = load_model(str(tmp_path))
    assert loaded.model(loaded.example_input(2)).shape == (2, 3)


def test_module_function_forms(models_module):
    assert load_model(f"{models_module}:pair").example_input(2).shape == (2, 4)
    loaded = load_model(f"{models_module}:bare", InputSpec((6,)))
    assert loaded.example_input(5).shape == (5, 6)
    tokens = InputSpec((7,), "int64", 10).example(3)
    assert tokens.dtype == torch.int64 and int(tokens.max()) < 10


def test_errors_name_the_problem(models_module, tmp_path):
    cases = {f"{models_module}:bare": "--input-shape", f"{models_module}:broken": "no weights",
             f"{models_module}:not_a_model": "returned int", f"{models_module}:missing": "no function missing",
             "no_such_module_xyz:build": "cannot import", "no/such/folder": "neither a folder"}
    for ref, message in cases.items():
        with pytest.raises(ModelRefError, match=message):
            load_model(ref)
    (tmp_path / "emptyfn").mkdir()
    with pytest.raises(ModelRefError, match="no model.py"):
        load_model(str(tmp_path / "emptyfn"))


def test_parse_shape():
    assert parse_shape("3x64x64") == (3, 64, 64) == parse_shape("3,64,64")
    for bad in ("", "3xa", "0x2"):
        with pytest.raises(ModelRefError):
            parse_shape(bad)


def test_models_are_built_in_eval_mode(models_module, tmp_path):
    # left in training mode, predict --plot measured dropout and batch statistics (BatchNorm1d raised at
    # batch 1) while the profile had traced the model in eval mode
    loaded = load_model(f"{models_module}:training")
    assert not any(m.training for m in loaded.model.modules())
    assert loaded.model(loaded.example_input(1)).shape == (1, 4)
    folder = tmp_path / "trainfn"
    folder.mkdir()
    (folder / "model.py").write_text("import torch\nfrom torch import nn\n\ndef build_model():\n"
                                     "    return nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))\n\n"
                                     "def example_input(b):\n    return torch.randn(b, 4)\n")
    assert not load_model(str(folder)).model.training
