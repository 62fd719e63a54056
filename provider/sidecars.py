"""Hooks for the services ``faas-infer up`` runs beside the provider: the autoscaler and Prometheus.

Autoscaler: when ``autoscaler/__main__.py`` exists, ``up`` runs ``python -m autoscaler`` with its settings
in environment variables named after ``AutoscalerConfig`` fields (``gateway_url``, ``redis_url``,
``secret_mount_path``, ``prometheus_url``), the way ``python -m watchdog`` is configured; otherwise it
prints ``autoscaler: not available``. Prometheus (``ops.prometheus``, when the binary is installed) scrapes
the provider's ``/metrics``, every replica's metrics port and the autoscaler's ``/metrics``.
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
               prometheus_url: str = "", metrics_port: int = 0, profile_db: str = "") -> Sidecar | None:
    """The autoscaler sidecar, or None when the ``autoscaler`` package has no runnable entry. It prices
    configurations with ``profile_db`` (COP) when given, else with its built-in table."""
    if not _has_module("autoscaler.__main__"):
        return None
    env = {"gateway_url": gateway_url, "redis_url": redis_url, "secret_mount_path": secret_mount_path,
           "prometheus_url": prometheus_url, "metrics_port": str(metrics_port), "metrics_bind": "127.0.0.1",
           "profile_db": profile_db,
           # GPU shares on this machine are CUDA MPS percentages (no Kubernetes units to ask for); they bind
           # only where an MPS control daemon runs (`nvidia-cuda-mps-control -d`, not started here), else the
           # processes time-slice the device. No instance is given a device: all use the first visible GPU
           "gpu_slices": "4", "gpu_steps": "0.25,0.5,1"}
    url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""
    return Sidecar("autoscaler", (python, "-m", "autoscaler"), {k: v for k, v in env.items() if v}, url)


def prometheus(python: str, run_dir: str, provider_url: str, port: int, autoscaler_target: str = "",
               secret_mount_path: str = "") -> Sidecar | None:
    """Prometheus scraping the provider, every replica and the autoscaler; None when it is not installed."""
    if shutil.which("prometheus") is None:
        return None
    from faas_infer.ports import free_port
    from ops.prometheus import sidecar_argv

    port = free_port(preferred=port)
    return Sidecar("prometheus", sidecar_argv(python, run_dir, provider_url, port, autoscaler_target,
                                              secret_mount_path), url=f"http://127.0.0.1:{port}")
