"""A load generator that can measure a server: raw HTTP/1.1 on keep-alive connections, one epoll loop.

Open loop (``open_loop``): Poisson arrivals at a fixed rate, each sent on an idle connection (a new one is
opened when none is idle, up to ``max_connections``); latency counts from the *scheduled* send time, so
a slow server cannot hide queueing in the client (no coordinated omission). Closed loop (``closed_loop``):
``concurrency`` clients each send back to back, for ceilings. Both return a ``LoadResult``.
The generator shares the machine with the server it measures, so what it costs matters as much as how
fast it can go: see ``_Engine``. Linux only (epoll), as the watchdog's hosts are.
"""

from __future__ import annotations

import random
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlsplit

Body = bytes | Callable[[int], bytes]


@dataclass(frozen=True)
class Target:
    """Where and what to send."""

    url: str
    body: Body = b""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    def request_bytes(self, i: int) -> bytes:
        parts = urlsplit(self.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = self.body(i) if callable(self.body) else self.body
        head = [f"{self.method} {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """Latencies of answered requests and counts of everything else."""

    offered_rate: float
    duration: float
    latencies: list[float] = field(default_factory=list)
    # Per answered request, how late the generator itself began sending it (its timers wake up to a
    # millisecond late, and its loop may be busy): part of ``latencies``, no part of the server's time.
    late: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    client_overloaded: int = 0

    @property
    def sent(self) -> int:
        return sum(self.codes.values()) + self.errors + self.client_overloaded

    @property
    def ok(self) -> int:
        return self.codes.get(200, 0)

    @property
    def failed(self) -> int:
        """Requests not answered 200 (errors, other codes, or never sent)."""
        return self.sent - self.ok

    def merge(self, other: "LoadResult") -> None:
        """Add ``other`` (another slice of the same measurement) to this one."""
        self.duration += other.duration
        self.latencies += other.latencies
        self.late += other.late
        for code, count in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + count
        self.errors += other.errors
        self.client_overloaded += other.client_overloaded

    @property
    def throughput(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` in [0, 100] of answered requests, seconds (inf when none)."""
        return _percentile(self.latencies, q)

    def served_percentile(self, q: float) -> float:
        """Like ``percentile``, counted from when the generator began sending each request rather than from
        when it was due: what the server and the network took, without the generator's own lateness."""
        return _percentile([total - late for total, late in zip(self.latencies, self.late)], q)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class _Conn:
    """One keep-alive connection and the request in flight on it (at most one: no pipelining)."""

    __slots__ = ("sock", "fd", "buf", "scheduled", "began", "out")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.fd = sock, sock.fileno()
        self.buf = bytearray()
        self.scheduled = self.began = 0.0
        self.out = b""  # the part of the request the socket did not take yet


class _Engine:
    """Requests over keep-alive connections, driven by one epoll loop in the calling thread.

    Why not asyncio: on a 2-core machine the generator's CPU is taken from the server it measures. With
    asyncio streams, a task and a timeout per request, it spent 47 µs of CPU a request closed loop and
    70-100 µs open loop (a no-op function at 3,000-6,000 req/s); here a request costs one ``send``, one
    ``recv`` and a few byte searches.
    """

    def __init__(self, target: Target, result: LoadResult, timeout: float) -> None:
        parts = urlsplit(target.url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.target, self.result, self.timeout = target, result, timeout
        self.constant = None if callable(target.body) else target.request_bytes(0)
        self.head_only = target.method == "HEAD"
        self.poller = select.epoll()
        self.busy: dict[int, _Conn] = {}  # fd -> connection with a request in flight
        self.idle: list[_Conn] = []
        self.last_sweep = time.perf_counter()

    # Sending ----------------------------------------------------------------------------------------------

    def send(self, i: int, scheduled: float) -> bool:
        """Send request ``i`` (due at ``scheduled``) on an idle connection, or a new one; False when no
        connection could be opened (counted as an error)."""
        began = time.perf_counter()
        conn = self.idle.pop() if self.idle else self._connect()
        if conn is None:
            self.result.errors += 1
            return False
        payload = self.constant if self.constant is not None else self.target.request_bytes(i)
        conn.scheduled, conn.began = scheduled, began
        self.busy[conn.fd] = conn
        try:
            sent = conn.sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(conn)
            return True
        if sent < len(payload):
            conn.out = payload[sent:]
            self.poller.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)
        return True

    def _connect(self) -> _Conn | None:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError:
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        self.poller.register(conn.fd, select.EPOLLIN)
        return conn

    def _write_rest(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._fail(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.poller.modify(conn.fd, select.EPOLLIN)

    # Receiving --------------------------------------------------------------------------------------------

    def poll(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for answers and handle every one that came."""
        for fd, events in self.poller.poll(max(0.0, wait)):
            conn = self.busy.get(fd)
            if conn is None:  # an idle connection the server closed (or wrote to): drop it
                self._drop_idle(fd)
                continue
            if events & select.EPOLLOUT and conn.out:
                self._write_rest(conn)
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    data = conn.sock.recv(262144)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._fail(conn)
                    continue
                conn.buf += data
                self._parse(conn)
        now = time.perf_counter()
        if now - self.last_sweep > 0.1:
            self.last_sweep = now
            for conn in [c for c in self.busy.values() if now - c.began > self.timeout]:
                self._fail(conn)

    def _parse(self, conn: _Conn) -> None:
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status = int(buf[9:12])
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if self.head_only:
                consumed = end + 4
            elif at >= 0:
                eol = head.find(b"\r\n", at + 2)
                consumed = end + 4 + int(head[at + 17:eol if eol >= 0 else end])
            elif b"\r\ntransfer-encoding: chunked" in head:
                consumed = _chunked_end(buf, end + 4)
                if consumed < 0:
                    return
            else:  # no length: the body runs to the end of the connection (the generator never asks for that)
                raise ValueError("response without Content-Length or chunked encoding")
        except ValueError:
            self._fail(conn)
            return
        if len(buf) < consumed:
            return
        del buf[:consumed]
        result = self.result
        if status == 200:
            now = time.perf_counter()
            result.latencies.append(now - conn.scheduled)
            result.late.append(conn.began - conn.scheduled)
        result.codes[status] = result.codes.get(status, 0) + 1
        del self.busy[conn.fd]
        if b"\r\nconnection: close" in head or buf:
            self._close(conn)
        else:
            self.idle.append(conn)

    # Ending -----------------------------------------------------------------------------------------------

    def _fail(self, conn: _Conn) -> None:
        self.result.errors += 1
        self.busy.pop(conn.fd, None)
        self._close(conn)

    def _drop_idle(self, fd: int) -> None:
        for k, conn in enumerate(self.idle):
            if conn.fd == fd:
                del self.idle[k]
                self._close(conn)
                return
        self.poller.unregister(fd)

    def _close(self, conn: _Conn) -> None:
        try:
            self.poller.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.busy.values()) + self.idle:
            self._close(conn)
        self.busy.clear()
        self.idle.clear()
        self.poller.close()


def _chunked_end(buf: bytearray, pos: int) -> int:
    """Offset just past a chunked body that starts at ``pos``, or -1 while it is incomplete."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # optional trailers end with an empty line
            return end + 4 if end >= 0 else -1
        pos = eol + 2 + size + 2
        if len(buf) < pos:
            return -1


def open_loop(target: Target, rate: float, duration: float, max_connections: int = 512,
              timeout: float = 10.0, seed: int = 0) -> LoadResult:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds; then every answer is awaited."""
    rng = random.Random(seed)
    result = LoadResult(rate, duration)
    engine = _Engine(target, result, timeout)
    try:
        start = time.perf_counter()
        stop_at = start + duration
        next_at, i = start, 0
        while True:
            now = time.perf_counter()
            while next_at <= now and next_at < stop_at:
                if len(engine.busy) >= max_connections:
                    result.client_overloaded += 1
                else:
                    engine.send(i, next_at)
                i += 1
                next_at += rng.expovariate(rate)
            if next_at >= stop_at:
                if not engine.busy:
                    break
                engine.poll(0.05)
            else:
                engine.poll(next_at - time.perf_counter())
    finally:
        engine.close()
    return result


def closed_loop(target: Target, concurrency: int, duration: float, timeout: float = 10.0) -> LoadResult:
    """``concurrency`` clients sending back to back for ``duration`` seconds."""
    result = LoadResult(0.0, duration)
    engine = _Engine(target, result, timeout)
    try:
        started = time.perf_counter()
        stop_at = started + duration
        i = 0
        while True:
            now = time.perf_counter()
            if now < stop_at:
                while len(engine.busy) < concurrency:
                    i += 1
                    if not engine.send(i, now):
                        break  # the server refuses connections: try again after the wait below
            elif not engine.busy:
                break
            engine.poll(0.05)
    finally:
        engine.close()
    # Until the last answer: requests still in flight at ``stop_at`` are counted, so is their time.
    result.duration = time.perf_counter() - started
    result.offered_rate = result.sent / result.duration
    return result


def interleaved(targets: Sequence[Target], load: Callable[[Target, float], LoadResult], duration: float,
                slice_seconds: float = 0.5, between: Callable[[int], None] | None = None) -> list[LoadResult]:
    """``load(target, seconds)`` (e.g. a closed or open loop) on each target in turn, ``slice_seconds`` at a
    time, until each had ``duration`` seconds; one merged result per target. On a machine whose speed changes from one second to the next, targets
    measured this way see the same conditions, so their ratio holds where back-to-back runs would not.
    ``between(k)`` is called after every slice with the index of the target just measured."""
    results = [LoadResult(0.0, 0.0) for _ in targets]
    for _ in range(max(1, round(duration / slice_seconds))):
        for k, target in enumerate(targets):
            results[k].merge(load(target, slice_seconds))
            if between is not None:
                between(k)
    for result in results:
        result.offered_rate = result.sent / result.duration if result.duration else 0.0
    return results


def summarize(result: LoadResult) -> dict[str, float]:
    """The figures a table row needs."""
    return {"offered_rps": round(result.offered_rate, 1), "throughput_rps": round(result.throughput, 1),
            "p50_ms": round(result.percentile(50) * 1000, 2), "p99_ms": round(result.percentile(99) * 1000, 2),
            "errors": result.failed}


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A plain aligned table on stdout."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths)), flush=True)
