"""Shared by the benchmarks: start a real watchdog process for a handler folder, sample request bodies."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

from faas_infer.ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Served:
    """A watchdog process serving one function on loopback."""

    proc: subprocess.Popen
    url: str
    metrics_url: str
    # Its TMPDIR and log, removed by ``stop``.
    run_dir: str = ""

    def stop(self) -> None:
        """Stop the watchdog (SIGTERM, then SIGKILL after 30 s) and remove its folder."""
        _RUNNING.pop(self.proc.pid, None)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# Watchdogs started and not yet stopped, by pid. Each runs in a session of its own (Ctrl-C in the terminal
# reaches only the benchmark, which stops them in order), so whatever ends the benchmark without its
# ``finally`` blocks (SIGTERM from timeout or kill, an interrupt while one starts) left them serving for good.
_RUNNING: dict[int, Served] = {}


@atexit.register
def stop_all() -> None:
    """Stop every watchdog still running; at exit, SystemExit included (``faas-infer bench`` makes SIGTERM one)."""
    for served in list(_RUNNING.values()):
        served.stop()


def serve(function_dir: str, env: dict[str, str], ready_timeout: float = 60) -> Served:
    """Start ``python -m watchdog`` for ``function_dir`` with ``env`` and wait until healthy."""
    port, metrics_port = free_port(), free_port()
    run_dir = tempfile.mkdtemp(prefix="faas-infer-bench-")
    full_env = {**os.environ, "port": str(port), "metrics_port": str(metrics_port), "bind_address": "127.0.0.1",
                "function_dir": os.path.join(REPO, function_dir), "TMPDIR": run_dir, "healthcheck_interval": "0",
                "PYTHONPATH": REPO, "LOG_LEVEL": "WARNING", **env}
    log = open(os.path.join(run_dir, "watchdog.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "watchdog"], env=full_env, cwd=run_dir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    served = _RUNNING[proc.pid] = Served(proc, url, f"http://127.0.0.1:{metrics_port}/metrics", run_dir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"watchdog for {function_dir} exited; see {log.name}")
        try:
            if urllib.request.urlopen(url + "/_/health", timeout=1).status == 200:
                return served
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"watchdog for {function_dir} not healthy after {ready_timeout}s; see {log.name}")


def sample_body(function: str, i: int = 0) -> tuple[bytes, str]:
    """A valid request body for an example function, and its content type."""
    rng = random.Random(i)
    if function == "mlp":
        return json.dumps({"features": [round(rng.uniform(-1, 1), 3) for _ in range(256)]}).encode(), \
            "application/json"
    if function in ("lstm", "textcnn"):
        return json.dumps({"tokens": [rng.randrange(1, 5000) for _ in range(24)]}).encode(), "application/json"
    if function == "resnet":
        return bytes(rng.randrange(256) for _ in range(3 * 64 * 64)), "application/octet-stream"
    return b'{"ping":1}', "application/json"


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


class PrivateRedis:
    """A private redis-server on a free loopback port for one benchmark run (``with PrivateRedis() as r``)."""

    def __enter__(self) -> "PrivateRedis":
        import shutil

        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server, or `make deps`)")
        port = free_port()
        self.proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_json(path: str, document: object, indent: int = 2) -> None:
    """Write a benchmark's rows to ``path`` (folders created) and say so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(document, f, indent=indent)
    print(f"\nwrote {path}")
