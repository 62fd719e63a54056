"""`faas-infer bench queue` end to end at a tiny scale: real watchdogs, a private redis-server, the table
and the JSON (figures are not asserted, only that every measurement ran and answered)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from helpers import REPO, wait_until


def test_bench_queue_measures_both_backends_and_the_share(tmp_path):
    out = tmp_path / "queue.json"
    done = subprocess.run([sys.executable, "-m", "faas_infer.cli", "bench", "queue", "--functions", "echo",
                           "--duration", "0.5", "--concurrency", "4", "--json", str(out)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "redis - local" in done.stdout
    result = json.loads(out.read_text())
    measured = {row["backend"]: row for row in result["backends"] if row["backend"] in ("local", "redis")}
    assert set(measured) == {"local", "redis"}
    for row in measured.values():
        assert row["rps"] > 0 and row["errors"] == 0 and row["p50_10rps_ms"] > 0
    assert sum(row["served"] for row in result["share"]) > 0


def test_a_benchmark_stopped_by_sigterm_leaves_nothing_running(tmp_path):
    """SIGTERM (timeout, kill) ended the benchmark without its finally blocks: the watchdogs, in sessions of
    their own, and the private redis-server went on running."""
    bench = subprocess.Popen([sys.executable, "-m", "faas_infer.cli", "bench", "queue", "--functions", "echo",
                              "--duration", "60", "--concurrency", "2"], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started: dict[int, psutil.Process] = {}

        def both_watchdogs_serve() -> bool:
            for child in psutil.Process(bench.pid).children(recursive=True):
                started.setdefault(child.pid, child)
            return sum("watchdog" in " ".join(c.cmdline()) for c in started.values() if c.is_running()) >= 2

        wait_until(both_watchdogs_serve, 120, what="the benchmark's two watchdogs")
        time.sleep(1)  # under load by now, or about to be
        for child in psutil.Process(bench.pid).children(recursive=True):
            started.setdefault(child.pid, child)
        bench.send_signal(signal.SIGTERM)
        code = bench.wait(60)
    finally:
        if bench.poll() is None:
            bench.kill()
        time.sleep(0.5)
        left = [c for c in started.values() if alive(c)]
        for child in left:  # a failed run must not leave them serving
            child.kill()
    assert not left, [c.pid for c in left]
    assert code == 143, bench.stderr.read().decode()[-2000:]


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
