"""Asynchronous invocations: ``/async-function/{name}[.{namespace}][/path]``, as the OpenFaaS gateway with
its NATS queue-worker serves them, without NATS.

The request is answered at once with 202 Accepted, ``X-Call-Id`` and ``X-Start-Time``, and kept in a
bounded in-memory queue (``max_async_queue``; beyond it 429). ``async_workers`` threads take calls in
order and send each through the same path as ``/function`` (``Proxy.forward``). When the request had an
``X-Callback-Url`` (http or https only), the function's answer is POSTed to it as the queue-worker posts it:
the function's headers and body, plus ``X-Call-Id``, ``X-Function-Status``, ``X-Function-Name`` and
``X-Duration-Seconds``. Callbacks are made by threads of their own (as many, with a queue as long), so a
slow receiver never holds up invocations, and each is cut off ``callback_timeout`` after it starts, however
slowly the receiver trickles bytes. A callback that fails, or finds its queue full, is logged once and not
retried. Calls still queued when the provider stops are dropped (logged), as a queue-worker without a
persistent queue would.
"""

from __future__ import annotations

import http.client
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from provider.metrics import GatewayMetrics
from provider.proxy import (HOP_BY_HOP, TRACE_HEADERS, Answer, Proxy, error_answer, forward_headers,
                            function_segment, new_trace, no_endpoints, respond, split_name, target_of)
from provider.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsyncCall:
    """One accepted ``/async-function`` request, everything needed to run it later."""

    # Function name (the path's, namespace removed).
    name: str
    # Namespace from the path (the default when none).
    namespace: str
    # HTTP method, sub-path with query, and headers (trace included) sent to the replica.
    method: str
    target: str
    headers: dict[str, str]
    # The request body.
    body: bytes
    # The call's X-Call-Id.
    call_id: str
    # Where to POST the answer; empty: nowhere.
    callback_url: str


def callback_error(url: str) -> str:
    """Why ``url`` cannot be a callback ("" when it can): only absolute http(s) URLs are called."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"X-Callback-Url {url!r} is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"X-Callback-Url {url!r} must be an absolute http:// or https:// URL"
    return ""


class QueueWorker:
    """The ``/async-function`` WSGI app, its bounded queue and its worker threads (started on first use)."""

    def __init__(self, runtime: Runtime, metrics: GatewayMetrics, proxy: Proxy) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.proxy = proxy
        self.calls: queue.Queue[AsyncCall] = queue.Queue(runtime.config.max_async_queue)
        self.callbacks: queue.Queue[tuple[AsyncCall, Answer, float]] = queue.Queue(runtime.config.max_async_queue)
        self._workers: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Accept one ``/async-function/...`` request: 202, or 400/404/429 saying why not."""
        started = time.perf_counter()
        trace = new_trace(environ)
        name, namespace = split_name(function_segment(environ), self.runtime.config.namespace)
        known = namespace == self.runtime.config.namespace and self.runtime.find(name) is not None
        self.metrics.on_start(name, known, namespace)
        status, headers, body = self._accept(environ, name, namespace, known, trace)
        self.metrics.on_done(name, status, time.perf_counter() - started, namespace)
        return respond(start_response, status, headers, body, trace)

    def _accept(self, environ: dict, name: str, namespace: str, known: bool,
                trace: tuple[tuple[str, str], ...]) -> Answer:
        callback = environ.get("HTTP_X_CALLBACK_URL", "").strip()
        problem = callback_error(callback) if callback else ""
        if problem:
            return error_answer(400, problem + "\n")
        if not known:
            return error_answer(404, f"function {name} not found in namespace {namespace}\n")
        if self.runtime.stopping:
            return error_answer(503, "the provider is stopping: async calls are not accepted\n")
        try:
            body = environ["wsgi.input"].read()
        except Exception as exc:  # noqa: BLE001 - a client that breaks off mid-body
            return error_answer(400, f"cannot read the request body: {exc}\n")
        call = AsyncCall(name, namespace, environ["REQUEST_METHOD"], target_of(environ),
                         forward_headers(environ, trace), body, dict(trace)["X-Call-Id"], callback)
        self._start_workers()
        try:
            self.calls.put_nowait(call)
        except queue.Full:
            limit = self.runtime.config.max_async_queue
            return error_answer(429, f"async queue is full (max_async_queue={limit} calls waiting): "
                                     f"retry later\n")
        return 202, [], b""

    def _start_workers(self) -> None:
        with self._start_lock:
            while len(self._workers) < 2 * self.runtime.config.async_workers:
                n = len(self._workers)
                run, kind = (self._work, "async") if n % 2 == 0 else (self._call_backs, "callback")
                worker = threading.Thread(target=run, name=f"{kind}-{n // 2}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _work(self) -> None:
        while True:
            call = self.calls.get()
            if self.runtime.stopping:
                logger.warning("provider stopping: async call %s of %s dropped", call.call_id, call.name)
                continue
            try:
                self.run(call)
            except Exception:  # the worker must survive any one call
                logger.exception("async call %s of %s failed", call.call_id, call.name)

    def run(self, call: AsyncCall) -> Answer:
        """Invoke the function as ``/function`` would (counted in the gateway metrics), then call back."""
        started = time.perf_counter()
        self.metrics.on_start(call.name, namespace=call.namespace)
        fn = self.runtime.find(call.name)
        if fn is None:
            answer = no_endpoints(call.name)
        else:
            self.runtime.count_invocation(call.name)
            answer = self.proxy.forward(fn, call.method, call.target, call.headers, call.body)
        seconds = time.perf_counter() - started
        self.metrics.on_done(call.name, answer[0], seconds, call.namespace)
        logger.debug("async call %s of %s answered %d in %.3fs", call.call_id, call.name, answer[0], seconds)
        if call.callback_url:
            try:
                self.callbacks.put_nowait((call, answer, seconds))
            except queue.Full:
                logger.warning("async call %s of %s: callback to %s dropped: %d callbacks waiting", call.call_id,
                               call.name, call.callback_url, self.callbacks.qsize())
        return answer

    def _call_backs(self) -> None:
        while True:
            call, answer, seconds = self.callbacks.get()
            try:
                self.call_back(call, answer, seconds)
            except Exception:  # the thread must survive any one callback
                logger.exception("async call %s of %s: callback failed", call.call_id, call.name)

    def call_back(self, call: AsyncCall, answer: Answer, seconds: float) -> None:
        """POST the function's answer to the call's X-Callback-Url once; a failure is logged."""
        status, function_headers, body = answer
        headers = {k: v for k, v in function_headers
                   if k.lower() not in HOP_BY_HOP and k.lower() not in TRACE_HEADERS}
        headers.update({"X-Call-Id": call.call_id, "X-Function-Status": str(status),
                        "X-Function-Name": call.name, "X-Duration-Seconds": f"{seconds:f}"})
        try:
            status = post(call.callback_url, body, headers, self.runtime.config.callback_timeout)
        except (http.client.HTTPException, OSError, ValueError) as exc:
            logger.warning("async call %s of %s: callback to %s failed: %s", call.call_id, call.name,
                           call.callback_url, exc or type(exc).__name__)
            return
        if status >= 300:
            logger.warning("async call %s of %s: callback to %s answered %d", call.call_id, call.name,
                           call.callback_url, status)


def post(url: str, body: bytes, headers: dict[str, str], limit: float) -> int:
    """POST ``body`` to ``url`` and return the status, cut off ``limit`` seconds after the start whatever the
    receiver does (a socket timeout bounds each read only: a byte every few seconds would hold it forever)."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=limit)
    timer = threading.Timer(limit, _cut, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers)
        reply = conn.getresponse()
        reply.read(64 * 1024)
        return reply.status
    finally:
        timer.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
