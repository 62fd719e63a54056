"""The batch worker: one thread per instance that takes batches from a queue and dispatches them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from batcher.dispatch import BatchOutcome, HandleBatch, dispatch
from batcher.policy import BatchConfig, ExecTimeModel, effective_timeout
from batcher.queue import BatchQueue, Pending

logger = logging.getLogger(__name__)

OnBatch = Callable[[BatchOutcome, list[Pending], float], None]


class BatchWorker:
    """Loops ``next_batch`` → ``dispatch`` on a thread, reading the live config before every batch."""

    def __init__(self, queue: BatchQueue, handle: HandleBatch, config: Callable[[], BatchConfig],
                 exec_model: ExecTimeModel, on_batch: OnBatch | None = None,
                 clock: Callable[[], float] = time.monotonic, poll: float = 0.25,
                 arrival_rate: Callable[[], float | None] = lambda: None) -> None:
        self.queue = queue
        self.handle = handle
        self.config = config
        self.exec_model = exec_model
        self.on_batch = on_batch
        self.clock = clock
        self.poll = poll
        self.arrival_rate = arrival_rate
        self._stop = threading.Event()
        self._busy: tuple[float, int] | None = None
        # One batch at a time, whether the worker thread or a caller (``try_run_inline``) runs it.
        self._exec_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batch-worker", daemon=True)

    def start(self) -> "BatchWorker":
        """Start the thread."""
        self._thread.start()
        return self

    def busy_remaining(self) -> float:
        """Predicted seconds left of the batch running now (0 when idle)."""
        busy = self._busy
        if busy is None:
            return 0.0
        started, size = busy
        predicted = self.exec_model.predict(size) or 0.0
        return max(0.0, predicted - (self.clock() - started))

    def stop(self, timeout: float | None = None) -> bool:
        """Close the queue, finish what it holds, and stop; True when the thread ended in time."""
        self._stop.set()
        self.queue.close()
        if self._thread.ident is None:  # never started (the process failed during boot)
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                config = self.config()
                timeout = effective_timeout(config, self.exec_model, self.arrival_rate(), self.queue.depth())
                items = self.queue.next_batch(config.max_batch_size, timeout, self.poll)
            except Exception:  # noqa: BLE001 - the worker must survive a failing backend
                logger.exception("taking a batch failed")
                if self._stop.wait(self.poll):
                    return
                continue
            if not items:
                if self._stop.is_set() and self.queue.depth() == 0:
                    return
                continue
            self._run_batch(items)

    def try_run_inline(self, items: list[Pending]) -> bool:
        """Run ``items`` on the calling thread if the instance is idle and nothing is queued.

        At low load this saves the two thread hand-offs (caller -> worker -> caller) that dominate an idle
        instance's added latency; under load it declines and the caller queues as usual.
        """
        if self._stop.is_set() or self.queue.depth() or not self._exec_lock.acquire(blocking=False):
            return False
        try:
            self._dispatch(items)
        finally:
            self._exec_lock.release()
        return True

    def _run_batch(self, items: list[Pending]) -> None:
        with self._exec_lock:
            self._dispatch(items)

    def _dispatch(self, items: list[Pending]) -> None:
        started = self.clock()
        self._busy = (started, len(items))
        try:
            outcome = dispatch(self.handle, items, started)
        except Exception:  # noqa: BLE001 - dispatch already answered every waiter
            logger.exception("batch of %d failed outside the handler", len(items))
            return
        finally:
            self._busy = None
        if outcome is None:
            return
        if outcome.clean:
            self.exec_model.observe(outcome.size, outcome.exec_seconds)
        if self.on_batch is not None:
            try:
                self.on_batch(outcome, items, started)
            except Exception:  # noqa: BLE001 - metrics must never stop batching
                logger.exception("on_batch callback failed")
