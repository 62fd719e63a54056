"""The dashboards against a real stack under load: the provider with real watchdog replicas on a real Redis,
the autoscaler's metrics exported from real snapshots and plans, and a real Prometheus started exactly as
``faas-infer up`` starts it (``python -m ops.prometheus``). Every panel's query, with the dashboard's
variables substituted, must return data; ``faas-infer top --once`` must show the same figures."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from helpers import REPO, free_port, wait_until, write_handler
from provider_fixtures import ProviderProcess

from ops import scrape
from ops.prometheus import INSTALL_HINT, sidecar_argv

DASHBOARDS = sorted(glob.glob(os.path.join(REPO, "docker", "grafana", "dashboards", "*.json")))
FN = "echo.openfaas-fn"

# Batches of up to 4; each handler call takes 2 ms so latency, batch and exec histograms have shape.
HANDLER = """
    import time
    from batcher import Response

    def handle_batch(state, requests):
        time.sleep(0.002)
        return [Response(r.body, 200, {"Content-Type": "text/plain"}) for r in requests]
"""


class LinearPredictor:
    """Execution seconds of a batch: 30 ms plus 2 ms per request, per core: slow enough that the load needs
    more instances than the deployed one, so the plan has targets (planned instances, predictions)."""

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float:
        return (0.03 + 0.002 * batch) / cpu


class AutoscalerExporter:
    """What the autoscaler's loop does each tick, dry-run: observe, decide, record metrics, serve them."""

    def __init__(self, gateway_url: str, redis_url: str) -> None:
        from autoscaler.config import AutoscalerConfig
        from autoscaler.loop import Autoscaler
        from autoscaler.metrics import AutoscalerMetrics, MetricsServer
        from autoscaler.snapshot import Node

        self.config = AutoscalerConfig(gateway_url=gateway_url, redis_url=redis_url, interval=1.0, solver="greedy",
                                       rate_window=5.0, scale_down_delay=5.0,
                                       min_instances=4)  # above the two running: the plan has targets
        self.scaler = Autoscaler(self.config, predictor=LinearPredictor(),
                                 nodes=lambda: (Node("local", 4.0, 8 * 1024**3),))
        self.metrics = AutoscalerMetrics()
        self.server = MetricsServer(self.metrics.registry, "127.0.0.1", 0).start()
        self.gateway_url = gateway_url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self._before: tuple = ()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def _attainment(self, snapshot) -> dict[str, float]:
        now = scrape.scrape(self.gateway_url + "/metrics")
        out = {}
        for fs in snapshot.functions:
            label = self.metrics.label(fs.name)
            counts = scrape.bucket_delta(scrape.buckets(now, "gateway_functions_seconds", function_name=label),
                                         scrape.buckets(self._before, "gateway_functions_seconds", function_name=label))
            ratio = scrape.fraction_below(fs.slo, counts)
            if ratio is not None:
                out[fs.name] = ratio
        self._before = now
        return out

    def _run(self) -> None:
        from autoscaler.decide import decide

        while not self.stop.is_set():
            started = time.monotonic()
            try:
                snapshot = self.scaler.observer.snapshot(started, time.time())
                plan = decide(snapshot, self.scaler.predictor, self.config, started, self.scaler.memory)
                if plan.valid:
                    self.scaler.memory = plan.memory
                self.metrics.record_tick(snapshot, plan, time.monotonic() - started, self._attainment(snapshot))
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
            self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.stop()


def load(url: str, stop: threading.Event, errors: list) -> None:
    """Closed-loop requests (a few threads), plus an occasional call to a missing function (a non-2xx code)."""
    session = requests.Session()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if i % 50 == 0:
                session.post(url + "/function/missing", data=b"x", timeout=5)
            else:
                session.post(url + "/function/echo", data=b"hello %d" % i, timeout=5)
        except requests.RequestException as exc:
            errors.append(repr(exc))
        time.sleep(0.005)


def substitute(expr: str, function: str) -> str:
    return (expr.replace("$__rate_interval", "15s").replace("$__interval", "5s").replace("$__range", "5m")
            .replace("${function}", function).replace("$function", function))


def panel_queries():
    for path in DASHBOARDS:
        dashboard = json.load(open(path))
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                yield os.path.basename(path), panel["title"], target["refId"], target["expr"]


def query(prom_url: str, expr: str) -> list:
    body = requests.get(prom_url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


@pytest.fixture
def stack(tmp_path, redis_server, redis_client):
    """Provider + one batched function with two replicas on Redis + autoscaler metrics + load."""
    if subprocess.run(["which", "prometheus"], capture_output=True).returncode != 0:
        pytest.fail(INSTALL_HINT)
    provider = ProviderProcess(str(tmp_path), {"redis_url": redis_server.url}).start()
    exporter = sidecar = None
    stop = threading.Event()
    load_errors: list = []
    threads = []
    try:
        fn_dir = write_handler(str(tmp_path / "echo"), HANDLER)
        r = provider.deploy("echo", fn_dir, envVars={"max_batch_size": "4"},
                            annotations={"com.faas-infer.latency_slo": "100ms"})
        assert r.status_code in (200, 202), r.text
        provider.wait_ready("echo", 1, 60)
        exporter = AutoscalerExporter(provider.url, redis_server.url)
        exporter.thread.start()
        for _ in range(3):
            threads.append(threading.Thread(target=load, args=(provider.url, stop, load_errors), daemon=True))
            threads[-1].start()
        # A second replica: a cold start the autoscaler counts, and two watchdog targets.
        time.sleep(2)
        requests.post(provider.url + "/system/scale-function/echo", json={"serviceName": "echo", "replicas": 2},
                      timeout=10)
        provider.wait_ready("echo", 2, 60)
        port = free_port()
        log = open(tmp_path / "prometheus-sidecar.log", "wb")
        argv = sidecar_argv(sys.executable, str(tmp_path), provider.url, port, exporter.target)
        sidecar = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, PYTHONPATH=REPO), cwd=str(tmp_path))
        prom_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(prom_url + "/-/ready", timeout=1).status_code == 200, 30,
                   what=f"prometheus sidecar (log {log.name})")
        yield {"provider": provider, "exporter": exporter, "prometheus": prom_url, "sidecar": sidecar,
               "load_errors": load_errors, "tmp": tmp_path}
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if sidecar is not None and sidecar.poll() is None:
            os.killpg(sidecar.pid, signal.SIGTERM)
            sidecar.wait(20)
        if exporter is not None:
            exporter.close()
        provider.stop()


def test_every_panel_returns_data_and_top_shows_it(stack):
    prom = stack["prometheus"]
    # Targets: the provider, both watchdogs (found through the provider), the autoscaler.
    def targets_up():
        body = requests.get(prom + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        jobs = [(t["labels"]["job"], t["health"]) for t in body]
        return sorted(jobs) == [("autoscaler", "up"), ("gateway", "up"), ("watchdogs", "up"), ("watchdogs", "up")]
    wait_until(targets_up, 40, 0.5, what="all four scrape targets up")
    watchdog_labels = query(prom, 'up{job="watchdogs"}')
    assert {s["metric"]["function_name"] for s in watchdog_labels} == {FN}

    # The function variable's query, as Grafana's label_values() runs it.
    def label_values():
        return requests.get(prom + "/api/v1/label/function_name/values",
                            params={"match[]": "gateway_function_invocation_total"}, timeout=5).json()["data"]
    wait_until(lambda: FN in label_values(), 20, 0.5, what=f"{FN} among the function variable's values")

    empty: list = []

    def all_panels_have_data() -> bool:
        empty.clear()
        for dashboard, title, ref, expr in panel_queries():
            if not query(prom, substitute(expr, FN)):
                empty.append(f"{dashboard} / {title} / {ref}: {expr}")
        return not empty

    try:
        wait_until(all_panels_have_data, 60, 1.0, what="every panel to return data")
    except TimeoutError:
        shown = [l for l in stack["exporter"].metrics.registry.render().splitlines() if not l.startswith("#")]
        raise AssertionError("panels without data:\n" + "\n".join(empty) + "\nautoscaler metrics:\n"
                             + "\n".join(l for l in shown if "bucket" not in l)) from None
    assert stack["exporter"].errors == []

    # The autoscaler's SLO attainment query runs on this Prometheus: every call here is a fast 200.
    from autoscaler.attainment import read_attainment

    assert read_attainment(prom, {"echo": 10.0, "absent": 1.0}) == {"echo": pytest.approx(1.0)}

    # faas-infer top, straight from the endpoints and through Prometheus.
    for source in (["--gateway", stack["provider"].url, "--autoscaler",
                    f"http://{stack['exporter'].target}/metrics"],
                   ["--prometheus", prom, "--gateway", stack["provider"].url]):  # the gateway lists the functions
        out = subprocess.run([sys.executable, "-m", "faas_infer.cli", "top", "--once", "--interval", "1.5", *source],
                             capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
        assert out.returncode == 0, out.stderr
        line = next(l for l in out.stdout.splitlines() if l.startswith("echo "))
        cells = line.split()
        assert float(cells[1]) > 0, out.stdout  # requests per second
        assert cells[5] == "100ms", out.stdout  # SLO
        assert "b4-" in line, out.stdout  # instances by configuration
        assert "!" not in out.stdout, out.stdout

    # The sidecar stops Prometheus with it.
    sidecar = stack["sidecar"]
    children = psutil.Process(sidecar.pid).children(recursive=True)
    assert any("prometheus" in c.name() for c in children)
    os.killpg(sidecar.pid, signal.SIGTERM)
    assert sidecar.wait(20) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
