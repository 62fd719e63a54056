"""`faas-infer bench queue` end to end at a tiny scale: real watchdogs, a private redis-server, the table
and the JSON (figures are not asserted, only that every measurement ran and answered)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import REPO


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
