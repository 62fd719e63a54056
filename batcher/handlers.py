"""Helpers for writing ``handle_batch``: parse each request alone, run the model once on the valid ones."""

from __future__ import annotations

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
