"""The control loop: it owns the clock; each tick observes, decides and acts, and survives any failure.

Entry points: ``run_forever(config, stop_event)`` (what ``python -m autoscaler`` and ``faas-infer autoscale``
run) and ``Autoscaler.tick(now)`` (one cycle, used by ``faas-infer plan`` with ``dry_run``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable

from autoscaler.act import Change, HeldUpdate, apply, rollout
from autoscaler.attainment import read_attainment
from autoscaler.config import AutoscalerConfig
from autoscaler.decide import decide
from autoscaler.metrics import AutoscalerMetrics, MetricsServer
from autoscaler.nodes import load_nodes, local_node
from autoscaler.observe import Observer
from autoscaler.openfaas import OpenFaaSClient, read_auth
from autoscaler.plan import GuardMemory, Plan
from autoscaler.predictor import Chain, CopPredictor, ExecPredictor, TablePredictor

logger = logging.getLogger(__name__)

# Seconds a Redis read may take before the tick goes on without that function's statistics (one such
# wait per tick: observe skips Redis for the rest of the tick after a timeout).
REDIS_TIMEOUT = 2.0


def redis_client(url: str) -> Any:
    """The autoscaler's Redis client: each read bounded by REDIS_TIMEOUT, none retried."""
    from faas_infer.redisclient import bounded_client

    return bounded_client(url, REDIS_TIMEOUT)


def build_predictor(config: AutoscalerConfig) -> ExecPredictor:
    """COP predictions when a profile DB is configured, then the built-in example table."""
    table = TablePredictor.load()
    if config.profile_db:
        return Chain(CopPredictor(config.profile_db), table)
    return table


class Autoscaler:
    """Observe, decide, act; carries the guard memory between ticks."""

    def __init__(self, config: AutoscalerConfig, client: OpenFaaSClient | None = None, redis: Any = None,
                 predictor: ExecPredictor | None = None,
                 nodes: Callable[[], tuple] | None = None, metrics: AutoscalerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.client = client or OpenFaaSClient(config.gateway_url, read_auth(config.secret_mount_path),
                                               config.namespace)
        if redis is None and config.redis_url:
            redis = redis_client(config.redis_url)
        self.redis = redis
        self.predictor = predictor or build_predictor(config)
        if nodes is None:
            nodes = (lambda: load_nodes(config.nodes_file)) if config.nodes_file else (lambda: (local_node(),))
        self.observer = Observer(config, self.client, self.redis, nodes)
        self.memory = GuardMemory()
        # The snapshot of the latest tick (``faas-infer plan`` prints what runs now from it).
        self.last_snapshot = None
        # Why each function was last left as it runs (logged at INFO when it changes, not every tick).
        self._left: dict[str, str] = {}
        # Why each function's rolling update is held behind instances not ready (logged at INFO when it changes),
        # and since when it is held so (told once it lasts min_variant_age: each step of a rolling update waits
        # for the instance it restarted, which is no news).
        self._held: dict[str, str] = {}
        self._held_since: dict[str, float] = {}
        # Whether the latest tick's plan reached the metrics (a tick failing later is not counted twice).
        self.recorded = False
        if not self.redis:
            logger.warning("no Redis: the autoscaler sees no arrivals and no queue, so it changes nothing; "
                           "variants also need the shared queue to receive requests (set redis_url)")

    def tick(self, now: float, dry_run: bool = False) -> tuple[Plan, list[Change]]:
        """One cycle at ``now`` (monotonic seconds); with ``dry_run`` nothing is changed."""
        started = time.perf_counter()
        self.recorded = False
        snapshot = self.observer.snapshot(now, time.time())
        self.last_snapshot = snapshot
        now += time.perf_counter() - started  # decide judges the snapshot's age by the time it is decided
        if isinstance(self.predictor, Chain):
            for p in self.predictor.predictors:
                if isinstance(p, CopPredictor):
                    p.preload({f.model for f in snapshot.functions})
        started = time.perf_counter()
        if self.memory.started is None and not dry_run:  # one decision (faas-infer plan) is from scratch
            self.memory = dataclasses.replace(self.memory, started=now)
        plan = decide(snapshot, self.predictor, self.config, now, self.memory)
        if self.metrics is not None:
            slos = {f.name: f.slo for f in snapshot.functions if f.slo}
            self.metrics.record_tick(snapshot, plan, time.perf_counter() - started,
                                     read_attainment(self.config.prometheus_url, slos, self.config.namespace
                                                     or "openfaas-fn"))
            self.recorded = True
        if not plan.valid:
            logger.info("no decision: %s", plan.reason)
            return plan, []
        for name, at in sorted(plan.memory.redeployed_at.items()):
            if self.memory.redeployed_at.get(name) != at:
                logger.info("%s was deployed anew under its name (createdAt %s): its demand, measured times and "
                            "capacity factor start afresh", name, plan.memory.deployed.get(name, "?"))
        self.memory = plan.memory
        todo, held = rollout(plan, snapshot, self.config)
        planned = {fp.name for fp in plan.functions}
        left = {fp.name for fp in plan.functions if fp.unchanged}
        self._tell_held(held, planned, left, now)
        if self.metrics is not None:
            self.metrics.record_rollout(held, left)
        # a function deleted, then deployed again, is told again (its "left as it runs" was skipped as said)
        self._left = {name: why for name, why in self._left.items() if name in planned}
        for fp in plan.functions:
            said = self._left.pop(fp.name, None)
            if fp.unchanged:
                self._left[fp.name] = fp.reason
                if fp.reason != said:
                    logger.info("%s left as it runs: %s", fp.name, fp.reason)
            logger.debug("%s: %s", fp.name, fp.reason)
        if todo and not dry_run:
            apply(todo, self.client)
        return plan, todo


    def _tell_held(self, held: tuple[HeldUpdate, ...], planned: set[str], left: set[str], now: float) -> None:
        """Log once at INFO when a function's rolling update has waited ``min_variant_age`` for instances that are
        not ready (one that never gets ready holds it for good, deliberately: the stale variants serve meanwhile),
        and when it goes on. A function ``left`` as it runs this tick (act updates nothing of it) keeps its state:
        a tick without its arrival rate told the update going on, and told it held again later."""
        waiting: dict[str, list[HeldUpdate]] = {}
        for h in held:
            if h.waiting_for:
                waiting.setdefault(h.fn, []).append(h)
        for fn in sorted(set(self._held_since) - set(waiting) - left):
            del self._held_since[fn]
            if self._held.pop(fn, None) is not None and fn in planned:  # one gone is forgotten without a word
                logger.info("rolling update of %s: no longer held by instances not ready", fn)
        for fn, hs in sorted(waiting.items()):
            if now - self._held_since.setdefault(fn, now) < self.config.min_variant_age:
                continue
            blockers = sorted({b for h in hs for b in h.waiting_for})
            said = (f"rolling update of {fn} held: {len(hs)} variant(s) keep their old spec "
                    f"({'; '.join(f'{h.name}: {h.stale} changed' for h in hs)}) until these instances are ready: "
                    f"{', '.join(blockers)}")
            if self._held.get(fn) != said:
                self._held[fn] = said
                logger.info("%s", said)


def run_forever(config: AutoscalerConfig, stop: threading.Event, clock: Callable[[], float] = time.monotonic,
                autoscaler: Autoscaler | None = None) -> None:
    """Tick every ``config.interval`` seconds until ``stop`` is set; a failing tick is logged, not fatal."""
    metrics = AutoscalerMetrics(config.namespace or "openfaas-fn")
    server = MetricsServer(metrics.registry, config.metrics_bind, config.metrics_port).start() \
        if config.metrics_port else None
    scaler = autoscaler or Autoscaler(config, metrics=metrics)
    logger.info("autoscaler: gateway %s, redis %s, every %gs, solver %s", config.gateway_url,
                config.redis_url or "-", config.interval, config.solver)
    while not stop.is_set():
        started = clock()
        try:
            scaler.tick(started)
        except Exception:  # noqa: BLE001 - the control loop must survive
            logger.exception("control tick failed")
            if scaler.metrics is not None and not scaler.recorded:  # a tick counts once: its plan was counted
                scaler.metrics.ticks.inc(outcome="failed")
        stop.wait(max(0.0, config.interval - (clock() - started)))
    if server is not None:
        server.stop()
