"""The load generator's bookkeeping: latencies from when a request was due, and from when it was sent."""

from __future__ import annotations

from bench.loadgen import LoadResult


def test_served_percentile_leaves_out_the_generators_own_lateness():
    result = LoadResult(10.0, 1.0, latencies=[0.003, 0.005, 0.004], late=[0.001, 0.002, 0.0005],
                        codes={200: 3})
    assert result.percentile(50) == 0.004
    assert abs(result.served_percentile(50) - 0.003) < 1e-12  # 0.002, 0.003, 0.0035
    other = LoadResult(10.0, 1.0, latencies=[0.010], late=[0.009], codes={200: 1})
    result.merge(other)
    assert len(result.late) == 4 and abs(result.served_percentile(100) - 0.0035) < 1e-12
    assert LoadResult(10.0, 1.0).served_percentile(50) == float("inf")
