"""The HTTP face of the watchdog: OpenFaaS routes and the function route, as a Flask app factory."""

from __future__ import annotations

import logging
import socket
import time

from flask import Flask, Response as FlaskResponse, request as flask_request
from werkzeug.exceptions import RequestEntityTooLarge

from batcher.errors import BatchError, PayloadTooLarge
from batcher.request import Request
from faas_infer.units import parse_duration
from watchdog.errors import RequestTimeout, TooManyRequests, status_of
from watchdog.runtime import Runtime

logger = logging.getLogger(__name__)

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def create_app(runtime: Runtime) -> Flask:
    """The WSGI app serving ``/_/health``, ``/_/ready`` and every other path to the handler."""
    app = Flask("watchdog")
    app.config["MAX_CONTENT_LENGTH"] = runtime.config.max_request_bytes
    config = runtime.config
    metrics = runtime.metrics

    @app.route("/_/health", methods=["GET"])
    def health() -> FlaskResponse:
        if runtime.lifecycle.healthy():
            return FlaskResponse("OK", 200, mimetype="text/plain")
        return FlaskResponse("Not healthy", 503, mimetype="text/plain")

    @app.route("/_/ready", methods=["GET"])
    def ready() -> FlaskResponse:
        if not runtime.lifecycle.accepting:
            return FlaskResponse("Not ready", 503, mimetype="text/plain")
        if runtime.at_capacity():
            return FlaskResponse("Concurrent request limit reached", 429, mimetype="text/plain")
        return FlaskResponse("OK", 200, mimetype="text/plain")

    def invoke(path: str = "") -> FlaskResponse:
        started = time.perf_counter()
        method = flask_request.method
        if not runtime.try_enter():
            response = FlaskResponse(
                f"Concurrent request limit exceeded. Max concurrent requests: {config.max_inflight}\n", 429,
                mimetype="text/plain")
        else:
            try:
                response = _handle(runtime, config.read_timeout)
            finally:
                runtime.leave()
        elapsed = time.perf_counter() - started
        response.headers["X-Duration-Seconds"] = f"{elapsed:.6f}"
        code = str(response.status_code)
        metrics.requests.inc(code=code, method=method.lower())
        metrics.duration.observe(elapsed, code=code, method=method.lower())
        return response

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(rule, "invoke" if rule == "/" else "invoke_path", invoke, methods=METHODS,
                         provide_automatic_options=False)
    return app


def _handle(runtime: Runtime, read_timeout: float) -> FlaskResponse:
    try:
        request = _read_request(read_timeout)
        x_timeout = flask_request.headers.get("X-Timeout")
        timeout = runtime.request_timeout(_x_timeout(x_timeout))
        result = runtime.submit(request, timeout)
    except (BatchError, RequestTimeout, TooManyRequests) as exc:
        status = status_of(exc)
        if status >= 500 and status != 503:
            runtime.metrics.failed.inc(code=str(status))
        return FlaskResponse(f"{exc}\n", status, mimetype="text/plain")
    return FlaskResponse(result.body, result.status, headers=dict(result.headers))


def _read_request(read_timeout: float) -> Request:
    sock = flask_request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(read_timeout)
    try:
        body = flask_request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"request body over max_request_bytes={flask_request.max_content_length}") from None
    except (socket.timeout, TimeoutError):
        raise RequestTimeout(f"request body not received within read_timeout={read_timeout:g}s") from None
    finally:
        if sock is not None:
            sock.settimeout(None)
    headers = {k: v for k, v in flask_request.headers.items()}
    return Request(body=body, headers=headers, method=flask_request.method, path=flask_request.path,
                   query=flask_request.query_string.decode("latin-1"))


def _x_timeout(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None
