"""The provider's state and operations: deploy, update, delete, scale, status, and a replica per request."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from typing import Mapping

from faas_infer.ports import free_port
from faas_infer.stack import ANNOTATION_SLO
from provider.catalog import Catalog
from provider.config import ProviderConfig
from provider.cores import CoreAllocator, cores_for
from provider.errors import BadRequest, Conflict, NotFound
from provider.function import FunctionState, Limits, min_replicas, most_replicas, watchdog_settings
from provider.logstore import LogStore
from provider.replica import LaunchSpec, Replica, State, check_env, launch, replica_env
from provider.supervisor import Supervisor
from provider.types import FunctionDeployment, FunctionStatus, FunctionUsage
from watchdog.config import ConfigError as WatchdogConfigError

logger = logging.getLogger(__name__)

SECRETS_UNSUPPORTED = "secrets are not supported by the local provider"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Runtime:
    """Every function of the provider and their replicas; thread-safe."""

    def __init__(self, config: ProviderConfig, catalog: Catalog, base_env: Mapping[str, str],
                 cores: CoreAllocator | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.base_env = dict(base_env)
        self.cores = cores or CoreAllocator()
        self._own_run_dir = not config.run_dir
        self.run_dir = config.run_dir or tempfile.mkdtemp(prefix="faas-infer-")
        os.makedirs(self.run_dir, exist_ok=True)
        self.logs = LogStore(config.namespace, os.path.join(self.run_dir, "logs"), config.log_lines)
        self.lock = threading.Condition()
        self.functions: dict[str, FunctionState] = {}
        self.retired: list[FunctionState] = []
        self.invocations: dict[str, int] = {}
        self.stopping = False
        self.redis_url = config.redis_url
        if self.redis_url and importlib.util.find_spec("batcher.redis_queue") is None:
            logger.warning("batcher.redis_queue is not available: replicas use local queues")
            self.redis_url = ""
        self._ports: set[int] = set()
        self.supervisor = Supervisor(self)

    def start(self) -> "Runtime":
        """Start the reconcile loop."""
        self.supervisor.start()
        return self

    # -- the API's operations -------------------------------------------------------------------------

    def deploy(self, spec: FunctionDeployment, update: bool) -> None:
        """POST (``update`` False: 409 if it exists) or PUT (404 if it does not) a function."""
        name, namespace = spec.service, self.namespace(spec.namespace)
        if not _NAME.match(name) or len(name) > 63:
            raise BadRequest(f"service name {name!r} is not valid: use lowercase letters, digits and '-' "
                             f"(at most 63), starting and ending with a letter or digit")
        if spec.secrets:
            raise BadRequest(f"{SECRETS_UNSUPPORTED}: remove secrets {list(spec.secrets)} from {name} and pass "
                             f"the values in envVars (or environment_file in stack.yml)")
        spec = dataclasses.replace(spec, namespace=namespace)
        limits = Limits.of(spec)
        with self.lock:
            existing = self.functions.get(name)
            if update and existing is None:
                raise NotFound(f"deployment not found: {name}.{namespace}")
            if not update and existing is not None:
                raise Conflict(f"function {name} already exists in namespace {namespace}")
            function_dir = self.catalog.resolve(spec)
            self._check_env(spec, limits, function_dir)
            if existing is None:
                fn = FunctionState(spec, function_dir, limits, self.lock,
                                   desired=min_replicas(spec, self.config.max_replicas))
                self.functions[name] = fn
                self.logs.keep(name)
                self.logs.event(name, f"deployed {spec.image} from {function_dir} with {fn.desired} replica(s)")
            else:
                existing.spec, existing.function_dir, existing.limits = spec, function_dir, limits
                existing.desired = min(existing.desired, most_replicas(spec, self.config.max_replicas))
                existing.generation += 1
                existing.crash_streak, existing.start_failures, existing.next_start_at = 0, 0, 0.0
                self.logs.event(name, f"updated to {spec.image} (generation {existing.generation})")
        self.notify()

    def _check_env(self, spec: FunctionDeployment, limits: Limits, function_dir: str) -> None:
        """``BadRequest`` naming the key when the replicas' watchdog would refuse its environment (it would
        crash-loop): checked on the environment a replica gets, provider settings included."""
        try:
            check_env(self._replica_env(spec, limits, function_dir, f"{spec.service}-check", self.run_dir))
        except WatchdogConfigError as exc:
            where = "envVars"
            if str(exc).startswith("latency_slo=") and not spec.envVars.get("latency_slo"):
                where = f"annotation {ANNOTATION_SLO}"  # the provider turned it into latency_slo
            raise BadRequest(f"{where} of {spec.service}: {exc}") from None

    def _replica_env(self, spec: FunctionDeployment, limits: Limits, function_dir: str, instance_id: str,
                     tmp_dir: str) -> dict[str, str]:
        """The environment a replica of ``spec`` runs with: the base, the function's envVars, then the
        provider's watchdog settings."""
        settings = watchdog_settings(spec, limits, function_dir, self.redis_url, self.config.drain_interval)
        settings.update({"instance_id": instance_id, "TMPDIR": tmp_dir})
        return replica_env(self.base_env, spec.envVars, settings)

    def delete(self, name: str, namespace: str) -> None:
        """Remove a function; its replicas drain and stop."""
        namespace = self.namespace(namespace)
        with self.lock:
            fn = self.functions.pop(name, None)
            if fn is None:
                raise NotFound(f"function {name} not found in namespace {namespace}")
            fn.deleted = True
            self.retired.append(fn)
            self.logs.event(name, "deleted: replicas draining")
        self.notify()

    def scale(self, name: str, namespace: str, replicas: int) -> None:
        """Set the desired replicas (clamped to the function's com.openfaas.scale.max and max_replicas)."""
        fn = self.get(name, namespace)
        with self.lock:
            target = min(replicas, most_replicas(fn.spec, self.config.max_replicas))
            if target != fn.desired:
                self.logs.event(name, f"scaled from {fn.desired} to {target} replica(s)")
            fn.desired = target
        self.notify()

    def get(self, name: str, namespace: str = "") -> FunctionState:
        """The function, or ``NotFound``."""
        namespace = self.namespace(namespace)
        with self.lock:
            fn = self.functions.get(name)
        if fn is None:
            raise NotFound(f"function {name} not found in namespace {namespace}")
        return fn

    def find(self, name: str) -> FunctionState | None:
        """The function or None (for invocations)."""
        with self.lock:
            return self.functions.get(name)

    def list(self, namespace: str = "") -> list[FunctionState]:
        """Deployed functions in deploy order."""
        self.namespace(namespace)
        with self.lock:
            return list(self.functions.values())

    def status(self, fn: FunctionState, usage: bool = False) -> FunctionStatus:
        """The FunctionStatus of ``fn``."""
        with self.lock:
            replicas = list(fn.replicas)
            measured = None
            if usage:
                measured = FunctionUsage(sum(r.cpu_millicores() for r in replicas),
                                         float(sum(r.rss() for r in replicas)))
            return FunctionStatus(fn.spec, float(self.invocations.get(fn.name, 0)), fn.desired,
                                  sum(1 for r in replicas if r.state is State.READY), fn.created_at, measured,
                                  runtime=fn.runtime_info())

    def namespace(self, namespace: str) -> str:
        """The namespace to use: the default when empty; ``BadRequest`` for any other."""
        if namespace and namespace != self.config.namespace:
            raise BadRequest(f"namespace {namespace} is not served: this provider runs {self.config.namespace}")
        return self.config.namespace

    def count_invocation(self, name: str) -> None:
        """One more invocation of a deployed function (any status)."""
        with self.lock:
            self.invocations[name] = self.invocations.get(name, 0) + 1

    def acquire(self, fn: FunctionState, timeout: float) -> Replica | None:
        """A ready replica with one request counted on it, waiting up to ``timeout`` for one to become
        ready (not at all while the function is crash-looping: ``FunctionState.failing``); a function at zero
        replicas is scaled to its minimum first (scale from zero)."""
        deadline = time.monotonic() + timeout
        woke = False  # this call scaled the function from zero: it waits for that start whatever came before
        with self.lock:
            while not self.stopping and not fn.deleted:
                replica = fn.pick()
                if replica is not None:
                    return replica
                if fn.desired == 0:
                    fn.desired = min_replicas(fn.spec, self.config.max_replicas)
                    self.logs.event(fn.name, f"scale from zero to {fn.desired} replica(s) for a request")
                    self.supervisor.wake.set()
                    woke = True
                now = time.monotonic()
                left = deadline - now
                if left <= 0 or (not woke and fn.failing(now)):
                    return None
                self.lock.wait(min(left, 0.5))
        return None

    def refused(self, fn: FunctionState, replica: Replica) -> None:
        """``replica`` refused a connection: take it out of rotation until a health check passes. A replica
        stopped from outside (SIGTERM, a kill) closes its port before three failed health checks mark it,
        and with nothing in flight it stays the least busy: every request tried it and got 503 while another
        replica served. Its health is checked on the next tick, so one that refused by chance is back at once."""
        with self.lock:
            if replica.state is not State.READY:
                return
            replica.set_state(State.UNHEALTHY)
            replica.last_health = 0.0
        self.logs.event(fn.name, f"replica {replica.instance_id} refused a connection: not routed to until healthy")
        self.supervisor.wake.set()

    # -- used by the supervisor -----------------------------------------------------------------------

    def all_functions(self) -> list[FunctionState]:
        """Deployed and retired (still draining) functions."""
        with self.lock:
            return list(self.functions.values()) + list(self.retired)

    def forget(self, fn: FunctionState, now: float | None = None) -> None:
        """Drop a deleted function whose replicas are all gone; its logs go ``log_retention`` later unless the
        name is deployed again."""
        with self.lock:
            if fn in self.retired:
                self.retired.remove(fn)
            if fn.name not in self.functions and all(r.name != fn.name for r in self.retired):
                self.logs.retire(fn.name, self.config.log_retention, time.monotonic() if now is None else now)

    def notify(self) -> None:
        """Wake request threads waiting for a replica, and the supervisor."""
        with self.lock:
            self.lock.notify_all()
        self.supervisor.wake.set()

    def start_replica(self, fn: FunctionState) -> Replica:
        """Launch one replica of ``fn``'s current spec."""
        instance_id = fn.new_instance_id()
        run_dir = fn.replica_dir(self.run_dir, instance_id)
        cores = self.cores.allocate(cores_for(fn.limits.cpu, len(self.cores.cores))) if fn.limits.cpu else []
        spec = LaunchSpec(fn.name, instance_id, fn.generation, fn.function_dir, run_dir,
                          self._replica_env(fn.spec, fn.limits, fn.function_dir, instance_id, run_dir), tuple(cores),
                          self.config.python)
        port, metrics_port = self._free_port(), self._free_port()
        try:
            replica = launch(spec, port, metrics_port, lambda line: self.logs.append(fn.name, instance_id, line))
        except BaseException:  # nothing was started: what was set aside for it is free again
            self.cores.release(list(cores))
            with self.lock:
                self._ports.discard(port)
                self._ports.discard(metrics_port)
            raise
        with self.lock:
            fn.replicas.append(replica)
        pinned = f", pinned to cores {cores}" if cores else ""
        self.logs.event(fn.name, f"replica {instance_id} starting (pid {replica.pid}, port {port}{pinned})")
        return replica

    def release_replica(self, replica: Replica) -> None:
        """Give back the cores, ports and connections of a replica that has exited."""
        self.cores.release(list(replica.spec.cores))
        with self.lock:
            self._ports.discard(replica.port)
            self._ports.discard(replica.metrics_port)
        if replica.pool is not None:
            replica.pool.close()
        if replica.upstream is not None:
            replica.upstream.close()
        shutil.rmtree(replica.spec.run_dir, ignore_errors=True)

    def _free_port(self) -> int:
        while True:
            port = free_port()
            with self.lock:
                if port not in self._ports:
                    self._ports.add(port)
                    return port

    # -- shutdown -------------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop waiting for replicas and end log follows (first step of shutdown)."""
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self.logs.end_follows()

    def shutdown(self, timeout: float = 40.0) -> None:
        """Stop every replica (drained, then killed when overdue) and remove a temporary run dir."""
        self.begin_shutdown()
        self.supervisor.stop(timeout)
        self.logs.close()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
