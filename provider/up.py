"""The whole platform on one machine: Redis, the provider, the stack deployed, the sidecars; stopped in
reverse order with nothing left behind (every child runs in its own session and is signalled by us)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil
import requests

from faas_infer.ports import free_port
from faas_infer.stack import Stack
from provider.server import graceful_seconds
from provider.sidecars import Sidecar


class UpError(RuntimeError):
    """Something ``up`` needs is missing or failed; the message says what to do."""


@dataclass
class Child:
    """A process started by ``up``."""

    name: str
    proc: subprocess.Popen
    log_path: str
    stop_seconds: float = 10.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM its session, wait ``stop_seconds``, then SIGKILL."""
        if self.alive():
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if ``up`` dies without stopping us (Linux; best effort).
    ``up`` spawns from its main thread only, which lives as long as the process."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Platform:
    """The processes of one ``faas-infer up``, in start order."""

    run_dir: str
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              stop_seconds: float = 10.0) -> Child:
        """Start ``argv`` in its own session with output to ``<run_dir>/<name>.log``."""
        log_path = os.path.join(self.run_dir, f"{name}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, cwd=self.run_dir,
                                    preexec_fn=_die_with_parent)
        child = Child(name, proc, log_path, stop_seconds)
        self.children.append(child)
        return child

    def start_redis(self) -> str:
        """A private redis-server on a free loopback port; returns its URL."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise UpError("redis-server is not installed. `make up` installs it (Debian: apt-get install "
                          "redis-server); or pass --redis-url URL, or --no-redis for per-replica queues")
        port = free_port()
        child = self.spawn("redis", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                     "--appendonly", "no", "--dir", self.run_dir])
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            _wait(client.ping, 10, child, "redis-server")
        finally:
            client.close()
        return f"redis://127.0.0.1:{port}/0"

    def start_provider(self, flags: dict[str, str], url: str) -> Child:
        """``python -m provider`` with ``flags``; returns once its /healthz answers with the token we gave it
        (so never on another server that holds the port)."""
        ensure_port_free(flags.get("bind_address", "127.0.0.1"), int(flags["port"]))
        token = secrets.token_hex(8)
        flags = dict(flags, healthz_token=token)
        argv = [sys.executable, "-m", "provider"]
        for key, value in flags.items():
            argv += ["--" + key.replace("_", "-"), str(value)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_repo()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        child = self.spawn("provider", argv, env, stop_seconds=graceful_seconds())
        _wait(lambda: answers_as(url, token), 30, child, "the provider")
        return child

    def start_sidecar(self, sidecar: Sidecar) -> Child:
        """Start a sidecar (autoscaler, Prometheus)."""
        env = dict(os.environ)
        env.update(sidecar.env)
        env["PYTHONPATH"] = os.pathsep.join([_repo()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return self.spawn(sidecar.name, list(sidecar.argv), env)

    def stop(self, say: Callable[[str], None] = print) -> None:
        """Stop every child, last started first; then any replica a dead provider left behind."""
        for child in reversed(self.children):
            if child.alive():
                say(f"stopping {child.name} (pid {child.proc.pid})")
            child.stop()
        sweep_replicas(self.run_dir)

    def first_dead(self) -> Child | None:
        """A child that exited on its own, if any."""
        return next((c for c in self.children if not c.alive()), None)


def ensure_port_free(host: str, port: int) -> None:
    """``UpError`` naming the port when something already listens on it (checked as gunicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UpError(f"port {port} on {host} is already in use ({exc.strerror}): stop what serves it "
                          f"or pass --port") from None


def answers_as(url: str, token: str) -> bool:
    """Whether the provider at ``url`` answers /healthz with ``token`` (its healthz_token)."""
    response = requests.get(url + "/healthz", timeout=1)
    return response.status_code == 200 and response.headers.get("X-Faas-Infer-Token") == token


def sweep_replicas(run_dir: str) -> int:
    """Kill watchdog processes recorded under ``run_dir`` that are still running; returns how many."""
    killed = 0
    for pid_file in glob.glob(os.path.join(run_dir, "**", "replicas", "*", "*", "pid"), recursive=True):
        try:
            with open(pid_file) as f:
                proc = psutil.Process(int(f.read().strip()))
            if "watchdog" in " ".join(proc.cmdline()):
                os.killpg(proc.pid, signal.SIGKILL)
                killed += 1
        except (OSError, ValueError, psutil.Error):
            continue
    return killed


def deploy_stack(stack: Stack, url: str, auth: tuple[str, str] | None) -> list[str]:
    """Deploy every function as faas-cli does (PUT, then POST on 404); returns the names deployed."""
    deployed = []
    for fn in stack.functions.values():
        body = {"service": fn.name, "image": fn.image or f"{fn.name}:latest", "envProcess": fn.fprocess,
                "envVars": dict(fn.environment), "constraints": list(fn.constraints), "labels": dict(fn.labels),
                "annotations": dict(fn.annotations), "limits": dict(fn.limits), "requests": dict(fn.requests),
                "secrets": list(fn.secrets), "readOnlyRootFilesystem": fn.readonly_root_filesystem}
        if fn.namespace:
            body["namespace"] = fn.namespace
        response = requests.put(url + "/system/functions", json=body, auth=auth, timeout=30)
        if response.status_code == 404:
            response = requests.post(url + "/system/functions", json=body, auth=auth, timeout=30)
        if response.status_code not in (200, 201, 202):
            raise UpError(f"deploying {fn.name} failed: {response.status_code} {response.text.strip()}")
        deployed.append(fn.name)
    return deployed


def wait_available(url: str, names: list[str], auth: tuple[str, str] | None, timeout: float,
                   alive: Callable[[], bool]) -> dict[str, dict]:
    """Poll until every function has its replicas available or ``timeout``; returns the last statuses."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict] = {}
    while alive():
        listing = requests.get(url + "/system/functions", auth=auth, timeout=5).json()
        statuses = {s["name"]: s for s in listing}
        if all(statuses.get(n, {}).get("availableReplicas", 0) >= statuses.get(n, {}).get("replicas", 1)
               for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return statuses


def _wait(predicate: Callable[[], bool], timeout: float, child: Child, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise UpError(f"{what} exited with code {child.proc.returncode}:\n{child.log_tail()}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise UpError(f"{what} did not start within {timeout:g}s (log: {child.log_path})")


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
