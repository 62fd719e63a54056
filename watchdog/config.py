"""The watchdog's configuration, read once from the environment handed in by ``__main__``.

OpenFaaS knob names are kept as they are (``read_timeout``, ``write_timeout``, ``exec_timeout``,
``healthcheck_interval``, ``max_inflight``, ``suppress_lock``); ours follow the same style. Durations
accept ``10s``, ``250ms`` or a bare number of seconds.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from batcher import keys
from batcher.policy import BatchConfig
from faas_infer.envconfig import parse_fields
from faas_infer.loglevel import parse_level
from faas_infer.units import parse_cpu, parse_duration, parse_memory


class ConfigError(ValueError):
    """A configuration value broke its rule; the message names key, value and rule."""


@dataclass(frozen=True)
class WatchdogConfig:
    """Everything the watchdog process is told, validated."""

    # Port the function is served on (OpenFaaS: 8080).
    port: int = 8080
    # Port of the Prometheus /metrics endpoint (OpenFaaS: 8081).
    metrics_port: int = 8081
    # Address both ports bind; 0.0.0.0 inside a container, 127.0.0.1 for local instances.
    bind_address: str = "0.0.0.0"
    # Longest time to read a request body; a slower client gets 408.
    read_timeout: float = 30.0
    # Longest time to produce a response; bounds exec_timeout and the drain on SIGTERM.
    write_timeout: float = 30.0
    # Longest time a request may take from arrival to answer (504 after it); 0 disables it.
    exec_timeout: float = 30.0
    # After SIGTERM, how long to keep serving while /_/health answers 503 so load balancers notice;
    # unset, write_timeout (as of-watchdog).
    healthcheck_interval: float | None = None
    # Requests in flight at once before 429; 0 means no limit.
    max_inflight: int = 0
    # Do not write the lock file ($TMPDIR/.lock) that marks the function healthy.
    suppress_lock: bool = False
    # Folder of the lock file ($TMPDIR).
    tmp_dir: str = "/tmp"
    # Folder holding handler.py (imported as the package ``function``), relative to the working directory.
    function_dir: str = "function"
    # Largest batch given to handle_batch; 1 turns batching off.
    max_batch_size: int = 8
    # Longest wait for a batch to fill, from its oldest request; unset derives it from latency_slo.
    batch_timeout: float | None = None
    # Target latency (queueing + execution); requests that cannot meet it are refused with 503.
    latency_slo: float | None = None
    # Most requests waiting in the queue before 503, whatever the SLO says.
    max_queue: int = 1024
    # Largest request body accepted, in bytes; larger bodies get 413.
    max_request_bytes: int = 16 * 1024 * 1024
    # "local" (in-process queue) or "redis" (one queue shared by every instance of the function).
    batch_backend: str = "local"
    # Redis for the shared queue, e.g. redis://127.0.0.1:6379/0 (required when batch_backend=redis).
    redis_url: str = ""
    # The function's name (its queue with batch_backend=redis: every instance and every variant of the
    # function must name the same one; required there); variants use their parent's name.
    function_name: str = ""
    # This instance's unique id (defaults to host-pid).
    instance_id: str = ""
    # CPU cores this instance may use (e.g. 500m, 2); unset reads the cgroup quota. Sets torch threads.
    cpu_limit: float | None = None
    # Memory limit in bytes (e.g. 512Mi), reported with the instance; enforcement is the runtime's job.
    memory_limit: int | None = None
    # HTTP server: "asyncio" (one event loop; waiting requests hold no thread) or "gthread" (gunicorn's
    # threaded WSGI worker running watchdog.app, one thread per request in flight).
    http_engine: str = "asyncio"
    # Threads serving HTTP with http_engine=gthread; each waiting request holds one (0 derives it).
    http_threads: int = 0
    # Keep freed memory in the process (glibc mallopt) instead of faulting activations in on every batch;
    # measured +25% ResNet throughput here. The process stays at its peak working set.
    retain_freed_memory: bool = True
    # Run the handler in a child process: a crash or a batch past exec_timeout costs that batch only (a new
    # child is started), and parsing and the model no longer share the HTTP loop's interpreter lock.
    handler_process: bool = False
    # Share of a GPU this instance was given (0: CPU only); reported with the instance so the autoscaler
    # files its measured times under the right configuration. The autoscaler sets it on every variant (0 on
    # CPU ones). Unset (None), the instance is taken for its function's own deployment and its times are
    # filed under that deployment's limits, a GPU limit included: a user's GPU deployment that sets only
    # cpu_limit is not filed as a CPU configuration.
    gpu_share: float | None = None
    # Predicted execution seconds by batch size ("1:0.002,8:0.006"), used until batches are measured;
    # the autoscaler sets it from the COP predictor when it deploys a variant.
    exec_prior: tuple[tuple[int, float], ...] = ()

    @property
    def name(self) -> str:
        """The function's name for logs and process titles ("function" when not set)."""
        return self.function_name or "function"

    def __post_init__(self) -> None:
        _rule(1 <= self.port <= 65535, "port", self.port, "must be a port number 1..65535")
        _rule(1 <= self.metrics_port <= 65535, "metrics_port", self.metrics_port, "must be a port number 1..65535")
        _rule(self.port != self.metrics_port, "metrics_port", self.metrics_port, "must differ from port")
        _rule(self.read_timeout > 0, "read_timeout", self.read_timeout, "must be > 0")
        _rule(self.write_timeout > 0, "write_timeout", self.write_timeout, "must be > 0")
        _rule(self.max_inflight >= 0, "max_inflight", self.max_inflight, "must be >= 0 (0 disables it)")
        _rule(self.max_batch_size >= 1, "max_batch_size", self.max_batch_size, "must be >= 1")
        _rule(self.max_queue >= 1, "max_queue", self.max_queue, "must be >= 1")
        _rule(self.max_request_bytes >= 1, "max_request_bytes", self.max_request_bytes, "must be >= 1")
        _rule(self.batch_backend in ("local", "redis"), "batch_backend", self.batch_backend,
              "must be 'local' or 'redis'")
        _rule(self.batch_backend != "redis" or bool(self.redis_url), "redis_url", self.redis_url,
              "must be set when batch_backend=redis")
        _rule(self.latency_slo is None or self.latency_slo > 0, "latency_slo", self.latency_slo, "must be > 0")
        _rule(self.cpu_limit is None or self.cpu_limit > 0, "cpu_limit", self.cpu_limit, "must be > 0")
        _rule(self.gpu_share is None or 0 <= self.gpu_share <= 1, "gpu_share", self.gpu_share,
              "must be in [0, 1]")
        _rule(self.http_engine in ("asyncio", "gthread"), "http_engine", self.http_engine,
              "must be 'asyncio' or 'gthread'")
        _rule(self.http_threads >= 0, "http_threads", self.http_threads, "must be >= 0 (0 derives it)")
        _rule(self.exec_timeout >= 0, "exec_timeout", self.exec_timeout, "must be >= 0 (0 disables it)")
        if self.healthcheck_interval is None:
            object.__setattr__(self, "healthcheck_interval", self.write_timeout)
        _rule(self.healthcheck_interval >= 0, "healthcheck_interval", self.healthcheck_interval, "must be >= 0")
        _rule(not self.function_name or keys.valid_name(self.function_name), "function_name", self.function_name,
              keys.NAME_RULE)
        _rule(not self.instance_id or keys.valid_name(self.instance_id), "instance_id", self.instance_id,
              keys.NAME_RULE)
        if self.batch_backend == "redis":
            _rule(self.redis_url.startswith(("redis://", "rediss://", "unix://")), "redis_url", self.redis_url,
                  "must be a redis://, rediss:// or unix:// URL")
            _rule(bool(self.function_name), "function_name", self.function_name,
                  "must be set when batch_backend=redis: the function's name, which names the queue every "
                  "instance of the function and every variant the autoscaler adds share (e.g. "
                  "function_name: classify)")

        if self.batch_timeout is not None and self.latency_slo is not None:
            _rule(self.batch_timeout < self.latency_slo, "batch_timeout", self.batch_timeout,
                  f"must be below latency_slo={self.latency_slo}")
        if not self.instance_id:
            object.__setattr__(self, "instance_id", f"{socket.gethostname()}-{os.getpid()}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "WatchdogConfig":
        """Build from an environment mapping; unknown keys are ignored, bad values raise ``ConfigError``."""
        values = parse_fields(cls, env, _PARSERS, ConfigError)
        if "LOG_LEVEL" in env:  # not ours to keep, but checked with the rest: a bad one would crash the start
            try:
                parse_level(env["LOG_LEVEL"])
            except ValueError as exc:
                raise ConfigError(f"LOG_LEVEL={exc}") from None
        if "tmp_dir" not in values and env.get("TMPDIR"):
            values["tmp_dir"] = env["TMPDIR"]
        try:
            return cls(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def batch_config(self) -> BatchConfig:
        """The batch settings this instance starts with (the Redis backend may override them live)."""
        return BatchConfig(self.max_batch_size, self.batch_timeout, self.latency_slo)

    def handler_time_limit(self) -> float:
        """Seconds a batch's coroutines may run before they are cancelled: exec_timeout, or write_timeout
        when shorter or exec_timeout is 0 (nobody waits for an answer past it)."""
        return min(self.write_timeout, self.exec_timeout) if self.exec_timeout > 0 else self.write_timeout

    def http_thread_count(self) -> int:
        """HTTP threads: the configured number, else enough for several full batches of waiters."""
        if self.http_threads:
            return self.http_threads
        return min(512, max(32, 4 * self.max_batch_size, self.max_inflight))


def _rule(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {rule}")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _points(text: str) -> tuple[tuple[int, float], ...]:
    points = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        batch, sep, seconds = part.partition(":")
        try:
            points.append((int(batch), float(seconds)))
        except ValueError:
            raise ValueError("must be batch:seconds pairs such as 1:0.002,8:0.006") from None
        if not sep or points[-1][0] < 1 or points[-1][1] < 0:
            raise ValueError("must be batch:seconds pairs such as 1:0.002,8:0.006")
    return tuple(points)


def _float(text: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ValueError("must be a number") from None


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError("must be an integer") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": _int, "metrics_port": _int, "max_inflight": _int, "max_batch_size": _int, "max_queue": _int,
    "http_threads": _int, "max_request_bytes": parse_memory, "memory_limit": parse_memory,
    "read_timeout": parse_duration, "write_timeout": parse_duration, "exec_timeout": parse_duration,
    "healthcheck_interval": parse_duration, "batch_timeout": parse_duration, "latency_slo": parse_duration,
    "suppress_lock": _bool, "retain_freed_memory": _bool, "handler_process": _bool, "cpu_limit": parse_cpu,
    "exec_prior": _points, "gpu_share": _float,
}
