"""Support for the provider's integration tests: a real ``python -m provider`` on a free loopback port,
handler folders, and replay of the recorded OpenFaaS traffic in ``tests/fixtures/openfaas``."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil
import requests

from helpers import REPO, free_port, wait_until, write_handler

FIXTURES = os.path.join(REPO, "tests", "fixtures", "openfaas")

# Echoes the body with its Content-Type (text/plain when none), as the recorder's echo function did.
ECHO = """
    from batcher import Response

    def handle_batch(state, requests):
        return [Response(r.body, 200, {"Content-Type": r.header("Content-Type", "text/plain")}) for r in requests]
"""

# Answers what it saw and what it runs with; "crash" ends the process, "grow" holds 300 MB for a while.
INSPECT = """
    import json, os, time
    from batcher import Response

    def handle(request):
        if request.body == b"grow":
            hog = bytearray(300 * 1024 * 1024)
            for i in range(0, len(hog), 4096):
                hog[i] = 1
            time.sleep(5)
        if request.body.startswith(b"sleep"):
            time.sleep(float(request.body.split()[1]))
        if request.body.startswith(b"spin"):  # one C call holding the GIL: health checks go unanswered
            sum(range(int(float(request.body.split()[1]) * 4e7)))
        seen = {"method": request.method, "path": request.path, "query": request.query,
                "headers": dict(request.headers), "body": request.body.decode(errors="replace"),
                "env": {k: os.environ.get(k, "") for k in ("GREETING", "function_name", "latency_slo",
                                                           "cpu_limit", "memory_limit", "OMP_NUM_THREADS")},
                "affinity": sorted(os.sched_getaffinity(0)), "pid": os.getpid()}
        return Response(json.dumps(seen).encode(), 200, {"Content-Type": "application/json"})
"""


def fixture(name: str) -> list[dict]:
    """The exchanges of one fixture file (``faas-cli/deploy.json``)."""
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def body_bytes(message: dict) -> bytes:
    """The decoded body of a recorded request or response."""
    if message.get("body_encoding") == "base64":
        return base64.b64decode(message["body"])
    return message["body"].encode()


@dataclass
class ProviderProcess:
    """``python -m provider`` in its own session; ``stop`` leaves no process behind."""

    tmp: str
    flags: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ProviderProcess":
        self.port = free_port()
        argv = [sys.executable, "-m", "provider", "--port", str(self.port), "--run-dir",
                os.path.join(self.tmp, "run"), "--health-interval", "0.3", "--restart-backoff", "0.2"]
        for key, value in self.flags.items():
            argv += ["--" + key.replace("_", "-"), str(value)]
        env = dict(os.environ, PYTHONPATH=REPO, LOG_LEVEL="WARNING")
        self.log = open(os.path.join(self.tmp, f"provider-{self.port}.log"), "wb")
        self.proc = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(lambda: requests.get(self.url + "/healthz", timeout=1).status_code == 200, 30,
                   what=f"provider on {self.port}")
        return self

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        kids = self.descendants()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for kid in kids:  # a failed test must not leave replicas behind
            try:
                os.killpg(kid.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()
        return self.proc.returncode

    def deploy(self, name: str, function_dir: str, method: str = "POST", auth=None, **spec) -> requests.Response:
        body = {"service": name, "image": f"test/{name}:1",
                "annotations": {"com.faas-infer.handler": str(function_dir), **spec.pop("annotations", {})}}
        body.update(spec)
        return requests.request(method, self.url + "/system/functions", json=body, auth=auth, timeout=10)

    def status(self, name: str) -> dict:
        return requests.get(f"{self.url}/system/function/{name}", timeout=5).json()

    def wait_ready(self, name: str, count: int, timeout: float = 30) -> dict:
        def ready():
            s = self.status(name)
            return s.get("availableReplicas", 0) == count and len(s["faasInfer"]["instances"]) == count
        wait_until(ready, timeout, what=f"{name} with {count} ready replica(s)")
        return self.status(name)


def send(base_url: str, request: dict) -> tuple[int, dict[str, str], bytes]:
    """Send a recorded request as it was sent: same method, target, headers and body, chunked with the
    recorded chunk sizes when it was chunked. Host points at the server under test."""
    host = base_url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    body = body_bytes(request)
    headers = {k: v for k, v in request["headers"].items() if k.lower() not in ("host", "content-length")}
    headers["Host"] = host
    conn.putrequest(request["method"], request["path"], skip_host=True, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    sizes = request.get("chunk_sizes")
    if sizes:
        conn.endheaders()
        offset = 0
        for size in sizes:
            conn.send(b"%x\r\n%s\r\n" % (size, body[offset:offset + size]))
            offset += size
        conn.send(b"0\r\n\r\n")
    else:
        if body or "Content-Length" in request["headers"]:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
    response = conn.getresponse()
    data = response.read()
    result = (response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    conn.close()
    return result


VOLATILE_KEYS = {"createdAt", "faasInfer", "usage"}


def same_shape(recorded, actual, path: str = "$") -> None:
    """Every key the recording has, ours has with the same value (volatile keys: present only)."""
    if isinstance(recorded, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in recorded.items():
            assert key in actual, f"{path}.{key} missing in {actual!r}"
            if key not in VOLATILE_KEYS:
                same_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(recorded, list) and recorded and isinstance(recorded[0], dict) and "name" in recorded[0]:
        by_name = {item["name"]: item for item in actual}
        assert sorted(by_name) == sorted(i["name"] for i in recorded), f"{path}: {sorted(by_name)}"
        for item in recorded:
            same_shape(item, by_name[item["name"]], f"{path}[{item['name']}]")
    else:
        assert recorded == actual, f"{path}: recorded {recorded!r}, got {actual!r}"


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    """``wait_until`` with a longer default, for replica starts on a busy machine."""
    wait_until(predicate, timeout, what=what)


def pause(seconds: float) -> None:
    time.sleep(seconds)
