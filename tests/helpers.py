"""Shared test utilities: free ports, real processes (redis-server, watchdogs), waiting for readiness."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

import requests

from faas_infer.ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition",
               fatal: type[BaseException] | tuple = ()) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds (at once on ``fatal``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except fatal:
            raise
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class RedisServer:
    """A private redis-server on a loopback port, with nothing persisted."""

    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test` (it installs it) or "
                               "apt-get install redis-server")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", "/tmp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        wait_until(client.ping, 10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class WatchdogProcess:
    """A real ``python -m watchdog`` serving a handler folder on loopback ports."""

    function_dir: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    metrics_port: int = 0
    proc: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, tmp_dir: str, wait: bool = True) -> "WatchdogProcess":
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("port", "metrics_port")}
        env.update({"port": str(self.port), "metrics_port": str(self.metrics_port),
                    "bind_address": "127.0.0.1", "TMPDIR": tmp_dir, "function_dir": self.function_dir,
                    "healthcheck_interval": "0.1", "PYTHONPATH": REPO, "LOG_LEVEL": "WARNING"})
        env.update(self.env)
        self.log_path = os.path.join(tmp_dir, f"watchdog-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "watchdog"], env=env, cwd=tmp_dir,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            def healthy() -> bool:
                if self.proc.poll() is not None:  # exited: say so now, not after the whole timeout
                    raise RuntimeError(f"watchdog on {self.port} exited with {self.proc.returncode}:\n"
                                       + self.log()[-2000:])
                return requests.get(self.url + "/_/ready", timeout=1).status_code == 200  # suppress_lock: no 200 health

            wait_until(healthy, 60, what=f"watchdog on {self.port} (log: {self.log_path})", fatal=RuntimeError)
        return self

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30, signalled: bool = False) -> int | None:
        """SIGTERM (unless ``signalled`` already) and wait up to ``timeout``, then SIGKILL; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if not signalled:
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def write_handler(folder: str, source: str) -> str:
    """Write ``handler.py`` with ``source`` (dedented) into ``folder``; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "handler.py"), "w") as f:
        f.write(textwrap.dedent(source))
    return folder


@contextlib.contextmanager
def silent_listener():
    """A loopback port that accepts connections and never answers (a hung peer: Redis, S3, a worker);
    yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def http_stub(answer) -> "http.server.ThreadingHTTPServer":
    """A started loopback HTTP server on a port of its own answering every GET with ``answer(path)``, a
    (status, body bytes) pair: a stand-in for an API or a metrics endpoint. ``shutdown()`` it when done."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def metrics_stub(text: bytes | None) -> "http.server.ThreadingHTTPServer":
    """``http_stub`` answering GET /metrics with ``text``, anything else (or everything, when None) with 404
    as the OpenFaaS gateway's API port does."""
    return http_stub(lambda path: (200, text) if text is not None and path == "/metrics"
                     else (404, b"404 page not found\n"))
