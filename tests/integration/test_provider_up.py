"""``faas-infer up``: Redis, provider and stack started, served, and on SIGINT (Ctrl-C) or SIGTERM every
process stopped with none left behind."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading

import psutil
import pytest
import requests

from provider_fixtures import ECHO
from helpers import REPO, free_port, wait_until, write_handler


def start_up(tmp_path, *flags: str) -> tuple[subprocess.Popen, str, str]:
    write_handler(str(tmp_path / "echo"), ECHO)
    (tmp_path / "stack.yml").write_text(
        "version: 1.0\nprovider: {name: openfaas, gateway: http://127.0.0.1:8080}\nfunctions:\n"
        "  echo:\n    handler: ./echo\n    image: test/echo:1\n"
        "    labels: {com.openfaas.scale.min: \"2\"}\n"
        "    annotations: {com.faas-infer.latency_slo: 500ms}\n")
    port = free_port()
    out = tmp_path / "up.out"
    proc = subprocess.Popen([sys.executable, "-m", "faas_infer.cli", "up", "-f", str(tmp_path / "stack.yml"),
                             "--port", str(port), "--no-autoscaler", *flags],
                            cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO),
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: b"Ctrl-C stops everything" in out.read_bytes() or proc.poll() is not None, 90,
               what="faas-infer up to print its table")
    return proc, f"http://127.0.0.1:{port}", str(out)


def stop_and_check(proc: subprocess.Popen, sig: int, out: str) -> str:
    family = psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 3  # provider (arbiter and worker) and replicas at least
    proc.send_signal(sig)
    assert proc.wait(90) == 0
    for p in family:
        p_alive = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        assert not p_alive, f"left behind: {p.pid} {p.cmdline() if p_alive else ''}"
    return open(out).read()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_up_serves_the_stack_with_redis_and_stops_on_ctrl_c(tmp_path):
    proc, url, out = start_up(tmp_path)
    try:
        text = open(out).read()
        assert "redis://127.0.0.1:" in text and "autoscaler  disabled" in text and "2/2 ready" in text
        answer = requests.post(url + "/function/echo", data=b"batched", timeout=30)
        assert answer.status_code == 200 and answer.content == b"batched"
        env_backend = requests.get(url + "/system/function/echo", timeout=5).json()
        assert env_backend["replicas"] == 2 and env_backend["annotations"]["com.faas-infer.latency_slo"] == "500ms"
        logs = subprocess.run([sys.executable, "-m", "faas_infer.cli", "logs", "echo", "-g", url, "--tail", "50"],
                              env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=30)
        assert logs.returncode == 0 and "backend=redis" in logs.stdout
    except BaseException:
        proc.kill()
        raise
    text = stop_and_check(proc, signal.SIGINT, out)
    assert "stopped" in text


def test_up_without_redis_stops_on_sigterm(tmp_path):
    proc, url, out = start_up(tmp_path, "--no-redis")
    try:
        assert requests.post(url + "/function/echo", data=b"x", timeout=30).content == b"x"
    except BaseException:
        proc.kill()
        raise
    stop_and_check(proc, signal.SIGTERM, out)


def test_a_failed_async_callback_is_in_the_provider_log_up_names(tmp_path):
    """As the OpenFaaS queue-worker logs a callback in its own log (not the function's), the provider logs a
    failed one in provider.log: up's table did not say where that file was."""
    proc, url, out = start_up(tmp_path, "--no-redis")
    try:
        [line] = [line for line in open(out).read().splitlines() if line.strip().startswith("provider ")]
        log = line.rsplit("log ", 1)[1].rstrip(")")
        assert os.path.basename(log) == "provider.log" and os.path.isfile(log), line
        closed = f"http://127.0.0.1:{free_port()}/done"
        answer = requests.post(url + "/async-function/echo", data=b"x", headers={"X-Callback-Url": closed},
                               timeout=30)
        assert answer.status_code == 202
        call_id = answer.headers["X-Call-Id"]
        wait_until(lambda: f"async call {call_id} of echo: callback to {closed} failed" in open(log).read(), 30,
                   what="the failed callback in provider.log")
        logs = subprocess.run([sys.executable, "-m", "faas_infer.cli", "logs", "echo", "-g", url, "--tail", "0"],
                              env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=30)
        assert logs.returncode == 0 and "replica" in logs.stdout and call_id not in logs.stdout
    except BaseException:
        proc.kill()
        raise
    stop_and_check(proc, signal.SIGTERM, out)


def test_up_reports_a_bad_stack_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "faas_infer.cli", "up", "-f", str(tmp_path / "missing.yml")],
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot read stack file" in result.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{closed}/0", "127.0.0.1:{closed}"])
def test_up_refuses_a_redis_url_where_no_redis_answers(tmp_path, url):
    """It started anyway, printed the Redis as given, and every replica batched alone."""
    url = url.format(closed=free_port())
    (tmp_path / "stack.yml").write_text("version: 1.0\nfunctions: {}\n")
    result = subprocess.run([sys.executable, "-m", "faas_infer.cli", "up", "-f", str(tmp_path / "stack.yml"),
                             "--port", str(free_port()), "--redis-url", url, "--no-autoscaler"], cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"faas-infer up: --redis-url {url}: no Redis answers there")
    assert "running" not in result.stdout and "Traceback" not in result.stderr


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Another server on the port: answers 200 to everything and notes what it was sent."""

    seen: list[str] = []

    def _answer(self) -> None:
        _Impostor.seen.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def impostor():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Impostor.seen = []
    yield server
    server.shutdown()
    server.server_close()


def test_up_refuses_a_port_in_use_and_deploys_nothing_there(tmp_path, impostor):
    write_handler(str(tmp_path / "echo"), ECHO)
    (tmp_path / "stack.yml").write_text("version: 1.0\nfunctions:\n  echo:\n    handler: ./echo\n    image: t/echo:1\n")
    port = impostor.server_address[1]
    result = subprocess.run([sys.executable, "-m", "faas_infer.cli", "up", "-f", str(tmp_path / "stack.yml"),
                             "--port", str(port), "--no-redis", "--no-autoscaler"], cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"port {port} on 127.0.0.1 is already in use" in errors[0], result.stderr
    assert not [s for s in _Impostor.seen if "/system/functions" in s]


def test_readiness_needs_the_providers_own_token(tmp_path, impostor):
    from provider.up import answers_as
    from provider_fixtures import ProviderProcess

    assert not answers_as(f"http://127.0.0.1:{impostor.server_address[1]}", "t0ken")
    provider = ProviderProcess(str(tmp_path), {"healthz_token": "t0ken"}).start()
    try:
        assert answers_as(provider.url, "t0ken") and not answers_as(provider.url, "other")
    finally:
        assert provider.stop() == 0


def test_up_refuses_a_partitioned_model_its_ranks_could_not_load(tmp_path):
    """channel=s3 without FSD_S3_ENDPOINT (up starts no object store): up deployed it anyway, printed
    "0/1 ready" for every rank, and the function answered 503 "exited with code 3" until its logs were read."""
    (tmp_path / "stack.yml").write_text(
        "version: 1.0\nfunctions:\n  sparse:\n"
        f"    handler: {os.path.join(REPO, 'functions', 'fsd-coordinator')}\n    image: test/sparse:1\n"
        "    annotations: {com.faas-infer.partitioned: \"workers=2,channel=s3\"}\n")
    result = subprocess.run([sys.executable, "-m", "faas_infer.cli", "up", "-f", str(tmp_path / "stack.yml"),
                             "--port", str(free_port()), "--no-redis", "--no-autoscaler"], cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip() and "stopp" not in line]
    assert errors == ["faas-infer up: function sparse: FSD_S3_ENDPOINT='': must be set when FSD_CHANNEL=s3"], \
        result.stderr
    assert "deployed" not in result.stdout and "Traceback" not in result.stderr
