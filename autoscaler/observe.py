"""observe: read the OpenFaaS API, Redis (batcher.stats) and the node inventory into a frozen Snapshot.

Failures never raise: a backend that cannot be read is logged at ERROR and named in ``problems``; a
function without data gets ``rate=None`` (decide then leaves it as it runs). Variants whose parent is gone
(or no longer carries the SLO annotation) are listed as ``orphans`` for act to remove. Each tick also
retires the shared queues of functions none of whose instances beats any more (``presence.retire_dead``):
a function whose last instance was killed, then scaled to zero or deleted, has no instance left to do it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from autoscaler.config import AutoscalerConfig
from autoscaler.openfaas import OpenFaaSClient, OpenFaaSError
from autoscaler.snapshot import FunctionState, Measurement, Node, Orphan, Snapshot, Variant
from autoscaler.variants import memory_of, parent_gpu, parse_parent, parse_variant, read_slo, unreadable_variant
from faas_infer.stack import ANNOTATION_MODEL, LABEL_PARENT, LABEL_SCALE_MAX, LABEL_SCALE_MIN
from faas_infer.units import parse_cpu

logger = logging.getLogger(__name__)


def _int_label(labels: dict, key: str) -> tuple[int | None, str]:
    """(the label's value as a count >= 0, "") or (None, why it cannot be read; "" when absent)."""
    raw = labels.get(key)
    if raw is None or raw == "":
        return None, ""
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None, f"label {key}={raw!r} is not a whole number"
    if value < 0:
        return None, f"label {key}={raw!r} must be >= 0"
    return value, ""


# What _queue answers for a function whose queue could not be read: no rate (decide leaves it as it runs).
_UNKNOWN: dict[str, Any] = {}
# Seconds of the short window read beside ``rate_window``: whether arrivals and refusals go on now.
RECENT_WINDOW = 5


_MAPS = ("labels", "annotations", "envVars", "limits", "requests")
_LISTS = ("secrets", "constraints")


def _readable(status: dict) -> dict:
    """A FunctionStatus with its maps as maps and its lists as lists (one that is not reads as empty), so one
    odd entry cannot stop the tick for every function."""
    return {**status, **{k: {} for k in _MAPS if k in status and not isinstance(status[k], dict)},
            **{k: [] for k in _LISTS if k in status and not isinstance(status[k], list)}}


def _resources(facts: Mapping[str, str], parent: Variant, gpu_unknown: bool) -> tuple[float, float] | str:
    """(cores, GPU share) an instance runs with, or why they cannot be known. Variants state both (the
    autoscaler sets ``cpu_limit`` and ``gpu_share`` on each, 0 on CPU ones); an instance that states no
    ``gpu_share`` is its function's own deployment, filed under the configuration ``parse_parent`` gave it
    (``parent``), so that its measured times and its capacity describe one configuration. Filed under its
    ``cpu_limit`` and no GPU, a GPU parent's times made decide plan CPU variants at the GPU's speed.
    ``gpu_unknown``: the parent may run on a GPU without saying how much of one (``parent_gpu`` is None).
    Watchdogs before ``gpu_share`` could be unset stated 0 on the parent too: they are read as stated."""
    stated = facts.get("gpu_share") or ""
    try:
        gpu = float(stated or 0.0)
    except ValueError:
        return f"gpu_share={stated!r} is not a number"
    raw = facts.get("cpu_limit")
    if not stated or not raw:  # the parent's own instance
        if not gpu and gpu_unknown:
            return ("its parent may run on a GPU (a GPU profile or constraint) without an nvidia.com/gpu limit or "
                    "gpu_share saying how much")
        return parent.cpu, gpu or parent.gpu
    try:
        cpu = parse_cpu(raw)
    except ValueError:
        return f"its CPU limit {raw!r} is not a CPU quantity"
    return (cpu, gpu) if cpu > 0 else f"its CPU limit {raw!r} is not positive"


def _unreachable(exc: Exception) -> bool:
    """True when Redis itself did not answer (as opposed to one function's data being unreadable)."""
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError))


class Observer:
    """Builds snapshots; remembers when each function last had traffic (for keep-warm)."""

    def __init__(self, config: AutoscalerConfig, client: OpenFaaSClient, redis: Any,
                 nodes: Callable[[], tuple[Node, ...]]) -> None:
        self.config = config
        self.client = client
        self.redis = redis
        self.nodes = nodes
        self._last_traffic: dict[str, float] = {}
        # Loop time each parent that variants name was first seen missing from the function list.
        self._missing_since: dict[str, float] = {}
        # The problems of functions' own specs told at ERROR, by function: told again at DEBUG while they last
        # (one line per tick and function would bury the log), at ERROR again once they change or come back.
        self._told: dict[str, str] = {}
        # The error of this tick's first failed Redis read (the others are skipped: a Redis that does not
        # answer would otherwise cost a socket timeout per function, one after another).
        self._redis_failed: Exception | None = None

    def snapshot(self, now: float, epoch: float) -> Snapshot:
        """Everything decide needs, as of ``now`` (loop clock) and ``epoch`` (wall clock, for Redis times)."""
        problems: list[str] = []
        try:
            nodes = self.nodes()
        except (OSError, ValueError) as exc:
            logger.error("node inventory: %s", exc)
            nodes, problems = (), problems + [f"nodes: {exc}"]
        try:
            listed = self.client.list_functions()
        except OpenFaaSError as exc:
            logger.error("OpenFaaS API: %s", exc)
            return Snapshot(now, (), nodes, tuple(problems + [f"openfaas: {exc}"]))
        statuses = [_readable(st) for st in listed if isinstance(st, dict) and isinstance(st.get("name"), str)
                    and st["name"]]
        if len(statuses) < len(listed):
            skipped = len(listed) - len(statuses)
            logger.error("OpenFaaS API: %d function list entries without a name skipped", skipped)
            problems.append(f"function list: {skipped} entries without a name skipped")
        default_node = nodes[0].name if len(nodes) == 1 else ""
        read = {str(st["name"]): read_slo(st) for st in statuses if LABEL_PARENT not in (st.get("labels") or {})}
        unreadable = {name: why for name, (_, why) in read.items() if why}
        told: dict[str, list[str]] = {}
        for name, why in unreadable.items():
            told.setdefault(name, []).append(why)
            problems.append(f"{name}: {why}")
        # a function whose SLO cannot be read keeps its variants (left as they run, not deleted as orphans)
        managed = {name: slo or 0.0 for name, (slo, why) in read.items() if slo is not None or why}
        variants: dict[str, list] = {}
        orphans, held, named = [], [], set()
        for status in statuses:
            try:
                v = parse_variant(status, self.config.default_memory)
            except ValueError as exc:  # ours, but unreadable: removed (its parent re-plans without it)
                parent = str(status["labels"][LABEL_PARENT])
                orphans.append(Orphan(unreadable_variant(status, self.config.default_memory), parent,
                                      f"a variant of {parent} whose {exc}"))
                continue
            if v is None:
                continue
            parent = str(status["labels"][LABEL_PARENT])
            named.add(parent)
            if parent in managed:
                variants.setdefault(parent, []).append(v)
            elif parent in read:
                orphans.append(Orphan(v, parent, f"its parent {parent} no longer carries the latency SLO annotation"))
            elif (missing := now - self._missing_since.setdefault(parent, now)) >= self.config.orphan_grace:
                orphans.append(Orphan(v, parent, f"its parent {parent} is gone"))
            else:  # maybe deleted and being created again (faasd's update): left as it runs for now
                logger.debug("variant %s: its parent %s is not listed; left for now", v.name, parent)
                held.append(Orphan(v, parent, f"its parent {parent} is not listed ({missing:.0f}s): deleted once "
                                              f"missing orphan_grace={self.config.orphan_grace:g}s"))
        # forgotten once the parent is listed again, or none of its variants is
        self._missing_since = {p: at for p, at in self._missing_since.items() if p not in read and p in named}
        functions = []
        self._redis_failed = None
        for status in statuses:
            name = str(status["name"])
            if name not in managed:
                continue
            labels = status.get("labels") or {}
            parent = parse_parent(status, self.config.default_memory, default_node, self.config.gpu_slices)
            bounds, bad_labels = {}, []
            for field, label in (("min_instances", LABEL_SCALE_MIN), ("max_instances", LABEL_SCALE_MAX)):
                bounds[field], problem = _int_label(labels, label)
                if problem:
                    told.setdefault(name, []).append(problem)
                    problems.append(f"{name}: {problem}")
                    bad_labels.append(problem)
            why = [unreadable[name]] if name in unreadable else []
            gpu_unknown = parent_gpu(status, self.config.gpu_slices) is None
            functions.append(FunctionState(
                name, managed[name], (status.get("annotations") or {}).get(ANNOTATION_MODEL, name),
                memory=memory_of(status, self.config.default_memory), **bounds,
                variants=(parent, *variants.get(name, ())), spec=dict(status), unreadable="; ".join(why + bad_labels),
                **self._queue(name, parent, gpu_unknown, epoch, problems)))
        self._tell(told)
        self._retire(epoch, problems)
        # a function deleted (and later deployed again) would keep an old deployment's traffic warm
        # (kept while its variants are held: a parent deleted and being created again, faasd's update)
        self._last_traffic = {fn: at for fn, at in self._last_traffic.items()
                              if fn in managed or any(h.parent == fn for h in held)}
        return Snapshot(now, tuple(functions), nodes, tuple(problems), tuple(orphans), epoch, tuple(held))

    def _tell(self, told: dict[str, list[str]]) -> None:
        """Log each function's spec problems of this tick: at ERROR when new or changed, else at DEBUG."""
        now = {name: "; ".join(whys) for name, whys in told.items()}
        for name, text in now.items():
            level = logging.DEBUG if self._told.get(name) == text else logging.ERROR
            logger.log(level, "function %s: %s; left as it runs", name, text)
        self._told = now

    def _retire(self, epoch: float, problems: list[str]) -> None:
        """Retire the queues of functions whose every instance stopped beating ``stats.RETIRE_AFTER`` ago (or
        ``heartbeat_timeout``, when longer), after this tick read them."""
        if self.redis is None or self._redis_failed is not None:
            return
        from batcher import presence, stats

        stale_after = max(self.config.heartbeat_timeout, stats.RETIRE_AFTER)
        try:
            retired = presence.retire_dead(self.redis, epoch, stale_after)
        except Exception as exc:  # noqa: BLE001 - a failing Redis must not stop the loop
            logger.error("redis: retiring functions without a live instance: %s", exc)
            problems.append(f"redis retire: {exc}")
            return
        for fn, dropped in retired.items():
            logger.warning("function %s: no instance beat for %gs: its queue retired, %d requests dropped (nobody "
                           "was left to answer them), its keys set to expire", fn, stale_after, dropped)

    def _queue(self, fn: str, parent: Variant, gpu_unknown: bool, epoch: float,
               problems: list[str]) -> dict[str, Any]:
        """The function's ``FunctionState`` fields read from its queue statistics ({} when unreadable)."""
        if self.redis is None:
            return _UNKNOWN
        from batcher import stats

        if self._redis_failed is not None:  # one unanswered read per tick, not one per function
            problems.append(f"redis {fn}: skipped ({self._redis_failed})")
            return _UNKNOWN
        try:
            window = max(1, int(self.config.rate_window))
            recent = min(window, RECENT_WINDOW)
            s = stats.read_function_stats(self.redis, fn, epoch, self.config.heartbeat_timeout, (window, recent))
        except Exception as exc:  # noqa: BLE001 - a failing Redis must not stop the loop
            logger.error("redis stats of %s: %s", fn, exc)
            problems.append(f"redis {fn}: {exc}")
            if _unreachable(exc):
                self._redis_failed = exc
            return _UNKNOWN
        rate = s.arrival_rate.get(window, 0.0)
        if rate > 0 or s.depth > 0:
            self._last_traffic[fn] = epoch
        last = self._last_traffic.get(fn)
        measured, dropped = [], {}
        for inst in s.instances:
            where = _resources(inst.facts, parent, gpu_unknown)
            if isinstance(where, str):
                dropped.setdefault(where, []).append(inst.instance)
                continue
            measured.extend(Measurement(b, *where, t) for b, t in inst.exec_seconds.items() if t > 0)
        for why, instances in dropped.items():
            logger.debug("measured times of %s instances %s dropped: %s", fn, ", ".join(instances), why)
            problems.append(f"measured times of {fn} ({len(instances)} instance(s)) dropped: {why}")
        return {"rate": rate, "queue_depth": s.depth, "idle_seconds": None if last is None else epoch - last,
                "measured": tuple(measured), "live_instances": len(s.instances),
                "refused_rate": s.refusal_rate.get(window, 0.0), "recent_rate": s.arrival_rate.get(recent, 0.0),
                "recent_refused": s.refusal_rate.get(recent, 0.0)}
