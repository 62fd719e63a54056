"""SLO attainment read from Prometheus: the share of each function's calls answered successfully (2xx)
within its SLO over a recent window, from the gateway's ``gateway_functions_seconds`` histogram (so it works
the same behind the local provider and a real OpenFaaS gateway). A fast refusal (429, 503) or an error is a
miss, however quickly it was answered."""

from __future__ import annotations

import logging
from typing import Mapping

import requests

from faas_infer.histogram import fraction_below

logger = logging.getLogger(__name__)

QUERY = ("sum by (function_name, le, ok) (label_replace(increase(gateway_functions_seconds_bucket[{window}]), "
         '"ok", "1", "code", "2.."))')


def read_attainment(prometheus_url: str, slos: Mapping[str, float], namespace: str = "openfaas-fn",
                    window: str = "1m", timeout: float = 3.0) -> dict[str, float]:
    """{function: fraction of calls within its SLO}; functions without calls in the window are left out."""
    if not prometheus_url or not slos:
        return {}
    try:
        response = requests.get(prometheus_url.rstrip("/") + "/api/v1/query",
                                params={"query": QUERY.format(window=window)}, timeout=timeout)
        response.raise_for_status()
        results = response.json()["data"]["result"]
    except (requests.RequestException, KeyError, ValueError) as exc:
        logger.debug("SLO attainment unavailable from %s: %s", prometheus_url, exc)
        return {}
    return attainment_from(results, slos, namespace)


def attainment_from(results: list[dict], slos: Mapping[str, float], namespace: str = "openfaas-fn") -> dict[str, float]:
    """{function: share of its calls answered 2xx within its SLO} from the query's result vector."""
    ok: dict[str, dict[float, float]] = {}
    calls: dict[str, float] = {}
    for series in results:
        metric = series["metric"]
        name = metric.get("function_name", "").removesuffix(f".{namespace}")
        le, n = float(metric["le"]), float(series["value"][1])
        if metric.get("ok") == "1":
            ok.setdefault(name, {})[le] = n
        if le == float("inf"):
            calls[name] = calls.get(name, 0.0) + n
    out = {}
    for name, slo in slos.items():
        if calls.get(name, 0.0) <= 0:
            continue
        good = ok.get(name, {})
        ratio = fraction_below(slo, good) if good else 0.0
        out[name] = (ratio or 0.0) * good.get(float("inf"), 0.0) / calls[name]
    return out
