"""The provider's Flask app: one route table, basic auth in front of it, errors answered like Go's http.Error."""

from __future__ import annotations

import logging

from flask import Flask, Response, request

from provider.api import SystemApi
from provider.auth import REALM, Credentials, protected
from provider.errors import ProviderError
from provider.metrics import GatewayMetrics
from provider.proxy import Proxy, plain_error, reason
from provider.queueworker import QueueWorker
from provider.runtime import Runtime

logger = logging.getLogger(__name__)

ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

# (methods, rule, handler name on SystemApi or Proxy) — the whole API.
ROUTES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("GET",), "/system/functions", "list_functions"),
    (("POST",), "/system/functions", "deploy"),
    (("PUT",), "/system/functions", "update"),
    (("DELETE",), "/system/functions", "delete"),
    (("GET",), "/system/function/<name>", "get_function"),
    (("POST",), "/system/scale-function/<name>", "scale"),
    (("GET",), "/system/info", "info"),
    (("GET",), "/system/namespaces", "namespaces"),
    (("GET",), "/system/logs", "logs"),
    (tuple(ALL_METHODS), "/system/secrets", "secrets"),  # 501: not supported
    (("GET",), "/healthz", "healthz"),
    (("GET",), "/metrics", "metrics_text"),
    (("GET",), "/api/v1/query", "prometheus_query"),
    (tuple(ALL_METHODS), "/function/<name[.namespace]>[/path]", "invoke"),  # served by Proxy, before Flask
    (tuple(ALL_METHODS), "/async-function/<name[.namespace]>[/path]", "enqueue"),  # QueueWorker, before Flask
)


def create_app(runtime: Runtime, metrics: GatewayMetrics, credentials: Credentials | None) -> Flask:
    """The WSGI app; ``credentials`` None means basic auth is off (any Authorization header is ignored)."""
    app = Flask("provider")
    api = SystemApi(runtime, metrics)
    proxy = Proxy(runtime, metrics)
    queue_worker = QueueWorker(runtime, metrics, proxy)
    app.extensions["faas_infer"] = {"runtime": runtime, "metrics": metrics, "queue_worker": queue_worker}
    metrics.watch_replicas(lambda: [(fn.name, fn.desired) for fn in runtime.list()])

    def view(handler_name: str):
        handler = getattr(api, handler_name)
        return lambda **kwargs: handler(request, **kwargs)

    for methods, rule, handler_name in ROUTES:
        if handler_name in ("invoke", "enqueue"):
            continue
        app.add_url_rule(rule, f"{handler_name}:{rule}", view(handler_name), methods=list(methods),
                         provide_automatic_options=False, strict_slashes=False)

    @app.before_request
    def check_auth():
        if credentials is not None and protected(request.path) and \
                not credentials.accepts(request.headers.get("Authorization")):
            return plain_error(401, "invalid credentials\n", {"WWW-Authenticate": REALM})
        return None

    @app.after_request
    def reason_phrase(response: Response) -> Response:
        # Go's reason phrases, as the OpenFaaS gateway sends them ("202 Accepted"): Werkzeug writes them in
        # capitals ("202 ACCEPTED"), and faas-cli prints the status line as it comes ("Deployed. 202 ...").
        response.status = f"{response.status_code} {reason(response.status_code)}"
        return response

    @app.errorhandler(ProviderError)
    def provider_error(exc: ProviderError) -> Response:
        return plain_error(exc.status, f"{exc}\n")

    @app.errorhandler(404)
    def not_found(exc) -> Response:
        return plain_error(404, "404 page not found\n")

    @app.errorhandler(405)
    def not_allowed(exc) -> Response:
        return plain_error(405, "Method Not Allowed\n")

    flask_wsgi = app.wsgi_app

    def dispatch(environ: dict, start_response):
        # Invocations are the hot path: no auth (as OpenFaaS), no Flask routing or request objects.
        path = environ.get("PATH_INFO", "")
        if path.startswith("/function/"):
            return proxy(environ, start_response)
        if path.startswith("/async-function/"):
            return queue_worker(environ, start_response)
        return flask_wsgi(environ, start_response)

    app.wsgi_app = dispatch
    return app
