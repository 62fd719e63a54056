"""SLO attainment read from Prometheus: the share of each function's calls answered within its SLO over
a recent window, from the gateway's ``gateway_functions_seconds`` histogram (so it works the same behind
the local provider and a real OpenFaaS gateway)."""

from __future__ import annotations

import logging
from typing import Mapping

import requests

from faas_infer.histogram import fraction_below

logger = logging.getLogger(__name__)

QUERY = "sum by (function_name, le) (increase(gateway_functions_seconds_bucket[{window}]))"


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
    counts: dict[str, dict[float, float]] = {}
    for series in results:
        name = series["metric"].get("function_name", "").removesuffix(f".{namespace}")
        counts.setdefault(name, {})[float(series["metric"]["le"])] = float(series["value"][1])
    out = {}
    for name, slo in slos.items():
        ratio = fraction_below(slo, counts.get(name, {}))
        if ratio is not None:
            out[name] = ratio
    return out
