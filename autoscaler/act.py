"""act: turn a plan into the few OpenFaaS calls that differ from what runs.

``changes`` is pure (plan + snapshot -> list of Change, each with its reason); ``apply`` sends them:
deploys first, then updates and scale-ups, then scale-downs and deletes, so capacity is added before it
is taken away; an API that does not answer costs one timeout per tick, not one per change. A running
variant whose spec no longer matches its parent's (a new image, environment or annotations, a changed
SLO) is updated in place (PUT), one serving variant of a function per tick and only while the function's
other instances are ready (a rolling update; ``_held_by``; ``rollout`` also names the updates held).
Variants whose parent is unmanaged, or gone for ``orphan_grace``, are deleted (decide keeps variants
younger than ``min_variant_age`` in its plans). Removed variants drain through the watchdog's SIGTERM
order, so requests in flight are answered; queued requests stay in the
shared Redis queue for the remaining instances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from autoscaler.candidates import config_key
from autoscaler.config import AutoscalerConfig
from autoscaler.openfaas import OpenFaaSClient, OpenFaaSError, OpenFaaSUnreachable
from autoscaler.plan import Plan
from autoscaler.snapshot import Snapshot, Variant
from autoscaler.variants import LABEL_CONSTRAINTS, LABEL_GPU_UNITS, LIMIT_GPU, shards, variant_name, variant_spec

logger = logging.getLogger(__name__)

ORDER = {"deploy": 0, "update": 1, "scale-up": 2, "scale-down": 3, "delete": 4}
# Environment a variant gets that changes from tick to tick without being worth a restart (the execution
# time prior is only a starting point; the instance measures its own).
_VOLATILE_ENV = ("exec_prior",)


@dataclass(frozen=True)
class Change:
    """One API call to make."""

    # "deploy", "update", "scale-up", "scale-down" or "delete".
    kind: str
    fn: str
    name: str
    replicas: int = 0
    # The FunctionDeployment for deploy and update.
    spec: dict[str, Any] = field(default_factory=dict, compare=False)
    reason: str = ""


@dataclass(frozen=True)
class HeldUpdate:
    """A variant whose spec no longer matches its parent's, left stale this tick by the rolling update."""

    fn: str
    name: str
    # What of its spec is stale (``_stale``).
    stale: str
    # The function's instances not ready that it waits for, as "name (ready/replicas ready)"; empty when it
    # waits only for another variant updated this tick (the update goes on, one variant per tick).
    waiting_for: tuple[str, ...] = ()


def changes(plan: Plan, snapshot: Snapshot, config: AutoscalerConfig) -> list[Change]:
    """The differences between ``plan`` and the variants running in ``snapshot``."""
    return rollout(plan, snapshot, config)[0]


def rollout(plan: Plan, snapshot: Snapshot, config: AutoscalerConfig) -> tuple[list[Change], tuple[HeldUpdate, ...]]:
    """``changes``, and the stale variants whose update waits (an instance that never gets ready holds a rolling
    update for good, deliberately: what still runs the old spec serves meanwhile; the loop tells the operator)."""
    if not plan.valid:
        return [], ()
    held: list[HeldUpdate] = []
    states = {f.name: f for f in snapshot.functions}
    multi_node = len(snapshot.nodes) > 1
    out = [Change("delete", o.parent, o.variant.name, reason=o.reason) for o in snapshot.orphans]
    for fp in plan.functions:
        fs = states.get(fp.name)
        if fs is None or fp.unchanged:
            continue
        running = {v.name: v for v in fs.variants if not v.pinned}
        by_slot = {_slot(v): v.name for v in running.values()}
        wanted: dict[str, tuple[int, Any, str]] = {}
        updating: list[Variant] = []
        for t in fp.targets:
            for shard, n in enumerate(shards(t.count, config.max_replicas_per_variant)):
                # a running variant of this slot keeps its name, whatever the naming rule gave it
                name = by_slot.get((t.key, t.node, shard)) or variant_name(fp.name, t.key, t.node, shard)
                wanted[name] = (n, t.candidate, t.node)
        for name, (n, candidate, node) in sorted(wanted.items()):
            current = running.get(name)
            spec = variant_spec(fs.spec, name, fp.name, candidate, node, fs.slo, multi_node,
                                config.gpu_slices) if candidate else None
            if current is None:
                if spec is not None:
                    out.append(Change("deploy", fp.name, name, n, spec, fp.reason))
                continue
            stale = _stale(current, spec) if spec is not None else ""
            waiting = _held_by(current, fs.variants, updating) if stale else None
            if stale and waiting is None:
                updating.append(current)
                out.append(Change("update", fp.name, name, n, spec, f"{stale} changed"))
            elif stale:
                held.append(HeldUpdate(fp.name, name, stale, waiting))
            if current.replicas != n:
                out.append(Change("scale-up" if n > current.replicas else "scale-down", fp.name, name, n,
                                  reason=fp.reason))
        for name in sorted(set(running) - set(wanted)):
            out.append(Change("delete", fp.name, name, reason=fp.reason))
    return sorted(out, key=lambda c: ORDER[c.kind]), tuple(held)


def _ready(v: Variant) -> bool:
    return v.ready >= v.replicas


def _held_by(variant: Variant, every: tuple[Variant, ...], updating: list[Variant]) -> tuple[str, ...] | None:
    """None when a stale ``variant`` is updated this tick, else the instances not ready it waits for: a rolling
    update, one serving variant of a function at a time, and only while every other instance of it (its
    parent's included) is ready; one not ready serves nothing and is updated at once. Updated all in one tick,
    every variant restarted together (faasd replaces a container on update), and a new SLO or image left the
    function with nothing but its parent, itself just restarted by the same ``faas-cli deploy``. The others
    stay stale, so later ticks update them."""
    if not _ready(variant):
        return None
    blockers = tuple(f"{v.name} ({v.ready}/{v.replicas} ready)" for v in every if v is not variant and not _ready(v))
    if blockers or any(_ready(u) for u in updating):
        return blockers
    return None


def _slot(v: Variant) -> tuple[str, str, int | None]:
    """(configuration, node, shard) a running variant fills: its labels and its name's shard suffix. A
    variant named by an earlier naming rule (node names cut to 20 characters before the hash suffix) is
    matched by its slot, not renamed: a rename deployed the new name and deleted the ready old one in the
    same tick."""
    tail = v.name.rsplit("-", 1)[-1]
    return config_key(v.batch, v.cpu, v.gpu), v.node, int(tail) if tail.isdigit() else None


def _stale(running: Variant, spec: Mapping[str, Any]) -> str:
    """What of ``spec`` the running variant does not have ("" when nothing): its image, process, GPU units, its
    constraints (by their label: faas-netes does not report them), or any environment variable or annotation
    ``spec`` sets (others the platform adds are ignored)."""
    status = running.status
    if not status:
        return ""
    what = []
    for key in ("image", "envProcess"):
        if spec.get(key) and status.get(key) != spec.get(key):
            what.append(key)
    gpu = (spec.get("limits") or {}).get(LIMIT_GPU)  # the units a share asks for follow gpu_slices
    labels = status.get("labels") or {}
    labels = labels if isinstance(labels, Mapping) else {}
    # faas-netes reports no GPU limit: there the units are read from the label the variant was deployed with
    have = (status.get("limits") or {}).get(LIMIT_GPU) or labels.get(LABEL_GPU_UNITS, "")
    if gpu and str(have) != gpu:
        what.append(f"limits {LIMIT_GPU}")
    if labels.get(LABEL_CONSTRAINTS) != (spec.get("labels") or {}).get(LABEL_CONSTRAINTS):
        what.append("constraints")
    for key in ("envVars", "annotations"):
        have = status.get(key) or {}
        if not isinstance(have, Mapping):
            continue
        diff = sorted(k for k, v in (spec.get(key) or {}).items() if k not in _VOLATILE_ENV and have.get(k) != v)
        if diff:
            what.append(f"{key} {', '.join(diff)}")
    return "; ".join(what)


def apply(plan_changes: list[Change], client: OpenFaaSClient) -> list[tuple[Change, str]]:
    """Send the changes in order; returns (change, "ok" or the error) for each. Never raises.

    After a call the API did not answer, the rest are skipped ("skipped (<its error>)") and left to the next
    tick: each would wait out the client's timeout in turn (three changes to a hung gateway took 30 s of a
    5 s tick). A call the API refuses costs only itself."""
    results = []
    down: OpenFaaSUnreachable | None = None
    for change in plan_changes:
        if down is not None:
            results.append((change, f"skipped ({down})"))
            continue
        try:
            if change.kind == "deploy":
                client.deploy(change.spec)
                if change.replicas != 1:
                    client.scale(change.name, change.replicas)
            elif change.kind == "update":
                client.update(change.spec)
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
            if isinstance(exc, OpenFaaSUnreachable):
                down = exc
    skipped = sum(outcome.startswith("skipped") for _, outcome in results)
    if skipped:
        logger.error("%d changes skipped until the next tick: the OpenFaaS API did not answer", skipped)
    return results
