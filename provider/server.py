"""Serving the provider under gunicorn: one gthread worker holds the runtime (replicas are its children).

Shutdown order on SIGTERM, SIGINT or SIGQUIT (or when ``parent_pid`` exits): stop waiting for replicas and
end log follows, stop accepting, finish the requests in flight, then drain and stop every replica.
A worker that dies otherwise (killed, out of memory) takes the whole provider down with exit code 1, after
killing the replicas it left in the run dir: a fresh worker would serve an empty runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer

from provider.auth import Credentials
from provider.catalog import Catalog
from provider.config import ProviderConfig

logger = logging.getLogger(__name__)

_STATE: dict[str, Any] = {}
SHUTDOWN_SECONDS = 45


class ProviderApplication(BaseApplication):
    """gunicorn embedded with settings derived from the config."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config_obj = config
        super().__init__()

    def load_config(self) -> None:
        c = self.config_obj
        settings = {
            "bind": [f"[{c.bind_address}]:{c.port}" if ":" in c.bind_address else f"{c.bind_address}:{c.port}"],
            "workers": 1, "worker_class": "gthread", "threads": c.threads, "worker_connections": 4096,
            "timeout": 0, "graceful_timeout": SHUTDOWN_SECONDS, "keepalive": 75, "backlog": 2048,
            "accesslog": None, "loglevel": "warning", "proc_name": "faas-infer-provider",
            "post_worker_init": _post_worker_init, "worker_exit": _worker_exit,
            "child_exit": _child_exit, "on_reload": _on_reload,
            # A header named with an underscore (x_under) is dropped: WSGI cannot tell it from x-under, so
            # passing it ("dangerous") would let a client smuggle, say, X_Call_Id past X-Call-Id.
            "header_map": "drop",
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from provider.app import create_app
        from provider.metrics import GatewayMetrics
        from provider.runtime import Runtime

        c = self.config_obj
        credentials = Credentials.read(c.secret_mount_path) if c.auth_enabled else None
        catalog = Catalog.from_stack_file(c.stack_file, dict(os.environ))
        runtime = Runtime(c, catalog, os.environ).start()
        _STATE["runtime"] = runtime
        metrics = GatewayMetrics(c.namespace)
        logger.info("provider on %s:%d (auth %s, run dir %s)", c.bind_address, c.port,
                    "on" if credentials else "off", runtime.run_dir)
        return create_app(runtime, metrics, credentials)


def _post_worker_init(worker: Any) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        runtime = _STATE.get("runtime")
        if runtime is not None:
            runtime.begin_shutdown()
        worker.alive = False

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    parent = _STATE.get("parent_pid") or 0
    if parent:
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(pid: int) -> None:
    """Stop the whole provider when the process that started it is gone (no orphaned replicas)."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.warning("parent process %d exited: stopping", pid)
            os.kill(os.getppid(), signal.SIGTERM)
            return
        except PermissionError:
            pass


def _worker_exit(server: Any, worker: Any) -> None:
    runtime = _STATE.get("runtime")
    if runtime is not None:
        runtime.shutdown(SHUTDOWN_SECONDS - 5)


def _on_reload(server: Any) -> None:
    """SIGHUP: a new worker would start with no functions, so the provider stops instead (exit 0)."""
    raise HaltServer("SIGHUP: reloading is not supported (a new worker would run no function): stopping", 0)


def _child_exit(server: Any, worker: Any) -> None:
    """In the arbiter, when the worker has exited: unless we are stopping, halt (exit 1) instead of letting
    gunicorn start a worker with no functions, and kill the replicas the dead one leaves behind."""
    if not server.LISTENERS:  # stopping: gunicorn closes its sockets before it stops the worker
        return
    from provider.up import sweep_replicas

    run_dir = _STATE.get("run_dir") or ""
    swept = sweep_replicas(run_dir) if run_dir else 0
    raise HaltServer(f"worker (pid {worker.pid}) died: provider stopping, {swept} replica(s) killed", 1)


def serve(config: ProviderConfig) -> None:
    """Run until signalled. Without a run dir, a temporary one is made here, before the worker starts, so
    that the arbiter can find (and kill) the replicas of a worker that died, and removes it at the end."""
    own = "" if config.run_dir else tempfile.mkdtemp(prefix="faas-infer-")
    if own:
        config = dataclasses.replace(config, run_dir=own)
    _STATE["parent_pid"] = config.parent_pid
    _STATE["run_dir"] = config.run_dir
    try:
        ProviderApplication(config).run()
    finally:
        if own:
            shutil.rmtree(own, ignore_errors=True)


def graceful_seconds() -> int:
    """How long the provider may take to stop (callers wait this long before killing it)."""
    return math.ceil(SHUTDOWN_SECONDS + 5)
