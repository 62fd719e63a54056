"""The HTTP face of the watchdog: OpenFaaS's routes and the function route, as a plain WSGI app.

Every request of every function passes here, so it is a small WSGI callable rather than a framework app:
profiling under load showed the framework's dispatch and request objects costing about a fifth of the
watchdog's CPU per request. ``create_app(runtime)`` is the factory.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Callable, Iterable
from urllib.parse import unquote

from batcher.errors import BatchError, PayloadTooLarge
from batcher.request import Request, call_id
from faas_infer.units import parse_duration
from watchdog.errors import ClientGone, RequestTimeout, UnsupportedCoding
from watchdog.runtime import Runtime

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]
# Reason phrases of the statuses the watchdog and handlers answer with (shared with ``watchdog.aio``).
REASONS = {100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
           413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
           429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
           505: "HTTP Version Not Supported"}
# Statuses whose answer has no body (RFC 9110): what a handler gives with them is not sent.
BODILESS = frozenset({204, 304})
# Headers the HTTP server writes itself (framing, connection, date); a handler's own values are dropped:
# sent as well, two Content-Length values make the answer unreadable (Go's client, so the gateway: 502).
OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "keep-alive"})
# What a handler's response may not set: those, and X-Duration-Seconds, which the watchdog sets over the
# function's as of-watchdog does (sent twice, a client reads whichever value it reads first).
REPLACED_HEADERS = OWN_HEADERS | {"x-duration-seconds"}
_TEXT = "text/plain; charset=utf-8"
# The routes the watchdog answers itself, whatever the method (of-watchdog: 405 to all but GET, HEAD included);
# never the function's.
OWN_ROUTES = frozenset({"/_/health", "/_/ready"})


class WatchdogApp:
    """WSGI callable: ``/_/health`` and ``/_/ready`` (GET; 405 to other methods), every other path to the handler."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if not path.startswith("/"):  # "OPTIONS *": the asyncio engine refuses it too; a handler's path has "/"
            started = time.perf_counter()
            self.runtime.answered(400, environ["REQUEST_METHOD"], time.perf_counter() - started)
            return _timed_reply(start_response, started, 400,
                                f"request target must start with '/', got {path[:100]!r}\n".encode())
        if not path.isascii():  # gunicorn unquotes to bytes read as latin-1 (WSGI); handlers get text
            path = path.encode("latin-1").decode("utf-8", "replace")
        if path in OWN_ROUTES:
            started = time.perf_counter()
            status, headers, body = own_answer(self.runtime, environ["REQUEST_METHOD"], path)
            headers.append(("X-Duration-Seconds", f"{time.perf_counter() - started:.6f}"))
            return _reply(start_response, status, body, headers)
        return self._invoke(environ, path, start_response)

    def _invoke(self, environ: dict, path: str, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ["REQUEST_METHOD"]
        if not self.runtime.try_enter():
            status, headers, body = 429, [("Content-Type", _TEXT)], f"{self.runtime.too_many()}\n".encode()
        else:
            try:
                status, headers, body = self._run(environ, method, path)
            except ClientGone as exc:  # counted as abandoned, not answered, and closed unanswered (as the
                # asyncio engine does): gunicorn drops a connection on EPIPE without writing to it (logged at debug)
                raise BrokenPipeError(errno.EPIPE, str(exc)) from None
            finally:
                self.runtime.leave()
        elapsed = time.perf_counter() - started
        headers.append(("X-Duration-Seconds", f"{elapsed:.6f}"))
        self.runtime.answered(status, method, elapsed)
        return _reply(start_response, status, body, headers)

    def _run(self, environ: dict, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            request = _read_request(environ, method, path, self.config.read_timeout, self.config.max_request_bytes)
            timeout = self.runtime.request_timeout(parse_x_timeout(environ.get("HTTP_X_TIMEOUT")))
            sock = environ.get("gunicorn.socket")
            result = self.runtime.submit(request, timeout, None if sock is None else lambda: _closed_by_peer(sock))
        except (BatchError, RequestTimeout, UnsupportedCoding) as exc:
            return self.runtime.error_status(exc), [("Content-Type", _TEXT)], f"{exc}\n".encode()
        headers = [(k, v) for k, v in result.headers.items() if k.lower() not in REPLACED_HEADERS]
        return result.status, headers, result.body


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the client has closed (or reset) its side of the connection; bytes it sent ahead (a
    pipelined request) are only peeked at."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def own_answer(runtime: Runtime, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The answer to one of ``OWN_ROUTES`` (shared with ``watchdog.aio``): health or readiness for a GET, 405
    for any other method as of-watchdog answers (handed to the function, a POST ran a batch for a probe)."""
    if method != "GET":
        return 405, [("Content-Type", _TEXT), ("Allow", "GET")], f"method {method} not allowed on {path}\n".encode()
    status, body = runtime.health() if path == "/_/health" else runtime.readiness()
    return status, [("Content-Type", _TEXT)], body


def create_app(runtime: Runtime) -> WatchdogApp:
    """The WSGI app for ``runtime``."""
    return WatchdogApp(runtime)


def _reply(start_response: StartResponse, status: int, body: bytes,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = headers if headers is not None else [("Content-Type", _TEXT)]
    headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} {REASONS.get(status, 'Unknown')}", headers)
    return [body]


def _timed_reply(start_response: StartResponse, started: float, status: int, body: bytes) -> list[bytes]:
    """A plain-text answer of the watchdog's own, with ``X-Duration-Seconds`` (every answer carries it)."""
    elapsed = time.perf_counter() - started
    return _reply(start_response, status, body, [("Content-Type", _TEXT), ("X-Duration-Seconds", f"{elapsed:.6f}")])


def _read_request(environ: dict, method: str, path: str, read_timeout: float, limit: int) -> Request:
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    if coding is not None and coding.strip().lower() != "chunked":  # as the asyncio engine answers it
        raise UnsupportedCoding(f"Transfer-Encoding {coding[:40]!r} is not supported: chunked only")
    length = environ.get("CONTENT_LENGTH")
    if length and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes is over max_request_bytes={limit}")
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(read_timeout)
    try:
        body = environ["wsgi.input"].read(limit + 1) if length or _chunked(environ) else b""
    except (socket.timeout, TimeoutError):
        raise RequestTimeout(f"request body not received within read_timeout={read_timeout:g}s") from None
    finally:
        if sock is not None:
            sock.settimeout(None)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is over max_request_bytes={limit}")
    headers = _headers(environ)
    return Request(body=body, headers=headers, method=method, path=path, query=environ.get("QUERY_STRING", ""),
                   id=call_id(headers))


def _chunked(environ: dict) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _headers(environ: dict) -> dict[str, str]:
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["Content-Length"] = environ["CONTENT_LENGTH"]
    return headers


def decoded_path(target_path: str) -> str:
    """The path of a request target as a handler gets it from either engine: percent-escapes decoded and
    the bytes read as UTF-8, an invalid sequence as U+FFFD (as Flask's ``request.path``, so the python3-http
    template, has it). ``target_path`` is the path as sent, printable ASCII."""
    return unquote(target_path, errors="replace") if "%" in target_path else target_path


def parse_x_timeout(value: str | None) -> float | None:
    """Seconds from an ``X-Timeout`` header (``10s``, ``250ms``, seconds); None when absent or unreadable."""
    if not value:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None
