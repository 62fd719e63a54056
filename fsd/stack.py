"""Expanding a partitioned model declared in stack.yml into its coordinator and W worker functions.

A function annotated ``com.faas-infer.partitioned: "workers=4,channel=redis,partitioner=connectivity"``
is the coordinator clients call. ``expand_partitioned`` fills in its ``FSD_*`` settings (keeping any the
stack sets) and adds ``<name>-worker-<r>`` for r in 0..W-1: the worker handler (annotation
``com.faas-infer.worker_handler``, else ``fsd-worker`` beside the coordinator's handler folder) with the
same ``FSD_*`` environment plus ``FSD_RANK``. The coordinator is pinned to one replica
(``com.openfaas.scale.max: "1"``, the autoscaler's upper bound), since two coordinators sharing the workers
make each other's jobs wait and fail; a ``com.openfaas.scale.min`` above 1 on it is refused. Every rank's
watchdog may answer as late as ``FSD_TIMEOUT`` needs: the workers get ``exec_timeout`` and ``write_timeout``
of ``FSD_TIMEOUT`` + ``HTTP_GRACE`` (the X-Timeout the coordinator sends them), the coordinator one more
``HTTP_GRACE`` (each the stack leaves unset) where the watchdog's default is shorter. The settings every
rank will read are checked here, as the handlers' ``load()`` checks them, so a bad one stops ``faas-infer
up`` naming the function and the key instead of leaving its replicas failing to start. Pure: the caller
passes the gateway and Redis it deploys to.
"""

from __future__ import annotations

import os
from dataclasses import replace

from faas_infer.stack import LABEL_SCALE_MAX, LABEL_SCALE_MIN, Stack, StackError, StackFunction
from faas_infer.units import format_duration
from fsd.config import MAX_TIMEOUT, FsdConfig
from fsd.errors import ConfigError
from fsd.invoke import HTTP_GRACE
from watchdog.config import WatchdogConfig

ANNOTATION = "com.faas-infer.partitioned"
WORKER_HANDLER = "com.faas-infer.worker_handler"
HANDLER = "com.faas-infer.handler"
_KEYS = {"workers": "FSD_WORKERS", "channel": "FSD_CHANNEL", "partitioner": "FSD_PARTITIONER"}
# The watchdog's request limits, and the shorter of their defaults.
_WATCHDOG_LIMITS = ("exec_timeout", "write_timeout")
_WATCHDOG_DEFAULT = min(WatchdogConfig.exec_timeout, WatchdogConfig.write_timeout)


def parse_annotation(name: str, text: str) -> dict[str, str]:
    """``workers=4,channel=redis`` as FSD_* variables; a StackError names the function and the bad part."""
    settings: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _KEYS:
            raise StackError(f"function {name}: {ANNOTATION} part {part!r} must be one of "
                             f"{', '.join(k + '=...' for k in _KEYS)}")
        settings[_KEYS[key.strip()]] = value.strip()
    if "FSD_WORKERS" not in settings or not settings["FSD_WORKERS"].isdigit() or int(settings["FSD_WORKERS"]) < 1:
        raise StackError(f"function {name}: {ANNOTATION} needs workers=N with N >= 1")
    return settings


def expand_partitioned(stack: Stack, gateway_url: str, redis_url: str = "") -> Stack:
    """The stack with every partitioned function's workers added and its FSD_* settings completed."""
    functions: dict[str, StackFunction] = {}
    for fn in stack.functions.values():
        if ANNOTATION not in fn.annotations:
            functions.setdefault(fn.name, fn)
            continue
        coordinator, workers = _expand(fn, gateway_url, redis_url)
        functions[fn.name] = coordinator
        for worker in workers:
            if worker.name in stack.functions:
                raise StackError(f"function {fn.name}: worker {worker.name} is already declared in the stack")
            functions[worker.name] = worker
    return replace(stack, functions=functions)


def _expand(fn: StackFunction, gateway_url: str, redis_url: str) -> tuple[StackFunction, list[StackFunction]]:
    settings = parse_annotation(fn.name, fn.annotations[ANNOTATION])
    if fn.labels.get(LABEL_SCALE_MIN, "1").strip() not in ("0", "1"):
        raise StackError(f"function {fn.name}: {LABEL_SCALE_MIN}={fn.labels[LABEL_SCALE_MIN]!r}: a partitioned "
                         "model's coordinator runs as one replica (0 or 1)")
    worker_function = fn.environment.get("FSD_WORKER_FUNCTION", f"{fn.name}-worker")
    env = {**settings, "FSD_GATEWAY": gateway_url, "FSD_WORKER_FUNCTION": worker_function, **fn.environment}
    if env.get("FSD_CHANNEL", "redis") == "redis" and redis_url:
        env.setdefault("FSD_REDIS_URL", redis_url)
    handler = fn.annotations.get(WORKER_HANDLER) or os.path.join(os.path.dirname(fn.handler_path), "fsd-worker")
    if fn.handler_path and not os.path.isabs(handler):
        handler = os.path.normpath(os.path.join(os.path.dirname(fn.handler_path), handler))
    shared = {k: v for k, v in env.items() if k.startswith("FSD_")}
    timeout = _fsd_timeout(env.get("FSD_TIMEOUT", "10"))
    limits: dict[str, str] = {}
    if timeout is not None:  # else the handlers' load() refuses FSD_TIMEOUT, naming it
        limits = {k: format_duration(timeout + HTTP_GRACE) for k in _WATCHDOG_LIMITS}
        if timeout + 2 * HTTP_GRACE > _WATCHDOG_DEFAULT:  # a job's reports may come HTTP_GRACE after it ends
            for key in _WATCHDOG_LIMITS:
                env.setdefault(key, format_duration(timeout + 2 * HTTP_GRACE))
    _check(fn.name, env, redis_url)
    workers = [replace(fn, name=f"{worker_function}-{rank}", handler=handler, handler_path=handler,
                       image=f"{fn.image or fn.name}-worker",
                       environment={**shared, **limits, "FSD_RANK": str(rank)},
                       annotations={HANDLER: handler, "com.faas-infer.partition_of": fn.name},
                       labels={k: v for k, v in fn.labels.items() if not k.startswith("com.openfaas.scale")})
               for rank in range(int(settings["FSD_WORKERS"]))]
    return replace(fn, environment=env, labels={**fn.labels, LABEL_SCALE_MAX: "1"}), workers


def _check(name: str, env: dict[str, str], redis_url: str) -> None:
    """The coordinator's FSD_* settings as its handler and the workers' read them; a StackError names the
    function and the bad key (channel=s3 without FSD_S3_ENDPOINT, say: up starts no object store)."""
    try:
        FsdConfig.from_env(env).urls()
    except ConfigError as exc:
        hint = ("; no Redis is deployed with the stack (up --no-redis): give the function FSD_REDIS_URL, or "
                "leave it out of the stack" if not redis_url and "FSD_REDIS_URL" in str(exc) else "")
        raise StackError(f"function {name}: {exc}{hint}") from None


def _fsd_timeout(raw: str) -> float | None:
    """FSD_TIMEOUT in seconds, None when the handlers refuse it (not a number in (0, MAX_TIMEOUT]): a
    watchdog limit made from 1e6 read '1e+06s', and the deploy was refused naming write_timeout instead."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 < value <= MAX_TIMEOUT else None
