"""Parsing of the units OpenFaaS configuration uses: durations, CPU quantities and memory sizes."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ns|us|µs|ms|s|m|h)?\s*$")
_DURATION_SCALE = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")

_MEMORY = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>Ki|Mi|Gi|Ti|k|K|M|G|T|)\s*$")
_MEMORY_SCALE = {
    "": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``10s``, ``250ms``, ``1m30s`` or a bare number of seconds (the watchdog's rule)."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r}: a duration must be >= 0")
        return float(value)
    text = str(value).strip()
    match = _DURATION.match(text)
    if match:
        return float(match["num"]) * _DURATION_SCALE[match["unit"] or "s"]
    parts = _GO_DURATION_PART.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _DURATION_SCALE[u] for n, u in parts)
    raise ValueError(f"{value!r}: not a duration (examples: 10s, 250ms, 1m30s, 2.5)")


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms`` or ``1.5s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_cpu(value: str | float | int) -> float:
    """Cores from a Kubernetes CPU quantity: ``500m`` is 0.5, ``2`` is 2.0."""
    text = str(value).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"{value!r}: not a CPU quantity (examples: 500m, 1, 2.5)") from None
    if not math.isfinite(cores) or cores < 0:
        raise ValueError(f"{value!r}: a CPU quantity must be a finite number >= 0")
    return cores


def parse_memory(value: str | int) -> int:
    """Bytes from a Kubernetes memory quantity: ``256Mi``, ``1Gi``, ``128M`` or a bare byte count."""
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r}: not a memory quantity (examples: 256Mi, 1Gi, 500M)")
    size = float(match["num"]) * _MEMORY_SCALE[match["unit"]]
    if not math.isfinite(size):  # int() of it was an OverflowError, which no caller expects
        raise ValueError(f"{value!r}: a memory quantity must be finite")
    return int(size)
