"""The user's handler in a child process (``handler_process=true``).

In the watchdog's own process a handler shares one interpreter lock with the HTTP loop, and a crash in
native code (a segfault in an extension) or a call that never returns takes the whole instance with it.
In a child process a crash costs the batch that was running (500, naming the signal), a batch that runs
past ``exec_timeout`` costs that batch (504; the child is killed), and either way a new child is started
and the instance serves on. The child ignores SIGINT and SIGTERM: the watchdog drains first, then closes
the socket, and the child exits on end of file (also when the watchdog itself was killed).

Batches are pipelined: up to ``depth`` (2 by default) are sent before the first one's answer is read,
so the child finds the next batch waiting when it finishes one instead of idling while its answer crosses
back and the watchdog answers, takes and encodes the next (measured: 19% of the child's time with one
batch at a time, MLP example at batch 64). The child runs them one after another and answers in order;
each caller reads its answer when the batches sent before it have been answered. A batch's execution
time is counted from when the child could start it (sent, and the batch before it answered), not from
when it was sent, and so is its ``exec_timeout``. When the child dies or is killed, the batch it was
running fails; the batches sent after it never started, and are sent again to the new child.

The two talk over a Unix socket pair, bytes and JSON only. A frame is a 4-byte big-endian length, then:
    to the child    batch    u32 count, then per request: u32 length, ``wire.pack(request.to_wire(), body)``
    to the watchdog ready    b"H" + JSON {"pid", "load_seconds"}, once ``load()`` returned
                    failed   b"F" + message, when import or ``load()`` raised (the child then exits)
                    outputs  b"R" + u32 count, then per output: u32 length, b"r" + ``wire.pack(meta, body)``
                             for a response or b"e" + JSON {"status", "message"} for an error
                    raised   b"X" + JSON {"status", "message", "whole"}: the call raised (``whole``: the
                             answer broke the contract, so the batch fails without bisection)
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from batcher.dispatch import BatchAborted, as_batch_error, log_failure, shape_error
from batcher.errors import BadInput, BatchError, DeadlineExceeded, HandlerFailed, Rejected
from batcher.request import Request, Response, to_response
from batcher.wire import error_for, pack, unpack
from faas_infer.loglevel import env_level
from watchdog.errors import HandlerNotFound
from watchdog.handler import freeze_loaded_objects, load_here

logger = logging.getLogger(__name__)

_LEN = struct.Struct("!I")
# How long a child has to exit after its socket closes before it is killed.
STOP_SECONDS = 5.0
# After its socket failed, how long a child has to exit by itself (its own status is then reported) before
# it is killed.
CRASH_GRACE_SECONDS = 0.5
# How often a child checks that the watchdog that started it is still there.
PARENT_POLL_SECONDS = 0.5
# Waits between attempts to start a child whose load() failed: doubling from the first to the last.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class HandlerProcessError(HandlerNotFound):
    """The child could not import the handler or run ``load()``; the message is the child's."""


class Outputs(list):
    """A batch's outputs, with the seconds the child spent on the batch (``exec_seconds``): the time from
    when it could start it to its answer, without the wait behind the batch sent before it."""

    exec_seconds: float | None = None


class _Sent:
    """A batch written to the child and not answered yet."""

    __slots__ = ("child", "size", "sent_at", "resend")

    def __init__(self, child: int, size: int, sent_at: float) -> None:
        self.child, self.size, self.sent_at = child, size, sent_at
        # Set when the child was lost before starting this batch: it is sent again to the next one.
        self.resend = False


class _Resend(Exception):
    """The batch never started in the child that was lost: send it again."""


class HandlerProcess:
    """Runs batches in a child process; starts a new child after a crash or a hang."""

    def __init__(self, function_dir: str, exec_timeout: float = 0.0, start_timeout: float | None = None,
                 retain_freed_memory: bool = False,
                 on_restart: Callable[[str], None] | None = None, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth={depth}: must be >= 1")
        self.function_dir = os.path.abspath(function_dir)
        # Longest call before the child is killed (0: wait as long as it takes).
        self.exec_timeout = exec_timeout
        # Longest wait for load() (None: as long as it takes, as in-process; a child that dies is noticed).
        self.start_timeout = start_timeout
        self.retain_freed_memory = retain_freed_memory
        self.on_restart = on_restart
        self.cold_start_seconds = 0.0
        # Exit status of the last child that ended (None while one runs).
        self.exit_code: int | None = None
        # Batches sent before the first one's answer is read (1: one at a time).
        self.depth = depth
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        # A second descriptor of the same socket for reading answers: its timeouts (``exec_timeout``) must
        # not apply to a batch being written meanwhile.
        self._rsock: socket.socket | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # taken before ``_lock``, never after
        # Batches written to the child, oldest first; the oldest is the one it runs (or will run next).
        self._sent: collections.deque[_Sent] = collections.deque()
        # When the oldest batch in ``_sent`` could start: sent, and the batch before it answered.
        self._head_since = 0.0
        self._children = 0  # children started so far: a batch names the one it was sent to
        self._closed = False
        self._restarting = False
        # Why the last start failed ("" after a good one): batches meanwhile are refused with it.
        self._start_failure = ""

    @property
    def pid(self) -> int | None:
        """The child's pid (None before start)."""
        return self._proc.pid if self._proc else None

    def ready(self) -> bool:
        """True when a child is up and alive and no new one is loading (a batch would not wait for
        ``load()``: a child that died idle is replaced when the next batch is sent, which must then not be
        on the event loop)."""
        return (self._sock is not None and not self._restarting and not self._closed
                and self._proc is not None and self._proc.poll() is None)

    def start(self) -> "HandlerProcess":
        """Start the child and wait until ``load()`` returned; raises ``HandlerProcessError`` otherwise."""
        started = time.perf_counter()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise HandlerProcessError(f"cannot start the handler process: {exc}") from None
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        args = [sys.executable, "-m", "watchdog.handler_process", str(theirs.fileno()), self.function_dir,
                "1" if self.retain_freed_memory else "0", str(os.getpid())]
        try:
            self._proc = subprocess.Popen(args, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise HandlerProcessError(f"cannot start the handler process: {exc}") from None
        finally:
            theirs.close()
        self._sock, self.exit_code = ours, None
        try:
            self._rsock = ours.dup()
        except OSError as exc:
            self._reap(kill=True)
            raise HandlerProcessError(f"cannot start the handler process: {exc}") from None
        self._children += 1
        deadline = time.monotonic() + self.start_timeout if self.start_timeout else None
        try:
            kind, payload = _split(_recv_frame(self._rsock, deadline))
        except TimeoutError:
            self._reap(kill=True)
            raise HandlerProcessError(f"load() did not return within {self.start_timeout:g}s; the handler process "
                                      "was killed") from None
        except (EOFError, OSError) as exc:
            code = self._reap(kill=True)
            raise HandlerProcessError(f"the handler process (pid {self._proc.pid}) ended before load() returned: "
                                      f"{_describe(code) if code is not None else exc}") from None
        if kind != b"H":
            self._reap(kill=True)
            raise HandlerProcessError(payload.decode("utf-8", "replace"))
        hello = json.loads(payload)
        self.cold_start_seconds = time.perf_counter() - started
        logger.info("handler process %d ready: load() %.2fs, cold start %.2fs", hello["pid"],
                    hello["load_seconds"], self.cold_start_seconds)
        return self

    def handle(self, requests: list[Request]) -> list[Response | BatchError]:
        """One ``handle_batch`` call in the child: a response or an error per output, as the handler gave
        them (an ``Outputs`` list carrying the child's time). Raises what the handler raised (``BadInput``
        or ``HandlerFailed``, so the batch is bisected), or ``BatchAborted`` when the child died or ran past
        ``exec_timeout`` on this batch (a new child is started), or with a 503 while no child can be
        started (attempts go on in the background). Safe to call from ``depth`` threads at once."""
        frame = _encode_batch(requests)
        while True:
            sent = self._send(frame, len(requests))
            try:
                return self._receive(sent)
            except _Resend:
                continue

    def _send(self, frame: bytes, size: int) -> _Sent:
        """Write a batch to the child (starting one first if needed) once fewer than ``depth`` wait.

        Writers take ``_write_lock`` first, so batches reach the child in the order of ``_sent``; the
        state lock is not held while writing, which blocks while the child's socket buffer is full (until
        it reads the batch before this one's end), so the reader of a hung batch can always kill the child."""
        with self._write_lock:
            with self._cond:
                while len(self._sent) >= self.depth and not self._closed:
                    self._cond.wait()
                if self._closed:
                    raise BatchAborted(HandlerFailed("the handler process is stopped (the instance is shutting down)"))
                if not self._sent and self._proc is not None and self._sock is not None \
                        and self._proc.poll() is not None:
                    # it died between batches (killed for memory, say): this batch has not run, so start anew
                    logger.error("handler process %d died %s while idle", self._proc.pid,
                                 _describe(self._proc.poll()))
                    self._reap(kill=True)
                    if self.on_restart is not None:
                        self.on_restart("crash")
                if self._sock is None and not self._start_failure:
                    self._start_logged()  # a start is due and none has failed yet: this batch waits for it
                if self._sock is None:  # between two attempts to start one: refuse at once
                    raise BatchAborted(Rejected(f"the handler process is not running: "
                                                f"{self._start_failure or 'it is starting'}; it is being started again"))
                sent = _Sent(self._children, size, time.perf_counter())
                if not self._sent:
                    self._head_since = sent.sent_at
                self._sent.append(sent)
                sock = self._sock
            try:
                _send_frame(sock, frame)
            except OSError as exc:
                # Part of the frame may be written: the stream is lost either way, so is the child (the
                # reader of the oldest batch then sees it end, and the batches behind are sent again).
                with self._cond:
                    if sent.child == self._children and self._proc is not None and self._proc.poll() is None:
                        logger.error("writing a batch to handler process %d failed (%s): killed it", self._proc.pid, exc)
                        self._proc.kill()
            return sent

    def _receive(self, sent: _Sent) -> list[Response | BatchError]:
        """Wait until ``sent`` is the oldest batch, then read its answer."""
        with self._cond:
            while not sent.resend and self._sent and self._sent[0] is not sent:
                self._cond.wait()
            if sent.resend:
                raise _Resend
            rsock, pid, began = self._rsock, self._proc.pid if self._proc else None, self._head_since
        deadline = time.monotonic() + self.exec_timeout - (time.perf_counter() - began) \
            if self.exec_timeout > 0 else None
        try:
            if rsock is None:
                raise EOFError("no child")
            kind, payload = _split(_recv_frame(rsock, deadline))
        except TimeoutError:
            self._lose(sent, "timeout")
            raise BatchAborted(DeadlineExceeded(
                f"handle_batch ran past exec_timeout={self.exec_timeout:g}s on a batch of {sent.size}: "
                f"the handler process (pid {pid}) was killed; a new one is being started")) from None
        except (EOFError, OSError) as exc:
            code = self._lose(sent, "crash", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise BatchAborted(HandlerFailed(
                f"the handler process (pid {pid}) died {_describe(code)} running a batch of {sent.size}; "
                "a new one is being started")) from None
        except BaseException as exc:  # the stream is lost mid-frame: so is the child, or every later batch waits
            self._lose(sent, "crash")
            raise BatchAborted(HandlerFailed(
                f"reading the handler process's answer to a batch of {sent.size} failed "
                f"({type(exc).__name__}: {exc}); a new one is being started")) from None
        done = time.perf_counter()
        with self._cond:
            self._sent.popleft()
            self._head_since = done
            self._cond.notify_all()
        if kind == b"R":
            outputs = Outputs(_decode_outputs(payload))
            outputs.exec_seconds = done - max(began, sent.sent_at)
            return outputs
        if kind == b"X":
            raised = json.loads(payload)
            error = error_for(int(raised["status"]), str(raised["message"]))
            if raised.get("whole"):
                raise BatchAborted(error)
            raise error
        raise BatchAborted(HandlerFailed(f"the handler process sent an unknown frame {kind!r}"))

    def _lose(self, sent: _Sent, reason: str, detail: str = "") -> int | None:
        """The child died or hung on ``sent`` (the oldest batch): the batches behind it never started and
        are sent again; unless the instance is stopping, a new child is started. The old one's exit status."""
        with self._cond:
            if self._sent and self._sent[0] is sent:
                self._sent.popleft()
            for later in self._sent:
                later.resend = True
            self._sent.clear()
            self._cond.notify_all()
            if self._closed:
                return self._reap(kill=True)
            if sent.child != self._children:  # pragma: no cover - a newer child is already serving
                return None
            return self._lost(reason, detail)

    def close(self) -> None:
        """Close the socket (the child exits at end of file) and wait for it; kill it if it lingers. A
        batch or a ``load()`` still running after ``STOP_SECONDS`` is not waited for: the child is killed."""
        deadline = time.monotonic() + STOP_SECONDS
        self._closed = True  # first: a start failing meanwhile must not schedule another
        if not self._lock.acquire(timeout=STOP_SECONDS):  # a start (load()) in progress
            if self._proc is not None:
                logger.error("handler process %d still loading at shutdown: killed", self._proc.pid)
                self._proc.kill()
            return
        try:
            self._cond.notify_all()  # callers waiting to send give up
            while self._sent and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            if self._sent and self._proc is not None:
                logger.error("handler process %d still busy at shutdown: killed", self._proc.pid)
            self._reap(kill=bool(self._sent))
        finally:
            self._lock.release()

    def _lost(self, reason: str, detail: str = "") -> int | None:
        """The child crashed or was killed: count it, and start a new one in the background, so the failed
        batch is answered now rather than after the next ``load()``. Returns the old child's exit status:
        after a crash the child gets ``CRASH_GRACE_SECONDS`` to exit by itself first, so its own status is
        reported rather than the SIGKILL that ends it otherwise."""
        code = self._reap(kill=True, grace=CRASH_GRACE_SECONDS if reason == "crash" else 0.0)
        if self.on_restart is not None:
            self.on_restart(reason)
        logger.error("handler process lost (%s, %s%s); starting a new one", reason, _describe(code),
                     f", after {detail}" if detail else "")
        self._restarting = True
        threading.Thread(target=self._restart, name="handler-restart", daemon=True).start()
        return code

    def _restart(self) -> None:
        """Start a child, retrying with a doubling wait while ``load()`` fails; batches meanwhile wait for
        a start in progress (they queue on the lock) but are refused between attempts."""
        wait = RETRY_FIRST_SECONDS
        while True:
            with self._lock:  # done once a child is up (started here or by a batch), or at shutdown
                if self._sock is not None or self._closed or not self._start_logged():
                    self._restarting = False
                    return
            time.sleep(wait)
            wait = min(2 * wait, RETRY_MAX_SECONDS)

    def _start_logged(self) -> str:
        """Start a child; "" when it is ready, else why not (logged, and kept for refused batches)."""
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - HandlerProcessError, or anything else start() let through
            self._reap(kill=True)
            self._start_failure = str(exc)
            logger.error("the new handler process failed: %s", exc)
            if not self._restarting and not self._closed:  # keep trying in the background
                self._restarting = True
                threading.Thread(target=self._restart, name="handler-restart", daemon=True).start()
            return str(exc)
        self._start_failure = ""
        self._restarting = False  # whichever thread started it, nothing is loading now
        return ""

    def _reap(self, kill: bool, grace: float = 0.0) -> int | None:
        """Close our end and end the child; its exit status (None if it was never started, or if it could
        not be reaped: a process stuck in the kernel is left to exit when it can)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._rsock is not None:
            self._rsock.close()
            self._rsock = None
        proc = self._proc
        if proc is None:
            return None
        if kill and grace > 0:
            try:
                self.exit_code = proc.wait(grace)
                return self.exit_code
            except subprocess.TimeoutExpired:
                pass
        if kill:
            proc.kill()
        try:
            self.exit_code = proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                self.exit_code = proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.error("handler process %d did not exit after SIGKILL", proc.pid)
                return None
        return self.exit_code


def _describe(code: int | None) -> str:
    if code is None:
        return "(still running)"
    if code < 0:
        try:
            return f"of signal {signal.Signals(-code).name}"
        except ValueError:
            return f"of signal {-code}"
    return f"with exit status {code}"


# --- framing, shared by both ends ---------------------------------------------------------------------------

def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    """``size`` bytes; ``TimeoutError`` if none came by ``deadline`` (monotonic). The deadline applies to
    the first byte only: the other end writes a frame whole, once it has it."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        # A deadline is kept with poll, not socket timeouts: a timeout makes the descriptor non-blocking,
        # and the watchdog's writing descriptor shares that flag (same socket, ``dup``).
        if deadline is not None and got == 0:
            while not _readable(sock, deadline - time.monotonic()):
                if time.monotonic() >= deadline:
                    raise TimeoutError
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise EOFError("the other end closed the socket")
        got += n
    return bytes(buf)


# poll() takes milliseconds as a C int: longer waits are made of several.
_MAX_POLL_MS = 2**31 - 1


def _readable(sock: socket.socket, seconds: float) -> bool:
    """True once ``sock`` has data (or its end), False after ``seconds`` (at most ~24 days a call)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(min(_MAX_POLL_MS, max(0, math.ceil(seconds * 1000)))))


def _recv_frame(sock: socket.socket, deadline: float | None = None) -> bytes:
    """One frame's payload; ``TimeoutError`` when it has not begun by ``deadline`` (monotonic), ``EOFError``
    when closed. A frame that began in time is read whole, however long it is."""
    (size,) = _LEN.unpack(_recv_exact(sock, 4, deadline))
    return _recv_exact(sock, size, None)


def _split(frame: bytes) -> tuple[bytes, bytes]:
    return frame[:1], frame[1:]


def _join(parts: list[bytes]) -> bytes:
    out = [_LEN.pack(len(parts))]
    for part in parts:
        out.append(_LEN.pack(len(part)))
        out.append(part)
    return b"".join(out)


def _parts(data: bytes | memoryview) -> list[bytes]:
    view = memoryview(data)
    (count,) = _LEN.unpack_from(view, 0)
    offset, parts = 4, []
    for _ in range(count):
        (size,) = _LEN.unpack_from(view, offset)
        parts.append(bytes(view[offset + 4:offset + 4 + size]))
        offset += 4 + size
    return parts


def _encode_batch(requests: list[Request]) -> bytes:
    return _join([pack(r.to_wire(), r.body) for r in requests])


def _decode_batch(data: bytes) -> list[Request]:
    out = []
    for part in _parts(data):
        meta, body = unpack(part)
        out.append(Request.from_wire(meta, body))
    return out


def _encode_outputs(outputs: list[Any]) -> bytes:
    return b"R" + _join([_encode_output(output) for output in outputs])


def _encode_output(output: Any) -> bytes:
    """One output as it crosses; one that cannot be sent fails its own request only."""
    try:
        result: Response | BatchError = as_batch_error(output) if isinstance(output, BaseException) \
            else to_response(output)
        if isinstance(result, Response):
            return b"r" + pack(result.to_wire(), bytes(result.body))
        return b"e" + _error_json(result)
    except BatchError as exc:  # not JSON-serialisable
        return b"e" + _error_json(exc)
    except Exception as exc:  # noqa: BLE001 - a str body, a header that is not text, a __str__ that raises
        return b"e" + _error_json(HandlerFailed(f"handler returned an output that cannot be sent: "
                                                f"{type(exc).__name__}: {exc}"))


def _error_json(error: BatchError, **extra: Any) -> bytes:
    return json.dumps({"status": error.status, "message": str(error), **extra}).encode()


def _decode_outputs(data: bytes) -> list[Response | BatchError]:
    out: list[Response | BatchError] = []
    for part in _parts(data):
        if part[:1] == b"r":
            meta, body = unpack(part[1:])
            out.append(Response.from_wire(meta, body))
        else:
            err = json.loads(part[1:])
            out.append(error_for(int(err["status"]), str(err["message"])))
    return out


# --- the child ---------------------------------------------------------------------------------------------

def _serve(sock: socket.socket, function_dir: str, retain_freed_memory: bool, parent: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the watchdog drains first, then closes the socket
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    started = time.perf_counter()
    try:
        handler = load_here(function_dir, retain_freed_memory)
    except Exception as exc:  # noqa: BLE001 - reported to the watchdog, which fails the start with it
        message = str(exc) if isinstance(exc, HandlerNotFound) else f"load failed: {type(exc).__name__}: {exc}"
        _send_frame(sock, b"F" + message.encode("utf-8", "replace"))
        return 1
    freeze_loaded_objects()
    _send_frame(sock, b"H" + json.dumps({"pid": os.getpid(),
                                         "load_seconds": time.perf_counter() - started}).encode())
    while True:
        try:
            requests = _decode_batch(_recv_frame(sock))
        except EOFError:
            return 0
        _send_frame(sock, _run(handler.handle, requests))


def _run(handle: Callable[[list[Request]], Any], requests: list[Request]) -> bytes:
    try:
        outputs = handle(requests)
    except BaseException as exc:  # noqa: BLE001 - a user handler may raise anything, sys.exit() included (as
        # in-process: a failure of its requests, not of the process); the watchdog bisects
        if len(requests) == 1:  # the watchdog bisects down to this: the user's traceback shows only here
            log_failure(requests[0].id, exc)
        elif not isinstance(exc, BadInput):
            logger.debug("handle_batch raised on a batch of %d", len(requests), exc_info=True)
        return b"X" + _error_json(as_batch_error(exc), whole=False)
    breach = shape_error(outputs)
    if breach:
        return b"X" + _error_json(HandlerFailed(breach), whole=True)
    return _encode_outputs(list(outputs))


def _exit_with(parent: int) -> None:
    """End this process once the watchdog is gone, even in the middle of a batch (end of file on the
    socket is seen only between batches). The parent is the watchdog process, not the thread that started
    us, so ``PR_SET_PDEATHSIG`` (which follows the thread) would not do."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def main(argv: list[str]) -> int:
    """Child entry: ``python -m watchdog.handler_process FD FUNCTION_DIR RETAIN_FREED_MEMORY PARENT_PID``."""
    logging.basicConfig(level=env_level(os.environ),  # checked by the watchdog that started us
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return _serve(sock, argv[1], argv[2] == "1", int(argv[3]))
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the watchdog went away mid-batch


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
