"""Pushing requests to the shared queue from the HTTP event loop itself (the asyncio engine).

The event loop is the thread that parses requests, so it can also queue them in Redis without handing each
one to another thread: every hand-off is a GIL switch, and with the sender thread those cost the loop more
CPU per request than the push itself. ``LoopPusher`` keeps an asyncio connection to Redis. ``push`` (on the
loop) adds a request to the outbox and, for the first one, schedules a flush on the loop's next turn, so
all the requests parsed in one turn go out in one LPUSH. Replies (the queue's length) are parsed with
hiredis as they arrive. A failed connection or an error reply calls ``on_error``: the queue then counts
Redis as lost and moves every unanswered request, pushed or not, to its in-process queue, so nothing
written here needs tracking. Until the connection is up (and after it fails) ``push`` returns False and
the queue's sender thread pushes instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any, Callable, Mapping

import hiredis
import redis

logger = logging.getLogger(__name__)


class _Protocol(asyncio.Protocol):
    def __init__(self, pusher: "LoopPusher") -> None:
        self.pusher = pusher

    def data_received(self, data: bytes) -> None:
        self.pusher._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pusher._gone(self, exc)


class LoopPusher:
    """LPUSHes to ``key`` from ``loop``, coalesced per loop turn; thread-safe ``open`` and ``close``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connection: Mapping[str, Any], key: str,
                 on_depth: Callable[[int, float], None], on_error: Callable[[object], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loop, self.key, self.clock = loop, key, clock
        self.on_depth, self.on_error = on_depth, on_error
        self._connection = dict(connection)
        self._thread: int | None = None  # the loop's thread, known once ``open`` ran there
        self._protocol: _Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        # Per command written and not answered yet: how many requests it pushed (0 for AUTH and SELECT) and
        # when it was written (``on_depth`` gets both the list's length and that time).
        self._unanswered: collections.deque[tuple[int, float]] = collections.deque()
        self._outbox: list[bytes] = []

    @staticmethod
    def supports(connection_class: type) -> bool:
        """True for a plain TCP or Unix-socket connection (TLS stays with the sender thread)."""
        return connection_class in (redis.Connection, redis.UnixDomainSocketConnection)

    @property
    def ready(self) -> bool:
        """True on the loop's thread while the connection is up."""
        return self._transport is not None and threading.get_ident() == self._thread

    def push(self, data: bytes) -> bool:
        """Queue ``data`` for this turn's LPUSH; False when not on the loop or not connected."""
        if not self.ready:
            return False
        self._outbox.append(data)
        if len(self._outbox) == 1:
            self.loop.call_soon(self._flush)
        return True

    def open(self) -> None:
        """(Re)connect from any thread; pushes go to the sender thread until connected."""
        self._call(self._start_open)

    def close(self) -> None:
        """Drop the connection and anything not yet written, from any thread."""
        if self._thread == threading.get_ident():
            self._close()
        else:
            self._call(self._close)

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed (the process is leaving): nothing left to push from
            pass

    # -- on the loop --------------------------------------------------------------------------

    def _start_open(self) -> None:
        self._close()
        self._thread = threading.get_ident()
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        c = self._connection
        try:
            if c.get("path"):
                transport, protocol = await self.loop.create_unix_connection(lambda: _Protocol(self), c["path"])
            else:
                transport, protocol = await self.loop.create_connection(
                    lambda: _Protocol(self), c.get("host", "localhost"), int(c.get("port", 6379)))
        except OSError as exc:
            logger.warning("loop connection to Redis failed (%s): the sender thread pushes", exc)
            return
        if self._transport is not None:  # opened twice: keep the first
            transport.close()
            return
        self._protocol, self._transport, self._reader = protocol, transport, hiredis.Reader()
        self._unanswered.clear()
        setup = []
        if c.get("password"):
            setup.append(("AUTH", c["username"], c["password"]) if c.get("username") else ("AUTH", c["password"]))
        if int(c.get("db") or 0):
            setup.append(("SELECT", int(c["db"])))
        for command in setup:
            transport.write(hiredis.pack_command(command))
            self._unanswered.append((0, 0.0))

    def _flush(self) -> None:
        items, self._outbox = self._outbox, []
        if not items or self._transport is None:
            return
        self._unanswered.append((len(items), self.clock()))
        self._transport.write(hiredis.pack_command(("LPUSH", self.key, *items)))

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            pushed, written_at = self._unanswered.popleft() if self._unanswered else (0, 0.0)
            if isinstance(reply, hiredis.ReplyError):
                self._fail(f"Redis answered a push with an error: {reply}")
                return
            if pushed and isinstance(reply, int):
                self.on_depth(reply, written_at)

    def _gone(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._fail(f"loop connection to Redis lost ({exc or 'closed by the server'})")

    def _fail(self, reason: str) -> None:
        self._close()
        self.on_error(reason)

    def _close(self) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        self._outbox = []
        self._unanswered.clear()
        if transport is not None:
            try:
                transport.close()
            except RuntimeError:  # the loop is closed already (closing after it stopped): nothing to flush
                pass
