"""Invocations: ``/function/{name}[.{namespace}][/path]`` forwarded to the least busy ready replica.

As faas-provider's proxy: method, sub-path, query, headers and body go through (chunked bodies arrive
decoded), ``X-Forwarded-Host``/``-For`` are added when missing, and the watchdog's status, headers and body
come back. As the gateway does, every request gets ``X-Call-Id`` (the caller's, else a new uuid4) and
``X-Start-Time`` (the caller's when it is unix nanoseconds, as a gateway in front of us sends it, else when
the provider took it), sent to the replica and set on every answer.
Connections to replicas are pooled and kept alive; a request goes again, to the least busy ready replica,
only when it cannot have been run (``provider.upstream``: Go's Transport rule); a failure is answered 500
``Can't reach service for: NAME.`` with what went wrong. A request that cannot reach any replica in
``cold_start_timeout`` gets 503 ``No endpoints available for: NAME.`` (NAME as the path has it, namespace
included when given); one with no function name gets 400, as faas-provider answers both.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from http import HTTPStatus
from typing import Callable, Iterable
from urllib.parse import quote, urlsplit

from flask import Response

from provider.function import FunctionState, write_timeout
from provider.metrics import GatewayMetrics
from provider.runtime import Runtime
from provider.upstream import Closed, ExchangeError, Refused

logger = logging.getLogger(__name__)

TRACE_HEADERS = frozenset(("x-call-id", "x-start-time"))
# A caller's X-Start-Time that is kept: unix nanoseconds (the gateway's, behind it), at most 19 digits (int64).
START_TIME = re.compile(r"[0-9]{1,19}")
INT64_MAX = 2**63 - 1
# A request target in absolute form starts with a scheme (RFC 3986 3.1) and "://".
ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What a path keeps unencoded (RFC 3986 pchar and "/"); "%" is not kept: PATH_INFO is already decoded.
PATH_SAFE = "/:@!$&'()*+,;=~"
# Replicas (or connections) one request is tried on: a refused connection, or a failure that proves the
# request was not run (``provider.upstream``), moves it on to the next.
ATTEMPTS = 3
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"))


def split_name(segment: str, default_namespace: str) -> tuple[str, str]:
    """``name.namespace`` or ``name`` -> (name, namespace)."""
    name, _, namespace = segment.partition(".")
    return name, namespace or default_namespace


def plain_error(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """A text answer shaped like Go's http.Error (text/plain, nosniff)."""
    response = Response(text, status, content_type="text/plain; charset=utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


Answer = tuple[int, list[tuple[str, str]], bytes]


def error_answer(status: int, text: str, extra: tuple[tuple[str, str], ...] = ()) -> Answer:
    """A text answer shaped like Go's http.Error, as (status, headers, body)."""
    body = text.encode()
    return status, [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
                    *extra], body


def no_name() -> Answer:
    """faas-provider's 400 for ``/function/`` with no function name."""
    return error_answer(400, "Provide function name in the request path", (("X-Openfaas-Internal", "proxy"),))


def no_endpoints(name: str, why: str = "") -> Answer:
    """faas-provider's 503 for a function with no replica to take a request (``why`` appended when known)."""
    text = f"No endpoints available for: {name}." + (f" {why[:1].upper()}{why[1:]}." if why else "")
    return error_answer(503, text, (("X-Openfaas-Internal", "proxy"),))


class Proxy:
    """Forwards invocations and records the gateway metrics. A plain WSGI app: invocations skip Flask."""

    def __init__(self, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Serve one ``/function/...`` request."""
        started = time.perf_counter()
        trace = new_trace(environ)
        segment = function_segment(environ)
        name, namespace = split_name(segment, self.runtime.config.namespace)
        fn = self.runtime.find(name) if namespace == self.runtime.config.namespace else None
        self.metrics.on_start(name, known=fn is not None, namespace=namespace)
        if not segment:  # faas-provider's 400 is for no segment at all; ".ns" goes on to its 503
            status, headers, body = no_name()
        elif fn is None:
            status, headers, body = no_endpoints(segment)
        else:
            self.runtime.count_invocation(name)
            try:
                request_body = environ["wsgi.input"].read()
            except Exception as exc:  # noqa: BLE001 - a client that breaks off mid-body
                status, headers, body = error_answer(400, f"cannot read the request body: {exc}\n")
            else:
                status, headers, body = self.forward(fn, environ["REQUEST_METHOD"], target_of(environ),
                                                     forward_headers(environ, trace), request_body, segment)
        self.metrics.on_done(name, status, time.perf_counter() - started, namespace)
        return respond(start_response, status, headers, body, trace)

    def forward(self, fn: FunctionState, method: str, target: str, headers: dict[str, str], body: bytes,
                called: str = "") -> Answer:
        """Send one request to the least busy ready replica of ``fn`` (waiting for one up to
        ``cold_start_timeout``); the watchdog's answer, or the provider's 503/500 naming the function as
        ``called`` (default: its name)."""
        called = called or fn.name
        timeout = write_timeout(fn.spec) + 10
        failed = ""  # the last failure that let the request go again
        for _ in range(ATTEMPTS):
            replica = self.runtime.acquire(fn, self.runtime.config.cold_start_timeout)
            if replica is None:
                with self.runtime.lock:
                    why = fn.failing(time.monotonic())
                return no_endpoints(called, why)
            try:
                status, got, data = replica.upstream.exchange(method, target, headers, body, timeout)
            except Refused:
                logger.info("function %s: replica %s refused a connection; trying another",
                            fn.name, replica.instance_id)
                self.runtime.refused(fn, replica)
                continue
            except ExchangeError as exc:
                failed = f"Replica {replica.instance_id} failed: {exc}."
                if exc.retry:
                    logger.info("function %s: replica %s: %s; sending the request again", fn.name,
                                replica.instance_id, exc)
                    continue
                logger.warning("function %s: replica %s failed: %s", fn.name, replica.instance_id, exc)
                if isinstance(exc, Closed):
                    failed += f" The function may have received it: a {method} is not sent twice."
                if replica.fault:
                    failed += f" Its replica {replica.instance_id} was stopped: {replica.fault}."
                return error_answer(500, f"Can't reach service for: {called}. {failed}\n")
            finally:
                replica.release()
            # A HEAD answer has no body: its Content-Length is the watchdog's, the size a GET would get.
            return status, [(k, v) for k, v in got if k.lower() not in HOP_BY_HOP
                            or (method == "HEAD" and k.lower() == "content-length")], data
        if failed:
            return error_answer(500, f"Can't reach service for: {called}. {failed} Tried {ATTEMPTS} times.\n")
        return no_endpoints(called)


def new_trace(environ: dict) -> tuple[tuple[str, str], ...]:
    """X-Call-Id (the caller's, else a new uuid4) and X-Start-Time (the caller's when well formed, else now,
    unix nanoseconds)."""
    start = environ.get("HTTP_X_START_TIME", "").strip()
    if not START_TIME.fullmatch(start) or int(start) > INT64_MAX:
        start = str(time.time_ns())
    return (("X-Call-Id", environ.get("HTTP_X_CALL_ID") or str(uuid.uuid4())), ("X-Start-Time", start))


def function_segment(environ: dict) -> str:
    """``name[.namespace]`` from ``/function/...`` or ``/async-function/...``."""
    path = environ.get("PATH_INFO", "")
    return path[path.index("function/") + len("function/"):].partition("/")[0]


def forward_headers(environ: dict, trace: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The headers a replica gets: the client's end-to-end ones, X-Forwarded-*, and the trace."""
    headers = {k: v for k, v in _request_headers(environ).items() if k.lower() not in TRACE_HEADERS}
    headers.update(trace)
    return headers


def respond(start_response: Callable, status: int, headers: list[tuple[str, str]], body: bytes,
            trace: tuple[tuple[str, str], ...]) -> list[bytes]:
    """Start the WSGI answer with the trace headers and a Content-Length (the body's, unless ``headers`` has
    one: a HEAD answer's)."""
    headers = [(k, v) for k, v in headers if k.lower() not in TRACE_HEADERS] + list(trace)
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} {reason(status)}", headers)
    return [body]


def _request_headers(environ: dict) -> dict[str, str]:
    """The client's end-to-end headers, plus X-Forwarded-Host/-For when missing (as faas-provider)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key == "CONTENT_TYPE" and value:
            name = "Content-Type"
        else:
            continue
        if name.lower() not in HOP_BY_HOP:
            headers[name] = value
    if environ.get("HTTP_HOST"):
        headers.setdefault("X-Forwarded-Host", environ["HTTP_HOST"])
    if environ.get("REMOTE_ADDR"):
        port = environ.get("REMOTE_PORT")
        headers.setdefault("X-Forwarded-For", f"{environ['REMOTE_ADDR']}:{port}" if port else environ["REMOTE_ADDR"])
    return headers


def target_of(environ: dict) -> str:
    """The replica's request target: the sub-path as sent (percent-encoding kept, from gunicorn's RAW_URI, in
    origin or absolute form) and the query. Without a usable RAW_URI, PATH_INFO (decoded) is encoded again:
    the request line takes no space, control or non-ASCII character (http.client refuses them)."""
    prefix = "/async-function/" if environ.get("PATH_INFO", "").startswith("/async-function/") else "/function/"
    raw = environ.get("RAW_URI", "").split("?", 1)[0]
    if ABSOLUTE_FORM.match(raw):  # "POST http://host/function/NAME/... HTTP/1.1" (RFC 9112 3.2.2)
        raw = urlsplit(raw).path
    if not raw.startswith(prefix):
        raw = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe=PATH_SAFE)  # WSGI: bytes as latin-1
    slash = raw.find("/", len(prefix))
    target = raw[slash:] if slash >= 0 else "/"
    query = environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` (as Go and the RFCs spell it), else Unknown."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
