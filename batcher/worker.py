"""The batch worker: threads that take batches from a queue and dispatch them, one batch per thread.

One thread (``depth=1``) runs one batch at a time. A handler that runs elsewhere and queues what it is
sent (a child process, ``handler_process``) is given ``depth`` threads: while one waits for the batch in
flight, the next takes its batch and sends it, so the runner finds it waiting. The next batch is not taken
early, though: it is released when full, or when the batches in flight are predicted to end within
``PIPELINE_LEAD_SECONDS`` (and no earlier than the usual timeout), so it holds what arrives meanwhile.
A pipelined worker needs a queue whose ``next_batch`` takes ``not_before``, a function it reads again
whenever it wakes (both backends do; the shared queue claims nothing while held, so requests stay
there for any instance that is free). A queue with ``batch_done`` is told as soon as a batch it gave is
answered (the shared queue then routes its answers), and one with ``wake`` after every batch, inline ones
included, so a taker held behind it reads ``not_before`` again.
"""

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

# How long before the batch in flight is predicted to end the next one is released to a pipelined
# runner: enough for the watchdog to take, encode and send it (0.3-1.5 ms measured for 64 MLP requests
# on 2 vCPUs), little enough that it does not leave behind what arrives meanwhile.
PIPELINE_LEAD_SECONDS = 0.002


class BatchWorker:
    """Loops ``next_batch`` → ``dispatch`` on a thread, reading the live config before every batch."""

    def __init__(self, queue: BatchQueue, handle: HandleBatch, config: Callable[[], BatchConfig],
                 exec_model: ExecTimeModel, on_batch: OnBatch | None = None,
                 clock: Callable[[], float] = time.monotonic, poll: float = 0.25,
                 arrival_rate: Callable[[], float | None] = lambda: None, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth={depth}: must be >= 1")
        self.queue = queue
        self.handle = handle
        self.config = config
        self.exec_model = exec_model
        self.on_batch = on_batch
        self.clock = clock
        self.poll = poll
        self.arrival_rate = arrival_rate
        self.depth = depth
        self._stop = threading.Event()
        # (started, items) of each batch in flight, by the thread dispatching it; a batch behind another
        # counts as started when the one before it ended (the runner takes them one after another).
        self._busy: dict[int, tuple[float, list[Pending]]] = {}
        self._busy_lock = threading.Lock()
        # At most ``depth`` batches at a time, whether worker threads or a caller (``try_run_inline``) run them.
        self._exec_slots = threading.Semaphore(depth)
        self._threads = [threading.Thread(target=self._run, name=f"batch-worker-{k}", daemon=True)
                         for k in range(depth)]

    def start(self) -> "BatchWorker":
        """Start the threads."""
        for thread in self._threads:
            thread.start()
        return self

    def busy_remaining(self) -> float:
        """Predicted seconds until the batches in flight are done (0 when idle): they run one after another,
        from when the oldest started."""
        return self._remaining(self._in_flight())

    def running_for(self, thread: int | None = None) -> float:
        """Seconds the oldest batch not answered yet has been running (0 when none is); with ``thread`` (an
        ident), only a batch run on that thread (``try_run_inline``'s caller)."""
        busy = self._in_flight(thread)
        return max(0.0, self.clock() - min(started for started, _ in busy)) if busy else 0.0

    def _remaining(self, busy: list[tuple[float, int]]) -> float:
        if not busy:
            return 0.0
        predicted = sum(self.exec_model.predict(size) or 0.0 for _, size in busy)
        return max(0.0, predicted - (self.clock() - min(started for started, _ in busy)))

    def _not_before(self) -> float | None:
        """For a pipelined taker: when the batches in flight are predicted to end, less the lead it needs;
        None when none is in flight. Queues read it again when woken, so a batch that ended early (it
        makes this None) releases the one held behind it."""
        busy = self._in_flight()
        if not busy:
            return None
        return self.clock() + self._remaining(busy) - PIPELINE_LEAD_SECONDS

    def _in_flight(self, thread: int | None = None) -> list[tuple[float, int]]:
        """(started, size) of the batches not answered yet (run on ``thread`` only, when given). A batch whose
        every request has its answer no longer counts, though its thread has not yet cleared it: its callers
        may already be sending their next request, which must not be refused for a batch that is over."""
        with self._busy_lock:
            busy = [held for owner, held in self._busy.items() if thread in (None, owner)]
        return [(started, len(items)) for started, items in busy if not all(i.future.done() for i in items)]

    def stop(self, timeout: float | None = None) -> bool:
        """Close the queue, finish what it holds, and stop (leaving a shared queue once every thread ended);
        True when every thread ended in time."""
        self._stop.set()
        self.queue.close()
        deadline = None if timeout is None else self.clock() + timeout
        for thread in self._threads:
            if thread.ident is None:  # never started (the process failed during boot)
                continue
            thread.join(None if deadline is None else max(0.0, deadline - self.clock()))
        done = not any(t.is_alive() for t in self._threads)
        leave = getattr(self.queue, "leave", None)
        if done and leave is not None:  # a shared queue deregisters (the threads may end without telling it)
            try:
                leave()
            except Exception:  # noqa: BLE001 - what stays registered is reaped by the peers
                logger.exception("leaving the shared queue failed")
        return done

    def _run(self) -> None:
        while True:
            try:
                config = self.config()
                timeout = effective_timeout(config, self.exec_model, self.arrival_rate(), self.queue.depth())
                if self.depth > 1:  # pipelined: when full, or shortly before the runner is free
                    items = self.queue.next_batch(config.max_batch_size, timeout, self.poll,  # type: ignore[call-arg]
                                                  not_before=self._not_before)
                else:
                    items = self.queue.next_batch(config.max_batch_size, timeout, self.poll)
            except BaseException:  # noqa: BLE001 - the worker must survive a failing backend
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
        if self._stop.is_set() or self.queue.depth() or self._busy:
            return False
        held = 0  # every slot: a worker thread that took a batch meanwhile has one, and then this declines
        while held < self.depth and self._exec_slots.acquire(blocking=False):
            held += 1
        try:
            if held < self.depth:
                return False
            self._dispatch(items, queued=False)
        finally:
            for _ in range(held):
                self._exec_slots.release()
        return True

    def _run_batch(self, items: list[Pending]) -> None:
        with self._exec_slots:
            self._dispatch(items)

    def _dispatch(self, items: list[Pending], queued: bool = True) -> None:
        started, me = self.clock(), threading.get_ident()
        with self._busy_lock:
            self._busy[me] = (started, items)
        try:
            outcome = dispatch(self.handle, items, started)
        except BaseException:  # noqa: BLE001 - dispatch already answered every waiter; the thread lives on
            logger.exception("batch of %d failed outside the handler", len(items))
            return
        finally:
            with self._busy_lock:
                del self._busy[me]
                now = self.clock()
                for other, (since, held) in self._busy.items():  # the batch behind starts now
                    self._busy[other] = (max(since, now), held)
            done = getattr(self.queue, "batch_done", None) if queued else None
            wake = getattr(self.queue, "wake", None)
            try:
                if done is not None:  # a shared queue routes the batch's answers to other instances now
                    done()
                if wake is not None:  # a taker held until this batch was predicted to end looks again
                    wake()
            except Exception:  # noqa: BLE001 - answering must never stop batching
                logger.exception("routing a batch's answers failed")
        if outcome is None:
            return
        if outcome.clean:
            self.exec_model.observe(outcome.size, outcome.exec_seconds)
        if self.on_batch is not None:
            try:
                self.on_batch(outcome, items, started)
            except Exception:  # noqa: BLE001 - metrics must never stop batching
                logger.exception("on_batch callback failed")
