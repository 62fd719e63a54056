"""The reconcile loop: makes the running replicas match each function's desired state.

One thread does every start and stop, so process management never races. Each tick, per function:
reap exited processes (a crash is logged, counted and restarted with backoff), enforce the memory limit,
health-check (a replica failing every check for ``liveness_timeout`` after turning unhealthy is killed, and so
restarted, as by a Kubernetes liveness probe), close kept connections idle too long, start or drain replicas
to reach the desired count (an update replaces the old generation only once the new one is ready), and move
draining replicas on to SIGTERM and, if overdue, SIGKILL.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from provider.function import FunctionState, write_timeout
from provider.replica import ACTIVE, Replica, State

if TYPE_CHECKING:
    from provider.runtime import Runtime

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0
HEALTH_FAILURES = 3
# Seconds past a busy replica's write_timeout before it counts as hung (its requests are over by then).
LIVENESS_GRACE = 10.0
STABLE_SECONDS = 10.0


class Supervisor:
    """Owns the replica processes of every function of one runtime."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._last_memory = 0.0
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        """Run the loop in its thread."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Drain every replica, wait up to ``timeout`` seconds, kill what is left, end the loop."""
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout + 5)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            busy = False
            try:
                busy = self.tick(time.monotonic())
            except Exception:  # noqa: BLE001 - the loop must survive one bad tick
                logger.exception("supervisor tick failed")
            self.wake.wait(0.05 if busy else 0.25)
            self.wake.clear()
        self._shutdown()

    def tick(self, now: float) -> bool:
        """One pass over every function; True while something is in transition (tick again soon)."""
        check_memory = now - self._last_memory >= self.config.memory_interval
        if check_memory:
            self._last_memory = now
        busy = False
        for fn in self.runtime.all_functions():
            busy |= self._reconcile(fn, now, check_memory)
        self.runtime.logs.sweep(now)
        return busy

    def _reconcile(self, fn: FunctionState, now: float, check_memory: bool) -> bool:
        changed = self._reap(fn, now)
        for replica in list(fn.replicas):
            if check_memory and fn.limits.memory:
                self._enforce_memory(fn, replica)
            changed |= self._check_health(fn, replica, now)
            if replica.upstream is not None:  # an idle function's kept connections are closed too
                replica.upstream.prune()
        changed |= self._scale(fn, now)
        changed |= self._drain(fn, now)
        if changed:
            self.runtime.notify()
        if fn.deleted and not fn.replicas:
            self.runtime.forget(fn, now)
        return any(r.state not in (State.READY, State.UNHEALTHY) for r in fn.replicas) or changed

    def _reap(self, fn: FunctionState, now: float) -> bool:
        changed = False
        for replica in list(fn.replicas):
            code = replica.exit_code()
            if code is None:
                continue
            changed = True
            self._remove(fn, replica)
            if replica.state is State.STOPPING:
                self.runtime.logs.event(fn.name, f"replica {replica.instance_id} stopped (exit code {code})")
                continue
            reason = replica.fault or f"exited with code {code}"
            if not replica.fault and not replica.ready_at:  # a start that failed: say why, as its output did
                cause = replica.failure_cause()
                reason += f": {cause}" if cause else ""
            with fn.lock:
                delay = fn.failed(now, f"{replica.instance_id}: {reason}", self.config.restart_backoff,
                                  self.config.restart_backoff_max, was_ready=bool(replica.ready_at))
            message = f"replica {replica.instance_id} crashed: {reason}; restarting in {delay:g}s"
            self.runtime.logs.event(fn.name, message)
            logger.warning("function %s: %s", fn.name, message)
        return changed

    def _enforce_memory(self, fn: FunctionState, replica: Replica) -> None:
        if replica.state in (State.STOPPING, State.KILLED):
            return
        rss = replica.rss()
        if rss > fn.limits.memory:
            replica.fault = (f"OOMKilled: memory {rss / 2**20:.1f}Mi over the limit "
                             f"{fn.spec.limits.get('memory')} ({fn.limits.memory / 2**20:.1f}Mi)")
            replica.set_state(State.KILLED)
            replica.kill()
            self.runtime.logs.event(fn.name, f"replica {replica.instance_id} stopped: {replica.fault}")

    def _check_health(self, fn: FunctionState, replica: Replica, now: float) -> bool:
        if replica.state is State.STARTING:
            if replica.healthy(0.5):
                replica.set_state(State.READY)
                fn.start_failures = 0
                replica.last_health = now
                replica.pin()
                self.runtime.logs.event(fn.name, f"replica {replica.instance_id} ready on 127.0.0.1:"
                                                 f"{replica.port} after {now - replica.started_at:.2f}s")
                return True
            if now - replica.started_at > self.config.ready_timeout:
                replica.fault = f"not healthy within ready_timeout={self.config.ready_timeout:g}s"
                replica.set_state(State.KILLED)
                replica.kill()
                return True
            return False
        if replica.state in (State.READY, State.UNHEALTHY) and now - replica.last_health >= self.config.health_interval:
            replica.last_health = now
            if replica.healthy(HEALTH_TIMEOUT):
                replica.health_failures = 0
                if replica.state is State.UNHEALTHY:
                    replica.set_state(State.READY)
                    return True
                if fn.crash_streak and now - replica.ready_at > STABLE_SECONDS:
                    fn.crash_streak = 0
            else:
                replica.health_failures += 1
                if replica.state is State.READY and replica.health_failures >= HEALTH_FAILURES:
                    replica.set_state(State.UNHEALTHY)
                    self.runtime.logs.event(fn.name, f"replica {replica.instance_id} failed "
                                                     f"{HEALTH_FAILURES} health checks: not routed to")
                    return True
                if replica.state is State.UNHEALTHY and replica.health_failures >= 2 * HEALTH_FAILURES and \
                        now - replica.state_since >= self._liveness_timeout(fn, replica):
                    self._kill_hung(fn, replica, now)
                    return True
        return False

    def _liveness_timeout(self, fn: FunctionState, replica: Replica) -> float:
        """How long a replica may stay unhealthy before it is killed: ``liveness_timeout``, or while it has
        requests in flight, until they are past the function's write_timeout (a handler holding the GIL
        in a long call stops the watchdog answering health checks, and is busy, not hung)."""
        if replica.outstanding:
            return max(self.config.liveness_timeout, write_timeout(fn.spec) + LIVENESS_GRACE)
        return self.config.liveness_timeout

    def _kill_hung(self, fn: FunctionState, replica: Replica, now: float) -> None:
        """Kill a replica that stayed unhealthy: the crash path restarts it (SIGKILL ends a stopped one too)."""
        replica.fault = (f"killed: failed {replica.health_failures} health checks in a row, unhealthy for "
                         f"{now - replica.state_since:.0f}s (liveness_timeout={self.config.liveness_timeout:g}s)")
        replica.set_state(State.KILLED)
        replica.kill()
        self.runtime.logs.event(fn.name, f"replica {replica.instance_id} {replica.fault}")
        logger.warning("function %s: replica %s %s", fn.name, replica.instance_id, replica.fault)

    def _scale(self, fn: FunctionState, now: float) -> bool:
        with fn.lock:
            desired = 0 if fn.deleted else fn.desired
        current = fn.current()
        changed = False
        if len(current) < desired and fn.due(now) and not self.stopping.is_set():
            for _ in range(desired - len(current)):
                try:
                    self.runtime.start_replica(fn)
                except (OSError, ValueError) as exc:  # exec refused it (the python setting, the environment)
                    self._start_failed(fn, now, exc)
                    break
            changed = True
        elif len(current) > desired:
            # Drain the least useful first: still starting, then fewest requests in flight, newest.
            order = sorted(current, key=lambda r: (r.state is State.READY, r.outstanding, -r.started_at))
            for replica in order[:len(current) - desired]:
                self._begin_drain(fn, replica)
            changed = True
        ready_now = sum(1 for r in fn.current() if r.state is State.READY)
        old = [r for r in fn.replicas if r.spec.generation != fn.generation and r.state in ACTIVE]
        keep_old = max(0, desired - ready_now)
        for replica in sorted(old, key=lambda r: r.state is State.READY)[:max(0, len(old) - keep_old)]:
            self._begin_drain(fn, replica)
            changed = True
        return changed

    def _start_failed(self, fn: FunctionState, now: float, exc: BaseException) -> None:
        """A replica that could not even be started counts as one that exited before becoming ready: it is
        retried with backoff and, once it keeps failing, callers are answered 503 with the reason at once.
        Raised out of the tick, it had stopped supervising every function after this one, four times a second."""
        with fn.lock:
            delay = fn.failed(now, f"never started ({type(exc).__name__}: {exc})", self.config.restart_backoff,
                              self.config.restart_backoff_max, restarted=False)
        message = f"a replica could not be started: {type(exc).__name__}: {exc}; retrying in {delay:g}s"
        self.runtime.logs.event(fn.name, message)
        logger.error("function %s: %s", fn.name, message)

    def _begin_drain(self, fn: FunctionState, replica: Replica) -> None:
        # Under the lock a request picks and counts itself on a replica (``FunctionState.pick``): once this
        # returns, every request routed here is counted in ``outstanding``, and ``_drain`` waits for it.
        with self.runtime.lock:
            replica.set_state(State.DRAINING)
        self.runtime.logs.event(fn.name, f"replica {replica.instance_id} draining")

    def _drain(self, fn: FunctionState, now: float) -> bool:
        changed = False
        limit = write_timeout(fn.spec)
        for replica in fn.replicas:
            if replica.state is State.DRAINING and (replica.outstanding <= 0 or now - replica.state_since > limit):
                replica.set_state(State.STOPPING)
                replica.stop_deadline = now + self.config.drain_interval + limit + 5
                replica.terminate()
                changed = True
            elif replica.state in (State.STOPPING, State.KILLED) and replica.stop_deadline and \
                    now > replica.stop_deadline:
                replica.kill()
            elif replica.state is State.KILLED and not replica.stop_deadline:
                replica.stop_deadline = now + 5
        return changed

    def _remove(self, fn: FunctionState, replica: Replica) -> None:
        with fn.lock:
            if replica in fn.replicas:
                fn.replicas.remove(replica)
        self.runtime.release_replica(replica)

    def _shutdown(self) -> None:
        functions = self.runtime.all_functions()
        for fn in functions:
            for replica in fn.replicas:
                if replica.state is not State.STOPPING:
                    replica.set_state(State.STOPPING)
                    replica.terminate()
        deadline = time.monotonic() + max([self.config.drain_interval + write_timeout(fn.spec) + 2
                                           for fn in functions] or [0])
        while time.monotonic() < deadline and any(r.exit_code() is None for fn in functions for r in fn.replicas):
            time.sleep(0.05)
        for fn in functions:
            for replica in list(fn.replicas):
                if replica.exit_code() is None:
                    replica.kill()
                    replica.proc.wait(5)
                self._remove(fn, replica)
