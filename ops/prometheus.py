"""A private Prometheus: a generated config listing the given scrape jobs, started on a loopback port,
waited for until ready, queried, stopped cleanly.

``faas-infer up`` runs it as a sidecar process (``python -m ops.prometheus``, see ``sidecar_argv``) that also
keeps the watchdog targets in step with the provider's replicas (``ops.targets``). Tests use ``Prometheus``
directly. Debian's ``prometheus`` package provides the binary; ``make up`` and ``make test`` install it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import requests
import yaml

from faas_infer.loglevel import configure_from_env
from faas_infer.ports import free_port

logger = logging.getLogger(__name__)

INSTALL_HINT = ("prometheus is not installed: `make up` / `make test` install it "
                "(Debian: apt-get install prometheus)")


class PrometheusError(RuntimeError):
    """Prometheus is missing, would not start, or refused a query; the message says which and why."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job of the generated config."""

    # Job name (the ``job`` label): gateway, watchdogs, autoscaler.
    name: str
    # Static ``host:port`` targets.
    targets: tuple[str, ...] = ()
    # True: targets come from ``<run_dir>/targets/<name>.json``, rewritten by ``set_targets`` at run time.
    file_sd: bool = False
    # Path scraped on each target.
    metrics_path: str = "/metrics"


def find_binary(binary: str | None = None) -> str:
    """The prometheus executable, or PrometheusError with the install hint."""
    found = shutil.which(binary or "prometheus")
    if found is None:
        raise PrometheusError(INSTALL_HINT)
    return found


def render_config(jobs: Iterable[ScrapeJob], targets_dir: str, scrape_interval: float = 1.0) -> dict:
    """The prometheus.yml content for ``jobs`` (a dict; ``yaml.safe_dump`` writes it)."""
    ms = max(1, int(round(scrape_interval * 1000)))  # Prometheus durations take integers with a unit
    interval = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
    configs = []
    for job in jobs:
        config: dict[str, Any] = {"job_name": job.name, "metrics_path": job.metrics_path,
                                  "scrape_interval": interval, "scrape_timeout": interval}
        if job.targets:
            config["static_configs"] = [{"targets": list(job.targets)}]
        if job.file_sd:
            config["file_sd_configs"] = [{"files": [os.path.join(targets_dir, f"{job.name}.json")],
                                          "refresh_interval": "5s"}]
        configs.append(config)
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": configs}


def write_targets(path: str, targets: Iterable[tuple[str, Mapping[str, str]]]) -> None:
    """Write a file_sd JSON file atomically: one group per (``host:port``, labels)."""
    groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(groups, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Prometheus:
    """One prometheus process with its own config and TSDB under ``run_dir``."""

    def __init__(self, run_dir: str, jobs: Iterable[ScrapeJob], port: int = 0, bind: str = "127.0.0.1",
                 scrape_interval: float = 1.0, retention: str = "6h", binary: str | None = None) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.jobs = tuple(jobs)
        self.port = port
        self.bind = bind
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.binary = binary
        self.targets_dir = os.path.join(self.run_dir, "targets")
        self.config_path = os.path.join(self.run_dir, "prometheus.yml")
        self.log_path = os.path.join(self.run_dir, "prometheus.log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.bind}:{self.port}"

    def write_config(self) -> str:
        """Write prometheus.yml and an empty targets file per file_sd job; returns the config path."""
        os.makedirs(self.targets_dir, exist_ok=True)
        for job in self.jobs:
            path = os.path.join(self.targets_dir, f"{job.name}.json")
            if job.file_sd and not os.path.exists(path):
                write_targets(path, ())
        with open(self.config_path, "w") as f:
            yaml.safe_dump(render_config(self.jobs, self.targets_dir, self.scrape_interval), f, sort_keys=False)
        return self.config_path

    def argv(self) -> list[str]:
        """The command line (after ``write_config`` and with the port chosen)."""
        return [find_binary(self.binary), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={os.path.join(self.run_dir, 'data')}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={self.bind}:{self.port}", "--web.enable-lifecycle",
                "--log.level=warn"]

    def start(self, timeout: float = 30.0) -> "Prometheus":
        """Start it and return once ``/-/ready`` answers 200; PrometheusError when it does not."""
        find_binary(self.binary)
        self.write_config()
        self.port = free_port(self.bind, self.port)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.run_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus not ready on {self.url} after {timeout:g}s:\n{self.log_tail()}")

    def set_targets(self, job: str, targets: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Replace the targets of a file_sd job (Prometheus picks the file up within seconds)."""
        write_targets(os.path.join(self.targets_dir, f"{job}.json"), targets)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector (or matrix) as Prometheus returns it; PrometheusError on error."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        try:
            r = requests.get(self.url + "/api/v1/query", params=params, timeout=10)
            body = r.json()
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusError(f"query {expr!r}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def target_health(self) -> list[dict]:
        """The active targets: job, scrapeUrl, health, lastError."""
        body = requests.get(self.url + "/api/v1/targets", timeout=10).json()
        return [{"job": t["labels"].get("job"), "url": t["scrapeUrl"], "health": t["health"],
                 "error": t.get("lastError", "")} for t in body["data"]["activeTargets"]]

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (Prometheus flushes and exits), SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


def stack_jobs(provider_target: str, autoscaler_target: str = "") -> tuple[ScrapeJob, ...]:
    """The jobs of ``faas-infer up``: the provider's gateway metrics, the watchdogs (file_sd), the autoscaler."""
    jobs = [ScrapeJob("gateway", (provider_target,)), ScrapeJob("watchdogs", file_sd=True)]
    if autoscaler_target:
        jobs.append(ScrapeJob("autoscaler", (autoscaler_target,)))
    return tuple(jobs)


def sidecar_argv(python: str, run_dir: str, provider_url: str, port: int, autoscaler_target: str = "",
                 secret_mount_path: str = "", namespace: str = "") -> tuple[str, ...]:
    """The command ``faas-infer up`` runs as its Prometheus sidecar (``python -m ops.prometheus ...``)."""
    argv = [python, "-m", "ops.prometheus", "--run-dir", os.path.join(run_dir, "prometheus"),
            "--provider-url", provider_url, "--port", str(port)]
    if autoscaler_target:
        argv += ["--autoscaler", autoscaler_target]
    if secret_mount_path:
        argv += ["--secret-mount-path", secret_mount_path]
    if namespace:
        argv += ["--namespace", namespace]
    return tuple(argv)


def main(argv: list[str] | None = None) -> int:
    """Run Prometheus for a provider until SIGTERM, keeping the watchdog targets in step."""
    from ops.targets import TargetSync, read_auth

    parser = argparse.ArgumentParser(prog="python -m ops.prometheus", description=main.__doc__)
    parser.add_argument("--run-dir", required=True, help="folder for prometheus.yml, targets and the TSDB")
    parser.add_argument("--provider-url", required=True, help="the provider (gateway) base URL")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (another when taken)")
    parser.add_argument("--autoscaler", default="", help="host:port of the autoscaler's /metrics")
    parser.add_argument("--secret-mount-path", default="", help="folder with basic-auth-user/-password")
    parser.add_argument("--namespace", default="openfaas-fn", help="namespace for function_name labels")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes")
    args = parser.parse_args(argv)
    if not configure_from_env(os.environ, "prometheus"):
        return 2
    provider_target = args.provider_url.split("//", 1)[-1].rstrip("/")
    prom = Prometheus(args.run_dir, stack_jobs(provider_target, args.autoscaler), args.port,
                      scrape_interval=args.scrape_interval)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        prom.start()
    except PrometheusError as exc:
        print(f"prometheus: {exc}", file=sys.stderr)
        return 1
    print(f"prometheus: {prom.url} (config {prom.config_path})", flush=True)
    sync = TargetSync(args.provider_url, read_auth(args.secret_mount_path), prom, args.namespace)
    try:
        while not stop.wait(2.0):
            sync.refresh()
            if not prom.alive():
                print(f"prometheus exited:\n{prom.log_tail()}", file=sys.stderr)
                return 1
    finally:
        prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
