"""Tracing a torch model into its operator graph and the distinct operators it is made of.

The model runs at batch 2 and at batch 3 (torch.fx first; the eager recorder when fx fails), call by call;
comparing the two runs tells which dims and ints scale with the batch, so every operator becomes a
signature (type, parameters, per-item input shapes) plus a template that rebuilds its inputs at any batch.
"""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx

from cop_profiler.errors import USER_ERRORS, TraceError, first_line
from cop_profiler.graph import OpGraph, OpNode
from cop_profiler.opspec import OperatorSpec
from cop_profiler.recorder import Call, fresh, record_eager, record_fx
from cop_profiler.reuse import copies
from cop_profiler.template import cut, describe, instantiate, templatize, tensors_in
from cop_profiler.torchscript import check_not_scripted, scripted_call

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpInstance:
    """A distinct operator with what it takes to run it alone (in memory only, never stored)."""

    # Its identity in the DB.
    spec: OperatorSpec
    # "module", "function" or "method".
    kind: str
    # Leaf module, callable or method name.
    target: Any
    # Templates of its positional and keyword arguments.
    args: tuple
    kwargs: dict
    # Copies of a module's weights the timing rotates through (``reuse``): 1 times the module as it is.
    copies: int = 1

    def bind(self, batch: int, device: str = "cpu") -> Callable[[], Any]:
        """A no-argument callable running the operator on fresh inputs for ``batch`` items."""
        return self.binder(batch, device)(batch)

    def binder(self, largest: int, device: str = "cpu") -> Callable[[int], Callable[[], Any]]:
        """``batch -> callable`` for batches up to ``largest``: inputs (and a module's device copy) are made
        once, for ``largest``, and cut down to each batch (views where the memory layout allows). A module
        with ``copies`` > 1 is called on its copies in turn."""
        full_args, full_kwargs = instantiate(self.args, largest, device), instantiate(self.kwargs, largest, device)
        target = self.target
        if self.kind == "module" and (device != "cpu" or self.copies > 1):
            import copy
            import itertools

            made = [copy.deepcopy(target).to(device) for _ in range(self.copies)]
            turn = itertools.cycle(made)
            target = made[0] if len(made) == 1 else (lambda *a, **k: next(turn)(*a, **k))

        def bind(batch: int) -> Callable[[], Any]:
            if batch > largest:
                raise ValueError(f"batch={batch}: inputs were made for at most {largest}")
            args = cut(self.args, full_args, batch, device)
            kwargs = cut(self.kwargs, full_kwargs, batch, device)
            if self.kind == "method":
                name = self.target
                return lambda: getattr(args[0], name)(*args[1:], **kwargs)
            return lambda: target(*args, **kwargs)

        return bind


@dataclass(frozen=True)
class TracedModel:
    """A model's operator graph and the runnable distinct operators behind it."""

    # The graph to store in the profile DB.
    graph: OpGraph
    # Distinct operators by key.
    instances: dict[str, OpInstance]


def _setting(value: object) -> str | None:
    """Signature text of a module attribute that configures it (a number, flag, name or function), else None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return f"{value.__module__}.{value.__qualname__}"
    return None


def _shows_no_settings(cls: type) -> bool:
    """True when no class of ``cls`` below torch.nn.Module defines ``extra_repr``: its repr cannot show a
    setting. ReLU defines one that is empty by default ("inplace=True" only when set): its text says it all."""
    return all("extra_repr" not in vars(k) for k in cls.__mro__ if k is not torch.nn.Module)


@functools.lru_cache(maxsize=None)
def _constructor_args(cls: type) -> frozenset[str]:
    """Names of the parameters of ``cls.__init__`` and of the attributes it sets from one under another name
    (PairwiseDistance keeps ``p`` as ``norm``); only the parameters when its source cannot be read."""
    try:
        names = frozenset(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return frozenset()
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    except (OSError, TypeError, SyntaxError):
        return names
    renamed = {t.attr for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Name) and node.value.id in names
               for t in node.targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
               and t.value.id == "self"}
    return names | renamed


def _hidden_settings(module: torch.nn.Module) -> str:
    """The settings of a module and its children whose repr shows none (no ``extra_repr`` of their own): the
    repr of MultiheadAttention names only its out_proj, so 4 and 8 heads (the softmax runs over heads x
    tokens^2: 4.6 against 7.9 ms here at 64 dims, 128 tokens, batch 8) were one operator, as were a
    TransformerEncoderLayer's norm_first and activation. Modules whose repr says something keep their text
    (an empty ``extra_repr`` of their own, as ReLU's, says the defaults). Settings are the attributes named as
    the constructor's arguments or set from one (``_constructor_args``), and which parameters it holds
    (``add_bias_kv`` is stored as parameters): what else a module holds may be the instance's own (a
    ``name`` or ``layer_idx`` set for hooks made each of 3 identical layers an operator of its own)."""
    parts = []
    for name, sub in module.named_modules():
        if not _shows_no_settings(type(sub)):
            continue
        args = _constructor_args(type(sub))
        found = sorted((k, _setting(v)) for k, v in vars(sub).items() if k in args and not k.startswith("_"))
        held = "+".join(sorted(n for n, _ in sub.named_parameters(recurse=False)))  # add_bias_kv: bias_k, bias_v
        fields = ",".join([f"{k}={text}" for k, text in found if text is not None]
                          + ([f"params={held}"] if held else []))
        if fields:
            parts.append(f"{name or 'self'}:{fields}")
    return "{" + " ".join(parts) + "}" if parts else ""


def _module_text(module: torch.nn.Module) -> str:
    cls = type(module)
    text = f"{cls.__module__}.{cls.__qualname__}({module.extra_repr()})"
    if any(True for _ in module.children()):
        text += "[" + " ".join(repr(module).split()) + "]"
    text += _hidden_settings(module)
    dtypes = sorted({str(p.dtype) for p in module.parameters()})
    return text + (f"<{','.join(dtypes)}>" if dtypes else "")


def _target_text(call: Call) -> tuple[str, str]:
    if call.kind == "module":
        return type(call.target).__name__, "module:" + _module_text(call.target)
    if call.kind == "method":
        return call.target, "method:" + call.target
    name = getattr(call.target, "__name__", str(call.target))
    module = getattr(call.target, "__module__", None) or ""
    return name, f"function:{module}.{getattr(call.target, '__qualname__', name)}"


def _is_view(call: Call) -> bool:
    """A fresh tensor sharing an input's storage: a view whose cost does not depend on batch or threads."""
    return call.kind != "module" and call.shares_input


def _is_free(call: Call) -> bool:
    """Calls that cost nothing worth timing: no tensor result, or indexing a Python tuple of results."""
    if not any(True for _ in tensors_in(call.out)):
        return True
    return call.label == "getitem" and call.args and isinstance(call.args[0], (tuple, list))


_SPARSE = (torch.nn.Embedding, torch.nn.EmbeddingBag)


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers that a forward pass reads whole (not embedding tables)."""
    seen, total = set(), 0
    for sub in module.modules():
        if isinstance(sub, _SPARSE):
            seen.update(id(t) for t in sub.parameters(recurse=False))
            continue
        for t in (*sub.parameters(recurse=False), *sub.buffers(recurse=False)):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


COPIES = "|copies="


def with_copies(base: str, n: int) -> str:
    """The signature of the operator ``base`` timed rotating through ``n`` copies (``base`` itself for 1)."""
    return base + (f"{COPIES}{n}" if n > 1 else "")


def split_copies(signature: str) -> tuple[str, int]:
    """Inverse of ``with_copies``."""
    base, sep, n = signature.rpartition(COPIES)
    return (base, int(n)) if sep and n.isdigit() else (signature, 1)


def _instance(c2: Call, c3: Call, model_bytes: int) -> OpInstance:
    args, kwargs = templatize(c2.args, c3.args), templatize(c2.kwargs, c3.kwargs)
    n = 1
    if c3.kind == "module":
        args, kwargs = tuple(args), dict(kwargs)
        n = copies(model_bytes, _weight_bytes(c3.target))
    name, target = _target_text(c3)
    signature = with_copies(f"{target}|args={describe(args)}|kwargs={describe(kwargs)}", n)
    spec = OperatorSpec.create(name, signature, invariant=_is_view(c3))
    return OpInstance(spec, c3.kind, c3.target, tuple(args), dict(kwargs), n)


def _eager(model: torch.nn.Module, example: object, batch: int) -> tuple[list[Call], int]:
    """``record_eager``, any failure of user code (at batch 3 as at 2) reported as a TraceError."""
    try:
        return record_eager(model, example)
    except USER_ERRORS as exc:  # noqa: BLE001 - user code
        # a dict is the one positional argument (``call_args``): a forward of several reads it as the first
        hint = (" (a dict example input is the model's one argument: for a forward of several, return a tuple of "
                "them in order)") if isinstance(example, dict) and isinstance(exc, TypeError) else ""
        raise TraceError(f"the model fails on its example input (batch {batch}): {type(exc).__name__}: "
                         f"{first_line(exc)}{hint}") from exc


def _record(model: torch.nn.Module, example_input: Callable[[int], object]) -> tuple[list, list, int, str, list]:
    notes: list[str] = []
    ex2, ex3 = check_example(example_input, 2), check_example(example_input, 3)
    _check_batched(ex2, ex3)
    _, containers = _eager(model, fresh(ex2), 2)
    try:
        gm = torch.fx.symbolic_trace(model)
        return record_fx(gm, fresh(ex2)), record_fx(gm, fresh(ex3)), containers, "fx", notes
    except USER_ERRORS as exc:  # noqa: BLE001 - fx raises many types; fall back to recording
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "found type 'Proxy'" in reason:  # a TorchScript function got a traced value: the recorder misses it too
            raise scripted_call(reason) from exc
        notes.append(f"torch.fx could not trace the model ({type(exc).__name__}: {reason[:200]}); "
                     "recorded eagerly instead")
        logger.info("%s", notes[-1])
    calls2, containers = _eager(model, fresh(ex2), 2)
    calls3, _ = _eager(model, fresh(ex3), 3)
    return calls2, calls3, containers, "recorded", notes



def _check_batched(ex2: object, ex3: object) -> None:
    """A TraceError when the inputs for batch 2 and 3 are tensors of the same shapes: an example_input that
    ignores its batch size (``lambda b: torch.randn(1, 3, 224, 224)``) had every operator profiled at that
    one shape, and every batch size predicted alike."""
    t2, t3 = list(tensors_in(ex2)), list(tensors_in(ex3))
    if t2 and len(t2) == len(t3) and all(a.shape == b.shape for a, b in zip(t2, t3)):
        shapes = ", ".join(str(tuple(t.shape)) for t in t3)
        raise TraceError(f"example_input(2) and example_input(3) give inputs of the same shapes ({shapes}): "
                         "example_input(batch_size) must return batch_size items")


def check_example(example_input: Callable[[int], object], batch: int) -> object:
    """``example_input(batch)``; a ``TraceError`` when it is not a function or cannot make ``batch`` items
    (the profile command checks the largest batch before any timing: a pool of four samples indexed past
    its end failed only at the model's first large batch)."""
    if not callable(example_input):
        raise TraceError(f"example_input is a {type(example_input).__name__}, not a function of the batch size "
                         "(return (model, lambda batch_size: ...) from a module:function)")
    try:
        return example_input(batch)
    except USER_ERRORS as exc:  # noqa: BLE001 - user code
        raise TraceError(f"example_input(batch_size) failed: {type(exc).__name__}: {first_line(exc)} "
                         f"(batch_size={batch})") from exc


def trace(model: torch.nn.Module, example_input: Callable[[int], object]) -> TracedModel:
    """The operator graph of ``model`` (put in eval mode) for inputs from ``example_input(batch)``."""
    check_not_scripted(model)
    model.eval()
    calls2, calls3, containers, how, notes = _record(model, example_input)
    if [c.label for c in calls2] != [c.label for c in calls3]:
        raise TraceError(f"the model runs different operators at batch 2 ({len(calls2)} calls) and batch 3 "
                         f"({len(calls3)} calls) of its example input: its control flow depends on the batch size "
                         "or on the input's values (a profile follows one path: make example_input take the path "
                         "served)")
    nodes, instances, model_bytes = [], {}, _weight_bytes(model)
    for i, (c2, c3) in enumerate(zip(calls2, calls3)):
        op = None
        if not _is_free(c3):
            try:
                inst = _instance(c2, c3, model_bytes)
            except TraceError as exc:
                raise TraceError(f"operator {i} ({c3.label}): {exc}") from exc
            instances.setdefault(inst.spec.key, inst)
            op = inst.spec.key
        nodes.append(OpNode(i, op, c3.inputs, c3.label))
    if not instances:
        raise TraceError("the model has no tensor operators to profile")
    ops = tuple(inst.spec for inst in instances.values())
    graph = OpGraph(tuple(nodes), ops, containers, "serial", how, tuple(notes))
    return TracedModel(graph, instances)
