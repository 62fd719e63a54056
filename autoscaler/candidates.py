"""Candidate configurations of a function under INFless's rules, with dominated ones dropped.

A configuration is a batch size ``b``, CPU cores ``c`` and a GPU share ``g``. With execution time
``t = t_exec(b, c, g)``: for ``b > 1`` it must satisfy ``t <= SLO / 2`` (half the budget is left to fill the
batch), for ``b = 1`` simply ``t <= SLO``; an instance then serves at most ``r_max = b / t`` and should see
at least ``r_min = b / (SLO - t)`` requests per second (below it batches time out before filling, which
wastes the instance but breaks no SLO); its batch timeout is ``SLO - t``. Its price is ``beta * c + g``.
A configuration is dominated when another costs no more, uses no more memory and serves at least as much
while being no harder to keep busy (``r_min`` no higher); dropping those loses no optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from autoscaler.predictor import ExecPredictor


@dataclass(frozen=True)
class Candidate:
    """One configuration of one function, priced and rated."""

    batch: int
    cpu: float
    gpu: float
    # Predicted (or measured) execution seconds of a full batch.
    t_exec: float
    # Requests per second one instance serves at most (b / t_exec).
    r_max: float
    # Requests per second one instance needs to fill its batches in time (0 for b = 1).
    r_min: float
    # The batch timeout this configuration runs with (SLO - t_exec; 0 for b = 1).
    timeout: float
    # Weighted resources of one instance (beta * cpu + gpu).
    cost: float
    # Memory bytes of one instance.
    memory: int
    # A short stable name used in variant names (``b4-c1000-g0``); derived, never passed.
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", config_key(self.batch, self.cpu, self.gpu))


def config_key(batch: int, cpu: float, gpu: float) -> str:
    """The name of a configuration: batch, millicores, GPU percent (``b4-c1000-g0``)."""
    return f"b{batch}-c{int(round(cpu * 1000))}-g{int(round(gpu * 100))}"


def enumerate_candidates(model: str, slo: float, memory: int, predictor: ExecPredictor,
                         batch_sizes: Iterable[int], cpu_steps: Iterable[float], gpu_steps: Iterable[float],
                         beta: float, shapes: Iterable[tuple[float, int, int]]) -> list[Candidate]:
    """Every feasible configuration that fits some node shape (cpu, memory, gpus), dominated ones dropped."""
    shapes = sorted(set(shapes))
    max_cpu = max((s[0] for s in shapes), default=0.0)
    has_gpu = any(s[2] > 0 for s in shapes)
    fits_memory = any(s[1] >= memory for s in shapes)
    if not fits_memory:
        return []
    out: list[Candidate] = []
    gpu_options = [0.0] + ([g for g in gpu_steps] if has_gpu else [])
    for gpu in gpu_options:
        for cpu in cpu_steps:
            if cpu > max_cpu or not any(s[0] >= cpu and s[1] >= memory and (gpu == 0 or s[2] > 0) for s in shapes):
                continue
            for batch in sorted(batch_sizes):
                t = predictor.exec_seconds(model, batch, cpu, gpu)
                if t is None or t <= 0:
                    continue
                limit = slo / 2 if batch > 1 else slo
                if t > limit:
                    break  # larger batches only take longer
                r_max = batch / t
                r_min = batch / (slo - t) if batch > 1 else 0.0
                out.append(Candidate(batch, cpu, gpu, t, r_max, r_min, slo - t if batch > 1 else 0.0,
                                     beta * cpu + gpu, memory))
    return prune_dominated(out)


def smallest(candidates: Iterable[Candidate]) -> Candidate:
    """The configuration needing the least CPU (then GPU, then memory): what one more instance needs at least."""
    return min(candidates, key=lambda c: (c.cpu, c.gpu, c.memory))


def prune_dominated(candidates: list[Candidate]) -> list[Candidate]:
    """Keep the configurations no other beats on cost, throughput and ease of filling at once."""
    kept: list[Candidate] = []
    for i, c in enumerate(candidates):
        dominated = False
        for j, o in enumerate(candidates):
            if (j != i and o.cost <= c.cost and o.r_max >= c.r_max and o.r_min <= c.r_min and o.cpu <= c.cpu
                    and o.gpu <= c.gpu and (j < i or o.cost < c.cost or o.r_max > c.r_max or o.r_min < c.r_min
                                            or o.cpu < c.cpu or o.gpu < c.gpu)):
                dominated = True
                break
        if not dominated:
            kept.append(c)
    return sorted(kept, key=lambda c: (c.cost / c.r_max, c.cost))
