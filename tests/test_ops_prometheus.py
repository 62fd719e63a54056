"""ops.prometheus and ops.targets: the generated config, a real Prometheus started on a free loopback port,
file_sd targets picked up at run time, query errors, a missing binary, and the replica list → targets."""

from __future__ import annotations

import os
import shutil

import pytest
import requests

from faas_infer.promtext import CONTENT_TYPE, Registry
from helpers import wait_until
from ops.prometheus import INSTALL_HINT, Prometheus, PrometheusError, ScrapeJob, render_config, sidecar_argv, stack_jobs
from ops.targets import read_auth, watchdog_targets


def require_prometheus():
    if shutil.which("prometheus") is None:
        pytest.fail(INSTALL_HINT)


def test_render_config_lists_jobs_and_file_sd():
    config = render_config(stack_jobs("127.0.0.1:8080", "127.0.0.1:8082"), "/run/targets", 0.5)
    assert config["global"]["scrape_interval"] == "500ms"
    assert render_config((), "/t", 2.0)["global"]["scrape_interval"] == "2s"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["gateway"]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert jobs["watchdogs"]["file_sd_configs"][0]["files"] == ["/run/targets/watchdogs.json"]
    assert jobs["autoscaler"]["static_configs"] == [{"targets": ["127.0.0.1:8082"]}]
    assert [j.name for j in stack_jobs("a:1")] == ["gateway", "watchdogs"]


def test_sidecar_argv_is_what_up_runs():
    argv = sidecar_argv("/py", "/run", "http://127.0.0.1:8080", 9090, "127.0.0.1:8082", "/secrets")
    assert argv[:3] == ("/py", "-m", "ops.prometheus")
    assert "--autoscaler" in argv and "--secret-mount-path" in argv and argv[argv.index("--port") + 1] == "9090"


def test_missing_binary_names_the_install_hint(tmp_path):
    with pytest.raises(PrometheusError, match="make up"):
        Prometheus(str(tmp_path), [], binary="no-such-prometheus-binary").start()


def test_real_prometheus_scrapes_static_and_file_sd_targets(tmp_path):
    require_prometheus()
    from autoscaler.metrics import MetricsServer  # a plain /metrics server on a free port

    registry = Registry()
    registry.gauge("demo_value", "a value", ("who",)).set(42, who="static")
    server = MetricsServer(registry, "127.0.0.1", 0).start()
    other = Registry()
    other.gauge("demo_value", "a value", ("who",)).set(7, who="file_sd")
    server2 = MetricsServer(other, "127.0.0.1", 0).start()
    prom = Prometheus(str(tmp_path), [ScrapeJob("static", (f"127.0.0.1:{server.port}",)),
                                      ScrapeJob("watchdogs", file_sd=True)], scrape_interval=0.5)
    try:
        prom.start()
        assert prom.url.startswith("http://127.0.0.1:") and prom.alive()
        assert requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2).headers["Content-Type"] == CONTENT_TYPE
        wait_until(lambda: prom.query('demo_value{who="static"}'), 20, 0.2, what="the static target's sample")
        prom.set_targets("watchdogs", [(f"127.0.0.1:{server2.port}", {"function_name": "echo.openfaas-fn"})])
        wait_until(lambda: prom.query('demo_value{job="watchdogs"}'), 30, 0.2, what="the file_sd target's sample")
        [sample] = prom.query('demo_value{job="watchdogs"}')
        assert sample["metric"]["function_name"] == "echo.openfaas-fn" and sample["value"][1] == "7"
        assert {t["job"] for t in prom.target_health()} == {"static", "watchdogs"}
        with pytest.raises(PrometheusError, match="bad_data"):
            prom.query("sum(")
    finally:
        prom.stop()
        server.stop()
        server2.stop()
    assert not prom.alive() and prom.proc.returncode == 0
    assert os.path.exists(os.path.join(str(tmp_path), "prometheus.yml"))


def test_taken_port_falls_back_to_a_free_one(tmp_path):
    require_prometheus()
    first = Prometheus(str(tmp_path / "a"), [ScrapeJob("x", ("127.0.0.1:1",))]).start()
    try:
        second = Prometheus(str(tmp_path / "b"), [ScrapeJob("x", ("127.0.0.1:1",))], port=first.port).start()
        try:
            assert second.port != first.port and second.alive()
        finally:
            second.stop()
    finally:
        first.stop()


def test_watchdog_targets_from_the_provider_listing(tmp_path):
    functions = [
        {"name": "echo", "namespace": "openfaas-fn", "faasInfer": {"instances": [
            {"instance": "echo-1", "metricsPort": 4001}, {"instance": "echo-0", "metricsPort": 4000}]}},
        {"name": "cold", "faasInfer": {"instances": []}},
        {"name": "plain"},  # real OpenFaaS: no faasInfer block
        # A variant the autoscaler added reports as its parent (the dashboards select the parent's name).
        {"name": "echo-b4-c500-g0-vm-0", "namespace": "openfaas-fn",
         "labels": {"com.faas-infer.parent": "echo", "com.faas-infer.config": "b4-c500-g0"},
         "faasInfer": {"instances": [{"instance": "echo-b4-c500-g0-vm-0-1a2b3c", "metricsPort": 4002}]}},
    ]
    assert watchdog_targets(functions) == [
        ("127.0.0.1:4000", {"function_name": "echo.openfaas-fn", "instance_id": "echo-0"}),
        ("127.0.0.1:4001", {"function_name": "echo.openfaas-fn", "instance_id": "echo-1"}),
        ("127.0.0.1:4002", {"function_name": "echo.openfaas-fn", "instance_id": "echo-b4-c500-g0-vm-0-1a2b3c"})]
    assert read_auth("") is None and read_auth(str(tmp_path)) is None
    (tmp_path / "basic-auth-user").write_text("admin\n")
    (tmp_path / "basic-auth-password").write_text("pw\n")
    assert read_auth(str(tmp_path)) == ("admin", "pw")
