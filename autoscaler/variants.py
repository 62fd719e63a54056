"""Variants, pure: their names, their FunctionDeployment built from the parent's, and parsing them back.

A variant is ``<fn>-<config key>-<node>-<shard>`` (e.g. ``resnet-b4-c500-g0-host1-0``; with a hash where
that is too long or the node's name is not a short label, ``variant_name``): the parent's
image and spec with its own batch config (envVars ``max_batch_size``, ``latency_slo``, ``exec_prior``,
``cpu_limit``, ``gpu_share``, ``function_name=<fn>`` so it pulls from the parent's queue, and on a CPU
variant ``CUDA_VISIBLE_DEVICES`` hiding every GPU; no
``batch_timeout``, so the watchdog derives its wait from the SLO, the load and the batch running, as it does
for the parent, instead of always waiting ``SLO - t_exec`` for a batch to fill), limits (cpu, memory,
``nvidia.com/gpu``), a node constraint, and labels linking it to the parent and recording its
configuration and its constraints. A group of more instances than ``max_replicas_per_variant`` is split
into shards.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from typing import Any, Mapping

from autoscaler.candidates import Candidate
from autoscaler.constraints import hostname
from autoscaler.snapshot import Variant
from faas_infer.stack import ANNOTATION_SLO, LABEL_PARENT
from faas_infer.units import parse_cpu, parse_memory

LABEL_CONFIG = "com.faas-infer.config"
LABEL_NODE = "com.faas-infer.node"
LABEL_BATCH = "com.faas-infer.batch"
LABEL_CPU = "com.faas-infer.cpu"
LABEL_GPU = "com.faas-infer.gpu"
# A digest of the constraints a variant was deployed with (absent without any): faas-netes reports no
# constraints in a FunctionStatus, so act reads from this label whether a variant is pinned as the plan
# pins it now (the previous version's "kubernetes.io/hostname == NODE", dropped by faas-netes, left its
# variants unpinned, and nothing told).
LABEL_CONSTRAINTS = "com.faas-infer.constraints"
# The nvidia.com/gpu units a GPU variant asks for: faas-netes reports a function's memory and CPU limits
# only, and read from there every GPU variant looked as if it asked for none (updated every tick).
LABEL_GPU_UNITS = "com.faas-infer.gpu-units"
# The limit that gives an instance whole GPU devices (faas-cli drops it; the REST API keeps it).
LIMIT_GPU = "nvidia.com/gpu"
# The OpenFaaS Profile annotation (a GPU profile adds the runtime class and toleration GPU nodes need).
ANNOTATION_PROFILE = "com.openfaas.profile"
# Labels of the parent a variant must not copy (the platform would scale the variant by them).
_NOT_COPIED = ("com.openfaas.scale.",)
# Environment of the parent a variant must not inherit: a batch timeout set for the parent's batch size (an
# explicit timeout also turns off the watchdog's adaptive wait), and settings the variant sets itself.
_NOT_INHERITED = ("batch_timeout", "gpu_share", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_VISIBLE_DEVICES")
# CUDA_VISIBLE_DEVICES of a CPU variant: no device (an invalid index hides it and every one after it; not ""
# which a platform may drop from envVars, so the variant would look stale every tick). A CPU variant of a GPU
# function still runs the GPU image, often with every device visible (NVIDIA_VISIBLE_DEVICES=all, the
# function's GPU profile), and a handler that moves its model to cuda when torch sees one ran on a device
# the plan had not given it, its times filed under a CPU configuration.
NO_GPU = "-1"


# Longest function name: Kubernetes names the Deployment and Service after it (a DNS-1123 label).
MAX_NAME = 63
# Longest node name written whole into a variant name.
NODE_IN_NAME = 20


def slug(text: str) -> str:
    """Lower-case DNS-label-safe text."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "node"


def variant_name(fn: str, key: str, node: str, shard: int) -> str:
    """The variant's function name, one per (function, configuration, node, shard) and at most ``MAX_NAME``.

    ``<fn>-<key>-<node>-<shard>`` where that fits and the node's name is a short label as it stands; else
    shortened, with a hash of function, configuration and node before the shard: cut to a prefix or
    lower-cased, two nodes' names (``...-pool-1a2b3c4d-abcd``, ``...-wxyz``) made one variant name, and a
    planned instance was never deployed. act finds running variants by this name, so it must not change
    for a name it once gave."""
    plain = f"{fn}-{key}-{node}-{shard}" if node else f"{fn}-{key}-{shard}"
    if len(plain) <= MAX_NAME and (not node or (len(node) <= NODE_IN_NAME and slug(node) == node)):
        return plain
    digest = hashlib.sha256(f"{fn}\n{key}\n{node}".encode()).hexdigest()[:8]
    tail = f"-{digest}-{shard}"
    head = f"{fn}-{key}-{slug(node)[:NODE_IN_NAME]}" if node else f"{fn}-{key}"
    return head[:MAX_NAME - len(tail)].rstrip("-") + tail


def shards(count: int, per_variant: int) -> list[int]:
    """Replicas per shard: ``count`` split into groups of at most ``per_variant``."""
    full, rest = divmod(count, per_variant)
    return [per_variant] * full + ([rest] if rest else [])


def variant_spec(parent: Mapping[str, Any], name: str, fn: str, c: Candidate, node: str, slo: float,
                 multi_node: bool, gpu_slices: int = 1) -> dict[str, Any]:
    """The FunctionDeployment of a variant of ``parent`` (a FunctionStatus or FunctionDeployment dict); a GPU
    share asks for ``share * gpu_slices`` nvidia.com/gpu units (``AutoscalerConfig.gpu_slices``)."""
    env = {k: v for k, v in (parent.get("envVars") or {}).items() if k not in _NOT_INHERITED}
    env.update({"max_batch_size": str(c.batch), "latency_slo": f"{slo:.6f}", "cpu_limit": f"{c.cpu:g}",
                "function_name": fn, "exec_prior": f"{c.batch}:{c.t_exec:.6f}",
                "gpu_share": f"{c.gpu:g}"})  # stated on CPU variants too: it tells a variant from the parent
    if c.gpu:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(int(round(c.gpu * 100)))
    else:
        env["CUDA_VISIBLE_DEVICES"] = NO_GPU
    labels = {k: v for k, v in (parent.get("labels") or {}).items() if not k.startswith(_NOT_COPIED)}
    labels.update({LABEL_PARENT: fn, LABEL_CONFIG: c.key, LABEL_NODE: node, LABEL_BATCH: str(c.batch),
                   LABEL_CPU: f"{c.cpu:g}", LABEL_GPU: f"{c.gpu:g}"})
    limits = {"memory": str(c.memory), "cpu": f"{int(round(c.cpu * 1000))}m"}
    if c.gpu:
        limits[LIMIT_GPU] = labels[LABEL_GPU_UNITS] = str(max(1, round(c.gpu * gpu_slices)))
    spec: dict[str, Any] = {
        "service": name, "image": parent.get("image", ""), "envProcess": parent.get("envProcess", ""),
        "envVars": env, "labels": labels, "annotations": dict(parent.get("annotations") or {}),
        "limits": limits, "secrets": list(parent.get("secrets") or []),
        "constraints": list(parent.get("constraints") or []),
    }
    if multi_node and node:
        spec["constraints"].append(hostname(node))
    if spec["constraints"]:
        labels[LABEL_CONSTRAINTS] = constraints_digest(spec["constraints"])
    if parent.get("readOnlyRootFilesystem"):
        spec["readOnlyRootFilesystem"] = True
    return spec


def constraints_digest(constraints: list[str]) -> str:
    """A label value standing for a list of constraints (their order aside)."""
    return hashlib.sha256("\n".join(sorted(constraints)).encode()).hexdigest()[:12]


def parse_variant(status: Mapping[str, Any], default_memory: int) -> Variant | None:
    """A running variant from its FunctionStatus (None when it is not one of ours); ValueError naming the
    label when it is ours but its labels cannot be read."""
    labels = status.get("labels") or {}
    if LABEL_PARENT not in labels:
        return None
    values = []
    for key, kind, default in ((LABEL_BATCH, int, None), (LABEL_CPU, float, None), (LABEL_GPU, float, 0)):
        raw = labels.get(key, default)
        try:
            values.append(kind(raw))
        except (TypeError, ValueError):
            raise ValueError(f"label {key}={raw!r} is not a number") from None
    batch, cpu, gpu = values
    if batch < 1 or not 0 < cpu < math.inf or not 0 <= gpu < math.inf:
        raise ValueError(f"labels {LABEL_BATCH}={batch}, {LABEL_CPU}={cpu:g}, {LABEL_GPU}={gpu:g} are out of range")
    return Variant(str(status["name"]), batch, cpu, gpu, memory_of(status, default_memory), labels.get(LABEL_NODE, ""),
                   _count(status, "replicas"), ready=_count(status, "availableReplicas"), status=dict(status))


def unreadable_variant(status: Mapping[str, Any], default_memory: int) -> Variant:
    """A variant whose labels cannot be read, as far as its resources go (its CPU limit, else none), so that
    it is counted until it is removed."""
    try:
        cpu = parse_cpu((status.get("limits") or {}).get("cpu") or "0")
    except ValueError:
        cpu = 0.0
    labels = status.get("labels") or {}
    return Variant(str(status["name"]), 1, cpu, 0.0, memory_of(status, default_memory), str(labels.get(LABEL_NODE, "")),
                   _count(status, "replicas"), ready=_count(status, "availableReplicas"), status=dict(status))


def _count(status: Mapping[str, Any], key: str) -> int:
    try:
        return max(0, int(status.get(key, 0) or 0))
    except (TypeError, ValueError, OverflowError):  # OverflowError: a count of 1e400, read as infinity
        return 0


def parse_parent(status: Mapping[str, Any], default_memory: int, node: str, gpu_slices: int = 1) -> Variant:
    """The user's own deployment as a pinned instance group (its batch, CPU and GPU from its spec; the node holds
    its ``requests`` for it where it sets them, as Kubernetes does)."""
    env = status.get("envVars") or {}
    limits = status.get("limits") or {}
    try:  # one the watchdog would refuse (not a whole number >= 1) reads as its default, as an unset one;
        # read from its text as the watchdog reads it: int() of a JSON number 4.5 or true took 4 or 1 for it
        batch = int(str(env.get("max_batch_size", 8)).strip())
    except ValueError:  # a JSON null, list or 1e400 (read as infinity) from a broken API failed every function's tick
        batch = 8
    batch = batch if batch >= 1 else 8
    requests = status.get("requests") or {}
    try:  # no limit: it may use what it requests, at least a core
        cpu = parse_cpu(limits.get("cpu") or env.get("cpu_limit") or requests.get("cpu") or "1") or 1.0
    except ValueError:
        cpu = 1.0
    memory = memory_of(status, default_memory) if limits.get("memory") or not requests.get("memory") \
        else memory_of({"limits": {"memory": requests["memory"]}}, default_memory)
    try:  # what the node reserves for it (Kubernetes schedules by requests), at most its limits
        reserved_cpu = min(cpu, parse_cpu(requests["cpu"])) if requests.get("cpu") else None
    except ValueError:
        reserved_cpu = None
    try:
        reserved_memory = min(memory, parse_memory(requests["memory"])) if requests.get("memory") else None
    except ValueError:
        reserved_memory = None
    return Variant(str(status["name"]), batch, cpu, parent_gpu(status, gpu_slices) or 0.0, memory, node,
                   _count(status, "replicas"), pinned=True, ready=_count(status, "availableReplicas"),
                   reserved_cpu=reserved_cpu, reserved_memory=reserved_memory)


def parent_gpu(status: Mapping[str, Any], gpu_slices: int = 1) -> float | None:
    """GPU devices of the user's own deployment: its ``nvidia.com/gpu`` limit over the units per device
    (``gpu_slices``), else the ``gpu_share`` it states (its instances report it, and observe files their times
    under it); 0 when nothing says it has one;
    None when it may run on one without saying how much (a GPU profile, or a constraint on ``nvidia.com/gpu``
    as in docker/kubernetes/gpu-stack.yml, where faas-cli dropped the limit)."""
    try:
        devices = float((status.get("limits") or {}).get(LIMIT_GPU) or 0)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(devices):  # "inf" priced its instances at infinite GPUs and failed every function's tick
        return None
    if devices > 0:
        return devices / gpu_slices
    stated = str((status.get("envVars") or {}).get("gpu_share") or "").strip()
    try:
        share = float(stated) if stated else math.nan
    except ValueError:
        share = math.nan
    if 0 <= share <= 1:  # as the watchdog accepts it
        return share
    profiles = str((status.get("annotations") or {}).get(ANNOTATION_PROFILE, ""))
    hinted = "gpu" in profiles.lower() or any(LIMIT_GPU in str(c) for c in status.get("constraints") or [])
    return None if hinted else 0.0


def variant_age(v: Variant, now_epoch: float) -> float | None:
    """Seconds since the variant was created (its FunctionStatus ``createdAt``), or None when unknown."""
    created = v.status.get("createdAt")
    if not created or not now_epoch:
        return None
    try:
        return now_epoch - datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return None


def memory_of(status: Mapping[str, Any], default: int) -> int:
    """Memory limit bytes of a FunctionStatus (``default`` when unset or unreadable)."""
    try:
        return parse_memory((status.get("limits") or {}).get("memory") or default)
    except ValueError:
        return default


def read_slo(status: Mapping[str, Any]) -> tuple[float | None, str]:
    """(the latency SLO annotation in seconds, "") or (None, why it cannot be read; "" when absent)."""
    from faas_infer.units import parse_duration

    raw = (status.get("annotations") or {}).get(ANNOTATION_SLO)
    if raw is None or raw == "":
        return None, ""
    try:
        slo = parse_duration(raw)
    except ValueError as exc:
        return None, f"annotation {ANNOTATION_SLO}={raw!r} is not a duration ({exc})"
    if not 0 < slo < float("inf"):
        return None, f"annotation {ANNOTATION_SLO}={raw!r}: the SLO must be a positive duration"
    return slo, ""
