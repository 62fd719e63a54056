"""act: turn a plan into the few OpenFaaS calls that differ from what runs, then write live batch configs.

``changes`` is pure (plan + snapshot -> list of Change, each with its reason); ``apply`` sends them:
deploys first, then scale-ups, then scale-downs and deletes, so capacity is added before it is taken away.
Removed variants drain through the watchdog's SIGTERM order, so requests in flight are answered; queued
requests stay in the shared Redis queue for the remaining instances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from autoscaler.config import AutoscalerConfig
from autoscaler.openfaas import OpenFaaSClient, OpenFaaSError
from autoscaler.plan import Plan
from autoscaler.snapshot import Snapshot
from autoscaler.variants import shards, variant_name, variant_spec

logger = logging.getLogger(__name__)

ORDER = {"deploy": 0, "scale-up": 1, "scale-down": 2, "delete": 3}


@dataclass(frozen=True)
class Change:
    """One API call to make."""

    # "deploy", "scale-up", "scale-down" or "delete".
    kind: str
    fn: str
    name: str
    replicas: int = 0
    # The FunctionDeployment for deploy.
    spec: dict[str, Any] = field(default_factory=dict, compare=False)
    # Live batch config {max_batch_size, batch_timeout, latency_slo} for the variant's instances.
    batch: dict[str, str] = field(default_factory=dict, compare=False)
    reason: str = ""


def changes(plan: Plan, snapshot: Snapshot, config: AutoscalerConfig) -> list[Change]:
    """The differences between ``plan`` and the variants running in ``snapshot``."""
    if not plan.valid:
        return []
    states = {f.name: f for f in snapshot.functions}
    multi_node = len(snapshot.nodes) > 1
    out: list[Change] = []
    for fp in plan.functions:
        fs = states.get(fp.name)
        if fs is None or fp.unchanged:
            continue
        running = {v.name: v for v in fs.variants if not v.pinned}
        wanted: dict[str, tuple[int, Any, str]] = {}
        for t in fp.targets:
            for shard, n in enumerate(shards(t.count, config.max_replicas_per_variant)):
                wanted[variant_name(fp.name, t.key, t.node, shard)] = (n, t.candidate, t.node)
        for name, (n, candidate, node) in sorted(wanted.items()):
            current = running.get(name)
            if current is None:
                if candidate is None:
                    continue
                spec = variant_spec(fs.spec, name, fp.name, candidate, node, fs.slo, multi_node)
                batch = {"max_batch_size": str(candidate.batch), "batch_timeout": f"{candidate.timeout:.6f}",
                         "latency_slo": f"{fs.slo:.6f}"}
                out.append(Change("deploy", fp.name, name, n, spec, batch, fp.reason))
            elif current.replicas != n:
                out.append(Change("scale-up" if n > current.replicas else "scale-down", fp.name, name, n,
                                  reason=fp.reason))
        for name in sorted(set(running) - set(wanted)):
            out.append(Change("delete", fp.name, name, reason=fp.reason))
    return sorted(out, key=lambda c: ORDER[c.kind])


def apply(plan_changes: list[Change], client: OpenFaaSClient, redis: Any = None) -> list[tuple[Change, str]]:
    """Send the changes in order; returns (change, "ok" or the error) for each. Never raises."""
    results = []
    for change in plan_changes:
        try:
            if change.kind == "deploy":
                client.deploy(change.spec)
                if change.replicas != 1:
                    client.scale(change.name, change.replicas)
            elif change.kind in ("scale-up", "scale-down"):
                client.scale(change.name, change.replicas)
            else:
                client.delete(change.name)
            logger.info("%s %s (%s) replicas=%d: %s", change.kind, change.name, change.fn, change.replicas,
                        change.reason)
            results.append((change, "ok"))
        except OpenFaaSError as exc:
            logger.error("%s %s failed: %s", change.kind, change.name, exc)
            results.append((change, str(exc)))
    if redis is not None:
        write_live_configs(plan_changes, redis)
    return results


def write_live_configs(plan_changes: list[Change], redis: Any) -> None:
    """Write each deployed variant's batch config where its instances read it live.

    Instance ids of a variant are ``<variant>-<suffix>`` on the local provider; the config is also
    written under the variant's own name for platforms whose instance ids are not known in advance.
    """
    from batcher import keys

    try:
        pipe = redis.pipeline(transaction=False)
        for change in plan_changes:
            if change.kind == "deploy" and change.batch:
                pipe.hset(keys.config(change.fn, change.name), mapping=change.batch)
                for inst in redis.zrange(keys.instances(change.fn), 0, -1):
                    inst = inst.decode() if isinstance(inst, bytes) else str(inst)
                    if inst.startswith(change.name + "-"):
                        pipe.hset(keys.config(change.fn, inst), mapping=change.batch)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the env vars carry the same config; live values are a refinement
        logger.error("writing live batch configs: %s", exc)
