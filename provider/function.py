"""One deployed function: its spec, desired replicas, running replicas, and which replica gets a request."""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from faas_infer.stack import ANNOTATION_SLO, LABEL_PARENT, LABEL_SCALE_MAX, LABEL_SCALE_MIN
from faas_infer.units import parse_cpu, parse_duration, parse_memory
from provider.errors import BadRequest
from provider.replica import ACTIVE, Replica, State
from provider.types import FunctionDeployment

# Replicas in a row that exited before ever becoming ready, from which a request with no replica to take it
# is answered at once instead of waiting cold_start_timeout: a handler that cannot load held each caller
# (and a provider thread) 60 s, and 140 callers froze the whole gateway, /healthz included. Crashes of
# replicas that were serving (out of memory, a poison request) do not count: those restart and serve.
CRASH_LOOP = 2



@dataclass(frozen=True)
class Limits:
    """The parsed limits of a deployment."""

    # Cores (cpu limit), None when unset.
    cpu: float | None = None
    # Bytes (memory limit), None when unset.
    memory: int | None = None

    @classmethod
    def of(cls, spec: FunctionDeployment) -> "Limits":
        """Parse ``spec.limits``; ``BadRequest`` on a malformed quantity."""
        try:
            cpu = parse_cpu(spec.limits["cpu"]) if spec.limits.get("cpu") else None
            memory = parse_memory(spec.limits["memory"]) if spec.limits.get("memory") else None
        except ValueError as exc:
            raise BadRequest(f"limits of {spec.service}: {exc}") from None
        return cls(cpu if cpu else None, memory if memory else None)


def min_replicas(spec: FunctionDeployment, max_replicas: int) -> int:
    """Replicas on deploy and after a scale from zero: label com.openfaas.scale.min (default 1), kept within
    1..``max_replicas`` as the scale API keeps its requests."""
    try:
        wanted = int(spec.labels.get(LABEL_SCALE_MIN, "1"))
    except ValueError:
        wanted = 1
    return min(max(1, wanted), most_replicas(spec, max_replicas))


def most_replicas(spec: FunctionDeployment, max_replicas: int) -> int:
    """The most replicas the function may run: label com.openfaas.scale.max (when a number >= 1) within the
    provider's ``max_replicas`` (an FSD coordinator, say, must run alone)."""
    try:
        label = int(spec.labels.get(LABEL_SCALE_MAX, max_replicas))
    except ValueError:
        label = max_replicas
    return max(1, min(label, max_replicas))


def queue_name(spec: FunctionDeployment) -> str:
    """The batch queue the replicas pull from: the parent's for autoscaler variants, else the function's."""
    return spec.labels.get(LABEL_PARENT) or spec.service


def watchdog_settings(spec: FunctionDeployment, limits: Limits, function_dir: str, redis_url: str,
                      drain_interval: float) -> dict[str, str]:
    """What the provider tells every replica of ``spec`` (ports, folders and ids are added per replica)."""
    env = spec.envVars
    out = {"bind_address": "127.0.0.1", "function_dir": function_dir, "function_name": queue_name(spec)}
    if limits.cpu is not None:
        out["cpu_limit"] = spec.limits["cpu"]
    if limits.memory is not None:
        out["memory_limit"] = str(limits.memory)
    if not env.get("latency_slo") and spec.annotations.get(ANNOTATION_SLO):
        out["latency_slo"] = spec.annotations[ANNOTATION_SLO]
    if not env.get("healthcheck_interval"):
        out["healthcheck_interval"] = f"{drain_interval:g}"
    if redis_url and not env.get("batch_backend"):
        out["batch_backend"] = "redis"
    if redis_url and not env.get("redis_url"):
        out["redis_url"] = redis_url
    return out


def write_timeout(spec: FunctionDeployment) -> float:
    """The replicas' write_timeout (30s unless envVars say otherwise)."""
    try:
        return parse_duration(spec.envVars.get("write_timeout") or "30s")
    except ValueError:
        return 30.0


@dataclass
class FunctionState:
    """A function as the provider runs it. Mutated only under ``lock`` (the runtime's)."""

    spec: FunctionDeployment
    function_dir: str
    limits: Limits
    lock: threading.Condition
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    generation: int = 1
    desired: int = 1
    replicas: list[Replica] = field(default_factory=list)
    deleted: bool = False
    restarts: int = 0
    crash_streak: int = 0
    # Replicas in a row that exited before becoming ready (0 once one is ready).
    start_failures: int = 0
    next_start_at: float = 0.0
    last_exit: str = ""
    _rr: itertools.count = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.spec.service

    def new_instance_id(self) -> str:
        """A unique replica id: ``<name>-<random>``."""
        return f"{self.name}-{secrets.token_hex(3)}"

    def current(self) -> list[Replica]:
        """Active replicas of the current generation."""
        return [r for r in self.replicas if r.spec.generation == self.generation and r.state in ACTIVE]

    def ready(self) -> list[Replica]:
        """Replicas that take requests."""
        return [r for r in self.replicas if r.state is State.READY]

    def failing(self, now: float) -> str:
        """Why a request should not wait for a replica ("" when it may): none ready or starting, and the last
        ``CRASH_LOOP`` replicas or more exited before becoming ready."""
        if self.start_failures < CRASH_LOOP or any(r.state in (State.READY, State.STARTING) for r in self.replicas):
            return ""
        return (f"its replicas keep failing to start ({self.start_failures} in a row, the last {self.last_exit}); "
                f"next start in {max(0.0, self.next_start_at - now):.0f}s")

    def pick(self) -> Replica | None:
        """The ready replica with the fewest requests in flight (ties rotate); it is acquired."""
        ready = self.ready()
        if not ready:
            return None
        start = next(self._rr) % len(ready)
        rotated = ready[start:] + ready[:start]
        chosen = min(rotated, key=lambda r: r.outstanding)
        chosen.acquire()
        return chosen

    def replica_dir(self, run_dir: str, instance_id: str) -> str:
        """Working directory of one replica."""
        return os.path.join(run_dir, "replicas", self.name, instance_id)

    def instances(self) -> tuple[Mapping, ...]:
        """Per-replica records for the status."""
        return tuple(r.describe() for r in self.replicas)

    def runtime_info(self) -> dict:
        """The faas-infer part of the status: replicas, restarts and the last unexpected exit."""
        info: dict = {"queue": queue_name(self.spec), "functionDir": self.function_dir,
                      "instances": [dict(i) for i in self.instances()]}
        if self.restarts:
            info["restarts"] = self.restarts
        if self.last_exit:
            info["lastExit"] = self.last_exit
        return info

    def backoff(self, base: float, cap: float) -> float:
        """Delay before the next restart after ``crash_streak`` crashes in a row."""
        return min(cap, base * 2 ** max(0, self.crash_streak - 1))

    def failed(self, now: float, last_exit: str, base: float, cap: float, restarted: bool = True,
               was_ready: bool = False) -> float:
        """Count a replica that exited (``restarted``) or never started, set when the next one may start
        (``backoff``), remember why; returns the delay. Call with ``lock`` held."""
        self.restarts += int(restarted)
        self.crash_streak += 1
        self.start_failures = 0 if was_ready else self.start_failures + 1
        delay = self.backoff(base, cap)
        self.next_start_at = now + delay
        self.last_exit = last_exit
        return delay

    def due(self, now: float | None = None) -> bool:
        """Whether a restart may happen now."""
        return (now if now is not None else time.monotonic()) >= self.next_start_at
