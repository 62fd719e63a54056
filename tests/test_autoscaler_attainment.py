"""SLO attainment from the gateway histogram's query result: 2xx within the SLO over all calls."""

from __future__ import annotations

import pytest

from autoscaler.attainment import attainment_from


def series(fn: str, ok: bool, buckets: dict[float, float]) -> list[dict]:
    extra = {"ok": "1"} if ok else {}
    return [{"metric": {"function_name": f"{fn}.openfaas-fn", "le": str(le), **extra}, "value": [0, str(n)]}
            for le, n in buckets.items()]


def test_fast_refusals_count_as_misses_and_slow_successes_too():
    inf = float("inf")
    results = (series("f", True, {0.05: 60, 0.1: 80, inf: 100})  # 2xx: 80 within 100 ms
               + series("f", False, {0.05: 100, 0.1: 100, inf: 100}))  # 429/503: all fast, all misses
    assert attainment_from(results, {"f": 0.1}) == {"f": pytest.approx(80 / 200)}
    assert attainment_from(results, {"f": 0.075}) == {"f": pytest.approx(70 / 200)}  # interpolated in its bucket


def test_only_refusals_is_zero_and_no_calls_is_left_out():
    refused = series("f", False, {0.1: 5, float("inf"): 5})
    assert attainment_from(refused, {"f": 0.1, "g": 0.1}) == {"f": 0.0}
