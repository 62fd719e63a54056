"""Running a model once while recording every operator call: through torch.fx, or eagerly as a fallback.

Both paths return the same ``Call`` list in execution order with concrete arguments and the producing calls
of every tensor input. The fx path interprets a ``symbolic_trace`` graph node by node; the eager path
(for models fx cannot trace: control flow on tensor values, non-traceable Python) runs the model itself
under a ``TorchFunctionMode`` plus hooks on leaf modules, and links calls through tensor identity. It
records the path the example inputs take: a model whose operators change with the values of its input is
profiled for that path only, and one whose shapes do (boolean-mask selection, packed sequences) cannot be.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch.overrides import TorchFunctionMode

from cop_profiler.template import tensors_in


@dataclass(frozen=True)
class Call:
    """One recorded operator call."""

    # "module", "function" or "method".
    kind: str
    # The leaf module, the callable, or the method name.
    target: Any
    # Human label: module path or function name.
    label: str
    # Concrete positional arguments.
    args: tuple
    # Concrete keyword arguments.
    kwargs: dict
    # The call's result.
    out: Any
    # Indices of the earlier calls that produced its tensor inputs.
    inputs: tuple[int, ...]
    # True when every tensor result shares storage with an input without being one (a view).
    shares_input: bool = False


def values_at_call(value: object) -> object:
    """``value`` with its integer and boolean tensors copied, as they are when the call is made: a template
    reads their values (index bounds, mask patterns), which a later in-place op of the same forward changed
    (``mask.logical_not_()`` after ``masked_fill(mask)``: the fill recorded the flipped mask)."""
    if isinstance(value, torch.Tensor):
        return value if value.dtype.is_floating_point or value.dtype.is_complex else value.clone()
    if isinstance(value, (tuple, list)):
        items = [values_at_call(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: values_at_call(v) for k, v in value.items()}
    return value


def shares_input(args: tuple, kwargs: dict, out: object) -> bool:
    """True when every tensor of ``out`` is a new tensor on the storage of a tensor of the arguments."""
    ins, outs = list(tensors_in((args, kwargs))), list(tensors_in(out))
    if not outs or not ins:
        return False
    storages = {t.untyped_storage().data_ptr() for t in ins}
    return all(o.untyped_storage().data_ptr() in storages and not any(o is t for t in ins) for o in outs)


def is_leaf(module: torch.nn.Module) -> bool:
    """torch.fx's rule: modules of torch.nn (except Sequential) are operators; others are traced through."""
    name = type(module).__module__
    return (name.startswith("torch.nn") or name.startswith("torch.ao.nn")) and not isinstance(
        module, torch.nn.Sequential)


def tensor_method(func: Any) -> str | None:
    """The name of the Tensor method ``func`` is, else None. ``x.mean(1)`` reaches ``__torch_function__`` as
    ``TensorBase.mean``, which torch.fx records as the method call ``mean``: recorded under that name, one
    operator is one operator whichever way its model was traced (as a function it was ``.TensorBase.mean``,
    timed again for every model the fallback traced)."""
    owner, _, name = getattr(func, "__qualname__", "").rpartition(".")
    return name if owner in ("TensorBase", "Tensor") and callable(getattr(torch.Tensor, name, None)) else None


# Tensor dunders that only a Python operator calls, as torch.fx records that operator: its function, and
# whether the tensor (the dunder's self) is its second operand (``1 - x`` is ``x.__rsub__(1)``, fx's
# ``sub(1, x)``). ``x + y``, ``x * y``, ``x @ y``, ``-x`` or ``x < y`` reach the recorder as ``add``, ``mul``,
# ``matmul``, ``neg``, ``lt``, as ``x.add(y)`` does: they stay those methods (fx's ``operator.add`` is another
# operator of the same cost).
_OPERATORS = {"__getitem__": (operator.getitem, False), "__floordiv__": (operator.floordiv, False),
              "__and__": (operator.and_, False), "__or__": (operator.or_, False), "__xor__": (operator.xor, False),
              "__invert__": (operator.invert, False), "__lshift__": (operator.lshift, False),
              "__rshift__": (operator.rshift, False), "__eq__": (operator.eq, False),
              "__rsub__": (operator.sub, True), "__rdiv__": (operator.truediv, True),
              "__rtruediv__": (operator.truediv, True), "__rfloordiv__": (operator.floordiv, True),
              "__rmod__": (operator.mod, True), "__rpow__": (operator.pow, True),
              "__rmatmul__": (operator.matmul, True), "__rlshift__": (operator.lshift, True),
              "__rrshift__": (operator.rshift, True)}


def fx_call(func: Any, args: tuple) -> tuple[str, Any, str, tuple]:
    """(kind, target, label, args) of a call the recorder sees as torch.fx records it: a Tensor method as
    the method, a Python operator as its ``operator`` function, a property (``x.T``, a descriptor's
    ``__get__`` called with ``x`` alone, the same for every property) as ``getattr(x, "T")``; anything else
    as the function it is."""
    method = tensor_method(func)
    if method in _OPERATORS and (not _OPERATORS[method][1] or len(args) == 2):  # x.__rsub__(other=1): a method
        target, swapped = _OPERATORS[method]
        return "function", target, target.__name__, (args[1], args[0], *args[2:]) if swapped else args
    if method is not None:
        return "method", method, method, args
    descriptor = getattr(func, "__self__", None)
    owner = getattr(descriptor, "__objclass__", object)
    if getattr(func, "__name__", "") == "__get__" and owner is not object and isinstance(owner, type) \
            and issubclass(torch.Tensor, owner) and len(args) == 1:
        return "function", getattr, "getattr", (args[0], descriptor.__name__)
    return "function", func, getattr(func, "__name__", str(func)), args


def call_args(example: object) -> tuple:
    """A model's positional arguments from an example input: a tuple is the arguments, anything else (a
    tensor, a dict, a list of tensors) is the one argument."""
    return example if isinstance(example, tuple) else (example,)


def fresh(example: object) -> object:
    """A copy of an example input's tensors for one run: a model that changes its input in place (``ids +=
    1``, ``mask.logical_not_()``) ran the next recording on the changed values (an embedding's ids out of
    range failed as the model failing on its example input)."""
    if isinstance(example, torch.Tensor):
        return example.clone()
    if isinstance(example, (tuple, list)):
        items = [fresh(v) for v in example]
        return tuple(items) if isinstance(example, tuple) else items
    if isinstance(example, dict):
        return {k: fresh(v) for k, v in example.items()}
    return example


class _FxRecorder(torch.fx.Interpreter):
    """Interprets a GraphModule, recording call nodes."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.calls: list[Call] = []
        self._index: dict[torch.fx.Node, int] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        saved_args, saved_kwargs = values_at_call((args, kwargs))
        out = getattr(self, n.op)(n.target, args, kwargs)
        inputs = tuple(sorted({self._index[x] for x in n.all_input_nodes if x in self._index}))
        if n.op == "call_module":
            target, kind, label = self.module.get_submodule(n.target), "module", str(n.target)
        elif n.op == "call_method":
            target, kind, label = n.target, "method", str(n.target)
        else:
            target, kind, label = n.target, "function", getattr(n.target, "__name__", str(n.target))
        self._index[n] = len(self.calls)
        self.calls.append(Call(kind, target, label, saved_args, saved_kwargs, out, inputs,
                               shares_input(args, kwargs, out)))
        return out


def record_fx(gm: torch.fx.GraphModule, example: object) -> list[Call]:
    """Calls of one interpreted forward of a traced GraphModule."""
    recorder = _FxRecorder(gm)
    with torch.inference_mode():
        recorder.run(*call_args(example))
    return recorder.calls


class _EagerRecorder(TorchFunctionMode):
    """Records torch functions called outside leaf modules, and leaf module calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.depth = 0
        self.containers = 0
        self._producer: dict[int, int] = {}
        self._keep: list[Any] = []
        self._pending: list[tuple[tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        saved = values_at_call((args, kwargs)) if self.depth == 0 else None
        out = func(*args, **kwargs)
        if saved is not None:
            # ``x[i] = v`` returns None: its result is the tensor it wrote to (kept only with a tensor result, its
            # cost was left out of the graph)
            result = args[0] if out is None and tensor_method(func) == "__setitem__" else out
            kind, target, label, args = fx_call(func, args)
            saved = (fx_call(func, saved[0])[3], saved[1])
            self.add(kind, target, label, args, kwargs, result, saved)
        return out

    def add(self, kind: str, target: Any, label: str, args: tuple, kwargs: dict, out: Any,
            saved: tuple[tuple, dict]) -> None:
        """Record a call whose result holds a tensor; ``saved``: its arguments' ``values_at_call``."""
        outs = list(tensors_in(out))
        if not outs:
            return
        inputs = {self._producer[id(t)] for t in tensors_in((args, kwargs)) if id(t) in self._producer}
        index = len(self.calls)
        self.calls.append(Call(kind, target, label, *saved, out, tuple(sorted(inputs)),
                               shares_input(args, kwargs, out)))
        self._keep.append(out)
        for t in outs:
            self._producer[id(t)] = index

    def pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Enter a module: leaf modules suppress recording of what they call inside."""
        if not is_leaf(module):
            self.containers += 1
            return
        self.depth += 1
        self._pending.append((args, kwargs, values_at_call((args, kwargs))))

    def post_hook(self, name: str):
        """Hook recording a leaf module's call on exit."""
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            self.depth -= 1
            call_args_, call_kwargs, saved = self._pending.pop()
            if self.depth == 0:
                self.add("module", module, name, call_args_, call_kwargs, out, saved)
        return hook


def record_eager(model: torch.nn.Module, example: object) -> tuple[list[Call], int]:
    """Calls of one eager forward, and the number of non-leaf module calls (containers) in it."""
    recorder = _EagerRecorder()
    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
        if is_leaf(module):
            handles.append(module.register_forward_hook(recorder.post_hook(name or "model"), with_kwargs=True))
    try:
        with torch.inference_mode(), recorder:
            model(*call_args(example))
    finally:
        for handle in handles:
            handle.remove()
    return recorder.calls, recorder.containers
