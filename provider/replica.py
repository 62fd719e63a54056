"""One replica: a ``python -m watchdog`` process on its own loopback ports, in its own session and folder."""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping

import psutil
import urllib3

from provider.crashcause import CrashCause
from provider.upstream import Upstream
from watchdog.config import ConfigError, WatchdogConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Environment names the watchdog reads: the provider sets them per replica, never inherits them.
WATCHDOG_KEYS = frozenset(f.name for f in fields(WatchdogConfig)) | {"TMPDIR"}
# Linux's MAX_ARG_STRLEN (32 pages): the longest ``NAME=value`` string exec accepts.
MAX_ENV_STRING = 32 * 4096
# Room left under ARG_MAX for the replica's command line and the ports ``launch`` adds.
ARGV_ROOM = 64 * 1024
# Longest wait, by the supervisor, for an ended replica's last lines of output (its failure's cause).
PUMP_WAIT = 0.5


class State(str, enum.Enum):
    """Where a replica is in its life."""

    STARTING = "starting"  # process started, /_/health not yet 200
    READY = "ready"  # healthy: takes requests
    UNHEALTHY = "unhealthy"  # failed health checks: takes no requests until healthy again
    DRAINING = "draining"  # takes no new requests; waits for the provider's requests in flight
    STOPPING = "stopping"  # SIGTERM sent: the watchdog finishes what it accepted, then exits
    KILLED = "killed"  # stopped by the provider for a fault (memory, never healthy); will be restarted


ACTIVE = (State.STARTING, State.READY, State.UNHEALTHY)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one replica."""

    # Function (service) name; logs and status are filed under it.
    service: str
    # Unique id, also the watchdog's instance_id.
    instance_id: str
    # Which deployment of the function this replica runs (an update starts a new generation).
    generation: int
    # Absolute handler folder (the watchdog's function_dir).
    function_dir: str
    # Working directory and TMPDIR of the replica (lock file, scratch files).
    run_dir: str
    # The complete environment of the process.
    env: Mapping[str, str]
    # Cores the process is pinned to (empty: not pinned).
    cores: tuple[int, ...] = ()
    # Python interpreter running ``-m watchdog``.
    python: str = "python3"


@dataclass
class Replica:
    """A running watchdog process and what the provider knows about it."""

    spec: LaunchSpec
    proc: subprocess.Popen
    port: int
    metrics_port: int
    state: State = State.STARTING
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0
    state_since: float = field(default_factory=time.monotonic)
    health_failures: int = 0
    last_health: float = 0.0
    fault: str = ""
    outstanding: int = 0
    stop_deadline: float = 0.0
    _cpu_sample: tuple[float, float] = (0.0, 0.0)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Health checks' connections.
    pool: urllib3.HTTPConnectionPool | None = None
    # The proxy's connections (``provider.upstream``: it tells which failed requests may be sent again).
    upstream: Upstream | None = None
    # Reads the process's output for why it failed; the thread that feeds it the output.
    crash_cause: CrashCause | None = None
    pump: threading.Thread | None = None

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id

    @property
    def pid(self) -> int:
        return self.proc.pid

    def set_state(self, state: State) -> None:
        """Move to ``state`` and note when."""
        self.state = state
        self.state_since = time.monotonic()
        if state is State.READY and not self.ready_at:
            self.ready_at = self.state_since

    def acquire(self) -> None:
        """Count one provider request in flight on this replica."""
        with self._lock:
            self.outstanding += 1

    def release(self) -> None:
        """The request counted by ``acquire`` is answered."""
        with self._lock:
            self.outstanding -= 1

    def healthy(self, timeout: float) -> bool:
        """GET /_/health answers 200."""
        try:
            response = self.pool.request("GET", "/_/health", retries=False, timeout=timeout)
            return response.status == 200
        except (urllib3.exceptions.HTTPError, OSError):
            return False

    def exit_code(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.proc.poll()

    def failure_cause(self, wait: float = PUMP_WAIT) -> str:
        """Why the ended process failed, from its output ("" when it did not say): the output's last lines
        are waited for up to ``wait`` seconds, as the process may end before they are read."""
        if self.pump is not None:
            self.pump.join(wait)
        return self.crash_cause.cause() if self.crash_cause is not None else ""

    def terminate(self) -> None:
        """SIGTERM the process group: the watchdog drains and exits."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the process group."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def processes(self) -> list[psutil.Process]:
        """The process and its children (gunicorn's arbiter and worker)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root] + root.children(recursive=True)
        except psutil.Error:
            return []

    def rss(self) -> int:
        """Resident memory of the process tree, in bytes."""
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def cpu_millicores(self) -> float:
        """CPU used since the previous call, in millicores."""
        used = 0.0
        for p in self.processes():
            try:
                times = p.cpu_times()
                used += times.user + times.system
            except psutil.Error:
                pass
        now = time.monotonic()
        last_used, last_at = self._cpu_sample
        self._cpu_sample = (used, now)
        elapsed = now - (last_at or self.started_at)
        return round(max(0.0, used - last_used) / elapsed * 1000, 1) if elapsed > 0 else 0.0

    def pin(self) -> None:
        """Apply the core set to every process of the replica (children inherit it from then on)."""
        if not self.spec.cores:
            return
        for p in self.processes():
            try:
                if p.cpu_affinity() != list(self.spec.cores):
                    p.cpu_affinity(list(self.spec.cores))
            except psutil.Error:
                pass

    def describe(self) -> dict:
        """The record shown in the function's status."""
        return {"instance": self.instance_id, "state": self.state.value, "pid": self.pid, "port": self.port,
                "metricsPort": self.metrics_port, "generation": self.spec.generation,
                "cores": list(self.spec.cores), "outstanding": self.outstanding}


def launch(spec: LaunchSpec, port: int, metrics_port: int, on_line: Callable[[str], None]) -> Replica:
    """Start the watchdog process of ``spec``; its output goes line by line to ``on_line``."""
    os.makedirs(spec.run_dir, exist_ok=True)
    _link_function_dir(spec.run_dir, spec.function_dir)
    env = dict(spec.env)
    env.update({"port": str(port), "metrics_port": str(metrics_port)})
    proc = subprocess.Popen([spec.python, "-m", "watchdog"], cwd=spec.run_dir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    with open(os.path.join(spec.run_dir, "pid"), "w") as f:
        f.write(str(proc.pid))
    cause = CrashCause(spec.env)
    pump = threading.Thread(target=_pump, args=(proc, on_line, cause), name=f"log-{spec.instance_id}", daemon=True)
    replica = Replica(spec, proc, port, metrics_port,
                      pool=urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4, block=False, retries=False),
                      upstream=Upstream(port), crash_cause=cause, pump=pump)
    replica.pin()
    pump.start()
    return replica


def _link_function_dir(run_dir: str, function_dir: str) -> None:
    """Offer the handler folder as ``function`` in the replica's working directory, as the template's image
    does (the watchdog runs in /home/app, the handler in ./function): a handler that opens
    ``function/weights.pt`` then loads here as it does on faasd or Kubernetes."""
    link = os.path.join(run_dir, "function")
    if os.path.islink(link):
        if os.readlink(link) == function_dir:
            return
        os.unlink(link)
    elif os.path.exists(link):
        return
    os.symlink(function_dir, link)


def _pump(proc: subprocess.Popen, on_line: Callable[[str], None], cause: CrashCause) -> None:
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        cause.feed(line)
        on_line(line)
    proc.stdout.close()


def replica_env(base: Mapping[str, str], env_vars: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """The replica's environment: ``base`` without watchdog knobs, then the function's envVars, then
    ``settings`` (what the provider decides), with this repository on PYTHONPATH."""
    env = {k: v for k, v in base.items() if k not in WATCHDOG_KEYS}
    env.update(env_vars)
    env.update(settings)
    paths = [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def check_env(env: Mapping[str, str]) -> None:
    """Refuse (``ConfigError`` naming key, value and rule) an environment the watchdog would refuse at start,
    or that exec would refuse before it starts; the ports ``launch`` adds are stood in for."""
    problem = exec_env_problem(env)
    if problem:
        raise ConfigError(problem)
    WatchdogConfig.from_env({**env, "port": "1", "metrics_port": "2"})


def exec_env_problem(env: Mapping[str, str]) -> str:
    """Why exec would refuse ``env`` ("" when it would not): every start of the replica would fail (the
    supervisor retrying it forever) and no answer could say why."""
    total = 0
    for name, value in env.items():
        if "=" in name or "\0" in name:
            return f"{name!r}: not an environment variable name (it holds '=' or a NUL byte)"
        if "\0" in value:
            return f"{name}: the value holds a NUL byte, which no process environment can carry"
        try:
            size = len(os.fsencode(name)) + len(os.fsencode(value)) + 2  # "=" and the terminating NUL
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): no bytes stand for it
            return f"{name!r}: not encodable as an environment variable (it holds a lone surrogate)"
        if size > MAX_ENV_STRING:
            return f"{name}: {size} bytes, over the {MAX_ENV_STRING} one variable may have (Linux's MAX_ARG_STRLEN)"
        total += size + 8  # and its pointer
    most = os.sysconf("SC_ARG_MAX") - ARGV_ROOM
    if total > most:
        return f"the environment is {total} bytes in all, over the {most} a process may be started with (ARG_MAX)"
    return ""
