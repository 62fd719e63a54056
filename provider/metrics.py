"""The gateway's metrics, with its exact names and labels, so one set of dashboards serves both.

``function_name`` is always ``name.namespace``, with the namespace the call named (the default when it named
none), unknown functions included, as the gateway reports it, up to ``MAX_UNKNOWN_NAMES`` of them: past that
a name nobody deployed is not recorded, so requests to random names cannot grow the series without bound.
"""

from __future__ import annotations

from typing import Callable, Iterable

from faas_infer.promtext import Registry

# Distinct names of functions that were never deployed that get series of their own.
MAX_UNKNOWN_NAMES = 64


class GatewayMetrics:
    """gateway_function_invocation_started/_total, gateway_functions_seconds, gateway_service_count."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = Registry()
        self.started = self.registry.counter(
            "gateway_function_invocation_started", "The total number of function HTTP requests started.",
            ("function_name",))
        self.total = self.registry.counter("gateway_function_invocation_total", "Function metrics",
                                           ("code", "function_name"))
        self.seconds = self.registry.histogram("gateway_functions_seconds", "Function time taken",
                                               ("code", "function_name"))
        self.service_count = self.registry.gauge("gateway_service_count",
                                                 "Current count of replicas for function", ("function_name",))
        self._replicas: Callable[[], Iterable[tuple[str, int]]] = lambda: ()
        self._unknown: set[str] = set()
        self._recorded: set[str] = set()  # names whose invocations get series (``records`` said yes once)

    def records(self, name: str, known: bool, namespace: str = "") -> bool:
        """Whether an invocation of ``name`` in ``namespace`` (default: ours) is recorded: always for a deployed
        function (``known``), for the first ``MAX_UNKNOWN_NAMES`` other names, never for an empty one."""
        label = self.label(name, namespace)
        if known or label in self._recorded:
            return True
        if not name or (label not in self._unknown and len(self._unknown) >= MAX_UNKNOWN_NAMES):
            return False
        self._unknown.add(label)
        return True

    def label(self, name: str, namespace: str = "") -> str:
        """``name.namespace`` (our namespace when ``namespace`` is empty)."""
        return f"{name}.{namespace or self.namespace}"

    def on_start(self, name: str, known: bool = True, namespace: str = "") -> None:
        """An invocation of ``name`` in ``namespace`` (default: ours) arrived (``known``: a deployed function);
        counted when ``records``."""
        if not self.records(name, known, namespace):
            return
        label = self.label(name, namespace)
        self._recorded.add(label)
        self.started.inc(function_name=label)

    def on_done(self, name: str, code: int, seconds: float, namespace: str = "") -> None:
        """An invocation of ``name`` in ``namespace`` (default: ours) was answered with ``code`` after
        ``seconds`` (counted when its start was)."""
        label = self.label(name, namespace)
        if label not in self._recorded:
            return
        self.total.inc(code=str(code), function_name=label)
        self.seconds.observe(seconds, code=str(code), function_name=label)

    def watch_replicas(self, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Read (name, desired replicas) of every function at each render."""
        self._replicas = source

    def render(self) -> str:
        """The text exposition, replica counts refreshed."""
        self.service_count.clear()
        for name, replicas in self._replicas():
            self.service_count.set(replicas, function_name=self.label(name))
        return self.registry.render()

    def invocations_by_function(self) -> dict[str, float]:
        """Invocations per ``name.namespace`` over every code (what the gateway asks Prometheus for)."""
        out: dict[str, float] = {}
        for line in self.total.lines():
            labels, value = line.rsplit(" ", 1)
            name = labels.split('function_name="', 1)[1].split('"', 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        return out
