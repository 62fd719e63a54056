"""The node inventory: the local machine (psutil, pynvml) or a nodes file for clusters."""

from __future__ import annotations

import json
import logging
import math
import socket

import yaml

from autoscaler.snapshot import Node
from faas_infer.units import parse_cpu, parse_memory

logger = logging.getLogger(__name__)


def local_node(reserve_cpu: float = 0.0) -> Node:
    """This machine: its cores (minus ``reserve_cpu``), memory and GPUs (0 without NVML)."""
    import psutil

    gpus = 0
    try:
        import pynvml

        pynvml.nvmlInit()
        gpus = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound and friends: no GPUs
        logger.debug("no GPUs: %s", exc)
    cpu = max(0.5, float(psutil.cpu_count() or 1) - reserve_cpu)
    return Node(socket.gethostname(), cpu, int(psutil.virtual_memory().total), gpus)


def _gpus(value: object) -> int:
    """Whole GPU devices: an int or integral number >= 0 (``int()`` made 0.5 no GPU and kept -1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"gpus={value!r}: must be a whole number of devices >= 0")
    try:
        count = float(value)
    except ValueError:
        count = -1.0
    if not 0 <= count < math.inf or count != int(count):  # int(inf) raised OverflowError
        raise ValueError(f"gpus={value!r}: must be a whole number of devices >= 0")
    return int(count)


def _labels(labels: dict) -> dict[str, str]:
    """A node's labels as Kubernetes holds them, strings; a value YAML read as a boolean is refused (``true``
    unquoted became "True", which no constraint ``key=true`` meets)."""
    if not isinstance(labels, dict):
        raise ValueError(f"labels={labels!r}: must be a map of label to value")
    for key, value in labels.items():
        if isinstance(value, bool):
            raise ValueError(f"labels {key}={value!r}: must be a string; quote it ('{str(value).lower()}')")
    return {str(k): str(v) for k, v in labels.items()}


def load_nodes(path: str) -> tuple[Node, ...]:
    """Nodes from a YAML or JSON list of {name, cpu, memory, gpus, labels}; errors name the entry."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if isinstance(doc, dict):
        doc = doc.get("nodes", [])
    nodes = []
    for i, entry in enumerate(doc or []):
        try:
            nodes.append(Node(str(entry["name"]), parse_cpu(entry["cpu"]), parse_memory(entry["memory"]),
                              _gpus(entry.get("gpus", 0)), _labels(entry.get("labels") or {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: node #{i}: {exc} (needs name, cpu, memory; gpus and labels optional)") from None
    return tuple(nodes)
