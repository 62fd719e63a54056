"""What observe hands decide: frozen records of nodes, functions, their load and their running variants.

Nothing here does I/O. A snapshot lists ``problems`` (data that could not be read); decide refuses to act
on a snapshot without nodes or too old for ``now``, and leaves a function it knows too little about as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Node:
    """A machine instances can be placed on."""

    # Node name, as used in placement constraints (kubernetes.io/hostname or faasd's single node).
    name: str
    # CPU cores available to function instances.
    cpu: float
    # Memory bytes available to function instances.
    memory: int
    # Whole GPU devices on the node.
    gpus: int = 0
    # Node labels (for constraints); informational here.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A deployed instance group of a function: one configuration on one node, with some replicas."""

    # The OpenFaaS function name of the variant (``<fn>-<config>-...``), or the parent's own name.
    name: str
    # Batch size the instances run with.
    batch: int
    # CPU cores per instance.
    cpu: float
    # GPU share per instance (0 for CPU only).
    gpu: float
    # Memory bytes per instance.
    memory: int
    # Node it is placed on ("" when unconstrained).
    node: str
    # Replicas the provider reports.
    replicas: int = 1
    # True for the user's own deployment (the front door): counted as capacity, never changed.
    pinned: bool = False
    # Replicas the provider reports ready (availableReplicas); a variant still starting is not removed.
    ready: int = 0
    # Its FunctionStatus as read from the API (image, envVars...): act compares it with what it should be.
    status: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    # CPU cores and memory bytes a node reserves for each instance, when they differ from ``cpu`` and
    # ``memory`` (its limits): a parent's ``requests``, as Kubernetes packs nodes by them. None: the limits.
    reserved_cpu: float | None = None
    reserved_memory: int | None = None

    def reserved(self) -> tuple[float, float, int]:
        """(CPU, GPU, memory) a node holds for one instance."""
        return (self.cpu if self.reserved_cpu is None else self.reserved_cpu, self.gpu,
                self.memory if self.reserved_memory is None else self.reserved_memory)


@dataclass(frozen=True)
class Measurement:
    """A measured (smoothed) execution time reported by running instances."""

    batch: int
    cpu: float
    gpu: float
    seconds: float


@dataclass(frozen=True)
class FunctionState:
    """One function the autoscaler manages (it carries the latency SLO annotation)."""

    # The function (and queue) name.
    name: str
    # Latency SLO in seconds (queueing + execution).
    slo: float
    # Model reference for the predictor (com.faas-infer.model), e.g. functions/resnet.
    model: str = ""
    # Requests per second arriving at the function's instances, refused ones included (Redis arrivals);
    # None when unknown.
    rate: float | None = None
    # Requests waiting in the shared queue.
    queue_depth: int = 0
    # Seconds since the last arrival (None when never seen).
    idle_seconds: float | None = None
    # Memory bytes per instance (the parent's memory limit).
    memory: int = 512 * 1024**2
    # Instance bounds from com.openfaas.scale.min/max; None uses the config's.
    min_instances: int | None = None
    max_instances: int | None = None
    # Variants running now (the parent included, pinned).
    variants: tuple[Variant, ...] = ()
    # Execution times measured by the instances.
    measured: tuple[Measurement, ...] = ()
    # Heartbeating instances right now.
    live_instances: int = 0
    # The parent's FunctionDeployment as read from the API, the template for its variants.
    spec: Mapping[str, object] = field(default_factory=dict)
    # Requests per second refused (429, 503) by its instances: the part of ``rate`` they could not take.
    refused_rate: float = 0.0
    # ``rate`` and ``refused_rate`` over the last few seconds only (observe.RECENT_WINDOW): whether the load
    # and the refusals are still there now, not just in the longer window's average. None when unknown.
    recent_rate: float | None = None
    recent_refused: float = 0.0
    # Why the function's SLO annotation or scale labels cannot be read ("" when they can): decide then
    # leaves it as it runs (its variants kept, not deleted) and says this.
    unreadable: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything decide may look at, taken at ``taken_at`` (the loop's clock)."""

    taken_at: float
    functions: tuple[FunctionState, ...]
    nodes: tuple[Node, ...]
    # What could not be read, for the log and for the plan's reason.
    problems: tuple[str, ...] = ()
    # Variants whose parent is gone or no longer carries the SLO annotation; they hold resources until act
    # deletes them.
    orphans: tuple["Orphan", ...] = ()
    # Wall-clock seconds at ``taken_at`` (ages of variants from their createdAt); 0 when unknown.
    taken_epoch: float = 0.0
    # Variants whose parent is not listed, left as they run for ``orphan_grace`` (it may be being created
    # again); they hold resources meanwhile, and decide keeps their parent's guard memory.
    held: tuple["Orphan", ...] = ()


@dataclass(frozen=True)
class Orphan:
    """A variant left without a managed parent (or, in ``Snapshot.held``, without a listed one for now)."""

    variant: Variant
    # The parent's name (its com.faas-infer.parent label).
    parent: str
    # Why it counts as an orphan, in a few words.
    reason: str
