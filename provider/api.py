"""The ``/system`` handlers: list, deploy, update, delete, get, scale, info, namespaces, logs, and the two
read-only extras (``/healthz``, ``/metrics``, Prometheus' ``/api/v1/query`` for the gateway's list)."""

from __future__ import annotations

import json
import platform
import re
import threading
import time
from datetime import datetime
from typing import Iterator

from flask import Request, Response, stream_with_context

from faas_infer import __version__
from faas_infer.promtext import CONTENT_TYPE
from provider.errors import BadRequest, NotFound, NotImplementedByProvider, TooManyRequests
from provider.logstore import HEARTBEAT_SECONDS
from provider.metrics import GatewayMetrics
from provider.runtime import SECRETS_UNSUPPORTED, Runtime
from provider.types import DeleteFunctionRequest, FunctionDeployment, ScaleServiceRequest, gateway_info, provider_info

SHA = "faas-infer"
# The one Prometheus query served: what the gateway's list sends, sum(gateway_function_invocation_total
# {function_name=~".*.openfaas-fn"}) by (function_name). Any query merely naming the metric was answered with
# these sums, so `faas-infer top --prometheus <this provider>` showed no functions and no error.
_GATEWAY_QUERY = re.compile(r"\s*sum\s*\(\s*gateway_function_invocation_total\s*(\{[^{}]*\})?\s*\)\s*"
                            r"by\s*\(\s*function_name\s*\)\s*")


class _Empty(Response):
    default_mimetype = None


def _accepted() -> Response:
    return _Empty(b"", 202)


def _json(value, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status, content_type="application/json")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class SystemApi:
    """Handlers bound to one runtime and its metrics."""

    def __init__(self, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._follows = threading.BoundedSemaphore(runtime.config.follow_limit)

    def list_functions(self, request: Request) -> Response:
        """GET /system/functions"""
        fns = self.runtime.list(request.args.get("namespace", ""))
        return _json([self.runtime.status(fn).to_dict() for fn in fns])

    def deploy(self, request: Request) -> Response:
        """POST /system/functions (create)"""
        self.runtime.deploy(FunctionDeployment.from_json(request.get_data()), update=False)
        return _accepted()

    def update(self, request: Request) -> Response:
        """PUT /system/functions (full spec; 404 if absent so faas-cli falls back to POST)"""
        self.runtime.deploy(FunctionDeployment.from_json(request.get_data()), update=True)
        return _accepted()

    def delete(self, request: Request) -> Response:
        """DELETE /system/functions"""
        body = DeleteFunctionRequest.from_json(request.get_data())
        self.runtime.delete(body.functionName, body.namespace or request.args.get("namespace", ""))
        return _accepted()

    def get_function(self, request: Request, name: str) -> Response:
        """GET /system/function/{name}"""
        fn = self.runtime.get(name, request.args.get("namespace", ""))
        return _json(self.runtime.status(fn, usage=_flag(request.args.get("usage"))).to_dict())

    def scale(self, request: Request, name: str) -> Response:
        """POST /system/scale-function/{name}"""
        body = ScaleServiceRequest.from_json(request.get_data())
        self.runtime.scale(name, body.namespace or request.args.get("namespace", ""), body.replicas)
        return _accepted()

    def info(self, request: Request) -> Response:
        """GET /system/info: faas-provider's ProviderInfo for an OpenFaaS gateway in front of us, the gateway's
        own shape (which faas-cli needs) for everyone else; see ``info_shape``."""
        if info_shape(self.runtime.config.info_shape, request.headers.get("X-Forwarded-For", "")) == "provider":
            return _json(provider_info(__version__, SHA))
        return _json(gateway_info(__version__, SHA, platform.machine()))

    def secrets(self, request: Request) -> Response:
        """/system/secrets (any method): 501, secrets are not supported."""
        raise NotImplementedByProvider(f"{SECRETS_UNSUPPORTED}: a function reads its settings from envVars "
                                       f"(stack.yml environment or environment_file)")

    def namespaces(self, request: Request) -> Response:
        """GET /system/namespaces"""
        return _json([self.runtime.config.namespace])

    def logs(self, request: Request) -> Response:
        """GET /system/logs?name=&namespace=&instance=&tail=&follow=&since= as ndjson."""
        name = request.args.get("name", "")
        if not name:
            raise BadRequest("name is required")
        self.runtime.namespace(request.args.get("namespace", ""))
        if self.runtime.find(name) is None and not self.runtime.logs.has(name):
            raise NotFound(f"function {name} not found in namespace {self.runtime.config.namespace}")
        try:
            tail = _tail(request.args.get("tail"))
            since = _since(request.args.get("since"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        follow = _flag(request.args.get("follow"))
        if follow and not self._follows.acquire(blocking=False):
            limit = self.runtime.config.follow_limit
            raise TooManyRequests(f"too many log follows open (max_follows={limit}): close one or retry later")
        # A follower gets a blank line after each quiet second: writing it to a client that has gone fails,
        # which ends the stream and frees its thread (ndjson readers skip blank lines).
        lines = self.runtime.logs.read(name, tail, since, follow, request.args.get("instance", ""),
                                       alive=lambda: not self.runtime.stopping,
                                       heartbeat=HEARTBEAT_SECONDS if follow else 0.0)
        response = Response(stream_with_context(_ndjson(lines)), 200, content_type="application/x-ndjson")
        if follow:
            response.call_on_close(_once(self._follows.release))
        return response

    def healthz(self, request: Request) -> Response:
        """GET /healthz (with X-Faas-Infer-Token when the config has a healthz_token)"""
        response = Response("OK", 200, content_type="text/plain; charset=utf-8")
        if self.runtime.config.healthz_token:
            response.headers["X-Faas-Infer-Token"] = self.runtime.config.healthz_token
        return response

    def metrics_text(self, request: Request) -> Response:
        """GET /metrics: the gateway metrics."""
        return Response(self.metrics.render(), 200, content_type=CONTENT_TYPE)

    def prometheus_query(self, request: Request) -> Response:
        """GET /api/v1/query: the one query the gateway's list sends, answered from our own counters,
        so a gateway in front of us can use this provider as its Prometheus."""
        query = request.args.get("query", "")
        if not _GATEWAY_QUERY.fullmatch(query):
            return _json({"status": "error", "errorType": "bad_data",
                          "error": "this is not Prometheus: only the OpenFaaS gateway's query "
                                   "sum(gateway_function_invocation_total) by (function_name) is served"}, 400)
        now = round(time.time(), 3)
        result = [{"metric": {"function_name": name}, "value": [now, f"{value:g}"]}
                  for name, value in sorted(self.metrics.invocations_by_function().items())]
        return _json({"status": "success", "data": {"resultType": "vector", "result": result}})


def info_shape(setting: str, forwarded_for: str) -> str:
    """Which /system/info shape to answer: ``setting`` when "gateway" or "provider"; for "auto", "provider"
    only when X-Forwarded-For carries a port. The OpenFaaS gateway forwards /system/info with its client's
    address as Go's RemoteAddr (``127.0.0.1:45102``); reverse proxies (nginx, Caddy, Traefik, HAProxy, Envoy)
    write bare addresses, so faas-cli behind one still gets the shape it parses."""
    if setting != "auto":
        return setting
    last = forwarded_for.split(",")[-1].strip()
    return "provider" if re.fullmatch(r"(\[[0-9A-Fa-f:.%\w]+\]|[0-9.]+):\d+", last) else "gateway"


def _tail(text: str | None) -> int:
    """Lines from the end to return; -1 for every line (faas-provider: a tail of 0 or less, or none)."""
    try:
        tail = int(text or -1)
    except ValueError:
        raise ValueError(f"tail={text!r}: must be an integer (0 or less: every line)") from None
    return tail if tail > 0 else -1


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since={value!r}: not an RFC 3339 time") from None


def _ndjson(lines) -> Iterator[bytes]:
    yield b""  # sends the headers now: a follower with nothing to read yet knows the stream is open
    for message in lines:
        yield b"\n" if message is None else message.to_json().encode()


def _once(release):
    done = threading.Event()

    def call() -> None:
        if not done.is_set():
            done.set()
            release()
    return call
