"""A worker's run of one job: receive inputs, compute its rows layer by layer, exchange, send outputs.

A job carries an absolute deadline (``expires``, epoch seconds) as well as its length, so a job that
waited behind another one in the worker's queue gets only the time its coordinator still waits for it,
and one already over is refused at once. The worker also caps the job at its own FSD_TIMEOUT: one
invocation cannot hold the worker longer than any job of the deployment may take.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fsd.channel import Channel, Message, Usage, who
from fsd.errors import ChannelError, FsdError, JobAborted
from fsd.model import activate, matmul
from fsd.schedule import WorkerProgram


@dataclass(frozen=True)
class JobSpec:
    """What the coordinator tells a worker: the invocation body, as JSON."""

    # Job id shared by every rank and the channel's names.
    job: str
    # The rank being invoked (checked against the worker's own).
    rank: int
    # Samples in the batch.
    batch: int
    # Seconds the job may still take when the worker is invoked (HTTP timeouts are derived from it).
    timeout: float
    # Epoch seconds (``time.time()``) at which the coordinator stops waiting; every wait ends by then.
    expires: float
    # The coordinator's ``FsdConfig.deployment()`` ("" unchecked): a worker configured for another model or
    # partition refuses the job rather than compute wrong activations.
    deployment: str = ""

    def to_json(self) -> bytes:
        """The invocation body."""
        return json.dumps({"job": self.job, "rank": self.rank, "batch": self.batch, "timeout": self.timeout,
                           "expires": self.expires, "deployment": self.deployment}).encode()

    @classmethod
    def from_json(cls, doc: Any) -> "JobSpec":
        """Parse an invocation body; a ``FsdError`` naming the bad field."""
        if not isinstance(doc, Mapping):
            raise FsdError(f"bad job spec: expected a JSON object, got {type(doc).__name__}")
        try:
            spec = cls(str(doc["job"]), int(doc["rank"]), int(doc["batch"]), float(doc["timeout"]),
                       float(doc["expires"]), str(doc.get("deployment") or ""))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise FsdError(f"bad job spec {dict(doc)!r}: {type(exc).__name__}: {exc}") from None
        if spec.batch < 1:
            raise FsdError(f"bad job spec: batch={spec.batch} must be >= 1")
        if not math.isfinite(spec.timeout) or spec.timeout <= 0:
            raise FsdError(f"bad job spec: timeout={spec.timeout} must be a finite number > 0")
        if not math.isfinite(spec.expires):
            raise FsdError(f"bad job spec: expires={spec.expires} must be a finite epoch time")
        return spec

    def deadline(self, max_timeout: float, now: float, clock: float) -> float:
        """The ``time.monotonic()`` value (``clock`` is its reading at epoch ``now``) by which this rank
        stops: the earliest of ``expires``, ``timeout`` and ``max_timeout`` seconds from now; a
        ``JobAborted`` when that is already past."""
        left = min(self.expires - now, self.timeout, max_timeout)
        if left <= 0:
            raise JobAborted(f"rank {self.rank}: job {self.job} expired {-left:.3f}s before this rank started it")
        return clock + left


@dataclass(frozen=True)
class WorkerReport:
    """What a worker did in one job (its invocation's answer)."""

    rank: int
    # Wall time inside the worker, the billed duration.
    seconds: float
    # Part of it spent computing.
    compute_seconds: float
    # Part of it spent waiting for messages.
    wait_seconds: float
    usage: Usage = field(default_factory=Usage)

    def to_json(self) -> dict:
        """A JSON-safe dict."""
        return {"rank": self.rank, "seconds": self.seconds, "compute_seconds": self.compute_seconds,
                "wait_seconds": self.wait_seconds, "usage": self.usage.to_json()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "WorkerReport":
        """Inverse of ``to_json``."""
        return cls(int(doc["rank"]), float(doc["seconds"]), float(doc["compute_seconds"]),
                   float(doc["wait_seconds"]), Usage.from_json(doc.get("usage") or {}))


def run_worker(program: WorkerProgram, channel: Channel, spec: JobSpec, max_timeout: float = math.inf) -> WorkerReport:
    """Run ``program`` for one job; every wait ends by the job's deadline, capped at ``max_timeout`` seconds
    (``ChannelTimeout`` then), or as soon as the coordinator aborts the job (``JobAborted``). A job whose
    deployment is not the program's (both known) is refused."""
    if spec.rank != program.rank:
        raise FsdError(f"job {spec.job} invoked rank {spec.rank} on the worker of rank {program.rank}")
    if spec.deployment and program.deployment and spec.deployment != program.deployment:
        raise FsdError(f"rank {program.rank} is configured for another deployment than its coordinator: "
                       f"worker {program.deployment!r}, coordinator {spec.deployment!r} (give every rank the same "
                       "FSD_MODEL, FSD_WORKERS, FSD_PARTITIONER and FSD_CHANNEL)")
    start = time.monotonic()
    deadline = spec.deadline(max_timeout, time.time(), start)
    endpoint = channel.endpoint(spec.job, spec.rank, deadline)
    compute = wait = 0.0
    previous = np.zeros((0, spec.batch), dtype=np.float32)
    for step in program.steps:
        t0 = time.monotonic()
        blocks = endpoint.receive(step.layer, step.sources, deadline) if step.sources else {}
        t1 = time.monotonic()
        received = [unpack_block(blocks[s], n, spec.batch, spec.job, step.layer, s, spec.rank)
                    for s, n in zip(step.sources, step.counts)]
        buffer = np.concatenate([previous] + received)
        previous = activate(matmul(step.weights, buffer), program.bias, program.ymax)
        messages = [Message(dst, step.layer + 1, program.rank, previous[idx].tobytes()) for dst, idx in step.sends]
        t2 = time.monotonic()
        endpoint.send(messages)
        wait += t1 - t0
        compute += t2 - t1
    return WorkerReport(program.rank, time.monotonic() - start, compute, wait, endpoint.usage())


def unpack_block(data: bytes, count: int, batch: int, job: str, layer: int, src: int,
                 me: int) -> np.ndarray:
    """A received block as its (count, batch) float32 values; a ``ChannelError`` naming the job, the layer and
    the sender when it holds another number of bytes (a foreign object or frame under the block's name):
    numpy's own ValueError named none of them, and in the coordinator it was no FsdError, so the handler
    raised it and the watchdog's bisection ran the batch again."""
    if len(data) != 4 * count * batch:
        raise ChannelError(f"{who(me)}: job {job} got {len(data)} bytes of layer-{layer} activations from "
                           f"{who(src)} where {count} x {batch} float32 values ({4 * count * batch} bytes) "
                           "were expected")
    return np.frombuffer(data, dtype=np.float32).reshape(count, batch)
