"""The batch queue: ``put(request) -> Future`` and ``next_batch(size, timeout)``, nothing more.

``BatchQueue`` is the interface every backend implements (the in-process ``LocalBatchQueue`` here, the
Redis queue shared by all instances of a function in ``batcher.redis_queue``). A batch is released when it
is full or when its oldest request has waited ``timeout`` seconds, counted from that request's arrival
(Ray Serve's rule), never by polling.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Callable, Protocol

from batcher.request import Request, Response


@dataclass
class Pending:
    """A request waiting in a queue, with its deadline and the future its caller waits on."""

    # The request itself.
    request: Request
    # Absolute time (the queue's clock) after which running it is pointless: its caller has given up.
    deadline: float
    # Absolute time (the queue's clock) at which it was queued.
    enqueued_at: float
    # Resolved with a ``Response``, or failed with a ``BatchError``.
    future: Future = field(default_factory=Future)


def settle(future: Future, result: "Response | BaseException") -> bool:
    """Resolve ``future`` with ``result`` (a response, or the exception to fail it with) unless it is done
    already (a duplicate's reply from another instance, or a caller gone); True when this call resolved it."""
    try:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True


class BatchQueue(Protocol):
    """What the watchdog needs from a queue backend."""

    def put(self, request: Request, deadline: float) -> "Future[Response]":
        """Queue ``request``; the future resolves with its response."""

    def next_batch(self, max_size: int, timeout: float, poll: float = 0.5) -> list[Pending]:
        """Block until ``max_size`` requests wait or the oldest has waited ``timeout``; [] after ``poll`` idle."""

    def depth(self) -> int:
        """Requests waiting, not yet taken into a batch."""

    def oldest_wait(self) -> float:
        """Seconds the oldest waiting request has waited (0 when empty)."""

    def close(self) -> None:
        """Wake every blocked ``next_batch``; later ``put`` calls fail."""

    def may_run_here(self) -> bool:
        """True when a request that just arrived may run at once on this idle instance, skipping the queue."""

    def ran_here(self) -> None:
        """Count a request that ``may_run_here`` let run at once."""

    def refused(self) -> None:
        """Count a request the instance refused (429 or 503) as an arrival all the same: demand the
        autoscaler must see, which the queue itself never does."""


class QueueClosed(RuntimeError):
    """``put`` on a closed queue."""


class LocalBatchQueue:
    """An in-process FIFO batch queue guarded by one condition variable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._items: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._wanted = 1  # the batch size the taker waits for (``next_batch``'s max_size)

    def put(self, request: Request, deadline: float) -> "Future[Response]":
        """Queue ``request`` until ``deadline`` (this queue's clock)."""
        item = Pending(request, deadline, self.clock())
        with self._cond:
            if self._closed:
                raise QueueClosed("queue is closed")
            self._items.append(item)
            # A bound method, not a closure over ``item``: that made a cycle (item -> future -> callback ->
            # item), so every request's objects waited for the cyclic collector instead of being freed at once.
            item.future.add_done_callback(self._drop_cancelled)
            # A waiting taker needs waking only for a first item or a full batch: in between it sleeps
            # until the oldest item's release time anyway (a wake per item costs a thread switch each).
            # Every taker is woken: with two (a pipelined worker), the one that may take it now must not
            # sleep on while the other, told to wait for the batch in flight, holds the wake-up.
            if len(self._items) == 1 or len(self._items) >= self._wanted:
                self._cond.notify_all()
        return item.future

    def _drop_cancelled(self, future: Future) -> None:
        """Take out a request cancelled while it waits (its caller gave up): left in, it counted in ``depth``
        (admission refused live callers with "queue full" for it) and filled batches that would not run it."""
        if not future.cancelled():
            return
        with self._cond:
            for index, waiting in enumerate(self._items):
                if waiting.future is future:  # by identity: two Pendings may compare equal
                    del self._items[index]
                    return

    def requeue(self, items: list[Pending]) -> None:
        """Put items back at the head in their order (used when a backend hands work back); one cancelled
        while it waits leaves, as one ``put`` here does."""
        with self._cond:
            self._items.extendleft(reversed(items))
            for item in items:
                item.future.add_done_callback(self._drop_cancelled)
            self._cond.notify()

    def next_batch(self, max_size: int, timeout: float, poll: float = 0.5,
                   not_before: Callable[[], float | None] | None = None) -> list[Pending]:
        """Up to ``max_size`` items once full or once the oldest has waited ``timeout`` (and, when given, not
        before the time ``not_before()`` on this queue's clock unless full; read again on every wake)."""
        idle_until = self.clock() + poll
        with self._cond:
            self._wanted = max_size
            while True:
                if self._closed and not self._items:
                    return []
                now = self.clock()
                if self._items:
                    release_at = self._items[0].enqueued_at + timeout
                    at = None if not_before is None else not_before()
                    if at is not None:
                        release_at = max(release_at, at)
                    if len(self._items) >= max_size or now >= release_at or self._closed:
                        return [self._items.popleft() for _ in range(min(max_size, len(self._items)))]
                    self._cond.wait(release_at - now)
                elif now >= idle_until:
                    return []
                else:
                    self._cond.wait(idle_until - now)

    def wake(self) -> None:
        """Make waiting takers re-read their ``not_before`` now (a batch in flight ended)."""
        with self._cond:
            self._cond.notify_all()

    def drain(self) -> list[Pending]:
        """Take every waiting item out (for a backend switching queues)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def depth(self) -> int:
        """Requests waiting."""
        return len(self._items)

    def oldest_wait(self) -> float:
        """Seconds the head of the queue has waited."""
        try:
            return max(0.0, self.clock() - self._items[0].enqueued_at)
        except IndexError:
            return 0.0

    def may_run_here(self) -> bool:
        """True while open: whoever runs the batch checks that nothing waits and the worker is free."""
        return not self._closed

    def ran_here(self) -> None:
        """Nothing to count: the instance's own metrics count every request."""

    def refused(self) -> None:
        """Nothing to count: the instance's metrics count refusals (faas_infer_requests_refused_total)."""

    def close(self) -> None:
        """Refuse new items and wake waiters; waiting items are still handed out."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
