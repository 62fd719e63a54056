"""TorchScript inside a model: modules made by ``torch.jit.script``/``trace`` and scripted functions run their
operators inside TorchScript, where neither torch.fx nor the eager recorder sees them, so they are refused by
name rather than profiled without their operators.
"""

from __future__ import annotations

import inspect

import torch

from cop_profiler.errors import TraceError


def check_not_scripted(model: torch.nn.Module) -> None:
    """A TraceError naming the first TorchScript module (``torch.jit.script`` or ``trace``) of ``model``, or
    TorchScript function its forward methods name: their operators run inside TorchScript, where neither
    torch.fx nor the recorder sees them. A module takes no hooks (the recorder's failure was reported as the
    model failing on its example input); a function's operators were left out of the graph unsaid."""
    for name, module in model.named_modules():
        where = f"submodule {name!r}" if name else "the model"
        if isinstance(module, torch.jit.ScriptModule):
            raise TraceError(f"{where} is a TorchScript module ({type(module).__name__}): its operators cannot be "
                             f"traced or recorded; {_EAGER}")
        try:
            names = inspect.getclosurevars(type(module).forward)
        except (TypeError, ValueError):  # not Python code
            continue
        for var, value in {**names.globals, **names.nonlocals}.items():
            if isinstance(value, torch.jit.ScriptFunction):
                raise TraceError(f"{where} calls the TorchScript function {var}(): its operators cannot be "
                                 f"traced or recorded; {_EAGER}")


def scripted_call(reason: str) -> TraceError:
    """The error for torch.fx failing on a TorchScript function given a traced value (``reason``: fx's first line)."""
    return TraceError(f"the model calls a TorchScript function ({reason[:120]}): its operators cannot be traced or "
                      f"recorded; {_EAGER}")


_EAGER = "profile the eager code (script it for serving only)"
