"""The instance's runtime: answered requests steer how much of the SLO admission fills (``batcher.headroom``)."""

from __future__ import annotations

import pytest

from batcher.queue import LocalBatchQueue
from batcher.request import Request
from watchdog.config import WatchdogConfig
from watchdog.handler import LoadedHandler
from watchdog.runtime import Runtime


def test_requests_answered_past_the_slo_lower_the_share_admission_fills(tmp_path):
    now = [0.0]

    def clock() -> float:
        return now[0]

    def handle(requests):
        now[0] += 0.1  # every batch takes twice the SLO
        return [b"ok"] * len(requests)

    config = WatchdogConfig.from_env({"latency_slo": "50ms", "max_batch_size": "1", "TMPDIR": str(tmp_path)})
    runtime = Runtime(config, LoadedHandler(handle, 0.0, None), LocalBatchQueue(clock), clock=clock).start()
    try:
        assert runtime.headroom.share(clock()) == 1.0
        for _ in range(200):
            assert runtime.submit(Request(), timeout=10.0).body == b"ok"
        assert runtime.headroom.share(clock()) == pytest.approx(0.5 ** 0.5)
        assert "faas_infer_admission_slo_share 0.707" in runtime.metrics.registry.render()
    finally:
        runtime.drain(5)
