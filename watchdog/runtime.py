"""The instance at run time: handler, queue, batch worker, admission, in-flight limit and metrics.

One ``Runtime`` per process. The HTTP engines (``watchdog.app``, ``watchdog.aio``) only turn requests into
``begin`` calls and errors into status codes.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Callable

from batcher.dispatch import BatchOutcome
from batcher.headroom import Headroom
from batcher.errors import DeadlineExceeded, Rejected
from batcher.policy import BatchConfig, ExecTimeModel, RateMeter, admit, effective_timeout, table_prior
from batcher.queue import BatchQueue, Pending, QueueClosed
from batcher.request import Request, Response
from batcher.worker import BatchWorker
from watchdog.config import WatchdogConfig
from watchdog.errors import ClientGone, TooManyRequests, status_of
from watchdog.handler import LoadedHandler
from watchdog.lifecycle import Lifecycle
from watchdog.metrics import WatchdogMetrics

logger = logging.getLogger(__name__)
# How often a thread waiting for its request's batch checks that the client is still connected (``submit``):
# most answers come sooner, so most requests never check; a client gone is noticed within this.
GONE_CHECK_SECONDS = 0.25

# Most of an event loop's time that caller-run batches may take before requests go through the queue.
INLINE_LOOP_SHARE = 0.1
# How long past its time limit a batch may run before the instance takes it for hung (``hung``, and the asyncio
# engine's inline guard). An async handler's coroutine is cancelled at that limit (``watchdog.handler``), timed
# from just after its batch began, and the cancellation then takes a turn of the handler's loop and the
# coroutine's own cleanup: without the grace a batch about to end was reported hung (503 to probes and to
# every request) and an inline one ended a worker about to serve on.
CANCEL_GRACE_SECONDS = 1.0


class Runtime:
    """Admits requests, queues them, and waits for the batch worker's answer."""

    def __init__(self, config: WatchdogConfig, handler: LoadedHandler, queue: BatchQueue,
                 metrics: WatchdogMetrics | None = None,
                 batch_config: Callable[[], BatchConfig] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.handler = handler
        self.queue = queue
        self.metrics = metrics or WatchdogMetrics()
        self.clock = clock
        self.lifecycle = Lifecycle(config.tmp_dir, config.suppress_lock)
        self.exec_model = ExecTimeModel(prior=table_prior(dict(config.exec_prior)) if config.exec_prior else None)
        self.arrivals = RateMeter()
        self.headroom = Headroom()
        self._static_config = config.batch_config()
        self.batch_config = batch_config or (lambda: self._static_config)
        self.worker = BatchWorker(queue, handler.handle, self.batch_config, self.exec_model,
                                  self._on_batch, clock, arrival_rate=self.arrival_rate,
                                  depth=handler.depth)
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._last_arrival = float("-inf")
        m = self.metrics
        m.cold_start.set(handler.cold_start_seconds)
        m.in_flight.set_function(lambda: self._inflight)
        m.queue_depth.set_function(lambda: self.queue.depth())
        m.max_batch_size.set_function(lambda: self.batch_config().max_batch_size)
        m.batch_timeout.set_function(
            lambda: effective_timeout(self.batch_config(), self.exec_model, self.arrival_rate()))
        m.latency_slo.set_function(lambda: self.batch_config().latency_slo or 0.0)
        m.predicted_exec.set_function(lambda: self.exec_model.predict(self.batch_config().max_batch_size) or 0.0)
        m.admission_share.set_function(lambda: self.headroom.share(self.clock()))

    def start(self) -> "Runtime":
        """Start the batch worker and report healthy."""
        self.worker.start()
        self.lifecycle.mark_ready()
        return self

    def try_enter(self) -> bool:
        """Count a request in; False when ``max_inflight`` is reached."""
        with self._inflight_lock:
            limit = self.config.max_inflight
            if limit and self._inflight >= limit:
                return False
            self._inflight += 1
            return True

    def leave(self) -> None:
        """Count a request out."""
        with self._inflight_lock:
            self._inflight -= 1

    @property
    def inflight(self) -> int:
        """Requests being handled now."""
        return self._inflight

    def health(self) -> tuple[int, bytes]:
        """``/_/health``: 200 while the lock file exists, work is accepted and no batch hangs, else 503."""
        hung = self.hung()
        if hung:
            return 503, f"Not healthy: {hung}".encode()
        return (200, b"OK") if self.lifecycle.healthy() else (503, b"Not healthy")

    def readiness(self) -> tuple[int, bytes]:
        """``/_/ready``: 503 while draining, while a batch hangs or while the handler process is
        (re)starting, 429 at ``max_inflight``, else 200."""
        if not self.lifecycle.accepting:
            return 503, b"Not ready"
        hung = self.hung()
        if hung:
            return 503, f"Not ready: {hung}".encode()
        if self._handler_loading():
            return 503, b"Not ready: the handler process is starting"
        if self.at_capacity():
            return 429, b"Concurrent request limit reached"
        return 200, b"OK"

    def hung(self) -> str:
        """Why the instance cannot serve, when an in-process batch has run past ``exec_timeout`` by more than
        ``CANCEL_GRACE_SECONDS`` ("" else).

        Its callers were answered 504, but its thread cannot be abandoned: until the handler returns, every
        request admitted would wait behind it for a 504 of its own. Reporting unhealthy lets the platform
        replace the instance (a handler process is killed and replaced at exec_timeout instead)."""
        limit = self.config.exec_timeout
        if self.config.handler_process or limit <= 0:
            return ""
        running = self.worker.running_for()
        if running <= limit + CANCEL_GRACE_SECONDS:
            return ""
        return (f"the handler has been running one batch for {running:.0f}s, past exec_timeout={limit:g}s; "
                f"nothing else runs until it returns")

    def too_many(self) -> TooManyRequests:
        """The 429 for a request over ``max_inflight``, in of-watchdog's wording (counted as an arrival
        refused, for the autoscaler's demand)."""
        self.queue.refused()
        return TooManyRequests(f"Concurrent request limit exceeded. Max concurrent requests: "
                               f"{self.config.max_inflight}")

    def timed_out(self, pending: Future, timeout: float) -> DeadlineExceeded:
        """Give up on a queued request whose ``timeout`` passed: cancel it (not run if not started), count
        it, and return the 504 its caller gets."""
        pending.cancel()
        self.metrics.refused.inc(reason="timeout")
        return _deadline_exceeded(timeout)

    def abandon(self, pending: Future) -> bool:
        """The caller of a queued request closed its connection: cancel it (never run) and count it; False
        when it is running or answered already (the work is real: it finishes)."""
        if not pending.cancel():
            return False
        self.metrics.refused.inc(reason="abandoned")
        return True

    def error_status(self, exc: BaseException) -> int:
        """The status an error is answered with, counting server-side failures (5xx except shedding)."""
        status = status_of(exc)
        if status >= 500 and status != 503:
            self.metrics.failed.inc(code=str(status))
        return status

    def answered(self, status: int, method: str, seconds: float) -> None:
        """Count one answered request in the of-watchdog metrics."""
        code, lower = str(status), method.lower()
        self.metrics.requests.inc(code=code, method=lower)
        self.metrics.duration.observe(seconds, code=code, method=lower)

    def at_capacity(self) -> bool:
        """True when one more request would be refused with 429."""
        return bool(self.config.max_inflight) and self._inflight >= self.config.max_inflight

    def request_timeout(self, x_timeout: float | None) -> float:
        """Seconds a request may take: exec_timeout (0 = off), capped by write_timeout and X-Timeout."""
        limits = [self.config.write_timeout]
        if self.config.exec_timeout > 0:
            limits.append(self.config.exec_timeout)
        if x_timeout is not None and x_timeout > 0:
            limits.append(x_timeout)
        return min(limits)

    def arrival_rate(self) -> float:
        """Requests per second arriving at this instance, recently."""
        return self.arrivals.rate(self.clock())

    def submit(self, request: Request, timeout: float, gone: Callable[[], bool] | None = None) -> Response:
        """Queue ``request`` and wait for its response; raises a ``BatchError`` on refusal or timeout, and
        ``ClientGone`` once ``gone()`` (asked every ``GONE_CHECK_SECONDS`` while it waits) says its caller
        closed the connection while it was still queued: a thread blocked on the answer alone never saw that,
        and the request ran for nobody and held its ``max_inflight`` slot."""
        pending = self.begin(request, timeout)
        if isinstance(pending, Response):
            return pending
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            step = remaining if gone is None else min(remaining, GONE_CHECK_SECONDS)
            try:
                return pending.result(timeout=max(0.0, step))
            except FutureTimeout:
                if step >= remaining:
                    raise self.timed_out(pending, timeout) from None
                if gone() and self.abandon(pending):
                    raise ClientGone("the client closed its connection while its request was queued") from None

    def begin(self, request: Request, timeout: float, inline_limit: float | None = None) -> "Response | Future":
        """Admit and queue ``request`` without waiting: its ``Response`` when it ran on the calling thread
        (the instance idle, the handler predicted to finish within ``inline_limit`` and well within
        ``timeout``), else the future its batch resolves. Raises a ``BatchError`` when refused."""
        config = self.batch_config()
        arrived = self.clock()
        gap, self._last_arrival = arrived - self._last_arrival, arrived
        rate = self.arrivals.add(arrived)
        hung = self.hung()
        if hung:
            self.metrics.refused.inc(reason="hung")
            self.queue.refused()
            raise Rejected(f"request refused: {hung}")
        decision = admit(self.queue.depth(), self.worker.busy_remaining(), config, self.exec_model,
                         self.config.max_queue, rate, self.headroom.share(arrived))
        if not decision.admitted:
            reason = "queue_full" if decision.predicted is None else "slo"
            self.metrics.refused.inc(reason=reason)
            self.queue.refused()
            raise Rejected(f"request refused: {decision.reason}")
        now = self.clock()
        if self._may_run_inline(config, timeout, inline_limit, gap, rate):
            item = Pending(request, now + timeout, now)
            if self.worker.try_run_inline([item]):
                self.queue.ran_here()
                if self.clock() - now > timeout:
                    raise _deadline_exceeded(timeout)
                return item.future.result(timeout=0)
        try:
            return self.queue.put(request, now + timeout)
        except QueueClosed:
            self.metrics.refused.inc(reason="draining")
            raise Rejected("request refused: the instance is shutting down") from None

    def _may_run_inline(self, config: BatchConfig, timeout: float, limit: float | None,
                        gap: float, rate: float) -> bool:
        """Run on the caller's thread only when no wait is due and the handler is known to finish well
        within the request's timeout (a caller cannot abandon its own thread to answer 504 on time) and
        within ``limit`` (an event loop must not stall). ``gap`` is the time since the previous arrival,
        ``rate`` the arrival rate with this request counted."""
        if effective_timeout(config, self.exec_model, rate, 1) != 0.0:
            return False
        if self._handler_loading():
            return False  # the loop must not wait for it
        if not self.exec_model.measured():
            return False  # a first call may warm up for long (lazy init, compilation): never on the loop
        predicted = self.exec_model.predict(1)
        if predicted is None or 2 * predicted > timeout:
            return False
        # A loop that runs the handler reads no other request meanwhile, so batches could never form: only
        # while single runs would keep it nearly free (arrivals x run time small) does it run them itself.
        # The rate is a 1 s average, slow to see a burst begin; the gap since the previous arrival sees it at
        # once (measured: without it a step from 10 to 840 req/s ran ~50 requests one by one, p99 43-80 ms).
        if limit is not None and not (predicted <= limit and rate * predicted <= INLINE_LOOP_SHARE
                                      and gap * INLINE_LOOP_SHARE >= predicted):
            return False
        # The queue decides too: with the shared queue only while it is empty (nobody else's request waits,
        # this idle instance would take it next).
        return self.queue.may_run_here()

    def _handler_loading(self) -> bool:
        """True while a call would wait for the handler to load (a new handler process)."""
        return self.handler.ready is not None and not self.handler.ready()

    def drain(self, timeout: float) -> bool:
        """Stop accepting, finish everything queued, stop the worker; True when done within ``timeout``."""
        self.lifecycle.begin_drain()
        done = self.worker.stop(timeout)
        if self.handler.close is not None:
            self.handler.close()
        self.lifecycle.drained.set()
        return done

    def _on_batch(self, outcome: BatchOutcome, items: list[Pending], started: float) -> None:
        m = self.metrics
        m.batch_size.observe(outcome.size)
        m.batch_exec.observe(outcome.exec_seconds, batch_size=str(outcome.size))
        m.queue_wait.observe_many([max(0.0, started - item.enqueued_at) for item in items])
        slo = self.batch_config().latency_slo
        if slo:
            now = self.clock()
            self.headroom.observe(now, [now - item.enqueued_at for item in items], slo)


def _deadline_exceeded(timeout: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"timeout of {timeout:g}s exceeded (exec_timeout, write_timeout or X-Timeout)")
