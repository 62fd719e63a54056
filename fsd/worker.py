"""A worker's run of one job: receive inputs, compute its rows layer by layer, exchange, send outputs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fsd.channel import Endpoint, Message, Usage
from fsd.errors import FsdError
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
    # Seconds the whole job may take; every wait ends by then.
    timeout: float

    def to_json(self) -> bytes:
        """The invocation body."""
        return json.dumps({"job": self.job, "rank": self.rank, "batch": self.batch,
                           "timeout": self.timeout}).encode()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "JobSpec":
        """Parse an invocation body; a ``FsdError`` naming the bad field."""
        try:
            spec = cls(str(doc["job"]), int(doc["rank"]), int(doc["batch"]), float(doc["timeout"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FsdError(f"bad job spec {dict(doc)!r}: {type(exc).__name__}: {exc}") from None
        if spec.batch < 1 or spec.timeout <= 0:
            raise FsdError(f"bad job spec: batch={spec.batch} must be >= 1, timeout={spec.timeout} must be > 0")
        return spec


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


def run_worker(program: WorkerProgram, endpoint: Endpoint, spec: JobSpec) -> WorkerReport:
    """Run ``program`` for one job; every wait ends by the job's deadline (``ChannelTimeout`` then)."""
    if spec.rank != program.rank:
        raise FsdError(f"job {spec.job} invoked rank {spec.rank} on the worker of rank {program.rank}")
    start = time.monotonic()
    deadline = start + spec.timeout
    compute = wait = 0.0
    previous = np.zeros((0, spec.batch), dtype=np.float32)
    for step in program.steps:
        t0 = time.monotonic()
        blocks = endpoint.receive(step.layer, step.sources, deadline) if step.sources else {}
        t1 = time.monotonic()
        buffer = np.concatenate([previous] + [_block(blocks[s], n, spec.batch)
                                              for s, n in zip(step.sources, step.counts)])
        previous = activate(matmul(step.weights, buffer), program.bias, program.ymax)
        messages = [Message(dst, step.layer + 1, program.rank, previous[idx].tobytes()) for dst, idx in step.sends]
        t2 = time.monotonic()
        endpoint.send(messages)
        wait += t1 - t0
        compute += t2 - t1
    return WorkerReport(program.rank, time.monotonic() - start, compute, wait, endpoint.usage())


def _block(data: bytes, count: int, batch: int) -> np.ndarray:
    values = np.frombuffer(data, dtype=np.float32)
    if values.size != count * batch:
        raise FsdError(f"a block of {values.size} values arrived where {count} x {batch} were expected")
    return values.reshape(count, batch)
