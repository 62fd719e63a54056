"""Argument templates: an operator's arguments seen at batch 2 and 3, generalized to any batch size.

A tensor becomes a ``TensorArg`` whose dims are fixed or batch-scaled (``-k`` means ``k * batch``), with its
dtype and memory layout; an int that scales with the batch (``x.view(x.size(0), -1)``) becomes a
``BatchInt``; anything else must be equal in both runs and is kept as a constant. ``describe`` gives the
per-item text that goes into an operator's signature. ``instantiate`` makes arguments for a batch size,
``cut`` shrinks them to a smaller one (views where the memory layout stays the same, so inputs are built
once per operator rather than once per batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from cop_profiler.errors import TraceError


# Random values are drawn for this many elements and repeated to fill larger tensors: drawing costs ~5 ns
# an element (20 ms for a 16 MB activation), repeating ~13x less, and a 256 KB period is far beyond what
# any kernel's timing could depend on (the tensor still spans its full size in memory).
RANDOM_TILE = 1 << 16


def _random(shape: list[int], dtype: torch.dtype, device: str) -> torch.Tensor:
    """A tensor of ``shape`` with values in [-1, 1)."""
    n = 1
    for d in shape:
        n *= d
    tile = torch.empty(min(n, RANDOM_TILE), dtype=dtype, device=device).uniform_(-1.0, 1.0)
    if n <= RANDOM_TILE:
        return tile.view(shape)
    return tile.repeat(-(-n // RANDOM_TILE))[:n].view(shape)


# Boolean tensors of at most this many elements an item keep their recorded values (``TensorArg.fill``).
FILL_MAX = 1 << 16


@dataclass(frozen=True)
class TensorArg:
    """A tensor argument for any batch size."""

    # Per-dim size: >= 0 fixed, -k for k * batch.
    dims: tuple[int, ...]
    # dtype name, e.g. "float32".
    dtype: str
    # Dim order from outermost to innermost in memory, when the tensor was a permuted view (else None).
    perm: tuple[int, ...] | None = None
    # Exclusive upper bound of values for integer tensors (embedding indices); not part of the signature.
    high: int = 2
    # A boolean tensor's values for one item (its batch dim at one item's size; the whole tensor when no
    # dim scales), repeated for each item, when every recorded item held the same: masks decide which kernel
    # runs (a padding mask lets a transformer encoder skip the padded tokens, 7 ms at batch 32 where random
    # masks took 30 ms). The signature counts its True values, so masks padding differently are different
    # operators. None (a mask that changes from item to item): random values.
    fill: tuple[bool, ...] | None = None

    def describe(self) -> str:
        """Signature text: dtype, per-item dims and layout."""
        layout = "" if self.perm is None else f",perm={list(self.perm)}"
        values = "" if self.fill is None else f",true={sum(self.fill)}"
        return f"T({self.dtype},{list(self.dims)}{layout}{values})"

    def make(self, batch: int, device: str = "cpu") -> torch.Tensor:
        """A fresh tensor of this shape for ``batch`` items."""
        shape = [d if d >= 0 else -d * batch for d in self.dims]
        order = self.perm or tuple(range(len(shape)))
        stored = [shape[p] for p in order]
        dtype = getattr(torch, self.dtype)
        if dtype.is_floating_point or dtype.is_complex:
            t = _random(stored, dtype, device)
        elif dtype == torch.bool and self.fill is not None:
            block = [-d if d < 0 else d for d in self.dims]
            logical = torch.tensor(self.fill, dtype=torch.bool, device=device).view(block)
            if self.dims:  # a 0-dim one is what it is
                logical = logical.repeat(*(batch if d < 0 else 1 for d in self.dims))
            t = logical.permute(order).contiguous()  # stored order, as the other kinds are made
        elif dtype == torch.bool:
            t = torch.randint(0, 2, stored, device=device).bool()
        else:
            t = torch.randint(0, max(self.high, 1), stored, dtype=dtype, device=device)
        if self.perm is None:
            return t
        inverse = [order.index(i) for i in range(len(order))]
        return t.permute(inverse)

    def outer_batch_dim(self) -> int | None:
        """The dim that scales with the batch when it is the only one and outermost in memory, else None.

        Such a tensor made for a large batch, cut along that dim, has exactly the layout (strides,
        contiguity) of one made for the smaller batch.
        """
        scaled = [i for i, d in enumerate(self.dims) if d < 0]
        outer = self.perm[0] if self.perm is not None else 0
        return outer if scaled == [outer] else None

    def cut(self, tensor: torch.Tensor, batch: int, device: str = "cpu") -> torch.Tensor:
        """``tensor`` (made by ``make`` for a batch >= ``batch``) as a view for ``batch`` items, else a new one."""
        dim = self.outer_batch_dim()
        if dim is None:
            return self.make(batch, device)
        return tensor.narrow(dim, 0, -self.dims[dim] * batch)


@dataclass(frozen=True)
class BatchInt:
    """An int argument equal to ``coef * batch``."""

    # Multiple of the batch size.
    coef: int


def _scaled(d2: int, d3: int, what: str) -> tuple[int, bool]:
    """(value, False) when equal in both runs, (k, True) when it is k * batch."""
    if d2 == d3:
        return d2, False
    if d2 % 2 == 0 and d3 % 3 == 0 and d2 // 2 == d3 // 3:
        return d2 // 2, True
    raise TraceError(f"{what} is {d2} at batch 2 and {d3} at batch 3: not a multiple of the batch size")


def _perm(t: torch.Tensor) -> tuple[int, ...] | None:
    if t.is_contiguous() or t.dim() < 2:
        return None
    order = tuple(sorted(range(t.dim()), key=lambda i: -t.stride(i)))
    return order if t.permute(order).is_contiguous() else None


def _same_for_every_item(t2: torch.Tensor, t3: torch.Tensor, dims: tuple[int, ...]) -> tuple[bool, ...] | None:
    """One item's values of a boolean tensor when every item of both recorded batches holds the same ones
    (one batch-scaled dim; none: the same tensor at batch 2 and 3), at most FILL_MAX of them; else None.
    A mask that changes from item to item or run to run (random lengths, one computed from random inputs)
    has no values to keep: kept, its True count made the operator's signature differ from run to run."""
    scaled = [i for i, d in enumerate(dims) if d < 0]
    if len(scaled) > 1:
        return None
    if not scaled:
        same = t2.shape == t3.shape and torch.equal(t2, t3)
        return tuple(bool(v) for v in t3.flatten().tolist()) if same and t3.numel() <= FILL_MAX else None
    d, k = scaled[0], -dims[scaled[0]]
    first = t3.narrow(d, 0, k)
    if first.numel() > FILL_MAX:
        return None
    blocks = [t.narrow(d, i * k, k) for t, n in ((t2, 2), (t3, 3)) for i in range(n)]
    if not all(torch.equal(first, b) for b in blocks):
        return None
    return tuple(bool(v) for v in first.flatten().tolist())


def _tensor(t2: torch.Tensor, t3: torch.Tensor) -> TensorArg:
    if t2.dim() != t3.dim() or t2.dtype != t3.dtype:
        raise TraceError(f"a tensor changes rank or dtype with the batch size: {tuple(t2.shape)} vs {tuple(t3.shape)}")
    scaled = [_scaled(a, b, f"tensor dim {i}") for i, (a, b) in enumerate(zip(t2.shape, t3.shape))]
    dims = tuple(-k if batched else k for k, batched in scaled)
    high = 2
    if not (t3.dtype.is_floating_point or t3.dtype.is_complex or t3.dtype == torch.bool) and t3.numel():
        high = int(max(t2.max().item(), t3.max().item())) + 1
    fill = _same_for_every_item(t2, t3, dims) if t3.dtype == torch.bool else None
    return TensorArg(dims, str(t3.dtype).replace("torch.", ""), _perm(t3), high, fill)


def _short(value: object) -> str:
    """A value's repr on one line, at most 80 characters (an array's runs to many lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _equal(a: object, b: object) -> bool:
    """``a == b`` as a bool; False where ``==`` answers elementwise (numpy arrays) or fails: such a value
    reached ``v2 != v3`` and its ValueError went up as a traceback."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - any __eq__ of any argument type
        return False


def _changed(v2: object, v3: object) -> TraceError:
    kind = "" if v2 is None or isinstance(v2, (bool, int, float, str)) else \
        f" (type {type(v2).__name__}: only tensors, ints and containers of them are rebuilt for each batch size)"
    return TraceError(f"argument {_short(v2)} at batch 2 became {_short(v3)} at batch 3{kind}")


def templatize(v2: object, v3: object) -> object:
    """The template of a value seen as ``v2`` at batch 2 and ``v3`` at batch 3."""
    if isinstance(v2, torch.Tensor) and isinstance(v3, torch.Tensor):
        return _tensor(v2, v3)
    if isinstance(v2, slice) and isinstance(v3, slice):  # x[: x.size(0)]: a bound may scale with the batch
        return slice(*(templatize(a, b) for a, b in ((v2.start, v3.start), (v2.stop, v3.stop), (v2.step, v3.step))))
    if isinstance(v2, bool) or not isinstance(v2, (int, tuple, list, dict)):
        if type(v2) is not type(v3) or not _equal(v2, v3):
            raise _changed(v2, v3)
        return v3
    if isinstance(v2, int):
        if not isinstance(v3, int):
            raise _changed(v2, v3)
        value, batched = _scaled(v2, v3, "an int argument")
        return BatchInt(value) if batched else value
    if isinstance(v2, dict):
        if not isinstance(v3, dict) or v2.keys() != v3.keys():
            raise TraceError("keyword arguments differ between batch 2 and batch 3")
        return {k: templatize(v2[k], v3[k]) for k in v2}
    if not isinstance(v3, (tuple, list)) or len(v2) != len(v3):
        raise _changed(v2, v3)
    items = [templatize(a, b) for a, b in zip(v2, v3)]
    return items if isinstance(v2, list) else tuple(items)


def describe(template: object) -> str:
    """Signature text of a template (stable across runs and machines)."""
    if isinstance(template, TensorArg):
        return template.describe()
    if isinstance(template, BatchInt):
        return f"{template.coef}*B"
    if isinstance(template, dict):
        return "{" + ",".join(f"{k}={describe(v)}" for k, v in sorted(template.items())) + "}"
    if isinstance(template, (tuple, list)):
        return "(" + ",".join(describe(v) for v in template) + ")"
    if isinstance(template, slice):  # as repr() spells a constant one, so that its operator keeps its key
        return f"slice({describe(template.start)}, {describe(template.stop)}, {describe(template.step)})"
    if callable(template):
        return getattr(template, "__qualname__", type(template).__name__)
    return repr(template)


def instantiate(template: object, batch: int, device: str = "cpu") -> object:
    """Concrete arguments for ``batch`` items (fresh random tensors)."""
    if isinstance(template, TensorArg):
        return template.make(batch, device)
    if isinstance(template, BatchInt):
        return template.coef * batch
    if isinstance(template, slice):
        return slice(*(instantiate(v, batch, device) for v in (template.start, template.stop, template.step)))
    if isinstance(template, dict):
        return {k: instantiate(v, batch, device) for k, v in template.items()}
    if isinstance(template, (tuple, list)):
        items = [instantiate(v, batch, device) for v in template]
        return items if isinstance(template, list) else tuple(items)
    return template


def cut(template: object, value: object, batch: int, device: str = "cpu") -> object:
    """``value`` (``instantiate``d for a larger batch) for ``batch`` items: views where the layout allows."""
    if isinstance(template, TensorArg):
        return template.cut(value, batch, device)
    if isinstance(template, (BatchInt, slice)):
        return instantiate(template, batch, device)
    if isinstance(template, dict):
        return {k: cut(v, value[k], batch, device) for k, v in template.items()}
    if isinstance(template, (tuple, list)):
        items = [cut(t, v, batch, device) for t, v in zip(template, value)]
        return items if isinstance(template, list) else tuple(items)
    return template


def tensors_in(value: object) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
