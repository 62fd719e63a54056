"""A small thread-safe Prometheus registry: counters, gauges and histograms with labels, text format 0.0.4.

The watchdog, the provider and the autoscaler each own one ``Registry`` and serve ``registry.render()``
on their metrics endpoint. Series appear after their first event, as in the Go client.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Sequence

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Prometheus' default buckets, as the gateway and of-watchdog use them.
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Label sets whose series key each metric remembers (beyond them keys are built on every call).
MAX_CACHED_LABEL_SETS = 256


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], object] = {}
        # Label sets already seen, as given (names and values in call order) -> the series key: most calls
        # repeat a few label sets (code and method of a request), and this look-up is all they then cost.
        self._keys: dict[tuple[tuple[str, object], ...], tuple[str, ...]] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        given = tuple(labels.items())
        try:
            key = self._keys.get(given)
        except TypeError:  # an unhashable value: no caching, converted with str() as always
            return self._new_key(labels)
        if key is None:
            key = self._new_key(labels)
            # Only text values are remembered: 1 and True are equal keys of a dict, "1" and "True" are not.
            if len(self._keys) < MAX_CACHED_LABEL_SETS and all(type(v) is str for _, v in given):
                self._keys[given] = key
        return key

    def _new_key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if tuple(labels) == self.label_names:  # labels given in declared order: the common, fast case
            return tuple(labels.values()) if all(type(v) is str for v in labels.values()) else \
                tuple(str(v) for v in labels.values())
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.label_names)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def remove(self, **labels: str) -> None:
        """Forget one series (for example the instance a function no longer has)."""
        with self._lock:
            self._values.pop(self._key(labels), None)

    def clear(self) -> None:
        """Forget every series."""
        with self._lock:
            self._values.clear()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount  # type: ignore[operator]

    def value(self, **labels: str) -> float:
        """The current value of one series (0 when it has not appeared)."""
        with self._lock:
            return float(self._values.get(self._key(labels), 0.0))  # type: ignore[arg-type]

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels_text(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    """A value per label set that goes up and down, or is read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 callback: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text, labels)
        self._callback = callback

    def set(self, value: float, **labels: str) -> None:
        """Set the series named by ``labels``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def set_function(self, callback: Callable[[], float]) -> None:
        """Read the (label-less) value from ``callback`` at every scrape."""
        self._callback = callback

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        """Subtract ``amount`` from the series."""
        self.inc(-amount, **labels)

    def lines(self) -> list[str]:
        if self._callback is not None:
            return [f"{self.name} {_number(float(self._callback()))}"]
        return super().lines()


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation in the series named by ``labels``."""
        self.observe_many((value,), **labels)

    def observe_many(self, values: Iterable[float], **labels: str) -> None:
        """Record each of ``values`` in the series named by ``labels`` (one lock for all of them)."""
        key = self._key(labels)
        buckets, where = self.buckets, bisect.bisect_left
        with self._lock:
            state = self._values.get(key)
            if state is None:
                state = self._values[key] = [[0] * (len(buckets) + 1), 0.0, 0]
            counts = state[0]
            total = n = 0
            for value in values:
                # Counted in the one bucket it falls in (the last slot is +Inf); made cumulative when read.
                counts[where(buckets, value)] += 1  # type: ignore[index]
                total += value
                n += 1
            state[1] += total  # type: ignore[index]
            state[2] += n  # type: ignore[index]

    def snapshot(self, **labels: str) -> tuple[tuple[int, ...], float, int]:
        """(cumulative bucket counts, sum, count) of one series."""
        with self._lock:
            state = self._values.get(self._key(labels))
            if state is None:
                return (0,) * len(self.buckets), 0.0, 0
            return tuple(_cumulative(state[0]))[:-1], state[1], state[2]  # type: ignore[index]

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, (_cumulative(v[0]), v[1], v[2])) for k, v in self._values.items())  # type: ignore[index]
        out = []
        for key, (counts, total, count) in items:
            for bound, n in zip(self.buckets, counts):
                le = f'le="{_number(bound)}"'
                out.append(f"{self.name}_bucket{_labels_text(self.label_names, key, le)} {n}")
            inf = _labels_text(self.label_names, key, 'le="+Inf"')
            out.append(f"{self.name}_bucket{inf} {count}")
            out.append(f"{self.name}_sum{_labels_text(self.label_names, key)} {_number(total)}")
            out.append(f"{self.name}_count{_labels_text(self.label_names, key)} {count}")
        return out


def _cumulative(counts: list[int]) -> list[int]:
    return list(itertools.accumulate(counts))


class Registry:
    """The metrics one process exports, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """Register and return a counter."""
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = (),
              callback: Callable[[], float] | None = None) -> Gauge:
        """Register and return a gauge; with ``callback`` its value is read at scrape time."""
        return self._add(Gauge(name, help_text, labels, callback))

    def histogram(self, name: str, help_text: str, labels: Sequence[str] = (),
                  buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        """Register and return a histogram."""
        return self._add(Histogram(name, help_text, labels, buckets))

    def _add(self, metric):
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """All metrics in the text exposition format."""
        out: list[str] = []
        for metric in self._metrics:
            lines = metric.lines()
            if lines:
                out.extend(metric.header())
                out.extend(lines)
        return "\n".join(out) + "\n"


class MetricsServer:
    """Serves ``GET /metrics`` from a registry on its own port and thread (port 0 picks a free one)."""

    def __init__(self, registry: Registry, bind: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = registry.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                logger.debug("metrics: " + fmt, *args)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((bind, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="metrics",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self.server.shutdown()
        self.server.server_close()
