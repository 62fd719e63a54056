"""An instance's live batch config in Redis: the autoscaler writes it, the instance reads it every beat.

The hash ``fi:{fn}:config:{inst}`` holds any of ``max_batch_size``, ``batch_timeout`` and ``latency_slo``
(seconds, as decimal text). A missing field keeps the instance's start-up value; an empty value or
``none`` unsets an optional field (``batch_timeout`` then derives from the SLO, ``latency_slo`` turns SLO
admission off).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from batcher import keys
from batcher.policy import BatchConfig

FIELDS = ("max_batch_size", "batch_timeout", "latency_slo")


def parse(fields: Mapping[Any, Any], base: BatchConfig) -> BatchConfig:
    """``base`` overridden by the hash's fields; a ``ValueError`` naming the field when one is bad."""
    values: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key = _text(raw_key)
        if key not in FIELDS:
            continue
        text = _text(raw_value).strip()
        try:
            if key == "max_batch_size":
                values[key] = int(text)
            else:
                values[key] = None if text.lower() in ("", "none") else float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: must be a number") from None
    return replace(base, **values)


def to_fields(config: BatchConfig) -> dict[str, str]:
    """The hash fields that describe ``config`` completely."""
    return {"max_batch_size": str(config.max_batch_size), "batch_timeout": _opt(config.batch_timeout),
            "latency_slo": _opt(config.latency_slo)}


def write(pipe: Any, fn: str, inst: str, config: BatchConfig) -> None:
    """Set one instance's live config (the autoscaler's side); ``pipe`` is a client or a pipeline."""
    pipe.hset(keys.config(fn, inst), mapping=to_fields(config))


def read(client: Any, fn: str, inst: str, base: BatchConfig) -> BatchConfig:
    """One instance's live config as it would apply now."""
    return parse(client.hgetall(keys.config(fn, inst)), base)


def _opt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
