"""Hooks for the services ``faas-infer up`` runs beside the provider: the autoscaler and Prometheus.

Autoscaler: when ``autoscaler/__main__.py`` exists, ``up`` runs ``python -m autoscaler`` with its settings
in environment variables named after ``AutoscalerConfig`` fields (``gateway_url``, ``redis_url``,
``secret_mount_path``, ``prometheus_url``), the way ``python -m watchdog`` is configured; otherwise it
prints ``autoscaler: not available``. Prometheus: ``prometheus_command`` returns the command to run (None
until its issue wires it; it would scrape the provider's ``/metrics`` and every replica's metrics port).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Sidecar:
    """A process ``up`` starts after the provider and stops before it."""

    # Short name printed and used for its log file.
    name: str
    # The command line.
    argv: tuple[str, ...]
    # Variables added to the environment of ``up``.
    env: Mapping[str, str] = field(default_factory=dict)
    # Where it can be reached, printed (may be empty).
    url: str = ""


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def autoscaler(python: str, gateway_url: str, redis_url: str, secret_mount_path: str,
               prometheus_url: str = "") -> Sidecar | None:
    """The autoscaler sidecar, or None when the ``autoscaler`` package has no runnable entry yet."""
    if not _has_module("autoscaler.__main__"):
        return None
    env = {"gateway_url": gateway_url, "redis_url": redis_url, "secret_mount_path": secret_mount_path,
           "prometheus_url": prometheus_url}
    return Sidecar("autoscaler", (python, "-m", "autoscaler"), {k: v for k, v in env.items() if v})


def prometheus(run_dir: str, provider_url: str, port: int) -> Sidecar | None:
    """The Prometheus sidecar (None: not wired yet). The hook point for the Prometheus issue."""
    if shutil.which("prometheus") is None:
        return None
    return None
