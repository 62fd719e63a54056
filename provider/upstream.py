"""Keep-alive connections to one replica, and one exchange over them that says whether it may be sent again.

The proxy retries by Go's net/http Transport rule (what the OpenFaaS gateway runs): a request that failed may
go again on another connection only when the replica cannot have run it. Three cases are told apart, which
urllib3's pool cannot do (it swallows a reset while the request is written and reads the answer anyway):

- the connection could not be made (``Refused``): nothing was sent;
- writing failed and no answer came (``Unsent``): the last bytes never left, so the replica never had a
  complete request, and neither the watchdog nor a WSGI server hands an incomplete one to the function: any
  method goes again. A replica may answer before reading the whole request and close (the watchdog's 413
  for a body over ``max_request_bytes``): that answer is passed on;
- a connection used before was closed or reset before the first byte of an answer (``Closed``): the
  replica may have closed it while idle (keep-alive timeout, shutdown) before reading the request, or read it
  and died running it. Nothing on the client's side tells these apart, so only a replayable request goes
  again (GET, HEAD, OPTIONS, TRACE, or one with an ``Idempotency-Key``: Go's ``isReplayable``); a POST
  is answered with the error, never sent twice.

Anything else (a timeout, an answer broken off) is ``Failed``. Idle connections are closed before the
watchdog's keep-alive (75 s) could close them under a request (all of them: ``prune``, on every request and
every supervisor tick), and checked for a close before reuse.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass

from urllib3.util.wait import wait_for_read

# A connection idle this long is closed, not reused: under the watchdog's 75 s keep-alive (watchdog.aio's
# KEEPALIVE_SECONDS, gunicorn's keepalive), so the replica never closes one as the provider sends on it.
IDLE_SECONDS = 60.0
# Idle connections kept per replica (more are closed when given back).
MAX_IDLE = 256
# Methods Go's Transport sends again after a reused connection failed before any answer (isReplayable).
REPLAYABLE = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
IDEMPOTENCY_HEADERS = frozenset(("idempotency-key", "x-idempotency-key"))
# How long an answer sent before the request was read whole (``_early_answer``) is waited for.
EARLY_ANSWER_SECONDS = 1.0

Answer = tuple[int, list[tuple[str, str]], bytes]


class ExchangeError(Exception):
    """An exchange with a replica failed; ``retry`` says whether the request may be sent again."""

    retry = False


class Refused(ExchangeError):
    """No connection could be made: nothing was sent."""

    retry = True


class Unsent(ExchangeError):
    """Writing the request failed: the replica never had all of it."""

    retry = True


class Closed(ExchangeError):
    """A reused connection was closed before any answer; ``retry`` when the request is replayable."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Failed(ExchangeError):
    """Any other failure (timeout, broken answer, a fresh connection closed): not sent again."""


def _early_answer(conn: http.client.HTTPConnection) -> Answer | None:
    """The answer a replica sent before it read the whole request and closed the connection (the watchdog's
    413 for a body over ``max_request_bytes``, told by its Content-Length), or None when none came. An answer
    sent that way is already here: it is waited for briefly, not for the request's timeout."""
    if conn.sock is None:
        return None
    try:
        conn.sock.settimeout(EARLY_ANSWER_SECONDS)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    except (OSError, http.client.HTTPException):
        return None


def replayable(method: str, headers: dict[str, str]) -> bool:
    """Whether a request may be sent twice (Go's ``Request.isReplayable``)."""
    return method.upper() in REPLAYABLE or any(k.lower() in IDEMPOTENCY_HEADERS for k in headers)


@dataclass
class _Idle:
    conn: http.client.HTTPConnection
    since: float


class Upstream:
    """Pooled keep-alive connections to ``127.0.0.1:port``; thread-safe."""

    def __init__(self, port: int, host: str = "127.0.0.1", connect_timeout: float = 2.0,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.host, self.port = host, port
        self.connect_timeout, self.idle_seconds = connect_timeout, idle_seconds
        self._idle: list[_Idle] = []
        self._lock = threading.Lock()
        self._closed = False

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
        """Send one request and read its whole answer (status, headers, body); ``ExchangeError`` on failure."""
        conn, reused = self._take()
        try:
            if not reused:
                try:
                    conn.connect()
                except OSError as exc:
                    raise Refused(f"connection refused: {exc}") from exc
            conn.sock.settimeout(timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
            except OSError as exc:
                early = _early_answer(conn)
                if early is None:
                    raise Unsent(f"the connection broke while the request was sent ({exc})") from exc
                conn.close()  # the replica closed it: its answer came before the whole request was read
                return early
            try:
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                if reused:
                    raise Closed(f"it closed a reused keep-alive connection before answering ({exc})",
                                 replayable(method, headers)) from exc
                raise Failed(f"it closed the connection before answering ({exc})") from exc
            except socket.timeout as exc:
                raise Failed(f"no answer within {timeout:g}s") from exc
            try:
                data = response.read()
            except socket.timeout as exc:
                raise Failed(f"its answer stopped arriving (no data within {timeout:g}s)") from exc
            answer = response.status, response.getheaders(), data
        except ExchangeError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Failed(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._give(conn)
        return answer

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """The most recently used idle connection still open (True), else a new one, not connected (False)."""
        self.prune()
        while True:
            with self._lock:
                if self._closed:  # the replica is gone and its port may be someone else's by now
                    raise Refused(f"the replica on port {self.port} was released")
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                return http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout), False
            # younger than idle_seconds (``prune`` just closed the others); readable when idle: closed by the peer
            if idle.conn.sock is not None and not wait_for_read(idle.conn.sock, timeout=0.0):
                return idle.conn, True
            idle.conn.close()

    def prune(self, now: float | None = None) -> None:
        """Close the connections idle ``idle_seconds`` or more. Requests reuse the newest idle connection, so
        after a burst the older ones are never reached: without this they would stay open past the replica's
        keep-alive, and then in CLOSE_WAIT (an fd each) until the replica exits."""
        now = time.monotonic() if now is None else now
        with self._lock:
            # Given back in order, so oldest first: the expired ones are a prefix.
            cut = next((i for i, item in enumerate(self._idle) if now - item.since < self.idle_seconds),
                       len(self._idle))
            expired, self._idle[:cut] = self._idle[:cut], []
        for item in expired:
            item.conn.close()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` for reuse unless the answer closed it (``Connection: close``) or the pool is closed."""
        if conn.sock is None:
            return
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(_Idle(conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for item in idle:
            item.conn.close()
