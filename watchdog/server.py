"""Running the watchdog under gunicorn: one worker per instance, with OpenFaaS's shutdown order.

One worker, because an instance is one process with one model and one batch queue. The worker is the
asyncio engine (``watchdog.aio``) by default, or gunicorn's gthread worker running the WSGI app
(``http_engine=gthread``), where every request waiting for its batch holds a thread. On SIGTERM the worker (1) stops reporting healthy, (2) keeps
serving for ``healthcheck_interval`` so load balancers notice, (3) stops accepting connections, and
(4) answers everything it accepted (queued batches included) within ``write_timeout`` before exiting.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import signal
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from batcher.queue import BatchQueue, LocalBatchQueue
from watchdog.config import WatchdogConfig
from watchdog.handler import LoadedHandler, freeze_loaded_objects, load_here
from watchdog.handler_process import HandlerProcess
from watchdog.metrics import MetricsServer, WatchdogMetrics
from watchdog.runtime import Runtime

logger = logging.getLogger(__name__)


def make_queue(config: WatchdogConfig, metrics: WatchdogMetrics) -> tuple[BatchQueue, Any]:
    """The configured queue backend, and the live batch-config source it offers (None for local)."""
    if config.batch_backend == "redis":
        from batcher.redis_queue import RedisBatchQueue

        queue = RedisBatchQueue.from_config(config, on_redis_state=lambda up: metrics.redis_up.set(1 if up else 0))
        return queue, queue.live_config
    metrics.redis_up.set(0)
    return LocalBatchQueue(), None


def build_runtime(config: WatchdogConfig) -> Runtime:
    """Load the handler (here, or in a child process with ``handler_process``), apply the CPU limit to
    torch if the handler uses it, and wire the runtime."""
    metrics = WatchdogMetrics()
    if config.handler_process:
        child = HandlerProcess(config.function_dir, config.exec_timeout, retain_freed_memory=config.retain_freed_memory,
                               on_restart=lambda reason: metrics.handler_restarts.inc(reason=reason)).start()
        handler = LoadedHandler(child.handle, child.cold_start_seconds, None, close=child.close,
                                ready=child.ready, depth=child.depth)
    else:
        handler = load_here(config.function_dir, config.retain_freed_memory, config.handler_time_limit())
    queue, live_config = make_queue(config, metrics)
    runtime = Runtime(config, handler, queue, metrics, batch_config=live_config)
    if hasattr(queue, "watch_exec"):
        queue.watch_exec(runtime.exec_model.sizes)  # execution times by batch size go out with heartbeats
    return runtime


class WatchdogApplication(BaseApplication):
    """gunicorn embedded: ``python -m watchdog`` runs this with settings derived from the config."""

    def __init__(self, config: WatchdogConfig) -> None:
        self.config_obj = config
        super().__init__()

    def load_config(self) -> None:
        c = self.config_obj
        settings = {
            "bind": [f"{c.bind_address}:{c.port}"],
            "workers": 1,
            "worker_class": "watchdog.aio.AsyncioWorker" if c.http_engine == "asyncio" else "gthread",
            "threads": c.http_thread_count(),
            "timeout": 0,
            "graceful_timeout": math.ceil(c.healthcheck_interval + c.write_timeout + 1),
            "keepalive": 75,
            "accesslog": None,
            "loglevel": "warning",
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "proc_name": f"watchdog-{c.name}",
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from watchdog.app import create_app

        runtime = build_runtime(self.config_obj)
        _STATE["runtime"] = runtime
        _STATE["metrics_server"] = MetricsServer(runtime.metrics.registry, self.config_obj.bind_address,
                                                 self.config_obj.metrics_port).start()
        runtime.start()
        logger.info("function %s ready: cold start %.2fs, max_batch_size=%d, backend=%s",
                    self.config_obj.name, runtime.handler.cold_start_seconds,
                    self.config_obj.max_batch_size, self.config_obj.batch_backend)
        return create_app(runtime)


_STATE: dict[str, Any] = {}


def freeze_loaded(runtime: Runtime | None) -> int:
    """``freeze_loaded_objects``, reported in the runtime's metrics; returns how many were frozen."""
    frozen = freeze_loaded_objects()
    if runtime is not None:
        runtime.metrics.gc_frozen.set(frozen)
    return frozen


def _post_worker_init(worker: Any) -> None:
    """Freeze what loading made, then replace the worker's SIGTERM handling with OpenFaaS's order (see
    module docstring)."""
    freeze_loaded(_STATE.get("runtime"))
    def on_term(signum: int, frame: Any) -> None:
        runtime: Runtime | None = _STATE.get("runtime")
        if runtime is None:
            worker.alive = False
            return
        runtime.lifecycle.begin_drain()
        config = runtime.config

        def stop_accepting() -> None:
            worker.alive = False  # gthread stops accepting, then waits for in-flight requests
            os.write(wake_w, b"x")  # end its select() now instead of at its next 1 s timeout

        threading.Timer(config.healthcheck_interval, stop_accepting).start()

    wake_r, wake_w = os.pipe()
    poller = getattr(worker, "poller", None)
    if poller is not None:
        poller.register(wake_r, selectors.EVENT_READ, lambda fd: os.read(fd, 64))
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def _worker_exit(server: Any, worker: Any) -> None:
    runtime: Runtime | None = _STATE.get("runtime")
    if runtime is not None:
        if not runtime.drain(runtime.config.write_timeout):
            logger.error("exited with batches still running after write_timeout")
        metrics_server = _STATE.get("metrics_server")
        if metrics_server is not None:
            metrics_server.stop()
