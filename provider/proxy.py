"""Invocations: ``/function/{name}[.{namespace}][/path]`` forwarded to the least busy ready replica.

As faas-provider's proxy: method, sub-path, query, headers and body go through (chunked bodies arrive
decoded), ``X-Forwarded-Host``/``-For`` are added when missing, and the watchdog's status, headers and body
come back. Connections to replicas are pooled and kept alive. A request that cannot reach any replica in
``cold_start_timeout`` gets 503 ``No endpoints available for: NAME.``
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import urllib3
from flask import Request, Response

from provider.errors import BadRequest
from provider.function import FunctionState, write_timeout
from provider.metrics import GatewayMetrics
from provider.runtime import Runtime

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"))


class RawResponse(Response):
    """A response that adds no Content-Type of its own (the function's, or none)."""

    default_mimetype = None


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


def no_endpoints(name: str) -> Response:
    """faas-provider's answer when no replica can take the request."""
    return plain_error(503, f"No endpoints available for: {name}.", {"X-Openfaas-Internal": "proxy"})


class Proxy:
    """Forwards invocations and records the gateway metrics."""

    def __init__(self, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def invoke(self, request: Request, segment: str, path: str) -> Response:
        """Serve one invocation of ``segment`` (``name[.namespace]``) at sub-path ``path``."""
        started = time.perf_counter()
        name, namespace = split_name(segment, self.runtime.config.namespace)
        self.metrics.on_start(name)
        fn = self.runtime.find(name) if namespace == self.runtime.config.namespace else None
        if fn is None:
            response = no_endpoints(name)
        else:
            self.runtime.count_invocation(name)
            response = self._forward(fn, request, path)
        self.metrics.on_done(name, response.status_code, time.perf_counter() - started)
        return response

    def _forward(self, fn: FunctionState, request: Request, path: str) -> Response:
        try:
            body = request.get_data(cache=False)
        except Exception as exc:  # noqa: BLE001 - a client that breaks off mid-body
            raise BadRequest(f"cannot read the request body: {exc}") from None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.setdefault("X-Forwarded-Host", request.host)
        if request.remote_addr:
            headers.setdefault("X-Forwarded-For", f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '')}"
                               .rstrip(":"))
        target = _target(request, path)
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        timeout = urllib3.Timeout(connect=2.0, read=write_timeout(fn.spec) + 10)
        for attempt in range(3):
            replica = self.runtime.acquire(fn, self.runtime.config.cold_start_timeout)
            if replica is None:
                return no_endpoints(fn.name)
            try:
                upstream = replica.pool.urlopen(request.method, target, body=body, headers=headers,
                                                retries=False, redirect=False, timeout=timeout,
                                                preload_content=True, decode_content=False,
                                                assert_same_host=False)
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError):
                logger.info("function %s: replica %s refused a connection; trying another",
                            fn.name, replica.instance_id)
                continue
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                logger.warning("function %s: replica %s failed: %s", fn.name, replica.instance_id, exc)
                return plain_error(500, f"Can't reach service for: {fn.name}.\n")
            finally:
                replica.release()
            return _relay(upstream)
        return no_endpoints(fn.name)


def _target(request: Request, path: str) -> str:
    """The sub-path as sent (percent-encoding kept), from gunicorn's RAW_URI when there is one."""
    raw = request.environ.get("RAW_URI", "").split("?", 1)[0]
    marker = raw.find("/", len("/function/"))
    if raw.startswith("/function/"):
        return raw[marker:] if marker >= 0 else "/"
    return "/" + quote(path)


def _relay(upstream: urllib3.BaseHTTPResponse) -> Response:
    response = RawResponse(upstream.data, upstream.status)
    for key, value in upstream.headers.items():
        if key.lower() not in HOP_BY_HOP:
            response.headers.add(key, value)
    return response
