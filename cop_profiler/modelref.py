"""Resolving a model reference to a built model and its example-input function.

A reference is either a handler folder (``functions/mlp``) holding ``model.py`` with ``build_model()`` and
``example_input(batch_size)``, or ``package.module:function``. The function is called with no arguments
and returns either ``(model, example_input)`` or an ``nn.Module``; for a bare module the example input is
the module's own ``example_input(batch_size)`` if it defines one, else a tensor of ``(batch, *input_shape)``
from ``--input-shape`` (float32 by default; ``--input-dtype int64 --input-high N`` for token ids).
Torch is imported only when a model is built.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from cop_profiler.errors import USER_ERRORS, ModelRefError, first_line
from faas_infer.packages import import_module_of


@dataclass(frozen=True)
class InputSpec:
    """The example input of a bare ``module:function`` model."""

    # Per-item shape (without the batch dim).
    shape: tuple[int, ...]
    # torch dtype name: float32, int64, ...
    dtype: str = "float32"
    # Exclusive upper bound of integer values.
    high: int = 2

    def example(self, batch_size: int) -> Any:
        """A batch of random inputs."""
        import torch

        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelRefError(f"input_dtype={self.dtype!r}: not a torch dtype")
        size = (batch_size, *self.shape)
        if dtype.is_floating_point:
            return torch.randn(size, dtype=dtype)
        return torch.randint(0, self.high, size, dtype=dtype)


def parse_shape(text: str) -> tuple[int, ...]:
    """``3x64x64`` or ``3,64,64`` as a tuple of positive ints."""
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise ModelRefError(f"input_shape={text!r}: must be integers like 3x64x64") from None
    if not dims or min(dims) < 1:
        raise ModelRefError(f"input_shape={text!r}: must be positive integers like 3x64x64")
    return dims


@dataclass(frozen=True)
class LoadedModel:
    """A built model and how to make its inputs."""

    # The reference it came from.
    ref: str
    # The torch module (eval mode).
    model: Any
    # batch_size -> example input (a tensor or a tuple of tensors).
    example_input: Callable[[int], Any]


def _load_folder(folder: str) -> Any:
    path = os.path.join(folder, "model.py")
    if not os.path.isfile(path):
        raise ModelRefError(f"{folder}: no model.py (a handler folder needs model.py with build_model() "
                            "and example_input(batch_size))")
    # The folder is a package, as the watchdog imports it (as ``function``), so that model.py's relative
    # imports (``from .layers import Block``) work here too. A private name and an absolute search path keep
    # two folders apart (a relative path's finder is cached by its spelling, whatever the current folder).
    folder = os.path.abspath(folder)
    package = "_faas_infer_model_" + hashlib.sha1(folder.encode()).hexdigest()[:12]
    try:
        module = import_module_of(folder, package, "model")
    except USER_ERRORS as exc:  # noqa: BLE001 - user code
        raise ModelRefError(f"{path}: import failed: {type(exc).__name__}: {first_line(exc)}") from exc
    for attr in ("build_model", "example_input"):
        if not callable(getattr(module, attr, None)):
            raise ModelRefError(f"{path}: defines no {attr}()")
    return module


def _call(fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except USER_ERRORS as exc:  # noqa: BLE001 - user code
        raise ModelRefError(f"{what} failed: {type(exc).__name__}: {first_line(exc)}") from exc


def load_model(ref: str, input_spec: InputSpec | None = None) -> LoadedModel:
    """Build the model a reference names, in eval mode (as it is traced and served: predict --plot measured a
    builder's training-mode model, dropout and batch statistics included)."""
    loaded = _build(ref, input_spec)
    loaded.model.eval()
    return loaded


def _build(ref: str, input_spec: InputSpec | None) -> LoadedModel:
    import torch

    if os.path.isdir(ref):
        module = _load_folder(ref)
        built = _call(module.build_model, f"{ref}/model.py build_model()")
        if not isinstance(built, torch.nn.Module):
            raise ModelRefError(f"{ref}/model.py build_model() returned {type(built).__name__}: expected an nn.Module")
        return LoadedModel(ref, built, module.example_input)
    if ":" not in ref:
        raise ModelRefError(f"{ref!r}: neither a folder nor module:function")
    mod_name, _, fn_name = ref.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except USER_ERRORS as exc:  # noqa: BLE001 - user code
        raise ModelRefError(f"{ref}: cannot import {mod_name}: {type(exc).__name__}: {first_line(exc)}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ModelRefError(f"{ref}: {mod_name} has no function {fn_name}")
    built = _call(fn, f"{ref}()")
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module):
        return LoadedModel(ref, built[0], built[1])
    if not isinstance(built, torch.nn.Module):
        raise ModelRefError(f"{ref}() returned {type(built).__name__}: expected an nn.Module or (model, example_input)")
    if input_spec is not None:
        return LoadedModel(ref, built, input_spec.example)
    if callable(getattr(module, "example_input", None)):
        return LoadedModel(ref, built, module.example_input)
    raise ModelRefError(f"{ref}: returns a bare module; give its per-item input with --input-shape "
                        "(e.g. 3x64x64), or return (model, example_input) from the function")
