"""Batches taken from a function's shared queue: claiming them, and sending every answer where it belongs.

``take(b, t, poll)`` claims up to ``b`` requests (``batcher.claims``), blocking up to ``poll`` for the first,
then waits for company until the oldest has waited ``t``. Redis checks blocking timeouts only ``hz``
(default 10) times a second, so the last ``COARSE`` seconds of a wait are polled every ``FILL_POLL``.
The batch comes back as ``Pending`` items whose futures the dispatcher resolves; a request this instance
queued itself comes back as the very item its caller waits on (``own``), so its answer needs no hand-over.
The other answers are routed in one pass when the worker comes back for its next batch (the batch has run
by then; no callback per request): one for another request that arrived at this instance resolves its
caller's future, and those for other instances are pushed to their inboxes in one MULTI that also removes
the batch from the claimed list. A batch with only local callers defers that removal
(and its counters) to the next take's write, saving a round trip; until then a crash would re-run already
answered requests, whose second answer nobody waits for.

Pipelined workers. A batch worker with two threads (a handler in a child process) has a second batch
taken while the first runs: takes are serialised (the queue's lock), batches stay open in the order they
were taken, and each is finished (answers routed, released) once all of its requests are answered, by
``finish_done`` right after its dispatch or at the next take, oldest first, so the claimed list is always
trimmed from the batches it holds longest.

A take held back (``not_before``: until shortly before the batch in flight is predicted to end) claims
nothing meanwhile, so what is queued stays there for any instance that is free: it waits in this process,
woken (``wake``) when a batch ends, when Redis is lost or when the queue closes, and re-reads
``not_before``, so a runner that came free early is never kept waiting by a stale prediction. A full
batch waiting in the queue (as last read) ends the hold too. Then it claims what is there and fills as
usual, and stops filling once ``stop()`` says the queue is closing or Redis is lost (a claim already
waiting in Redis still returns what it took).

Taking ahead. The claims travel on a connection of their own (``_Link``), whose replies can be read later.
When a full batch is taken while the instance is saturated, the next take is written at once and its
replies are read when the batch is done: under load the worker finds its next batch waiting instead of
stopping for a round trip, which on a busy machine cost milliseconds per batch (redis-server and the
worker both wait for a core). The claimed list then holds two batches; a batch's removal takes only its own
requests off the old end (``Claims.release``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
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
# The longest one blocking command waits in Redis, well inside the client's socket timeout (5 s): a longer
# wait is made of several, so no wait for company, however long its batch timeout, reads as Redis lost.
MAX_BLOCK = 1.0
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
    """A batch taken and not finished: its answers are routed once every one of its requests is answered."""

    taken: list[_Taken]
    # Requests claimed for it, malformed ones dropped included: its share of the claimed list.
    claimed: int
    # False when Redis came back meanwhile: what it claimed went back to the queue, so nothing is trimmed
    # from the claimed list (its answers are still sent: a token resolves once).
    release: bool = True

    def answered(self) -> bool:
        return all(t.item.future.done() for t in self.taken)


class _Link:
    """One connection of the client's pool for the batch worker's claims. Commands are written at once and
    their replies read when wanted, so a take can travel while a batch runs. A failure drops the connection
    (the next ``send`` opens another) and raises ``redis.RedisError``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.unread = 0
        self._conn: Any = None

    def send(self, commands: list[tuple[Any, ...]]) -> None:
        """Write ``commands`` in one go; their replies wait for ``receive``."""
        if not commands:
            return
        try:
            if self._conn is None:
                self._conn = self.pool.get_connection()
            self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
        except BaseException:
            self.drop()
            raise
        self.unread += len(commands)

    def receive(self) -> list[Any]:
        """The replies of everything sent and not read yet, in order; an error reply as its exception."""
        replies: list[Any] = []
        try:
            while self.unread:
                try:
                    replies.append(self._conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
                self.unread -= 1
        except BaseException:
            self.drop()
            raise
        return replies

    def drop(self) -> None:
        """Close the connection and forget unread replies."""
        conn, self._conn, self.unread = self._conn, None, 0
        if conn is not None:
            conn.disconnect()
            self.pool.release(conn)


class RemoteBatches:
    """Takes batches for one instance and routes their answers. ``take`` is called by one thread at a time
    (the queue serialises takes); ``finish_done`` by any."""

    def __init__(self, client: Any, claims: Claims, max_bytes: int, clock: Callable[[], float],
                 resolve: Callable[[str, Result], None], lost: Callable[[object], None],
                 own: Callable[[str], Pending | None] = lambda token: None, max_block: float = MAX_BLOCK) -> None:
        self.client, self.claims, self.max_bytes, self.clock = client, claims, max_bytes, clock
        # The longest one blocking command waits: at most MAX_BLOCK, and within the client's socket timeout.
        self.max_block = min(MAX_BLOCK, max_block)
        self.resolve, self.lost, self.own = resolve, lost, own
        # Requests waiting in the shared queue, as of the newest reading (see ``note_depth``).
        self.depth = 0
        # When the last reading other than a push's reply arrived (a take's or a beat's).
        self._read_at = float("-inf")
        self._link = _Link(client.connection_pool)
        # Batches taken and not finished, oldest first.
        self._opened: collections.deque[_OpenBatch] = collections.deque()
        # Finished batches whose removal from the claimed list (and counters) goes with the next write:
        # (requests claimed, served, expired).
        self._release: tuple[int, int, int] | None = None
        # Guards ``_opened`` and ``_release``: batches are finished by the thread that ran them, while
        # another may be taking.
        self._state = threading.RLock()
        # ``most`` of a take sent ahead whose replies are unread, else None.
        self._ahead: int | None = None
        # Set when a take held back by ``not_before`` should look again (``wake``).
        self._wake = threading.Event()

    def take(self, max_size: int, timeout: float, poll: float, ahead: bool = True,
             not_before: Callable[[], float | None] | None = None,
             stop: Callable[[], bool] = lambda: False) -> list[Pending]:
        """Up to ``max_size`` requests, once full or once the oldest has waited ``timeout``; [] after ``poll``.
        With ``ahead``, a full batch taken while the instance is saturated (the take sent ahead came back
        full, or the queue still holds a full batch) sends the next take at once, so its requests are here
        when this batch is done. A peer loses nothing: while one is idle, blocked on the queue, the queue
        never holds a full batch and takes sent ahead come back short, which ends it. ``not_before()`` (this
        queue's clock, None for no bound, read again whenever the take is woken): nothing is claimed before
        then unless a full batch waits. ``stop()`` true: no more waiting for company."""
        self.finish_done()
        raw = self._collect_ahead(max_size)
        came_full = len(raw) >= max_size
        if not raw:
            if not_before is not None:
                self._hold(not_before, max_size, stop)
            # One round trip: BLMOVE returns at once when the queue holds anything, and the take script in
            # the same write takes the rest (a non-blocking try first cost a second round trip when idle).
            raw = self._claim(max_size, wait=min(poll, self.max_block))
        if not raw:
            return []
        taken = self._decode(raw)
        if len(raw) < max_size and not_before is not None and self._hold(not_before, max_size, stop):
            more = self._claim(max_size - len(raw))  # a short take sent ahead: what arrived while held
            raw += more
            taken += self._decode(more)
        release_at = min((t.item.enqueued_at for t in taken), default=self.clock()) + timeout
        while len(raw) < max_size:
            left = release_at - self.clock()
            if left <= 0 or stop():
                break
            if left > COARSE:
                more = self._claim(max_size - len(raw), wait=min(left - COARSE, self.max_block))
            else:
                time.sleep(min(FILL_POLL, left))
                more = self._claim(max_size - len(raw))
            raw += more
            taken += self._decode(more)
        if ahead and len(raw) >= max_size and (came_full or self.depth >= max_size):
            self._link.send(self._release_commands() + self.claims.take(max_size))
            self._ahead = max_size
        return self._open_batch(taken, len(raw))

    def _hold(self, not_before: Callable[[], float | None], max_size: int, stop: Callable[[], bool]) -> bool:
        """Wait until ``not_before()`` has passed, a full batch waits in the queue or ``stop()``, reading
        them again whenever woken; True if it waited."""
        waited = False
        while True:
            self._wake.clear()  # before reading: a wake from here on ends the wait below at once
            at = not_before()
            left = float("-inf") if at is None else at - self.clock()
            if left <= 0 or self.depth >= max_size or stop():
                return waited
            self._wake.wait(min(left, self.max_block))
            waited = True

    def wake(self) -> None:
        """Make a take held back by ``not_before`` read it again now (a batch ended, Redis was lost, the
        queue closed)."""
        self._wake.set()

    def note_depth(self, depth: int, pushed_at: float | None = None) -> None:
        """Record the shared queue's length as a reply gave it: a take's or a beat's (``pushed_at`` None),
        or an LPUSH's, written at ``pushed_at``. Replies on different connections arrive in no set order: a
        push written before a take's reply arrived may have run before that take (whose smaller figure
        then stands), so its length counts only when written after the last other reading arrived. Else an
        idle instance could read a request it had already taken as still queued, and refuse the next one."""
        if pushed_at is None:
            self._read_at = self.clock()
        elif pushed_at < self._read_at:
            return
        self.depth = depth

    def release_now(self) -> None:
        """Route the last batches' answers, send a deferred release and read a take sent ahead (before
        leaving, which gives back the rest)."""
        self._finish_open(everything=True)
        self._collect_ahead(None)
        self._link.send(self._release_commands())
        self._link.receive()
        self._link.drop()

    def forget(self) -> None:
        """Drop the connection's state after Redis came back: what was claimed went back to the queue."""
        with self._state:
            for batch in self._opened:
                batch.release = False
            self.finish_done()
            self._release = None
        self._link.drop()
        self._ahead = None

    def _claim(self, most: int, wait: float = 0.0) -> list[bytes]:
        self._link.send(self._release_commands() + self.claims.take(most, wait))
        got, depth = self.claims.taken(self._link.receive(), most, wait)
        if depth is not None:
            self.note_depth(depth)
        return got

    def _collect_ahead(self, most: int | None) -> list[bytes]:
        """The requests of the take sent ahead (none when none was sent); past ``most`` (the live config
        shrank meanwhile), the newest go back to the taking end of the queue, oldest nearest it."""
        sent, self._ahead = self._ahead, None
        if sent is None:
            return []
        got, depth = self.claims.taken(self._link.receive(), sent)
        if depth is not None:
            self.note_depth(depth)
        if most is not None and len(got) > most:
            back = ("LMOVE", self.claims.claimed, self.claims.queue, "LEFT", "RIGHT")
            self._link.send([back] * (len(got) - most))
            self._link.receive()
            got = got[:most]
        return got

    def _release_commands(self) -> list[tuple[Any, ...]]:
        with self._state:
            if self._release is None:
                return []
            claimed, served, expired = self._release
            self._release = None
        return [self.claims.release(claimed), *stats.served_commands(self.claims.fn, self.claims.inst, served, expired)]

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

    def _open_batch(self, taken: list[_Taken], claimed: int) -> list[Pending]:
        with self._state:
            self._opened.append(_OpenBatch(taken, claimed))
        if not taken:
            self.finish_done()
        return [t.item for t in taken]

    def open_batches(self) -> int:
        """Batches taken and not finished yet."""
        with self._state:
            return len(self._opened)

    def finish_done(self) -> None:
        """Finish the open batches whose requests are all answered, oldest first, stopping at the first
        that is still running (the claimed list is trimmed from its oldest end)."""
        self._finish_open(everything=False)

    def _finish_open(self, everything: bool) -> None:
        """Finish open batches, oldest first: the answered ones, or with ``everything`` all of them (a batch
        left unanswered, never expected, has its requests failed)."""
        with self._state:
            while self._opened and (everything or self._opened[0].answered()):
                self._finish(self._opened.popleft())

    def _finish(self, batch: _OpenBatch) -> None:
        """Route one batch's answers: our own callers' futures are resolved already, copies of our requests
        resolve their callers, and other instances' answers go to their inboxes. Then the batch is released
        (see ``_flush``), unless Redis came back meanwhile and what was claimed went back to the queue."""
        replies: list[tuple[str, wire.Reply]] = []
        expired = unanswered = 0
        inst = self.claims.inst
        for t in batch.taken:
            future = t.item.future
            if not future.done():  # never expected: dispatch answers every request it is given
                unanswered += 1
                settle(future, HandlerFailed("the batch ended without an answer for this request"))
            result = outcome(future)
            expired += getattr(result, "status", 200) == 504
            if t.reply_to == inst:
                if not t.own:
                    self.resolve(t.token, result)
                continue
            if isinstance(result, Response):
                if len(result.body) > self.max_bytes:
                    result = PayloadTooLarge(f"response body of {len(result.body)} bytes over max_request_bytes")
                else:  # tells the caller which instance ran it
                    result = result.with_header("X-Served-By", inst)
            replies.append((t.reply_to, wire.Reply(t.token, result, inst)))
        if unanswered:
            logger.error("a batch ended with %d requests unanswered; failed them", unanswered)
        self._flush(batch.claimed if batch.release else None, len(batch.taken) - expired, expired, replies)

    def _flush(self, claimed: int | None, served: int, expired: int, replies: list[tuple[str, wire.Reply]]) -> None:
        """Release a finished batch: at once (one MULTI) when other instances wait for replies, else with
        the next write (added to any earlier release not sent yet: batches are claimed oldest first).
        ``claimed`` None: Redis came back since the batch was taken and its claims went back to the queue,
        so only its replies are sent (they may still be first), with nothing trimmed or counted."""
        if claimed is None and not replies:
            return
        if not replies:
            before = self._release or (0, 0, 0)
            self._release = (before[0] + claimed, before[1] + served, before[2] + expired)
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            for reply_to, reply in replies:
                pipe.lpush(keys.inbox(reply_to), wire.encode_reply(reply))
            for inbox in {keys.inbox(r) for r, _ in replies}:
                pipe.expire(inbox, INBOX_TTL)
            if claimed is not None:
                pipe.execute_command(*self.claims.release(claimed))
                stats.record_served(pipe, self.claims.fn, self.claims.inst, served, expired)
            pipe.execute()
        except redis.RedisError as exc:
            self.lost(exc)


def outcome(future: Future) -> Result:
    """What a finished future stands for, as a response or a ``BatchError``."""
    if future.cancelled():
        return HandlerFailed("request cancelled")
    exc = future.exception()
    if exc is None:
        return future.result()
    return exc if isinstance(exc, BatchError) else HandlerFailed(f"{type(exc).__name__}: {exc}")

