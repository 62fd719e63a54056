"""The autoscaler's per-function metrics (one scrape target for the whole control plane) and their server.

Every series carries ``function_name`` as the gateway writes it (``name.namespace``), so dashboards join
them with ``gateway_function_invocation_total`` and friends. The loop calls ``record_tick(snapshot, plan,
seconds)`` after each decision; nothing here does I/O except ``MetricsServer``.

Names (all prefixed ``faas_infer_autoscaler_``): ``arrival_rate``, ``demand_rps``, ``capacity_rps``,
``shortfall_rps``, ``queue_depth``, ``live_instances``, ``instances{config,kind}``, ``planned_instances{config}``,
``allocated_cpu_cores``, ``allocated_gpus``, ``predicted_batch_seconds{config}``,
``measured_batch_seconds{config}``, ``slo_seconds``, ``slo_attainment_ratio``, ``cold_starts_total``,
``decisions_total{action}``, ``last_decision_info{action,reason}``, ``decision_seconds`` (histogram of decide alone),
``ticks_total{outcome}`` (valid, invalid, failed), ``plan_cost``, ``plan_info{solver,status}``,
``stale_variants{waiting}`` (variants whose update the rolling update holds: ``not_ready`` behind an instance
not ready, which may be for good, ``turn`` behind another variant updated this tick).
"""

from __future__ import annotations

import statistics
from typing import Iterable, Mapping

from autoscaler.act import HeldUpdate
from autoscaler.candidates import config_key
from autoscaler.plan import FunctionPlan, Plan
from autoscaler.snapshot import FunctionState, Snapshot
from faas_infer.promtext import MetricsServer, Registry

__all__ = ["AutoscalerMetrics", "MetricsServer"]

PREFIX = "faas_infer_autoscaler_"
DEFAULT_NAMESPACE = "openfaas-fn"
# Decision seconds: a greedy tick takes milliseconds, an exact solve up to its time limit.
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# What a function's plan does to its instance count (the ``action`` label).
ACTIONS = ("scale_up", "scale_down", "reconfigure", "hold", "unchanged")


class AutoscalerMetrics:
    """Every series the autoscaler exports, refreshed from each tick's snapshot and plan."""

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace or DEFAULT_NAMESPACE
        r = self.registry = Registry()
        fn = ("function_name",)
        cfg = ("function_name", "config")
        self.arrival_rate = r.gauge(PREFIX + "arrival_rate", "Requests per second arriving (observed)", fn)
        self.demand = r.gauge(PREFIX + "demand_rps", "Requests per second planned for (held, backlog included)", fn)
        self.capacity = r.gauge(PREFIX + "capacity_rps", "Requests per second the planned instances serve", fn)
        self.shortfall = r.gauge(PREFIX + "shortfall_rps", "Planned demand left uncovered", fn)
        self.queue_depth = r.gauge(PREFIX + "queue_depth", "Requests waiting in the function's shared queue", fn)
        self.live = r.gauge(PREFIX + "live_instances", "Instances heartbeating on the shared queue", fn)
        self.instances = r.gauge(PREFIX + "instances", "Running instances by configuration and kind (deployment: "
                                 "the function's own; variant: added by the autoscaler; held: a variant whose "
                                 "parent is not listed, kept for orphan_grace)", (*cfg, "kind"))
        self.planned = r.gauge(PREFIX + "planned_instances", "Planned instances by configuration", cfg)
        self.cpu = r.gauge(PREFIX + "allocated_cpu_cores", "CPU cores allocated to running instances", fn)
        self.gpu = r.gauge(PREFIX + "allocated_gpus", "GPU devices (shares summed) allocated to running instances", fn)
        self.predicted = r.gauge(PREFIX + "predicted_batch_seconds",
                                 "Predicted seconds of a full batch of a planned configuration", cfg)
        self.measured = r.gauge(PREFIX + "measured_batch_seconds",
                                "Median measured seconds of a full batch, by configuration", cfg)
        self.slo = r.gauge(PREFIX + "slo_seconds", "Latency SLO of the function", fn)
        self.attainment = r.gauge(PREFIX + "slo_attainment_ratio",
                                  "Fraction of recent requests answered within the SLO", fn)
        self.cold_starts = r.counter(PREFIX + "cold_starts_total", "Instances started (each a cold start)", fn)
        self.decisions = r.counter(PREFIX + "decisions_total", "Per-function decisions by action",
                                   ("function_name", "action"))
        self.last_decision = r.gauge(PREFIX + "last_decision_info", "The last decision of each function (value 1)",
                                     ("function_name", "action", "reason"))
        self.decision_seconds = r.histogram(PREFIX + "decision_seconds", "Seconds decide took in one tick (observing and acting not counted)",
                                            (), DECISION_BUCKETS)
        self.ticks = r.counter(PREFIX + "ticks_total", "Control ticks by outcome (valid or invalid plan, or failed)",
                               ("outcome",))
        self.plan_cost = r.gauge(PREFIX + "plan_cost", "Weighted resources (beta * CPU + GPU) of the plan")
        self.plan_info = r.gauge(PREFIX + "plan_info", "Solver and status of the last valid plan (value 1)",
                                 ("solver", "status"))
        self.stale = r.gauge(PREFIX + "stale_variants", "Variants whose spec differs from their parent's, their update "
                             "held by the rolling update (waiting: not_ready, behind an instance that is not ready; "
                             "turn, behind another variant updated this tick)", ("function_name", "waiting"))
        # Per function, (its parent's createdAt, its replicas, its parent's replicas): cold-start counting.
        # Managed instances by configuration (actions). Both forget a function gone from a valid plan.
        self._running: dict[str, tuple[str, int, int]] = {}
        self._managed: dict[str, dict[str, int]] = {}
        # stale_variants as last set, by (function, waiting): kept for a function left as it runs.
        self._stale: dict[tuple[str, str], int] = {}

    def label(self, name: str) -> str:
        """``name.namespace``, the gateway's ``function_name``."""
        return f"{name}.{self.namespace}"

    def record_tick(self, snapshot: Snapshot, plan: Plan, seconds: float,
                    attainment: Mapping[str, float] | None = None) -> None:
        """Refresh every series from one tick; ``attainment`` maps function names to the within-SLO ratio."""
        self.decision_seconds.observe(seconds)
        self.ticks.inc(outcome="valid" if plan.valid else "invalid")
        for metric in (self.arrival_rate, self.queue_depth, self.live, self.instances, self.cpu, self.gpu,
                       self.measured, self.slo, self.attainment):
            metric.clear()
        for fs in snapshot.functions:
            self._record_state(fs)
        self._record_held(snapshot)
        for name, ratio in (attainment or {}).items():
            self.attainment.set(ratio, function_name=self.label(name))
        if not plan.valid:
            return
        # a valid plan: the API listed every function; a parent whose variants are held (orphan_grace) may be
        # being created again, and its instances then are not cold starts of a new function
        listed = {fs.name for fs in snapshot.functions} | {h.parent for h in snapshot.held}
        self._running = {name: seen for name, seen in self._running.items() if name in listed}
        self._managed = {name: seen for name, seen in self._managed.items() if name in listed}
        for metric in (self.demand, self.capacity, self.shortfall, self.planned, self.predicted,
                       self.last_decision, self.plan_info):
            metric.clear()
        self.plan_cost.set(plan.cost)
        self.plan_info.set(1, solver=plan.solver or "-", status=plan.status or "-")
        for fp in plan.functions:
            self._record_plan(fp)

    def record_rollout(self, held: Iterable[HeldUpdate], left: Iterable[str] = ()) -> None:
        """Refresh ``stale_variants`` from the updates a valid plan's rolling update holds (``act.rollout``); a
        function ``left`` as it runs keeps its count (act looked at none of its variants, which are as stale)."""
        kept = set(left)
        counts = {key: n for key, n in self._stale.items() if key[0] in kept}
        for h in held:
            key = (h.fn, "not_ready" if h.waiting_for else "turn")
            counts[key] = counts.get(key, 0) + 1
        self._stale = counts
        self.stale.clear()
        for (fn, waiting), n in counts.items():
            self.stale.set(n, function_name=self.label(fn), waiting=waiting)

    def _record_held(self, snapshot: Snapshot) -> None:
        """Instances and resources of variants held while their parent is not listed, under the parent."""
        count: dict[tuple[str, str], int] = {}
        used: dict[str, tuple[float, float]] = {}
        for h in snapshot.held:
            v = h.variant
            key = (h.parent, config_key(v.batch, v.cpu, v.gpu))
            count[key] = count.get(key, 0) + v.replicas
            cpu, gpu = used.get(h.parent, (0.0, 0.0))
            used[h.parent] = (cpu + v.cpu * v.replicas, gpu + v.gpu * v.replicas)
        for (parent, key), n in count.items():
            self.instances.set(n, function_name=self.label(parent), config=key, kind="held")
        for parent, (cpu, gpu) in used.items():
            self.cpu.set(cpu, function_name=self.label(parent))
            self.gpu.set(gpu, function_name=self.label(parent))

    def _record_state(self, fs: FunctionState) -> None:
        label = self.label(fs.name)
        if fs.rate is not None:
            self.arrival_rate.set(fs.rate, function_name=label)
        self.queue_depth.set(fs.queue_depth, function_name=label)
        self.live.set(fs.live_instances, function_name=label)
        if fs.slo > 0:  # 0: the SLO annotation is unreadable (fs.unreadable)
            self.slo.set(fs.slo, function_name=label)
        running, cpu, gpu = 0, 0.0, 0.0
        by_config: dict[tuple[str, str], int] = {}
        managed: dict[str, int] = {}
        for v in fs.variants:
            key = config_key(v.batch, v.cpu, v.gpu)
            kind = (key, "deployment" if v.pinned else "variant")
            by_config[kind] = by_config.get(kind, 0) + v.replicas
            if not v.pinned:
                managed[key] = managed.get(key, 0) + v.replicas
            running += v.replicas
            cpu += v.cpu * v.replicas
            gpu += v.gpu * v.replicas
        for (key, kind), n in by_config.items():
            self.instances.set(n, function_name=label, config=key, kind=kind)
        self.cpu.set(cpu, function_name=label)
        self.gpu.set(gpu, function_name=label)
        created = str(fs.spec.get("createdAt") or "")
        parent = sum(v.replicas for v in fs.variants if v.pinned)
        seen = self._running.get(fs.name)
        if seen is None:  # first seen: what runs is the baseline
            self.cold_starts.inc(0, function_name=label)
        else:
            was, before, parent_before = seen
            if created and was and created != was:  # deployed anew: its own instances are new, variants adopted
                before -= parent_before
            if running > before:
                self.cold_starts.inc(running - before, function_name=label)
        self._running[fs.name] = (created or (seen[0] if seen else ""), running, parent)
        self._managed[fs.name] = managed
        samples: dict[str, list[float]] = {}
        for m in fs.measured:
            samples.setdefault(config_key(m.batch, m.cpu, m.gpu), []).append(m.seconds)
        for key, values in samples.items():
            self.measured.set(statistics.median(values), function_name=label, config=key)

    def _record_plan(self, fp: FunctionPlan) -> None:
        label = self.label(fp.name)
        self.demand.set(fp.demand, function_name=label)
        self.capacity.set(fp.capacity, function_name=label)
        self.shortfall.set(fp.shortfall, function_name=label)
        planned: dict[str, int] = {}
        for t in fp.targets:  # one target per (configuration, node): the gauge sums a configuration's nodes
            planned[t.key] = planned.get(t.key, 0) + t.count
            self.planned.set(planned[t.key], function_name=label, config=t.key)
            if t.candidate is not None:
                self.predicted.set(t.candidate.t_exec, function_name=label, config=t.key)
        action = self.action(fp)
        self.decisions.inc(function_name=label, action=action)
        self.last_decision.set(1, function_name=label, action=action, reason=fp.reason or "-")

    def action(self, fp: FunctionPlan) -> str:
        """What the plan does to the instances the autoscaler manages: one of ``ACTIONS``."""
        if fp.unchanged:
            return "unchanged"
        current = self._managed.get(fp.name, {})
        planned: dict[str, int] = {}
        for t in fp.targets:
            planned[t.key] = planned.get(t.key, 0) + t.count
        if sum(planned.values()) > sum(current.values()):
            return "scale_up"
        if sum(planned.values()) < sum(current.values()):
            return "scale_down"
        return "hold" if planned == {k: n for k, n in current.items() if n} else "reconfigure"

