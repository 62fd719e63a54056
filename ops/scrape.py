"""Read Prometheus metrics: the text exposition format (a target's ``/metrics``) or a Prometheus server's
instant vectors, both as a flat tuple of ``Sample``; plus the histogram arithmetic ``top`` needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import requests

from faas_infer.histogram import fraction_below, quantile  # noqa: F401 - re-exported for ops users

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


@dataclass(frozen=True)
class Sample:
    """One series' value at one moment."""

    name: str
    labels: Mapping[str, str]
    value: float

    def label(self, key: str) -> str:
        """A label's value ('' when absent)."""
        return self.labels.get(key, "")


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_text(text: str) -> tuple[Sample, ...]:
    """Every sample of a text-format exposition; comments and malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        name, labels_text, value = m.groups()
        labels = {k: _unescape(v) for k, v in _LABEL.findall(labels_text or "")}
        try:
            out.append(Sample(name, labels, float(value)))
        except ValueError:
            continue
    return tuple(out)


def scrape(url: str, timeout: float = 3.0) -> tuple[Sample, ...]:
    """GET a ``/metrics`` URL and parse it."""
    r = requests.get(url, timeout=timeout)
    r.raise_for_status()
    return parse_text(r.text)


def query_samples(prometheus_url: str, selector: str, timeout: float = 5.0) -> tuple[Sample, ...]:
    """The current value of every series matching ``selector`` in a Prometheus server."""
    r = requests.get(prometheus_url.rstrip("/") + "/api/v1/query", params={"query": selector}, timeout=timeout)
    if r.status_code != 200:  # Prometheus says why in the body; raise_for_status gave only the whole URL back
        try:
            why = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            why = r.text.strip()[:200] or r.reason
        raise ValueError(f"HTTP {r.status_code}: {why}")
    out = []
    for item in r.json()["data"]["result"]:
        labels = dict(item["metric"])
        name = labels.pop("__name__", "")
        out.append(Sample(name, labels, float(item["value"][1])))
    return tuple(out)


def select(samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples called ``name`` whose labels include ``labels``."""
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def buckets(samples: Iterable[Sample], name: str, **labels: str) -> dict[float, float]:
    """Cumulative counts by upper bound of a histogram (``name`` without ``_bucket``), summed over other labels."""
    out: dict[float, float] = {}
    for s in select(samples, name + "_bucket", **labels):
        le = float(s.label("le"))
        out[le] = out.get(le, 0.0) + s.value
    return out


def bucket_delta(now: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Counts observed between two readings of the same histogram (a counter reset restarts from zero)."""
    out = {}
    for le, n in now.items():
        d = n - before.get(le, 0.0)
        out[le] = n if d < 0 else d
    return out
