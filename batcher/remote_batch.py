"""Batches taken from a function's shared queue: claiming them, and sending every answer where it belongs.

``take(b, t, poll)`` claims up to ``b`` requests (``batcher.claims``), blocking up to ``poll`` for the first,
then waits for company until the oldest has waited ``t``. Redis checks blocking timeouts only ``hz``
(default 10) times a second, so the last ``COARSE`` seconds of a wait are polled every ``FILL_POLL``.
The batch comes back as ``Pending`` items whose futures the dispatcher resolves; a request this instance
queued itself comes back as the very item its caller waits on (``own``), so its answer needs no hand-over.
An answer for any other request that arrived at this instance resolves its caller's future at once;
answers for other instances are collected until the batch is complete, then pushed to their inboxes in one
MULTI that also deletes the claimed list. A batch with only local callers defers that deletion (and its
counters) to the pipeline of the next take, saving a round trip; until then a crash would re-run already
answered requests, whose second answer nobody waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import redis

from batcher import keys, stats, wire
from batcher.claims import Claims
from batcher.errors import BatchError, HandlerFailed, PayloadTooLarge
from batcher.queue import Pending, settle
from batcher.request import Response

logger = logging.getLogger(__name__)

# Waits longer than this block in Redis; shorter ones (and the end of longer ones) are polled.
COARSE = 0.11
FILL_POLL = 0.001
# Seconds an inbox keeps replies nobody collects (its instance died).
INBOX_TTL = 60

Result = Response | BatchError


@dataclass(frozen=True)
class _Taken:
    """One request of a batch being taken: where its answer goes, and the item the batch worker runs."""

    token: str
    reply_to: str
    item: Pending
    # True when ``item`` is the waiter this instance queued (its future is the caller's own).
    own: bool


@dataclass
class _OpenBatch:
    """A batch taken from the shared queue whose replies are collected until all are in."""

    items: list[Pending]
    left: int
    replies: list[tuple[str, wire.Reply]] = field(default_factory=list)
    expired: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RemoteBatches:
    """Takes batches for one instance and routes their answers (used by the batch worker's thread only)."""

    def __init__(self, client: Any, claims: Claims, max_bytes: int, clock: Callable[[], float],
                 resolve: Callable[[str, Result], None], lost: Callable[[object], None],
                 own: Callable[[str], Pending | None] = lambda token: None) -> None:
        self.client, self.claims, self.max_bytes, self.clock = client, claims, max_bytes, clock
        self.resolve, self.lost, self.own = resolve, lost, own
        # Requests waiting in the shared queue, as of the last take.
        self.depth = 0
        self._open: _OpenBatch | None = None
        self._release: tuple[int, int] | None = None

    def take(self, max_size: int, timeout: float, poll: float) -> list[Pending]:
        """Up to ``max_size`` requests, once full or once the oldest has waited ``timeout``; [] after ``poll``."""
        self._finish_open()
        # One round trip: BLMOVE returns at once when the queue holds anything, and the take script in the
        # same pipeline takes the rest (a non-blocking try first cost a second round trip on an idle queue).
        raw = self._claim(max_size, wait=poll)
        if not raw:
            return []
        taken = self._decode(raw)
        release_at = min((t.item.enqueued_at for t in taken), default=self.clock()) + timeout
        while len(raw) < max_size:
            left = release_at - self.clock()
            if left <= 0:
                break
            if left > COARSE:
                more = self._claim(max_size - len(raw), wait=left - COARSE)
            else:
                time.sleep(min(FILL_POLL, left))
                more = self._claim(max_size - len(raw))
            raw += more
            taken += self._decode(more)
        return self._open_batch(taken)

    def release_now(self) -> None:
        """Send a deferred release (before leaving, so nothing answered is given back)."""
        if self._release is not None:
            pipe = self.client.pipeline(transaction=False)
            self._queue_release(pipe)
            pipe.execute()

    def _claim(self, most: int, wait: float = 0.0) -> list[bytes]:
        pipe = self.client.pipeline(transaction=False)
        self._queue_release(pipe)
        self.claims.take(pipe, most, wait)
        got, depth = self.claims.taken(pipe.execute(raise_on_error=False), most, wait)
        if depth is not None:
            self.depth = depth
        return got

    def _queue_release(self, pipe: Any) -> None:
        if self._release is not None:
            served, expired = self._release
            self._release = None
            pipe.delete(self.claims.claimed)
            stats.record_served(pipe, self.claims.fn, self.claims.inst, served, expired)

    def _decode(self, raw: list[bytes]) -> list[_Taken]:
        """Our own requests come back as the waiter ``own`` still holds (nothing to decode or rebuild); the
        others are decoded, their epoch times moved onto this queue's clock."""
        taken, offset = [], None
        for data in raw:
            token = wire.token_of(data)
            item = self.own(token)
            if item is not None:
                taken.append(_Taken(token, self.claims.inst, item, True))
                continue
            try:
                env = wire.decode_request(data)
            except wire.WireError as exc:
                logger.error("dropped a malformed message from %s: %s", self.claims.queue, exc)
                continue
            if offset is None:
                offset = self.clock() - time.time()
            item = Pending(env.request, env.deadline + offset, env.enqueued_at + offset)
            taken.append(_Taken(env.token, env.reply_to, item, False))
        return taken

    def _open_batch(self, taken: list[_Taken]) -> list[Pending]:
        batch = self._open = _OpenBatch([t.item for t in taken], len(taken))
        for t in taken:
            t.item.future.add_done_callback(lambda f, t=t: self._answered(batch, t, f))
        if not taken:
            self._flush(batch)
        return batch.items

    def _answered(self, batch: _OpenBatch, taken: _Taken, future: Future) -> None:
        result = outcome(future)
        local = taken.reply_to == self.claims.inst
        if local and not taken.own:
            self.resolve(taken.token, result)
        elif not local and isinstance(result, Response) and len(result.body) > self.max_bytes:
            result = PayloadTooLarge(f"response body of {len(result.body)} bytes over max_request_bytes")
        elif not local and isinstance(result, Response):  # tells the caller which instance ran it
            result = replace(result, headers={**result.headers, "X-Served-By": self.claims.inst})
        with batch.lock:
            if not local:
                batch.replies.append((taken.reply_to, wire.Reply(taken.token, result, self.claims.inst)))
            batch.expired += int(getattr(result, "status", 200) == 504)
            batch.left -= 1
            done = batch.left == 0
        if done:
            self._flush(batch)

    def _flush(self, batch: _OpenBatch) -> None:
        """Release a finished batch: at once (one MULTI) when other instances wait for replies, else later."""
        if self._open is batch:
            self._open = None
        served = len(batch.items) - batch.expired
        if not batch.replies:
            self._release = (served, batch.expired)
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            for reply_to, reply in batch.replies:
                pipe.lpush(keys.inbox(reply_to), wire.encode_reply(reply))
            for inbox in {keys.inbox(r) for r, _ in batch.replies}:
                pipe.expire(inbox, INBOX_TTL)
            pipe.delete(self.claims.claimed)
            stats.record_served(pipe, self.claims.fn, self.claims.inst, served, batch.expired)
            pipe.execute()
        except redis.RedisError as exc:
            self.lost(exc)

    def _finish_open(self) -> None:
        """Answer anything a previous batch left unanswered (never expected: dispatch answers all)."""
        batch = self._open
        if batch is None:
            return
        logger.error("a batch ended with %d requests unanswered; failing them", batch.left)
        for item in batch.items:
            settle(item.future, HandlerFailed("the batch ended without an answer for this request"))


def outcome(future: Future) -> Result:
    """What a finished future stands for, as a response or a ``BatchError``."""
    if future.cancelled():
        return HandlerFailed("request cancelled")
    exc = future.exception()
    if exc is None:
        return future.result()
    return exc if isinstance(exc, BatchError) else HandlerFailed(f"{type(exc).__name__}: {exc}")

