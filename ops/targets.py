"""Watchdog scrape targets read from the provider: every replica's metrics port, labelled with its function.

The provider lists each replica under ``faasInfer.instances`` of ``GET /system/functions`` (``metricsPort``,
``instance``). Each target gets ``function_name`` (``name.namespace``, as the gateway writes it) and
``instance_id``, so watchdog series join the gateway's in PromQL. A variant the autoscaler added
(label ``com.faas-infer.parent``) reports as its parent, whose queue it serves and under whose name the
gateway counts its requests, as ``docker/prometheus/kubernetes-jobs.yml`` relabels it on Kubernetes.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

import requests

from faas_infer.stack import LABEL_PARENT

logger = logging.getLogger(__name__)


def read_auth(secret_mount_path: str) -> tuple[str, str] | None:
    """(user, password) from ``basic-auth-user``/``basic-auth-password`` under the folder, or None."""
    if not secret_mount_path:
        return None
    try:
        with open(os.path.join(secret_mount_path, "basic-auth-user")) as f, \
                open(os.path.join(secret_mount_path, "basic-auth-password")) as g:
            return f.read().strip(), g.read().strip()
    except OSError:
        return None


def watchdog_targets(functions: Iterable[Mapping[str, Any]], namespace: str = "openfaas-fn",
                     host: str = "127.0.0.1") -> list[tuple[str, dict[str, str]]]:
    """(``host:metricsPort``, labels) of every replica in a ``/system/functions`` answer; a variant's
    ``function_name`` is its parent's."""
    out = []
    for fn in functions:
        ns = fn.get("namespace") or namespace
        name = (fn.get("labels") or {}).get(LABEL_PARENT) or fn["name"]
        for inst in (fn.get("faasInfer") or {}).get("instances") or ():
            port = inst.get("metricsPort")
            if port:
                out.append((f"{host}:{port}", {"function_name": f"{name}.{ns}",
                                               "instance_id": str(inst.get("instance", ""))}))
    return sorted(out)


class TargetSync:
    """Rewrites the ``watchdogs`` targets of a Prometheus whenever the provider's replicas change."""

    def __init__(self, provider_url: str, auth: tuple[str, str] | None, prometheus: Any,
                 namespace: str = "openfaas-fn", job: str = "watchdogs") -> None:
        self.provider_url = provider_url.rstrip("/")
        self.auth = auth
        self.prometheus = prometheus
        self.namespace = namespace
        self.job = job
        self._last: list | None = None

    def refresh(self) -> bool:
        """Read the replicas once; returns True when the targets changed (a failing read changes nothing)."""
        try:
            r = requests.get(self.provider_url + "/system/functions", auth=self.auth, timeout=5)
            r.raise_for_status()
            targets = watchdog_targets(r.json(), self.namespace)
        except (requests.RequestException, ValueError, KeyError) as exc:
            logger.debug("replica list from %s: %s", self.provider_url, exc)
            return False
        if targets == self._last:
            return False
        self.prometheus.set_targets(self.job, targets)
        self._last = targets
        logger.info("watchdog targets: %d", len(targets))
        return True
