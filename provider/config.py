"""The provider's configuration: one frozen dataclass built once at the edge from flags or an env mapping."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from faas_infer.envconfig import parse_fields
from faas_infer.units import parse_duration
from provider.types import DEFAULT_NAMESPACE


class ConfigError(ValueError):
    """A configuration value broke its rule; the message names key, value and rule."""


@dataclass(frozen=True)
class ProviderConfig:
    """Everything the provider process is told, validated."""

    # Address the API binds; loopback by default. Anything else turns basic auth on unless told otherwise.
    bind_address: str = "127.0.0.1"
    # Port of the API (OpenFaaS gateway: 8080).
    port: int = 8080
    # The one namespace functions live in.
    namespace: str = DEFAULT_NAMESPACE
    # "auto" (on unless bound to loopback), "true" or "false".
    basic_auth: str = "auto"
    # Folder holding basic-auth-user and basic-auth-password (OpenFaaS: /var/openfaas/secrets).
    secret_mount_path: str = ""
    # stack.yml whose functions give image -> handler folder (see catalog).
    stack_file: str = ""
    # Redis shared by the replicas of a function (batch_backend=redis); empty gives each replica its own queue.
    redis_url: str = ""
    # Folder for per-replica working dirs and logs; empty makes a temporary one, removed on exit.
    run_dir: str = ""
    # Longest time a starting replica may take to pass /_/health before it is killed and restarted.
    ready_timeout: float = 120.0
    # Longest time an invocation waits for a ready replica (scale from zero, starting replicas).
    cold_start_timeout: float = 60.0
    # healthcheck_interval given to replicas that do not set it: the provider stops routing to a replica
    # before it signals it, so the watchdog's wait for load balancers can be short.
    drain_interval: float = 0.5
    # Seconds between health checks of ready replicas.
    health_interval: float = 1.0
    # A replica that fails every health check for this long after being marked unhealthy is killed and
    # restarted (a Kubernetes liveness probe): a hung process must not hold its slot forever.
    liveness_timeout: float = 30.0
    # Seconds between memory (RSS) checks of every replica.
    memory_interval: float = 0.25
    # Most replicas one function may have; larger scale requests are clamped to it.
    max_replicas: int = 32
    # First delay before restarting a crashed replica; it doubles per crash up to restart_backoff_max.
    restart_backoff: float = 0.5
    # Longest delay between restarts of a crashing replica.
    restart_backoff_max: float = 30.0
    # HTTP threads of the API; each invocation in flight and each followed log holds one.
    threads: int = 128
    # Lines of log kept in memory per function.
    log_lines: int = 10000
    # Most ``/system/logs?follow=1`` streams at once (each holds an HTTP thread, so never more than half the
    # threads); more are answered 429.
    max_follows: int = 32
    # Seconds a deleted function's logs stay readable before their buffer and open file are dropped
    # (the file stays on disk).
    log_retention: float = 60.0
    # Threads running /async-function calls in the background (OpenFaaS: the queue-worker's max_inflight).
    async_workers: int = 4
    # Async calls accepted but not yet running; more are answered 429.
    max_async_queue: int = 1024
    # Longest time one X-Callback-Url POST may take; a failed callback is logged and not retried.
    callback_timeout: float = 10.0
    # Shape of /system/info: "gateway" (the gateway's, what faas-cli parses), "provider" (faas-provider's
    # ProviderInfo, what an OpenFaaS gateway in front reads), "auto" (ProviderInfo only for a request
    # forwarded by the OpenFaaS gateway: its X-Forwarded-For carries the client's port).
    info_shape: str = "auto"
    # Sent back by /healthz in X-Faas-Infer-Token when set: lets the process that started the provider tell
    # it from another server already answering on the port.
    healthz_token: str = ""
    # Process to watch: when it exits, the provider stops everything (0: none).
    parent_pid: int = 0
    # Python that runs ``-m watchdog`` for each replica.
    python: str = sys.executable

    def __post_init__(self) -> None:
        _rule(1 <= self.port <= 65535, "port", self.port, "must be a port number 1..65535")
        _rule(self.basic_auth in ("auto", "true", "false"), "basic_auth", self.basic_auth,
              "must be auto, true or false")
        _rule(self.max_replicas >= 1, "max_replicas", self.max_replicas, "must be >= 1")
        _rule(self.threads >= 4, "threads", self.threads, "must be >= 4")
        _rule(self.max_follows >= 1, "max_follows", self.max_follows, "must be >= 1")
        _rule(self.async_workers >= 1, "async_workers", self.async_workers, "must be >= 1")
        _rule(self.max_async_queue >= 1, "max_async_queue", self.max_async_queue, "must be >= 1")
        _rule(self.info_shape in ("auto", "gateway", "provider"), "info_shape", self.info_shape,
              "must be auto, gateway or provider")
        _rule(self.log_retention >= 0, "log_retention", self.log_retention, "must be >= 0")
        _rule(self.log_lines >= 1, "log_lines", self.log_lines, "must be >= 1")
        for key in ("ready_timeout", "cold_start_timeout", "health_interval", "memory_interval",
                    "restart_backoff", "restart_backoff_max", "liveness_timeout", "callback_timeout"):
            _rule(getattr(self, key) > 0, key, getattr(self, key), "must be > 0")
        if self.auth_enabled:
            _rule(bool(self.secret_mount_path), "secret_mount_path", self.secret_mount_path,
                  "must name the folder with basic-auth-user and basic-auth-password when basic auth is on")

    @property
    def follow_limit(self) -> int:
        """Log follows allowed at once: max_follows, leaving at least half the threads to everything else."""
        return min(self.max_follows, self.threads // 2)

    @property
    def auth_enabled(self) -> bool:
        """Whether /system routes need basic auth."""
        if self.basic_auth == "auto":
            return not is_loopback(self.bind_address)
        return self.basic_auth == "true"

    @property
    def batch_backend(self) -> str:
        """The replicas' queue backend: shared Redis when there is one, else each replica's own."""
        return "redis" if self.redis_url else "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ProviderConfig":
        """Build from a mapping of field names to text; unknown keys are ignored."""
        return cls(**parse_fields(cls, env, _PARSERS, ConfigError))


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _rule(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {rule}")


def _bool_text(text: str) -> str:
    lowered = str(text).strip().lower()
    if lowered in ("auto", ""):
        return "auto"
    if lowered in ("1", "true", "yes", "on"):
        return "true"
    if lowered in ("0", "false", "no", "off"):
        return "false"
    raise ValueError("must be auto, true or false")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": int, "max_replicas": int, "async_workers": int, "max_async_queue": int,
    "callback_timeout": parse_duration, "threads": int, "log_lines": int, "parent_pid": int, "max_follows": int,
    "basic_auth": _bool_text, "ready_timeout": parse_duration, "cold_start_timeout": parse_duration,
    "drain_interval": parse_duration, "health_interval": parse_duration, "memory_interval": parse_duration,
    "restart_backoff": parse_duration, "restart_backoff_max": parse_duration,
    "liveness_timeout": parse_duration, "log_retention": parse_duration,
    "stack_file": os.path.abspath, "run_dir": os.path.abspath, "secret_mount_path": os.path.abspath,
}
