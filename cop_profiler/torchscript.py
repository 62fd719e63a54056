"""TorchScript inside a model: modules made by ``torch.jit.script``/``trace`` and scripted functions run their
operators inside TorchScript, where neither torch.fx nor the eager recorder sees them, so they are refused by
name rather than profiled without their operators.
"""

from __future__ import annotations

import dis
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
            loaded = _loaded(type(module).forward.__code__)
        except (TypeError, ValueError, AttributeError):  # not Python code
            continue
        for var, value in {**names.globals, **names.nonlocals}.items():
            if var in loaded and isinstance(value, torch.jit.ScriptFunction):
                raise TraceError(f"{where} calls the TorchScript function {var}(): its operators cannot be "
                                 f"traced or recorded; {_EAGER}")


def _loaded(code) -> set[str]:
    """Names a function's code loads as globals or closure variables: ``getclosurevars`` counts every name of
    its code, attributes included, so ``self.gelu`` (an ``nn.GELU``) was taken for a scripted global ``gelu``
    and a model that never calls it was refused."""
    kinds = ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF")
    names = {i.argval for i in dis.get_instructions(code) if i.opname in kinds}
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _loaded(const)
    return names


def scripted_call(reason: str) -> TraceError:
    """The error for torch.fx failing on a TorchScript function given a traced value (``reason``: fx's first line)."""
    return TraceError(f"the model calls a TorchScript function ({reason[:120]}): its operators cannot be traced or "
                      f"recorded; {_EAGER}")


_EAGER = "profile the eager code (script it for serving only)"
