"""The Redis batch queue: every instance of a function takes batches from one shared queue.

Request path. ``put`` queues the request (``batcher.wire``: its token, a JSON line and the raw body) with
this instance as the reply address and an absolute wall-clock deadline for the sender thread, which pushes
everything that piled up on the left of ``fi:{fn}:queue`` in one LPUSH: HTTP threads never wait on Redis,
and under load many requests share one round trip. With the asyncio engine the event loop pushes the
requests it parsed itself, one LPUSH per loop turn on a connection of its own (``use_loop``,
``batcher.loop_push``), and the sender only covers the moments that connection is down. Arrivals are
counted in memory and sent with the next heartbeat. The caller's future waits in ``_waiting`` under the token.
Each instance's batch worker calls ``next_batch(b, t)`` with its own live config: it takes up to ``b``
requests (``batcher.claims``: moved atomically onto its own claimed list), then waits for more until the
oldest has waited ``t``, so a fast instance with a large ``b`` naturally takes more (under load the next
take is sent ahead while a batch runs). Answers for requests
that arrived here resolve their futures at once; the others go to their instances' inboxes
(``fi:inbox:{inst}``) in one MULTI that also releases the claim (``batcher.remote_batch``).
One listener thread per instance pops its inbox and resolves the futures; a token resolves once, so a
reply delivered twice is harmless. Expired requests are answered 504 without running (``dispatch``).

At least once. A monitor thread beats every ``beat_interval`` (``batcher.presence``): heartbeat, live
config (``batcher.live_config``, applied on the next batch), depth, and reaping of peers silent for
``stale_after``: a peer killed mid-batch has its claimed requests put back and run by another instance.
A peer on this host whose process is gone is reaped at once (``batcher.host``), by the beat an instance
starts with before it takes anything, and by any beat once the peer missed two. A process starting under an
instance id whose facts name a gone process of this host (a worker gunicorn restarted) reaps that one first.

Redis down. Any failed command marks Redis lost: ``on_redis_state(False)`` is called, every request still
waiting for a reply is moved into the in-process ``LocalBatchQueue`` (so nothing accepted is lost, even
when a restarted Redis comes back empty), and new requests go there too. The monitor reconnects by
itself, gives back whatever this instance had claimed, and returns to the shared queue
(``on_redis_state(True)``); the local queue is drained first. A changed server ``run_id`` counts as a loss.
A request may then run twice; its caller still gets one answer.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import redis

from batcher import host, keys, live_config, presence, stats, wire
from batcher.claims import Claims
if TYPE_CHECKING:
    from batcher.loop_push import LoopPusher
from batcher.errors import PayloadTooLarge
from batcher.policy import BatchConfig
from batcher.queue import LocalBatchQueue, Pending, QueueClosed, settle
from batcher.remote_batch import RemoteBatches, Result, outcome
from batcher.request import Request, Response, new_id
from faas_infer.redisclient import bounded_client

logger = logging.getLogger(__name__)

# Tokens of cancelled requests remembered, so that this instance does not run them when it takes them back.
CANCELLED_KEPT = 4096
# Seconds one inbox pop blocks: bounds how long a leaving instance's listener lingers.
LISTEN_BLOCK = 0.25


@dataclass
class _Waiting:
    """A request of ours in the shared queue, until its caller's future is done."""

    future: Future
    request: Request
    deadline: float
    enqueued_at: float
    moved: bool = False


class RedisBatchQueue:
    """A ``BatchQueue`` shared by every instance of a function, with an in-process fallback."""

    def __init__(self, url: str, function: str, instance: str, base_config: BatchConfig, *,
                 max_bytes: int = 16 * 1024 * 1024, facts: Mapping[str, str] | None = None,
                 on_redis_state: Callable[[bool], None] | None = None, beat_interval: float = 0.5,
                 stale_after: float = stats.STALE_AFTER, clock: Callable[[], float] = time.monotonic,
                 socket_timeout: float = 5.0) -> None:
        self.function, self.instance = function, instance
        self.base_config = base_config
        self.max_bytes, self.beat_interval, self.stale_after = max_bytes, beat_interval, stale_after
        self.clock = clock
        self.exec_times: Callable[[], Mapping[int, float]] = dict
        self._facts = {**host.identity(), "pid": str(os.getpid()), "pid_start": host.own_start(),
                       "started_at": repr(time.time()), **(facts or {})}
        self._on_state = on_redis_state
        self._client = bounded_client(url, socket_timeout, connect_timeout=1)
        self._claims = Claims(self._client, function, instance)
        self._remote = RemoteBatches(self._client, self._claims, max_bytes, clock, self._resolve, self._lost,
                                     self._own_item, max_block=socket_timeout / 2)
        self._arrivals: collections.Counter[int] = collections.Counter()
        self._ran_here = 0
        self._refused: collections.Counter[int] = collections.Counter()
        self._beats = 0
        self._local = LocalBatchQueue(clock)
        self._waiting: dict[str, _Waiting] = {}
        # Tokens of our requests whose caller gave up (closed its connection) while they were queued: when
        # this instance takes one back it is dropped, not run as a copy (the newest CANCELLED_KEPT kept).
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        # Held by a take from the shared queue and by a reconnection, so no take spans one (its claims
        # would be half given back), and by leaving. Reentrant: a take that finds the queue drained leaves.
        self._take_lock = threading.RLock()
        self._up = False
        self._run_id = ""
        self._config = base_config
        self._bad_config = ""  # the last bad live config logged (logged once, not every beat)
        self._closed = self._retired = False
        self._halt = threading.Event()
        self._outbox: list[tuple[_Waiting, bytes]] = []
        self._outbox_ready = threading.Condition()
        # Pushes from the asyncio engine's event loop (``use_loop``); None with other engines.
        self._pusher: LoopPusher | None = None
        self._threads = [threading.Thread(target=self._listen, name="redis-inbox", daemon=True),
                         threading.Thread(target=self._send, name="redis-sender", daemon=True),
                         threading.Thread(target=self._monitor, name="redis-monitor", daemon=True)]

    @classmethod
    def from_config(cls, config: Any, on_redis_state: Callable[[bool], None] | None = None) -> "RedisBatchQueue":
        """A started queue for a ``WatchdogConfig`` (redis_url, function_name, instance_id, limits)."""
        gpu = "" if config.gpu_share is None else f"{config.gpu_share:g}"  # "": not stated (the parent's own)
        facts = {"port": str(config.port), "cpu_limit": str(config.cpu_limit or ""),
                 "memory_limit": str(config.memory_limit or ""), "gpu_share": gpu}
        return cls(config.redis_url, config.function_name, config.instance_id, config.batch_config(),
                   max_bytes=config.max_request_bytes, facts=facts, on_redis_state=on_redis_state).start()

    def start(self) -> "RedisBatchQueue":
        """Connect (or start degraded if Redis is not there yet) and start the listener and monitor."""
        try:
            self._reconnect()
        except redis.RedisError as exc:
            logger.error("Redis at %s unavailable (%s): serving from the in-process queue until it answers",
                         self._client.connection_pool.connection_kwargs.get("host"), exc)
            self._notify(False)
        for thread in self._threads:
            thread.start()
        return self

    @property
    def up(self) -> bool:
        """True while the shared queue is in use."""
        return self._up

    def live_config(self) -> BatchConfig:
        """This instance's batch config as last read from Redis (the start-up config until then)."""
        return self._config

    def watch_exec(self, source: Callable[[], Mapping[int, float]]) -> None:
        """Report ``source()`` (seconds by batch size) with every heartbeat."""
        self.exec_times = source

    # -- the BatchQueue protocol --------------------------------------------------------------

    def put(self, request: Request, deadline: float) -> "Future[Response]":
        """Queue ``request`` until ``deadline`` (this queue's clock) in the shared queue, else locally."""
        if self._closed:
            raise QueueClosed("queue is closed")
        if len(request.body) > self.max_bytes:
            raise PayloadTooLarge(f"request body of {len(request.body)} bytes over max_request_bytes={self.max_bytes}")
        if not self._up:
            return self._local.put(request, deadline)
        now, wall = self.clock(), time.time()
        token = new_id()
        entry = _Waiting(Future(), request, deadline, now)
        self._waiting[token] = entry
        entry.future.add_done_callback(lambda f, t=token: self._forget(t, f))
        data = wire.encode_request(wire.Envelope(token, self.instance, deadline - now + wall, wall, request))
        self._arrivals[int(wall)] += 1  # sent with the next heartbeat
        pusher = self._pusher
        if pusher is not None and pusher.push(data):
            return entry.future
        with self._outbox_ready:
            self._outbox.append((entry, data))
            if len(self._outbox) == 1:  # the sender takes everything that piled up: one wake per push
                self._outbox_ready.notify()
        return entry.future

    def use_loop(self, loop: Any) -> None:
        """Push from ``loop`` (an asyncio event loop; call this on its thread) when requests are put on it:
        no thread hand-off per request (``batcher.loop_push``). Other threads keep using the sender."""
        pool = self._client.connection_pool
        try:
            from batcher.loop_push import LoopPusher
        except ImportError:  # hiredis missing: the sender thread pushes
            return
        if not LoopPusher.supports(pool.connection_class):
            return
        self._pusher = LoopPusher(loop, pool.connection_kwargs, self._claims.queue, self._remote.note_depth,
                                  self._lost, self.clock)
        if self._up:
            self._pusher.open()

    def may_run_here(self) -> bool:
        """True when a request that just arrived may run at once on this idle instance without passing
        through the shared queue: Redis is up and nothing waits in the queue (as of the newest push, take or
        beat), so an idle instance, this one, would take it next anyway. Only waiting for company or
        waiting behind others is what the queue decides; nothing is lost by skipping it, since a request
        runs in the process its caller is connected to (if that dies, so does the caller's connection)."""
        return self._up and not self._closed and not self._remote.depth and not self._local.depth()

    def ran_here(self) -> None:
        """Count a request that ``may_run_here`` let run at once: an arrival and a served request, both sent
        with the next heartbeat like the others."""
        self._arrivals[int(time.time())] += 1
        self._ran_here += 1

    def refused(self) -> None:
        """Count a refused request: an arrival (the function's demand, which the autoscaler reads from the
        arrivals) and a refusal (``fi:{fn}:refused``, by second), both sent with the next heartbeat."""
        second = int(time.time())
        self._arrivals[second] += 1
        self._refused[second] += 1

    def next_batch(self, max_size: int, timeout: float, poll: float = 0.5,
                   not_before: Callable[[], float | None] | None = None) -> list[Pending]:
        """Local leftovers first; else up to ``max_size`` from the shared queue, released like the local one
        (and, when given, not before ``not_before()`` on this queue's clock unless full). Takes from the
        shared queue are made one at a time (a pipelined worker has two takers)."""
        if self._local.depth() or not self._up:
            idle = not self._up and not self._closed
            return self._local.next_batch(max_size, timeout if idle else 0.0, poll if idle else 0.0,
                                          not_before=not_before if idle else None)
        with self._take_lock:
            if not self._up:  # lost while waiting for the lock
                return []
            if self._closed and not self._waiting:
                self._remote.finish_done()
                if self._remote.open_batches():  # another worker thread's batch still runs: it leaves
                    time.sleep(min(poll, 0.01))
                    return []
                if not self._retired:
                    self.leave()
                return []
            try:
                return self._remote.take(max_size, timeout, poll, ahead=not self._closed, not_before=not_before,
                                         stop=self._stopping)
            except redis.RedisError as exc:
                self._lost(exc)
                return []

    def _stopping(self) -> bool:
        """A take waits no more: the queue is closing or Redis is lost."""
        return self._closed or not self._up

    def batch_done(self) -> None:
        """A batch taken from here was answered: route its answers now, not at the next take (which, with
        a pipelined worker, may be blocked waiting for requests meanwhile)."""
        if self._up:
            try:
                self._remote.finish_done()
            except redis.RedisError as exc:
                self._lost(exc)

    def wake(self) -> None:
        """A batch ended (maybe earlier than predicted): a take held back by ``not_before``, from the shared
        queue or the local one, reads it again now."""
        self._remote.wake()
        self._local.wake()

    def depth(self) -> int:
        """Requests waiting in the shared queue (last known) plus local ones; when closing, ours unanswered."""
        if self._closed:
            return len(self._waiting) + self._local.depth()
        return (self._remote.depth if self._up else 0) + self._local.depth()

    def oldest_wait(self) -> float:
        """Seconds the next request to be taken has waited."""
        if self._local.depth() or not self._up:
            return self._local.oldest_wait()
        try:
            head = self._client.lindex(self._claims.queue, -1)
            return max(0.0, time.time() - wire.decode_request(head).enqueued_at) if head else 0.0
        except (redis.RedisError, wire.WireError):
            return 0.0

    def close(self) -> None:
        """Refuse new requests; keep working until every request of ours is answered, then leave."""
        self._closed = True
        self._local.close()
        self._remote.wake()

    # -- replies, Redis loss and recovery -----------------------------------------------------

    def _forget(self, token: str, future: Future) -> None:
        """A request of ours is answered, timed out or cancelled: its waiter goes; a cancelled one's token is
        kept (``_own_item`` drops it when taken back)."""
        self._waiting.pop(token, None)
        if future.cancelled():
            with self._lock:
                self._cancelled[token] = None
                while len(self._cancelled) > CANCELLED_KEPT:
                    self._cancelled.popitem(last=False)

    def _own_item(self, token: str) -> Pending | None:
        """The caller's own waiter for a request this instance queued and took back, to run as it is; None for
        other instances' requests and for ours that were answered, are running, or moved to the local queue
        (those are decoded and run as copies whose answer ``_resolve`` drops if the caller has one). One
        whose caller gave up comes back with a cancelled future: the batch drops it, never runs it (another
        instance that takes it cannot know, and runs it)."""
        with self._lock:
            gone = self._cancelled.pop(token, 0) is None
        if gone:
            cancelled: Future = Future()
            cancelled.cancel()
            return Pending(Request(), 0.0, 0.0, cancelled)
        entry = self._waiting.get(token)
        if entry is None or entry.moved or entry.future.running() or entry.future.done():
            return None
        return Pending(entry.request, entry.deadline, entry.enqueued_at, entry.future)

    def _resolve(self, token: str, result: Result) -> None:
        entry = self._waiting.get(token)
        if entry is not None:
            settle(entry.future, result)

    def _send(self) -> None:
        """Push queued requests, all that piled up since the last push in one LPUSH (one round trip)."""
        while not self._halt.is_set():
            with self._outbox_ready:
                if not self._outbox:
                    self._outbox_ready.wait(LISTEN_BLOCK)
                sending, self._outbox = self._outbox, []
            if not sending:
                continue
            try:
                if not self._up:
                    raise redis.ConnectionError("Redis lost")
                pushed_at = self.clock()
                depth = int(self._client.lpush(self._claims.queue, *(data for _, data in sending)))
                self._remote.note_depth(depth, pushed_at)
            except redis.RedisError as exc:
                self._lost(exc)
                self._to_local([entry for entry, _ in sending])

    def _listen(self) -> None:
        inbox = keys.inbox(self.instance)
        while not self._halt.is_set():
            if not self._up:
                self._halt.wait(0.05)
                continue
            try:
                got = self._client.blmpop(LISTEN_BLOCK, 1, inbox, direction="RIGHT", count=256)
            except redis.RedisError as exc:
                self._lost(exc)
                continue
            for data in (got[1] if got else []):
                try:
                    reply = wire.decode_reply(data)
                except wire.WireError as exc:
                    logger.error("dropped a malformed reply: %s", exc)
                    continue
                self._resolve(reply.token, reply.result)

    def _monitor(self) -> None:
        while not self._halt.wait(self.beat_interval):
            try:
                if self._up:
                    self._beat()
                else:
                    self._reconnect()
            except redis.RedisError as exc:
                self._lost(exc)
            except Exception:  # noqa: BLE001 - the monitor must survive anything
                logger.exception("Redis monitor failed")

    def _beat(self, starting: bool = False) -> None:
        """One heartbeat; ``starting``: before this instance takes anything, every peer on this host is checked
        (a dead one's requests would be taken and run for nobody), not only the silent ones."""
        self._facts.update(live_config.to_fields(self._config))
        arrivals, self._arrivals = self._arrivals, collections.Counter()
        ran_here, self._ran_here = self._ran_here, 0
        refused, self._refused = self._refused, collections.Counter()
        result = presence.beat(self._client, self._claims, self._facts, self.exec_times(), arrivals,
                               time.time(), self.stale_after, served=ran_here, refused=refused,
                               suspect_after=None if starting else 2 * self.beat_interval)
        self._remote.note_depth(result.depth)
        self._beats += 1
        if self._beats % 60 == 0:
            stats.trim_arrivals(self._client, self.function, time.time())
        try:
            self._config = live_config.parse(result.config_fields, self.base_config)
            self._bad_config = ""
        except ValueError as exc:
            if str(exc) != self._bad_config:  # once per bad value, not with every beat
                self._bad_config = str(exc)
                logger.error("ignoring bad live config in %s: %s", keys.config(self.function, self.instance), exc)
        if result.run_id != self._run_id:
            self._lost(f"Redis restarted (run_id {self._run_id} -> {result.run_id})")

    def _reconnect(self) -> None:
        """Connect again, give back what this instance had claimed and forget its batches' claims (their
        answers are still sent), with no take in progress (``_take_lock``)."""
        with self._take_lock:
            if self._retired:  # left while this waited for the lock
                return
            self._client.connection_pool.disconnect()
            run_id = str(self._client.info("server").get("run_id", ""))
            self._claims.load()
            if not self._run_id:  # this process's first start: its instance may have been run by one now dead
                presence.reap_former(self._client, self._claims, self._facts)
            moved, dropped = self._claims.give_back_own(self._client)
            self._remote.forget()
            recovering, self._run_id = bool(self._run_id), run_id
            self._beat(starting=True)
            with self._lock:
                self._up = True
        if self._pusher is not None:
            self._pusher.open()
        logger.log(logging.WARNING if recovering or moved or dropped else logging.INFO, "shared queue %s in use%s%s",
                   self._claims.queue, " again" if recovering else "",
                   f" ({moved} claimed requests given back, {dropped} dropped)" if moved or dropped else "")
        self._notify(True)

    def _lost(self, reason: object) -> None:
        with self._lock:
            if not self._up:
                return
            self._up = False
            entries = list(self._waiting.values())
        self._remote.wake()
        logger.error("Redis lost (%s): %d waiting requests move to the in-process queue", reason, len(entries))
        if self._pusher is not None:
            self._pusher.close()
        self._notify(False)
        self._to_local(entries)

    def _to_local(self, entries: list[_Waiting]) -> None:
        inner: list[Pending] = []
        with self._lock:
            for entry in entries:
                if entry.moved or entry.future.done() or entry.future.running():
                    continue  # a running one is ours, in our batch worker: answered without Redis
                entry.moved = True
                item = Pending(entry.request, entry.deadline, entry.enqueued_at)
                item.future.add_done_callback(lambda f, outer=entry.future: settle(outer, outcome(f)))
                entry.future.add_done_callback(lambda _f, i=item: i.future.cancel())
                inner.append(item)
        if inner:
            self._local.requeue(inner)

    def _notify(self, up: bool) -> None:
        if self._on_state is not None:
            try:
                self._on_state(up)
            except Exception:  # noqa: BLE001 - a metrics callback must not break the queue
                logger.exception("on_redis_state callback failed")

    def leave(self) -> None:
        """Close, stop the listener and monitor, and deregister (the worker calls it once drained)."""
        self.close()
        if self._retired:
            return
        self._retired = True
        self._halt.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(2 * LISTEN_BLOCK)
        with self._take_lock:  # after any take in progress
            if self._up:
                try:
                    self._remote.release_now()
                except redis.RedisError as exc:  # what stays claimed is given back when this instance is reaped
                    logger.warning("could not release this instance's last batches: %s", exc)
            try:
                presence.leave(self._client, self._claims)
            except redis.RedisError as exc:
                logger.warning("could not deregister from Redis: %s", exc)
        if self._pusher is not None:
            self._pusher.close()


