"""The coordinator's run of one job: fan out to the workers, scatter inputs, gather outputs, price the run.

Failure is bounded: the coordinator waits for outputs in short slices and checks the invocations between
them, so a worker that answers an error or cannot be reached fails the job at once, and a silent one
(dead mid-job, lost message) fails it when the job's timeout is up, naming the ranks that sent nothing.

Nothing is invoked before the input is checked and sent, and a failed job is aborted on the channel, so
workers drop it at once instead of waiting out its deadline while the next job queues behind it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from concurrent.futures import Future, wait
from dataclasses import dataclass

import numpy as np

from fsd.channel import Channel, Message, Usage
from fsd.cost import Cost, Prices, run_cost, usage_sum
from fsd.errors import ChannelTimeout, FsdError, WorkerFailed
from fsd.invoke import HTTP_GRACE, Invoker
from fsd.partition import COORDINATOR
from fsd.schedule import CoordinatorPlan
from fsd.worker import JobSpec, WorkerReport, unpack_block

logger = logging.getLogger(__name__)

# Longest single wait for outputs before the invocations are checked again.
_SLICE = 0.25


@dataclass(frozen=True)
class Memory:
    """Function memory sizes (MB) the cost model bills."""

    coordinator: float = 256.0
    worker: float = 512.0


@dataclass(frozen=True)
class RunResult:
    """One job: outputs, what moved, and what it cost."""

    job: str
    # (batch, neurons) outputs, equal to the unpartitioned model's within float tolerance.
    outputs: np.ndarray
    # Coordinator wall time for the job.
    seconds: float
    workers: tuple[WorkerReport, ...]
    # Everything sent and requested on the channel by all ranks, the coordinator and the clean-up.
    usage: Usage
    # Messages and bytes exchanged between workers only (no scatter, no gather).
    exchange: Usage
    cost: Cost
    channel: str

    def report(self) -> dict:
        """The JSON-safe summary returned with every run."""
        return {"job": self.job, "channel": self.channel, "workers": len(self.workers),
                "batch": int(self.outputs.shape[0]), "seconds": round(self.seconds, 6),
                "usage": self.usage.to_json(), "exchange": self.exchange.to_json(), "cost": self.cost.to_json(),
                "ranks": [w.to_json() for w in self.workers]}


class Coordinator:
    """Runs jobs on a fixed set of workers over one channel."""

    def __init__(self, plan: CoordinatorPlan, channel: Channel, invoker: Invoker, timeout: float = 10.0,
                 prices: Prices | None = None, memory: Memory | None = None) -> None:
        self.plan, self.channel, self.invoker, self.timeout = plan, channel, invoker, timeout
        self.prices, self.memory = prices or Prices(), memory or Memory()

    def run(self, x: np.ndarray) -> RunResult:
        """Infer a (batch, neurons) input; ``WorkerFailed`` or ``ChannelTimeout`` within the timeout, a
        ``FsdError`` before any worker is invoked when ``x`` is not (batch, neurons) finite numbers."""
        start = time.monotonic()
        deadline, expires = start + self.timeout, time.time() + self.timeout
        xt = self._inputs(x)
        job, batch = job_id(expires), int(xt.shape[1])
        ranks = list(range(self.plan.workers))
        endpoint = self.channel.endpoint(job, COORDINATOR, deadline)
        futures: list[Future] = []
        try:
            endpoint.send([Message(r, 1, COORDINATOR, xt[cols].tobytes())
                           for r, cols in enumerate(self.plan.scatter) if len(cols)])
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout(f"coordinator: sending the inputs of job {job} took the whole timeout")
            futures = [self.invoker.submit(JobSpec(job, r, batch, left, expires, self.plan.deployment)) for r in ranks]
            outputs = self._gather(job, endpoint, futures, batch, deadline)
            reports = self._reports(futures, deadline + HTTP_GRACE)
        except BaseException as exc:
            threading.Thread(target=self._clean_up, args=(job, futures, f"{type(exc).__name__}: {exc}"[:300]),
                             daemon=True).start()
            raise
        purge = self._purge(job, ranks)
        seconds = time.monotonic() - start
        usage = usage_sum([endpoint.usage(), purge] + [r.usage for r in reports])
        exchange = _exchange(reports, self.plan, batch)
        billed = [(self.memory.coordinator, seconds)] + [(self.memory.worker, r.seconds) for r in reports]
        cost = run_cost(self.prices, self.channel.kind, billed, usage, batch)
        result = RunResult(job, outputs.T.copy(), seconds, tuple(reports), usage, exchange, cost, self.channel.kind)
        logger.info("fsd job %s: %d workers over %s, batch %d, %.3fs, %d messages, %d bytes, $%.3g/example",
                    job, len(ranks), self.channel.kind, batch, seconds, usage.messages, usage.bytes,
                    cost.per_example_usd)
        return result

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        """``x`` transposed to a contiguous (neurons, batch) float32 array, else a ``FsdError``."""
        try:
            with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, refused below
                x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise FsdError(f"inputs must be numbers: {exc}") from None
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != self.plan.neurons:
            raise FsdError(f"inputs must be (batch >= 1, {self.plan.neurons}) numbers, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise FsdError("inputs hold NaN or infinity (or a number beyond float32)")
        return np.ascontiguousarray(x.T)

    def _gather(self, job: str, endpoint, futures: list[Future], batch: int, deadline: float) -> np.ndarray:
        outputs = np.zeros((self.plan.neurons, batch), dtype=np.float32)
        pending = {r for r, rows in enumerate(self.plan.gather) if len(rows)}
        layer = self.plan.layers + 1
        while pending:
            _raise_failed(futures)
            try:
                blocks = endpoint.receive(layer, pending, min(deadline, time.monotonic() + _SLICE))
            except ChannelTimeout:
                if time.monotonic() < deadline:
                    continue
                wait(futures, timeout=_SLICE)  # the workers' own timeouts name the root cause better
                _raise_failed(futures)
                raise
            for rank, data in blocks.items():
                rows = self.plan.gather[rank]
                outputs[rows] = unpack_block(data, len(rows), batch, job, layer, rank, COORDINATOR)
            pending.clear()
        return outputs

    def _reports(self, futures: list[Future], deadline: float) -> list[WorkerReport]:
        done, not_done = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        if not_done:
            late = [r for r, f in enumerate(futures) if f in not_done]
            raise WorkerFailed(f"ranks {late} sent their outputs but their invocations did not return in time")
        return [f.result() for f in futures]

    def _purge(self, job: str, ranks: list[int]) -> Usage:
        """Remove what a successful job left, best effort: its outputs are in hand, so a channel that fails
        now must not fail the job (Redis inboxes expire, a later coordinator sweeps S3)."""
        try:
            return self.channel.purge(job, ranks + [COORDINATOR])
        except FsdError as exc:
            logger.warning("fsd job %s: clean-up failed, leaving it to expiry: %s", job, exc)
            return Usage()

    def _clean_up(self, job: str, futures: list[Future], reason: str) -> None:
        """After a failed job: abort it so that its workers stop now, wait for them, delete what is left."""
        if futures:
            try:
                self.channel.abort(job, list(range(self.plan.workers)), reason)
            except Exception:  # noqa: BLE001 - best effort; the workers stop at the job's deadline anyway
                logger.exception("fsd job %s: cannot abort it", job)
        wait(futures, timeout=self.timeout + HTTP_GRACE)
        try:
            self.channel.purge(job, list(range(self.plan.workers)) + [COORDINATOR])
        except Exception:  # noqa: BLE001 - best effort after a failed job; Redis keys expire anyway
            logger.exception("fsd job %s: clean-up after failure failed", job)


def job_id(expires: float) -> str:
    """A fresh job id that starts with the job's expiry, so a later sweep knows when its leftovers are stale."""
    return f"{math.ceil(expires)}-{uuid.uuid4().hex}"


def _raise_failed(futures: list[Future]) -> None:
    """If any invocation failed: give the others a moment to fail too (a lost message makes every rank
    time out together), then raise one ``WorkerFailed`` listing every failure, earliest layer first."""
    if not any(f.done() and f.exception() is not None for f in futures):
        return
    wait(futures, timeout=_SLICE)
    errors = [str(f.exception()) for f in futures if f.done() and f.exception() is not None]
    errors.sort(key=_layer_of)
    raise WorkerFailed("; ".join(errors))


def _layer_of(text: str) -> int:
    match = re.search(r"no layer-(\d+) activations", text)
    return int(match.group(1)) if match else -1


def _exchange(reports: list[WorkerReport], plan: CoordinatorPlan, batch: int) -> Usage:
    """Worker-to-worker traffic: what workers sent minus their output blocks to the coordinator."""
    sent = usage_sum([r.usage for r in reports])
    gathered = sum(len(rows) for rows in plan.gather)
    outputs = sum(1 for rows in plan.gather if len(rows))
    return Usage(sent.messages - outputs, sent.bytes - gathered * 4 * batch, {})
