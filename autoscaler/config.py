"""The autoscaler's configuration: one frozen dataclass built once at the edge (flags or an env mapping)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from faas_infer.envconfig import parse_fields
from faas_infer.units import parse_duration, parse_memory


class ConfigError(ValueError):
    """A configuration value broke its rule; the message names key, value and rule."""


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in str(text).split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(",") if x.strip())


@dataclass(frozen=True)
class AutoscalerConfig:
    """Everything the control loop is told, validated."""

    # OpenFaaS gateway (or provider) base URL; the autoscaler only speaks its REST API.
    gateway_url: str = "http://127.0.0.1:8080"
    # Folder holding basic-auth-user and basic-auth-password; empty sends no credentials.
    secret_mount_path: str = ""
    # Namespace of the functions; empty lets the provider use its default.
    namespace: str = ""
    # Redis shared with the watchdogs (queues, arrivals, heartbeats, exec times, live configs).
    redis_url: str = ""
    # Prometheus base URL (SLO attainment from the gateway latency histogram); empty skips it.
    prometheus_url: str = ""
    # YAML/JSON list of nodes {name, cpu, memory, gpus, labels}; empty inventories the local machine.
    nodes_file: str = ""
    # Profile DB of the COP predictor (cop_profiler); empty uses measured times and the built-in table.
    profile_db: str = ""
    # Seconds between control ticks.
    interval: float = 5.0
    # Weight of one CPU core against one GPU in the objective (beta * CPU + GPU).
    beta: float = 0.1
    # Capacity planned above the observed demand (0.2 plans r_max for 1.2x the arrival rate).
    headroom: float = 0.2
    # Seconds within which the queue backlog should be drained (adds depth / drain_seconds to demand).
    drain_seconds: float = 10.0
    # Batch sizes considered (INFless: powers of two).
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    # CPU cores per instance considered.
    cpu_steps: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    # GPU shares per instance considered (on nodes with GPUs); powers of two keep device packing exact.
    # Shares below 1 need gpu_slices > 1 (every step a whole number of units): e.g. gpu_slices=4 with
    # gpu_steps=0.25,0.5,1 (what ``faas-infer up`` runs with: CUDA MPS percentages, binding where an MPS
    # daemon runs). With the device plugin's sharing.mps a pod may ask for one unit only: steps 1/gpu_slices.
    gpu_steps: tuple[float, ...] = (1.0,)
    # Schedulable nvidia.com/gpu units per physical GPU (Kubernetes): the NVIDIA device plugin's sharing
    # ``replicas`` (MPS or time-slicing); a variant with share g asks for g * gpu_slices units. 1 is the
    # stock plugin (one unit per device: every variant holds whole devices).
    gpu_slices: int = 1
    # Memory of an instance when the function sets no limit.
    default_memory: int = 512 * 1024**2
    # "highs", "cbc" (exact selection with PuLP) or "greedy" (no solver).
    solver: str = "highs"
    # Wall-clock limit of each solve (the selection's, then the placement's); CBC takes whole seconds, so it
    # gets this rounded up, at least 1 s. On expiry a feasible answer is used, else the greedy fallback.
    solver_time_limit: float = 0.5
    # Relative optimality gap at which the solver may stop.
    mip_gap: float = 1e-3
    # Largest exact selection program (functions x configurations); above it selection is greedy, within
    # a few percent of the proven bound (bench plan) and fast enough for 1,000 functions per tick.
    ilp_max_variables: int = 6000
    # Largest exact placement program (instance groups x nodes); larger clusters are packed best-fit.
    placement_ilp_max_vars: int = 400
    # Configurations running now are priced this much lower in the selection (0.1: 10%), so a plan replaces
    # them only for a real saving, not for a few percent of noise in the measured execution times (which
    # otherwise swapped b1 for b2 and back every few ticks at a steady demand); a function's running
    # instances may also be this much underfilled (their r_min summed up to demand x (1 + margin)). They
    # count as no more capacity than they serve.
    switch_margin: float = 0.1
    # A variant younger than this (by its createdAt) is not removed for the plan's sake: it was started for
    # a reason a tick ago, and removing it before it has served only churns. Orphans go at once.
    min_variant_age: float = 30.0
    # A variant whose parent is not listed is deleted as an orphan once the parent has been missing this
    # long: faasd updates a function by deleting and creating it again, and a tick that falls in between
    # must not delete every variant of it (a parent that lost its SLO annotation is listed: at once).
    orphan_grace: float = 30.0
    # Fewest instances of any function (the function's com.openfaas.scale.min label overrides it).
    min_instances: int = 0
    # Most instances of any function (com.openfaas.scale.max overrides it).
    max_instances: int = 64
    # A function keeps capacity for its highest demand of this many seconds before shedding instances.
    scale_down_delay: float = 60.0
    # Most instances added to one function in one tick.
    max_step_up: int = 8
    # Most instances removed from one function in one tick.
    max_step_down: int = 2
    # Instances kept for a function that saw traffic within keep_warm_window (sporadic traffic).
    keep_warm: int = 1
    # Seconds after the last request during which keep_warm applies.
    keep_warm_window: float = 600.0
    # Seconds of arrivals averaged into the request rate.
    rate_window: float = 20.0
    # An instance whose heartbeat is older than this is not counted; a function none of whose instances beat
    # within it (nor within the watchdogs' own 3 s rule) has its shared queue retired.
    heartbeat_timeout: float = 15.0
    # A snapshot older than this (seconds, by the loop's clock) yields no decision.
    max_snapshot_age: float = 30.0
    # Replicas one variant may have (faasd and the local provider: 1; OpenFaaS CE: 5; K8s: more).
    max_replicas_per_variant: int = 1
    # Port of the autoscaler's own /metrics (demand, instances, decisions, SLO attainment); 0 turns it off.
    metrics_port: int = 8082
    # Address the metrics port binds (0.0.0.0 in a container; `faas-infer up` uses 127.0.0.1).
    metrics_bind: str = "0.0.0.0"

    def __post_init__(self) -> None:
        _rule(self.interval > 0, "interval", self.interval, "must be > 0")
        _rule(self.beta >= 0, "beta", self.beta, "must be >= 0")
        _rule(self.headroom >= 0, "headroom", self.headroom, "must be >= 0")
        _rule(self.drain_seconds > 0, "drain_seconds", self.drain_seconds, "must be > 0")
        _rule(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes), "batch_sizes",
              self.batch_sizes, "must list batch sizes >= 1")
        _rule(bool(self.cpu_steps) and all(c > 0 for c in self.cpu_steps), "cpu_steps", self.cpu_steps,
              "must list CPU amounts > 0")
        _rule(all(0 < g <= 1 for g in self.gpu_steps), "gpu_steps", self.gpu_steps, "must be shares in (0, 1]")
        _rule(self.gpu_slices >= 1, "gpu_slices", self.gpu_slices, "must be >= 1")
        _rule(all(abs(g * self.gpu_slices - round(g * self.gpu_slices)) < 1e-9 for g in self.gpu_steps),
              "gpu_steps", self.gpu_steps, f"must be multiples of 1/gpu_slices (gpu_slices={self.gpu_slices}): "
              "a share is asked of Kubernetes as whole nvidia.com/gpu units")
        _rule(self.solver in ("highs", "cbc", "greedy"), "solver", self.solver, "must be highs, cbc or greedy")
        _rule(self.solver_time_limit > 0, "solver_time_limit", self.solver_time_limit, "must be > 0")
        _rule(self.mip_gap >= 0, "mip_gap", self.mip_gap, "must be >= 0")
        _rule(0 <= self.switch_margin < 1, "switch_margin", self.switch_margin, "must be in [0, 1)")
        _rule(self.min_instances >= 0, "min_instances", self.min_instances, "must be >= 0")
        _rule(self.max_instances >= max(1, self.min_instances), "max_instances", self.max_instances,
              "must be >= 1 and >= min_instances")
        _rule(self.scale_down_delay >= 0, "scale_down_delay", self.scale_down_delay, "must be >= 0")
        _rule(self.min_variant_age >= 0, "min_variant_age", self.min_variant_age, "must be >= 0")
        _rule(self.orphan_grace >= 0, "orphan_grace", self.orphan_grace, "must be >= 0")
        _rule(self.max_step_up >= 1, "max_step_up", self.max_step_up, "must be >= 1")
        _rule(self.max_step_down >= 1, "max_step_down", self.max_step_down, "must be >= 1")
        _rule(self.keep_warm >= 0, "keep_warm", self.keep_warm, "must be >= 0")
        _rule(self.rate_window > 0, "rate_window", self.rate_window, "must be > 0")
        _rule(self.max_replicas_per_variant >= 1, "max_replicas_per_variant", self.max_replicas_per_variant,
              "must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "AutoscalerConfig":
        """Build from a mapping of field names to strings; unknown keys are ignored."""
        values = parse_fields(cls, env, _PARSERS, ConfigError)
        try:
            return cls(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None


def _rule(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {rule}")


_FLOATS = ("beta", "headroom", "solver_time_limit", "mip_gap", "switch_margin")
_DURATIONS = ("interval", "drain_seconds", "scale_down_delay", "min_variant_age", "orphan_grace", "keep_warm_window",
              "rate_window", "heartbeat_timeout", "max_snapshot_age")
_INTS = ("gpu_slices", "ilp_max_variables", "placement_ilp_max_vars", "min_instances", "max_instances", "max_step_up",
         "max_step_down",
         "keep_warm", "max_replicas_per_variant", "metrics_port")
_PARSERS: dict[str, Callable[[str], Any]] = {
    **{k: float for k in _FLOATS}, **{k: parse_duration for k in _DURATIONS}, **{k: int for k in _INTS},
    "batch_sizes": _ints, "cpu_steps": _floats, "gpu_steps": _floats, "default_memory": parse_memory,
}
