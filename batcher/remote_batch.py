"""Batches taken from a function's shared queue: claiming them, and sending every answer where it belongs.

``take(b, t, poll)`` claims up to ``b`` requests (``batcher.claims``), blocking up to ``poll`` for the first,
then waits for company until the oldest has waited ``t``. Redis checks blocking timeouts only ``hz``
(default 10) times a second, so the last ``COARSE`` seconds of a wait are polled every ``FILL_POLL``.
The batch comes back as ``Pending`` items whose futures the dispatcher resolves. An answer for a request
that arrived at this instance resolves its caller's future at once; answers for other instances are
collected until the batch is complete, then pushed to their inboxes in one MULTI that also deletes the
claimed list. A batch with only local callers defers that deletion (and its counters) to the pipeline of
the next take, saving a round trip; until then a crash would re-run already answered requests, whose
second answer nobody waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import redis

from batcher import keys, stats, wire
from batcher.claims import Claims
from batcher.errors import BatchError, HandlerFailed, PayloadTooLarge
from batcher.queue import Pending
from batcher.request import Response

logger = logging.getLogger(__name__)

# Waits longer than this block in Redis; shorter ones (and the end of longer ones) are polled.
COARSE = 0.11
FILL_POLL = 0.001
# Seconds an inbox keeps replies nobody collects (its instance died).
INBOX_TTL = 60

Result = Response | BatchError


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
                 resolve: Callable[[str, Result], None], lost: Callable[[object], None]) -> None:
        self.client, self.claims, self.max_bytes, self.clock = client, claims, max_bytes, clock
        self.resolve, self.lost = resolve, lost
        # Requests waiting in the shared queue, as of the last take.
        self.depth = 0
        self._open: _OpenBatch | None = None
        self._release: tuple[int, int] | None = None

    def take(self, max_size: int, timeout: float, poll: float) -> list[Pending]:
        """Up to ``max_size`` requests, once full or once the oldest has waited ``timeout``; [] after ``poll``."""
        self._finish_open()
        raw = self._claim(max_size) or self._claim(max_size, wait=poll)
        if not raw:
            return []
        envelopes = self._decode(raw)
        release_at = min((e.enqueued_at for e in envelopes), default=time.time()) + timeout
        while len(raw) < max_size:
            left = release_at - time.time()
            if left <= 0:
                break
            if left > COARSE:
                more = self._claim(max_size - len(raw), wait=left - COARSE)
            else:
                time.sleep(min(FILL_POLL, left))
                more = self._claim(max_size - len(raw))
            raw += more
            envelopes += self._decode(more)
        return self._open_batch(envelopes)

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
        got, depth = Claims.taken(pipe.execute(), most, wait)
        if depth is not None:
            self.depth = depth
        return got

    def _queue_release(self, pipe: Any) -> None:
        if self._release is not None:
            served, expired = self._release
            self._release = None
            pipe.delete(self.claims.claimed)
            stats.record_served(pipe, self.claims.fn, self.claims.inst, served, expired)

    def _decode(self, raw: list[bytes]) -> list[wire.Envelope]:
        envelopes = []
        for data in raw:
            try:
                envelopes.append(wire.decode_request(data))
            except wire.WireError as exc:
                logger.error("dropped a malformed message from %s: %s", self.claims.queue, exc)
        return envelopes

    def _open_batch(self, envelopes: list[wire.Envelope]) -> list[Pending]:
        offset = self.clock() - time.time()
        items = [Pending(env.request, env.deadline + offset, env.enqueued_at + offset) for env in envelopes]
        batch = self._open = _OpenBatch(items, len(items))
        for env, item in zip(envelopes, items):
            item.future.add_done_callback(lambda f, e=env: self._answered(batch, e, f))
        if not items:
            self._flush(batch)
        return items

    def _answered(self, batch: _OpenBatch, env: wire.Envelope, future: Future) -> None:
        result = outcome(future)
        local = env.reply_to == self.claims.inst
        if local:
            self.resolve(env.token, result)
        elif isinstance(result, Response) and len(result.body) > self.max_bytes:
            result = PayloadTooLarge(f"response body of {len(result.body)} bytes over max_request_bytes")
        elif isinstance(result, Response):  # tells the caller which instance ran it
            result = replace(result, headers={**result.headers, "X-Served-By": self.claims.inst})
        with batch.lock:
            if not local:
                batch.replies.append((env.reply_to, wire.Reply(env.token, result, self.claims.inst)))
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


def settle(future: Future, result: Result) -> None:
    """Resolve ``future`` with ``result`` unless it is already done (a duplicate reply, or a caller gone)."""
    try:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
