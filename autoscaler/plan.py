"""What decide answers: a frozen plan of instance groups per function, or an invalid plan with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from autoscaler.candidates import Candidate
from autoscaler.snapshot import Measurement


@dataclass(frozen=True)
class Target:
    """Instances of one function, one configuration, on one node."""

    fn: str
    # Configuration key (``b4-c1000-g0``).
    key: str
    # Node name ("" when placement is left to the platform).
    node: str
    count: int
    # The configuration; None for a group kept as it runs (e.g. no longer a candidate, removal step-limited).
    candidate: Candidate | None = None


@dataclass(frozen=True)
class FunctionPlan:
    """The decision for one function, with the inputs that explain it."""

    name: str
    # Requests per second planned for (held over the scale-down delay, backlog included).
    demand: float
    # Requests per second the planned instances serve at most (pinned ones included).
    capacity: float
    # Weighted resources of the planned (non-pinned) instances.
    cost: float
    targets: tuple[Target, ...] = ()
    # Requests per second left uncovered (capacity, max instances or step limits).
    shortfall: float = 0.0
    # Why, in a few words (logged with every change).
    reason: str = ""
    # True when the function is left exactly as it runs (unknown load, no feasible configuration).
    unchanged: bool = False

    def instances(self) -> int:
        """Planned instances."""
        return sum(t.count for t in self.targets)


@dataclass(frozen=True)
class GuardMemory:
    """What the guard rails remember between ticks (decide returns the next one inside the plan)."""

    # {function: ((time, demand), ...)} within the scale-down delay.
    demand_history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # {function: ((time, measured execution times), ...)} within the scale-down delay.
    measured_history: Mapping[str, tuple[tuple[float, tuple[Measurement, ...]], ...]] = field(default_factory=dict)
    # {function: (share of the modelled capacity its instances really serve, when it was last set)}.
    capacity_factors: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # {variant: when it was first seen with fewer replicas ready than it has} (make-before-break: a new,
    # grown or restarted variant is starting, for at most min_variant_age).
    unready_since: Mapping[str, float] = field(default_factory=dict)
    # When the control loop began (its clock; None outside a loop, e.g. one decision of ``faas-infer plan``):
    # until scale_down_delay has passed it does not know the demand held over it, so it removes nothing for
    # the plan's sake (restarted, the autoscaler removed at once instances the one before it was holding).
    started: float | None = None
    # {function: its parent's createdAt as last seen}: a different one is a new deployment under the old name
    # (deleted and deployed again between two ticks), whose demand, timings and capacity factor start afresh.
    deployed: Mapping[str, str] = field(default_factory=dict)
    # {function: when a new deployment under its name was first seen}: like a restarted loop, it removes
    # nothing for the plan's sake until it has watched that deployment's demand for scale_down_delay.
    redeployed_at: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A decision: valid with per-function plans, or invalid with the reason nothing should change."""

    valid: bool
    reason: str
    at: float
    functions: tuple[FunctionPlan, ...] = ()
    # "highs", "cbc" or "greedy", and how stage one ended ("optimal", "feasible", "greedy",
    # "fallback: <why>").
    solver: str = ""
    status: str = ""
    placement: str = ""
    # Weighted resources of the plan.
    cost: float = 0.0
    # A proven lower bound on stage one's optimum (weighted resources, plus penalties for demand or minimums
    # left short), so on ``selection_cost`` when that leaves nothing short; 0 when it does (its resources alone
    # then have no bound: it traded them for penalties).
    bound: float = 0.0
    # Weighted resources of stage one's answer, which ``bound`` bounds: the plan is placed and stepped
    # toward it by the guard rails, so its own cost may be lower or higher.
    selection_cost: float = 0.0
    memory: GuardMemory = field(default_factory=GuardMemory)

    @classmethod
    def invalid(cls, reason: str, at: float, memory: GuardMemory | None = None) -> "Plan":
        """No decision, with its reason."""
        return cls(False, reason, at, memory=memory or GuardMemory())

    def function(self, name: str) -> FunctionPlan | None:
        """The plan of one function."""
        return next((f for f in self.functions if f.name == name), None)

    @property
    def gap(self) -> float | None:
        """Relative distance of stage one's answer from the proven bound (None without a bound)."""
        if self.bound <= 0:
            return None
        return max(0.0, (self.selection_cost - self.bound) / self.bound)
