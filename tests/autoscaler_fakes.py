"""Shared by the autoscaler tests: a synthetic predictor and snapshot builders."""

from __future__ import annotations

from autoscaler.snapshot import FunctionState, Node, Snapshot

GiB = 1024**3


class LinearPredictor:
    """t = (overhead + per_item * b) / min(cpu, 2) speed-up on CPU; GPU ten times faster per share."""

    def __init__(self, overhead: float = 0.004, per_item: float = 0.001, scale: dict | None = None) -> None:
        self.overhead, self.per_item, self.scale = overhead, per_item, scale or {}

    def exec_seconds(self, model: str, batch: int, cpu: float, gpu: float) -> float | None:
        if model == "unknown":
            return None
        t = (self.overhead + self.per_item * batch) * self.scale.get(model, 1.0)
        if gpu:
            return t / 10 / gpu
        return t / cpu if cpu <= 1 else t / (1 + 0.5 * (cpu - 1))


def fn(name: str, rate: float | None, slo: float = 0.1, **kw) -> FunctionState:
    kw.setdefault("idle_seconds", 0.0)
    return FunctionState(name, slo, name, rate=rate, memory=kw.pop("memory", 256 * 1024**2), **kw)


def snapshot(functions, nodes=None, taken_at: float = 0.0) -> Snapshot:
    nodes = nodes if nodes is not None else (Node("a", 4, 8 * GiB), Node("b", 8, 16 * GiB))
    return Snapshot(taken_at, tuple(functions), tuple(nodes))
