"""A load generator that can measure a server: asyncio, raw HTTP/1.1 on keep-alive connections.

Open loop (``open_loop``): Poisson arrivals at a fixed rate, each sent on an idle connection (a new one is
opened when none is idle, up to ``max_connections``); latency counts from the *scheduled* send time, so
a slow server cannot hide queueing in the client (no coordinated omission). Closed loop (``closed_loop``):
``concurrency`` clients each send back to back, for ceilings. Both return a ``LoadResult``.
A ``requests``-based client tops out near 1k req/s on 2 cores; this one reaches several thousand.
"""

from __future__ import annotations

import asyncio
import random
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
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def roundtrip(self, payload: bytes) -> tuple[int, bool]:
        """Send one request, read one response; returns (status, keep_alive)."""
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep_alive, chunked = 0, True, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep_alive = False
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status, keep_alive

    def close(self) -> None:
        self.writer.close()


async def _connect(url: str) -> _Conn:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    return _Conn(reader, writer)


async def _one(target: Target, i: int, scheduled: float, idle: list[_Conn], result: LoadResult,
               timeout: float) -> None:
    began = time.perf_counter()
    conn = idle.pop() if idle else None
    try:
        if conn is None:
            conn = await _connect(target.url)
        status, keep_alive = await asyncio.wait_for(conn.roundtrip(target.request_bytes(i)), timeout)
        if status == 200:
            result.latencies.append(time.perf_counter() - scheduled)
            result.late.append(began - scheduled)
        result.codes[status] = result.codes.get(status, 0) + 1
        if keep_alive:
            idle.append(conn)
        else:
            conn.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
        result.errors += 1
        if conn is not None:
            conn.close()


async def _open_loop(target: Target, rate: float, duration: float, max_connections: int, timeout: float,
                     seed: int) -> LoadResult:
    rng = random.Random(seed)
    result = LoadResult(rate, duration)
    idle: list[_Conn] = []
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    next_at, i = start, 0
    while next_at - start < duration:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_connections:
            result.client_overloaded += 1
        else:
            task = asyncio.ensure_future(_one(target, i, next_at, idle, result, timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
        next_at += rng.expovariate(rate)
    if tasks:
        await asyncio.wait(tasks)
    for conn in idle:
        conn.close()
    return result


async def _closed_loop(target: Target, concurrency: int, duration: float, timeout: float) -> LoadResult:
    result = LoadResult(0.0, duration)
    started = time.perf_counter()
    stop_at = started + duration

    async def client(k: int) -> None:
        idle: list[_Conn] = []
        n = 0
        while time.perf_counter() < stop_at:
            await _one(target, k * 1_000_000 + n, time.perf_counter(), idle, result, timeout)
            n += 1
        for conn in idle:
            conn.close()

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    # Until the last answer: requests still in flight at ``stop_at`` are counted, so is their time.
    result.duration = time.perf_counter() - started
    result.offered_rate = result.sent / result.duration
    return result


def open_loop(target: Target, rate: float, duration: float, max_connections: int = 512,
              timeout: float = 10.0, seed: int = 0) -> LoadResult:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds."""
    return asyncio.run(_open_loop(target, rate, duration, max_connections, timeout, seed))


def closed_loop(target: Target, concurrency: int, duration: float, timeout: float = 10.0) -> LoadResult:
    """``concurrency`` clients sending back to back for ``duration`` seconds."""
    return asyncio.run(_closed_loop(target, concurrency, duration, timeout))


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
