"""The asyncio engine's parts without a socket: an answered request leaves nothing for the cyclic garbage
collector; a chunked body is parsed once however it arrives."""

from __future__ import annotations

import asyncio
import gc
from concurrent.futures import Future

from batcher.errors import Rejected
from batcher.queue import LocalBatchQueue
from batcher.request import Response
from watchdog.aio import Engine, HttpConnection, _Head, _Waiter
from watchdog.config import WatchdogConfig
from watchdog.handler import LoadedHandler
from watchdog.runtime import Runtime


class _Conn:
    """Records what the engine writes (the socket side is covered over real HTTP in tests/integration)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, status, headers, body, keep_alive, head_only) -> None:
        self.sent.append((status, body))


def _answer_one(engine: Engine, loop: asyncio.AbstractEventLoop, outcome) -> _Conn:
    conn, future = _Conn(), Future()
    head = _Head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0", 1 << 16)
    engine.runtime.try_enter()
    _Waiter(engine, conn, head, 0.0, future, 10.0)
    future.set_running_or_notify_cancel()
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
    loop.run_until_complete(asyncio.sleep(0.01))  # the loop answers what the worker resolved
    return conn


def test_answered_requests_leave_no_cycles_for_the_collector(tmp_path):
    config = WatchdogConfig.from_env({"TMPDIR": str(tmp_path)})
    runtime = Runtime(config, LoadedHandler(lambda reqs: [b""] * len(reqs), 0.0, None), LocalBatchQueue())
    loop = asyncio.new_event_loop()
    engine = Engine(runtime, loop)
    try:
        _answer_one(engine, loop, Response(b"warm"))  # the loop's own lazily made objects
        gc.collect()
        gc.disable()
        try:
            ok = _answer_one(engine, loop, Response(b"ok"))
            refused = _answer_one(engine, loop, Rejected("request refused: test"))
            assert ok.sent[0] == (200, b"ok") and refused.sent[0][0] == 503
            assert gc.collect() == 0  # freed by reference counting as they were answered
        finally:
            gc.enable()
    finally:
        loop.close()
        runtime.drain(1)


class _CountingBuffer(bytearray):
    """A connection's buffer that counts the searches made in it: the parser's work."""

    finds = 0

    def find(self, *args):  # noqa: D102 - bytearray's
        _CountingBuffer.finds += 1
        return super().find(*args)


class _Transport:
    reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class _Engine:
    """What a connection asks of its engine while it reads a request; ``handle`` records the request."""

    def __init__(self, limit: int) -> None:
        self.config = self.runtime = self
        self.max_request_bytes = limit
        self.connections: set = set()
        self.handled: list[tuple[_Head, bytes]] = []

    def handle(self, conn, head, body) -> None:
        self.handled.append((head, body))


def test_a_chunked_body_arriving_in_small_reads_is_parsed_once_not_again_on_every_read():
    # Parsed from its start on every read, a body of n small chunks cost n * n / 2 steps with the event loop
    # blocked: 300 KB in 1-byte chunks held every other connection for seconds.
    engine = _Engine(1 << 20)
    conn = HttpConnection(engine)  # type: ignore[arg-type]
    conn.transport = _Transport()  # type: ignore[assignment]
    conn.buf = _CountingBuffer()
    _CountingBuffer.finds = 0
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunks = 2000
    for k in range(chunks):
        conn.data_received(b"1\r\n" + bytes([97 + k % 26]) + b"\r\n")
    conn.data_received(b"0\r\n\r\n")
    assert [body for _, body in engine.handled] == [bytes(97 + k % 26 for k in range(chunks))]
    assert _CountingBuffer.finds < 4 * chunks


def test_reading_paused_behind_unread_answers_resumes_when_they_are_read_even_if_no_whole_request_waits():
    # Answers unread (writing paused) and a large request arriving meanwhile paused reading too; once the client
    # read its answers, only a finished answer resumed reading, and a request not yet whole never finished.
    engine = _Engine(20_000)
    conn = HttpConnection(engine)  # type: ignore[arg-type]
    conn.transport = transport = _Transport()  # type: ignore[assignment]
    conn.pause_writing()
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\na\r\n" * 15_000)
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading
    conn.data_received(b"0\r\n\r\n")
    assert [len(body) for _, body in engine.handled] == [15_000]
