"""The watchdog's default HTTP engine: one asyncio event loop inside the gunicorn worker.

Why not a threaded WSGI server: under load every request waiting for its batch held an HTTP thread, and each
answer crossed three threads (poller -> request thread -> batch worker -> request thread). With one
interpreter lock those hand-offs, not the model, bounded a batched instance (measured: about 1.2 ms of
watchdog CPU per MLP request against 0.5 ms for a no-op). Here a single loop thread parses HTTP, admits,
queues and writes answers, and the batch worker is the only other thread: a batch of N costs one wake-up
of the worker and N cheap callbacks on the loop, and no request ever holds a thread while it waits.

The engine speaks the HTTP/1.1 a gateway or load balancer sends: keep-alive and pipelining (answers in
order), ``Content-Length`` and chunked bodies, ``Expect: 100-continue``, HEAD; anything else is a 400 that
names the problem, then the connection is closed. The OpenFaaS contract is the same as the WSGI app's
(``watchdog.app``): ``/_/health``, ``/_/ready``, ``max_inflight`` (429), ``read_timeout`` (408), the
request timeout (504), ``max_request_bytes`` (413), ``X-Duration-Seconds`` and the of-watchdog metrics.
Shutdown follows ``watchdog.server``: once the worker is told to stop it closes its listeners, answers
everything it accepted, then closes idle connections.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import Future
from email.utils import formatdate
from gunicorn.workers.base import Worker

from batcher.errors import BatchError
from batcher.request import TOKEN, Request, Response, call_id
from watchdog.app import (BODILESS, OWN_HEADERS, OWN_ROUTES, REASONS, REPLACED_HEADERS, decoded_path, own_answer,
                          parse_x_timeout)
from watchdog.errors import RequestTimeout
from watchdog.runtime import CANCEL_GRACE_SECONDS, Runtime

logger = logging.getLogger(__name__)

# Largest request line plus headers; a larger head is refused with 431.
MAX_HEAD_BYTES = 64 * 1024
# How often connections are checked for read_timeout and idle keep-alive, and the worker for shutdown.
SWEEP_SECONDS = 0.1
# Idle keep-alive connections are closed after this long (a gateway reconnects at no cost).
KEEPALIVE_SECONDS = 75.0
# A caller-run batch (the instance idle, the queue empty) blocks the loop; only when predicted this short.
# Measured at low load, running on the loop's own (hot) thread beat handing off to the batch worker by
# 0.9-2 ms for the LSTM and ResNet; the runtime also keeps such runs under 10% of the loop's time.
INLINE_LIMIT_SECONDS = 0.05

_TEXT = "text/plain; charset=utf-8"
# Control characters a request head may not hold (RFC 9110 5.5: field values are visible characters, spaces
# and tabs; CR and LF are checked as line ends). A NUL passed on reached handlers and the shared queue.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A chunk size: hex digits only (int(..., 16) also takes "0x10", "1_0", "+10", which no HTTP peer sends
# and a proxy in front would frame differently).
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class BadRequest(Exception):
    """The bytes on a connection are not an HTTP/1.x request we accept; answered, then closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        # The request's method once its request line was read ("" before), for the metrics' method label.
        self.method = ""


class _Date:
    """The ``Date`` header value, formatted once per second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True)
        return cls.value


class _Head:
    """A parsed request line and headers, and what they say about the body."""

    __slots__ = ("method", "path", "query", "headers", "keep_alive", "length", "chunked", "version")

    def __init__(self, raw: bytes, limit: int) -> None:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise BadRequest("request head is not latin-1 text") from None
        bare = text.replace("\r\n", "")
        if "\n" in bare or "\r" in bare:
            raise BadRequest("request head holds a bare LF or CR: lines must end with CRLF")
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise BadRequest(f"malformed request line {lines[0][:100]!r}")
        self.method, target, self.version = parts
        if not self.method.isascii() or not self.method.isalpha() or not self.method.isupper():
            raise BadRequest(f"malformed method {self.method[:20]!r}")
        try:
            control = _CONTROL.search(text)
            if control:
                raise BadRequest(f"request head holds control character {control.group()!r}: only visible "
                                 "characters, spaces and tabs are allowed")
            self._parse(target, lines[1:], limit)
        except BadRequest as exc:  # counted under its method, not "unknown"
            exc.method = self.method
            raise

    def _parse(self, target: str, lines: list[str], limit: int) -> None:
        """The version, target, headers and body framing after a well-formed method."""
        if self.version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest(f"unsupported protocol {self.version[:20]!r} (HTTP/1.0 or HTTP/1.1 only)",
                             505 if self.version.startswith("HTTP/") else 400)
        if not target.isascii() or not target.isprintable():  # gunicorn's engine refuses it too (400)
            raise BadRequest(f"request target {target[:100]!r} holds a byte that is not printable ASCII: "
                             "percent-encode it")
        path, _, self.query = target.partition("?")
        if not path.startswith("/"):
            if "://" in path:  # absolute form, as a proxy may send it
                path = "/" + path.split("://", 1)[1].partition("/")[2]
            else:
                raise BadRequest(f"request target must start with '/', got {target[:100]!r}")
        self.path = decoded_path(path)
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(f"malformed header line {line[:100]!r}")
            if not TOKEN.issuperset(name):
                raise BadRequest(f"malformed header name {name[:100]!r}: must be an HTTP token")
            key = name.title()
            value = value.strip()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        self.keep_alive = ("close" not in connection) if self.version == "HTTP/1.1" else ("keep-alive" in connection)
        self.chunked = "Transfer-Encoding" in headers
        if self.chunked:  # anything else would leave the body's end unknown, or known two ways (smuggling)
            coding = headers["Transfer-Encoding"]
            if coding.strip().lower() != "chunked":
                raise BadRequest(f"Transfer-Encoding {coding[:40]!r} is not supported: chunked only", 501)
            if "Content-Length" in headers:
                raise BadRequest("both Content-Length and Transfer-Encoding sent: send one")
        self.length = 0
        if not self.chunked and "Content-Length" in headers:
            value = headers["Content-Length"]
            if not value.isascii() or not value.isdigit():  # "²".isdigit(), yet int() refuses it
                raise BadRequest(f"Content-Length must be a number of bytes, got {value[:40]!r}")
            self.length = int(value)
            if self.length > limit:
                raise BadRequest(f"request body of {self.length} bytes is over max_request_bytes={limit}", 413)


class _ChunkedBody:
    """A chunked body as it arrives: the chunks decoded so far are kept, so each read parses only what is
    new. Parsed again from the start on every read, a body sent in small chunks cost time quadratic in its
    length with the loop blocked meanwhile (a 300 KB body in 1-byte chunks held every other connection, and
    ``/_/health``, for seconds)."""

    __slots__ = ("pos", "parts", "size")

    def __init__(self, start: int) -> None:
        self.pos = start  # where the next chunk's size line starts in the connection's buffer
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, buf: bytearray, limit: int) -> tuple[bytes, int] | None:
        """(body, end offset) once the body in ``buf`` is complete, else None (call again with more)."""
        while True:
            pos = self.pos
            eol = buf.find(b"\r\n", pos, pos + 1026)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise BadRequest("chunk size line longer than 1024 bytes")
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise BadRequest(f"malformed chunk size {size_text[:20]!r}")
            n = int(size_text, 16)
            pos = eol + 2
            if n == 0:  # optional trailers end with an empty line; as bounded as a head
                end = buf.find(b"\r\n\r\n", pos - 2, pos + MAX_HEAD_BYTES)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        raise BadRequest(f"chunked body trailers over {MAX_HEAD_BYTES} bytes", 431)
                    return None
                return b"".join(self.parts), end + 4
            if self.size + n > limit:
                raise BadRequest(f"request body is over max_request_bytes={limit}", 413)
            if len(buf) < pos + n + 2:
                return None
            if buf[pos + n:pos + n + 2] != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
            self.parts.append(bytes(buf[pos:pos + n]))
            self.size += n
            self.pos = pos + n + 2


def _head_bytes(status: int, headers: list[tuple[str, str]], length: int, keep_alive: bool) -> bytes:
    """A response's status line and headers, ``Content-Length`` (none for a 204 or 304) and ``Date`` included."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in OWN_HEADERS]
    if status not in BODILESS:
        lines.append(f"Content-Length: {length}")
    lines.append(f"Date: {_Date.now()}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _handler_headers(response: Response) -> list[tuple[str, str]]:
    """A handler's response headers less those the watchdog sets itself."""
    return [(k, v) for k, v in response.headers.items() if k.lower() not in REPLACED_HEADERS]


class HttpConnection(asyncio.Protocol):
    """One client connection: parse requests in order, one in flight at a time, answer in order."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: _Head | None = None
        self.head_end = 0
        self.busy = False  # a request is being answered; later pipelined ones wait in ``buf``
        self.closing = False
        self.started_at: float | None = None  # when the request being received began (read_timeout)
        self.last_active = time.monotonic()
        self.continued = False
        self.paused = False  # reading paused while a pipelined backlog waits (see data_received)
        # The client reads its answers slower than they come (the transport's buffer is over its high-water
        # mark): its next pipelined request waits, so unread answers cannot pile up in this process.
        self.write_blocked = False
        self.waiter: _Waiter | None = None  # the request of this connection waiting for its batch
        self.chunks: _ChunkedBody | None = None  # the chunked body being received, if any

    # asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.engine.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.engine.connections.discard(self)
        if self.waiter is not None:  # its caller is gone: a request still queued is dropped, its slot freed
            self.waiter.abandon()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.last_active = time.monotonic()
        if not self.busy and not self.write_blocked:
            self._next()
        elif len(self.buf) > MAX_HEAD_BYTES + self.engine.config.max_request_bytes and not self.paused:
            # A client pipelining faster than its answers come or are read: stop reading until this one is
            # answered, so the buffer stays bounded by one request.
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        # A client that pipelined requests and read none of the answers had every answer buffered here:
        # 3,000 requests for a 1 MB answer grew the worker by 1.8 GB (an instance's memory limit kills it).
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        if not self.busy:
            self._next()
        if not self.busy and self.paused:  # what is buffered is not a whole request yet: read the rest
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        # The client is gone (Go's server, of-watchdog's, cancels the request on this too): a request still
        # queued is dropped; one already running is finished and answered over the half-open transport.
        if self.waiter is not None and self.waiter.abandon():
            self._close()
        elif not self.busy:
            self._close()
        return True

    # Parsing ----------------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Parse and start the next complete request in the buffer, if any."""
        if self.closing or self.busy or self.write_blocked or not self.buf:
            return
        if self.started_at is None:
            self.started_at = time.monotonic()
        limit = self.engine.runtime.config.max_request_bytes
        try:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)  # however the head arrived
                if end < 0:
                    if len(self.buf) > MAX_HEAD_BYTES:
                        raise BadRequest(f"request head over {MAX_HEAD_BYTES} bytes", 431)
                    if self.buf.find(b"\n\n", 0, MAX_HEAD_BYTES) >= 0:  # would wait for read_timeout
                        raise BadRequest("request head holds a bare LF or CR: lines must end with CRLF")
                    return
                if end == 0:  # tolerate stray CRLFs between requests (RFC 9112 section 2.2)
                    del self.buf[:2]
                    self._next()
                    return
                self.head = _Head(bytes(self.buf[:end]), limit)
                self.head_end = end + 4
                self.continued = False
                self.chunks = _ChunkedBody(self.head_end) if self.head.chunked else None
            head = self.head
            if self.chunks is not None:
                done = self.chunks.feed(self.buf, limit)
                if done is None:
                    self._maybe_continue(head)
                    return
                body, consumed = done
            else:
                consumed = self.head_end + head.length
                if len(self.buf) < consumed:
                    self._maybe_continue(head)
                    return
                body = bytes(self.buf[self.head_end:consumed])
        except BadRequest as exc:
            self._fail(exc)
            return
        del self.buf[:consumed]
        self.head, self.chunks, self.started_at, self.busy = None, None, None, True
        self.engine.handle(self, head, body)

    def _maybe_continue(self, head: _Head) -> None:
        if not self.continued and head.version == "HTTP/1.1" and \
                head.headers.get("Expect", "").lower() == "100-continue":
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def _fail(self, exc: BadRequest) -> None:
        """Answer a request that could not be read (400, 408, 413, 431), counted like any other answer."""
        self.busy = True
        elapsed = time.monotonic() - self.started_at if self.started_at is not None else 0.0
        method = self.head.method if self.head is not None else exc.method or "unknown"
        self.engine.runtime.answered(exc.status, method, elapsed)
        self.send(exc.status, [("Content-Type", _TEXT), ("X-Duration-Seconds", f"{elapsed:.6f}")],
                  f"{exc}\n".encode(), keep_alive=False, head_only=False)

    # Answering --------------------------------------------------------------------------------------------

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool,
             head_only: bool) -> None:
        """Write one response, then go on with the next pipelined request or close."""
        if self.closing or self.transport is None or self.transport.is_closing():
            self.closing = True
            return
        try:
            data = _head_bytes(status, headers, len(body), keep_alive)
            # A 204 or 304 has no body whatever the handler gave: a client reads none, and bytes sent after
            # the head would be taken for the start of the next answer on this connection.
            self.transport.write(data if head_only or status in BODILESS else data + body)
        except (TypeError, ValueError) as exc:  # responses are checked before (``unsendable``): a last guard
            logger.error("a response could not be written: %r", exc)
            text = f"the function's response could not be sent: {type(exc).__name__}\n".encode()
            self.transport.write(_head_bytes(500, [("Content-Type", _TEXT)], len(text), False) + text)
            keep_alive = False
        self.busy = False
        self.last_active = time.monotonic()
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if not keep_alive or self.engine.stopping:
            self._close()
        elif self.buf:
            self._next()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def sweep(self, now: float, read_timeout: float) -> None:
        """Answer 408 to a request still arriving after ``read_timeout``; close long-idle connections."""
        if self.busy or self.closing:
            return
        if self.started_at is not None and now - self.started_at > read_timeout:
            self._fail(BadRequest(f"request not received within read_timeout={read_timeout:g}s", 408))
        elif self.started_at is None and (self.engine.stopping or now - self.last_active > KEEPALIVE_SECONDS):
            self._close()


class Engine:
    """The function route and OpenFaaS's routes over ``HttpConnection``s, on one event loop."""

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.loop = loop
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self._resolved: collections.deque[_Waiter] = collections.deque()
        self._wake_scheduled = False

    def handle(self, conn: HttpConnection, head: _Head, body: bytes) -> None:
        """Answer one complete request (now, or when its batch is done)."""
        if head.path in OWN_ROUTES:
            started = time.perf_counter()
            status, headers, text = own_answer(self.runtime, head.method, head.path)
            headers.append(("X-Duration-Seconds", f"{time.perf_counter() - started:.6f}"))
            conn.send(status, headers, text, head.keep_alive, head.method == "HEAD")
        else:
            self._invoke(conn, head, body)

    def _invoke(self, conn: HttpConnection, head: _Head, body: bytes) -> None:
        started = time.perf_counter()
        runtime = self.runtime
        if not runtime.try_enter():
            self._error(conn, head, started, runtime.too_many())
            return
        try:
            request = Request(body=body, headers=head.headers, method=head.method, path=head.path, query=head.query,
                              id=call_id(head.headers))
            timeout = runtime.request_timeout(parse_x_timeout(head.headers.get("X-Timeout")))
            pending = runtime.begin(request, timeout, inline_limit=INLINE_LIMIT_SECONDS)
        except (BatchError, RequestTimeout) as exc:
            runtime.leave()
            self._error(conn, head, started, exc)
            return
        if isinstance(pending, Response):
            runtime.leave()
            self._finish(conn, head, started, pending.status, _handler_headers(pending), pending.body)
            return
        conn.waiter = _Waiter(self, conn, head, started, pending, timeout)

    def _error(self, conn: HttpConnection, head: _Head, started: float, exc: BaseException) -> None:
        status = self.runtime.error_status(exc)
        self._finish(conn, head, started, status, [("Content-Type", _TEXT)], f"{exc}\n".encode())

    def _finish(self, conn: HttpConnection, head: _Head, started: float, status: int,
                headers: list[tuple[str, str]], body: bytes) -> None:
        elapsed = time.perf_counter() - started
        headers.append(("X-Duration-Seconds", f"{elapsed:.6f}"))
        self.runtime.answered(status, head.method, elapsed)
        conn.send(status, headers, body, head.keep_alive, head.method == "HEAD")

    def resolved(self, waiter: "_Waiter") -> None:
        """Hand a resolved waiter to the loop (any thread). A batch of N wakes the loop once, not N times:
        the flag is cleared before the loop drains, so a waiter appended meanwhile is drained or re-wakes."""
        self._resolved.append(waiter)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._answer_resolved)
            except RuntimeError:  # the loop is closed: the process is exiting
                pass

    def _answer_resolved(self) -> None:
        self._wake_scheduled = False
        pop = self._resolved.popleft
        while self._resolved:
            waiter = pop()
            try:
                waiter._answer()
            except Exception:  # noqa: BLE001 - one waiter's failure must not leave the others of its batch
                logger.exception("answering a request failed")
                waiter.conn._close()

    def busy(self) -> bool:
        """True while any accepted request is unanswered."""
        return self.runtime.inflight > 0 or any(c.busy for c in self.connections)


class _Waiter:
    """A queued request: answered by its batch's result or by its timeout, whichever comes first."""

    __slots__ = ("engine", "conn", "head", "started", "future", "timer", "done")

    def __init__(self, engine: Engine, conn: HttpConnection, head: _Head, started: float, future: Future,
                 timeout: float) -> None:
        self.engine, self.conn, self.head, self.started, self.future = engine, conn, head, started, future
        self.done = False
        self.timer = engine.loop.call_later(max(0.0, timeout), self._timed_out, timeout)
        future.add_done_callback(self._resolved)

    def _resolved(self, future: Future) -> None:  # on the batch worker's thread (or this one)
        self.engine.resolved(self)

    def _answer(self) -> None:
        # The future holds this waiter in its callbacks and the waiter holds the future: letting go of our
        # side leaves no cycle, so a request's objects are freed by reference counting. Left to the cyclic
        # collector, they were about 13 objects a request, and each full collection under load walked
        # 24,000-69,000 of them, holding the interpreter lock 7-29 ms while nothing else ran.
        future, self.future = self.future, None
        if self.done:
            return
        self.done = True
        self.conn.waiter = None
        self.timer.cancel()  # a cancelled handle lets go of the method it would have called
        self.engine.runtime.leave()
        if future.cancelled():  # pragma: no cover - only the timeout cancels, and it answers itself
            return
        exc = future.exception()
        if exc is not None:
            self.engine._error(self.conn, self.head, self.started, exc)
        else:
            result: Response = future.result()
            self.engine._finish(self.conn, self.head, self.started, result.status, _handler_headers(result),
                                result.body)

    def abandon(self) -> bool:
        """The client closed its connection: a request still queued is cancelled (never run) and its
        ``max_inflight`` slot freed (True); one already running keeps its slot until its batch ends (the work
        is real) and is answered if the connection still takes it (False)."""
        if self.done or self.future is None or not self.engine.runtime.abandon(self.future):
            return False
        self.done = True
        self.conn.waiter = None
        if self.timer is not None:
            self.timer.cancel()
        self.engine.runtime.leave()
        return True

    def _timed_out(self, timeout: float) -> None:
        self.timer = None  # a handle that ran still holds this method
        if self.done:
            return
        self.done = True
        self.conn.waiter = None
        error = self.engine.runtime.timed_out(self.future, timeout)
        self.engine.runtime.leave()
        self.engine._error(self.conn, self.head, self.started, error)


class AsyncioWorker(Worker):
    """gunicorn worker running ``Engine`` on an asyncio loop (``worker_class`` of ``python -m watchdog``)."""

    def run(self) -> None:
        runtime = getattr(self.wsgi, "runtime", None)
        if not isinstance(runtime, Runtime):
            raise RuntimeError("AsyncioWorker serves watchdog.app.WatchdogApp only")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(runtime, loop))
        finally:
            loop.close()

    async def _serve(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        engine = Engine(runtime, loop)
        stop_guard = threading.Event()
        if not (runtime.config.handler_process and runtime.config.exec_timeout > 0):  # the child's own limit
            threading.Thread(target=_guard_inline, args=(runtime, threading.get_ident(), stop_guard),
                             name="inline-guard", daemon=True).start()
        try:
            await self._serve_engine(runtime, loop, engine)
        finally:
            stop_guard.set()

    async def _serve_engine(self, runtime: Runtime, loop: asyncio.AbstractEventLoop, engine: Engine) -> None:
        use_loop = getattr(runtime.queue, "use_loop", None)
        if use_loop is not None:  # the shared queue pushes from this loop, no thread hand-off per request
            use_loop(loop)
        servers = []
        for listener in self.sockets:
            sock = getattr(listener, "sock", listener)
            sock.setblocking(False)
            servers.append(await loop.create_server(lambda: HttpConnection(engine), sock=sock, backlog=2048))
        read_timeout = runtime.config.read_timeout
        last_notify = 0.0
        while self.alive and self.ppid == os.getppid():
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for conn in list(engine.connections):
                conn.sweep(now, read_timeout)
            if now - last_notify > 1.0:
                self.notify()
                last_notify = now
        # Stop accepting, answer everything accepted, then close the connections left idle.
        engine.stopping = True
        for server in servers:
            server.close()
        deadline = time.monotonic() + runtime.config.write_timeout + runtime.config.read_timeout
        while time.monotonic() < deadline and (engine.busy() or any(c.started_at for c in engine.connections)):
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for conn in list(engine.connections):
                conn.sweep(now, read_timeout)
        for conn in list(engine.connections):
            if not conn.busy:
                conn._close()
        await asyncio.sleep(0)  # let the transports flush and close


def _guard_inline(runtime: Runtime, loop_thread: int, stop: threading.Event) -> None:
    """End this worker when a batch run inline has blocked the loop past the longest a request may take
    (``exec_timeout``, or ``write_timeout`` when shorter or exec_timeout is 0), plus ``CANCEL_GRACE_SECONDS``
    (an async handler's coroutine, cancelled at that limit, gets that long to end).

    A batch run on the loop cannot be abandoned and the loop answers nothing else meanwhile, not even
    ``/_/health``: a hung handler froze the instance for good. Its callers are past their timeout anyway,
    so the worker exits (os._exit: the loop thread cannot be stopped) and gunicorn starts a fresh one. Not
    started with ``handler_process`` and an ``exec_timeout``: the child is killed at that limit and the
    batch answered 504 (the guard, racing it, ended workers that would have lived on). A first call never
    runs inline (``Runtime._may_run_inline``), so a slow warm-up does not end every new worker."""
    limit = runtime.request_timeout(None)
    while not stop.wait(min(1.0, limit / 4)):
        running = runtime.worker.running_for(loop_thread)
        if running > limit + CANCEL_GRACE_SECONDS:
            logger.critical("the handler has blocked the event loop for %.1fs running a batch inline, past "
                            "the request timeout of %gs: ending this worker so that gunicorn starts a new one",
                            running, limit)
            os._exit(1)
