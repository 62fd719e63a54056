"""Helpers for writing ``handle_batch``: parse each request alone, run the model once on the valid ones.

``float_row`` and ``int_row`` turn one request's numbers into a typed ``array``; ``join_rows`` puts a
batch of them in one buffer, which ``torch.frombuffer(...).view(n, width)`` makes one input tensor. That is
one torch call per batch instead of a tensor per request and a ``stack``: cheaper in itself (MLP example,
batch 64, one thread: 89 -> 76 µs a request), and every torch call lets go of the GIL and must take it
back, which in a watchdog under load may mean waiting for its HTTP loop (README, "Where a served batch's
time goes").
"""

from __future__ import annotations

import array
import math
import sys
from typing import Any, Callable, Sequence

from batcher.errors import BadInput
from batcher.request import Request


def map_valid(requests: Sequence[Request], parse: Callable[[Request], Any],
              run: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
    """Outputs in request order: ``parse`` each request (a ``BadInput`` fails only that request), then
    ``run`` once on every parsed value and put its outputs back in their places."""
    slots: list[Any] = [None] * len(requests)
    valid_at: list[int] = []
    values: list[Any] = []
    for i, request in enumerate(requests):
        try:
            values.append(parse(request))
            valid_at.append(i)
        except BadInput as exc:
            slots[i] = exc
        except (ValueError, TypeError, KeyError) as exc:
            slots[i] = BadInput(f"{type(exc).__name__}: {exc}")
    if values:
        outputs = run(values)
        if len(outputs) != len(values):
            raise RuntimeError(f"run returned {len(outputs)} outputs for {len(values)} inputs")
        for i, output in zip(valid_at, outputs):
            slots[i] = output
    return slots


def require(doc: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """``doc[key]`` checked to be of ``kind``, else a ``BadInput`` naming the key."""
    if not isinstance(doc, dict):
        raise BadInput(f"expected a JSON object with {key!r}, got {type(doc).__name__}")
    if key not in doc:
        raise BadInput(f"missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadInput(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def float_row(values: Any, length: int, name: str) -> array.array:
    """``values`` as ``length`` finite float32 numbers (``array('f')``), else a ``BadInput`` naming ``name``."""
    if not isinstance(values, list) or len(values) != length:
        got = f"{len(values)}" if isinstance(values, list) else type(values).__name__
        raise BadInput(f"{name!r} must be a list of {length} numbers, got {got}")
    try:
        row = array.array("f", values)
    except (TypeError, OverflowError):
        raise BadInput(f"{name!r} must hold only numbers") from None
    if bool in set(map(type, values)):  # array() takes true/false as 1/0; JSON says they are not numbers
        raise BadInput(f"{name!r} must hold only numbers, not true or false")
    if not math.isfinite(sum(row)):  # a number past float32's range became inf
        raise BadInput(f"{name!r} holds a number out of float32 range")
    return row


def float_bytes(body: bytes, length: int) -> array.array:
    """A raw body of ``length`` little-endian float32 numbers as an ``array('f')``, else a ``BadInput``: the
    binary input a client sends instead of JSON when parsing costs more than it should (no decoding)."""
    if len(body) != 4 * length:
        raise BadInput(f"raw body must be {length} little-endian float32 values ({4 * length} bytes), "
                       f"got {len(body)} bytes")
    row = array.array("f")
    row.frombytes(body)
    if sys.byteorder != "little":
        row.byteswap()
    if not math.isfinite(sum(row)):
        raise BadInput("raw body holds NaN or infinity")
    return row


def int_row(values: Any, length: int, name: str, low: int, high: int, pad: int = 0) -> array.array:
    """``values`` as int64 (``array('q')``) in ``[low, high)``, padded with ``pad`` or cut to ``length``,
    else a ``BadInput`` naming ``name``."""
    if not isinstance(values, list) or not all(type(v) is int and low <= v < high for v in values):
        raise BadInput(f"{name!r} must be a list of integers in [{low}, {high})")
    row = array.array("q", values[:length])
    if len(row) < length:
        row.extend(array.array("q", [pad]) * (length - len(row)))
    return row


def join_rows(rows: Sequence[array.array]) -> array.array:
    """One writable buffer holding ``rows`` back to back (all of one typecode)."""
    joined = array.array(rows[0].typecode)
    for row in rows:
        joined += row
    return joined
