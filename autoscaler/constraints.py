"""Placement constraints, pure: the OpenFaaS ``constraints`` of a function read against the nodes' labels.

faas-netes turns each constraint ``key=value`` into a node selector (it splits on "=" and drops anything
else, so Docker Swarm's ``key == value`` is silently ignored there; see openfaas/docs#260). A variant placed
on a node gets ``kubernetes.io/hostname=NODE`` (``hostname``), and the parent's own constraints besides, so
a plan that put a function's instances on a node its constraints exclude left their pods Pending: a
GPU-constrained function got CPU variants on a CPU node. ``eligible`` tells decide which nodes a function's
instances may use. Read here: ``key=value`` and ``key==value`` (spaces allowed), and ``key!=value``.

Only what the node inventory can answer is applied: a constraint on a label no node declares (the local
node's inventory has no labels; faasd ignores constraints) is left out and reported, rather than leaving
the function without a node. Every node carries its name as ``kubernetes.io/hostname``.
"""

from __future__ import annotations

import re
from typing import Iterable

from autoscaler.snapshot import Node

HOSTNAME = "kubernetes.io/hostname"

_CONSTRAINT = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*$")


def hostname(node: str) -> str:
    """The constraint that pins an instance to ``node``, in the form faas-netes reads."""
    return f"{HOSTNAME}={node}"


def labels(node: Node) -> dict[str, str]:
    """A node's labels, its hostname label included."""
    return {HOSTNAME: node.name, **node.labels}


def eligible(constraints: Iterable[object], nodes: Iterable[Node]) -> tuple[frozenset[str] | None, list[str]]:
    """(names of the nodes every applicable constraint admits, or None when no constraint applies; notes on
    the constraints left out: unreadable, or on a label no node declares)."""
    constraints = list(constraints or ())
    if not constraints:  # most functions: no pass over the nodes (1,000 of them x 1,000 nodes cost 0.2 s a tick)
        return None, []
    every = [(n.name, labels(n)) for n in nodes]
    known = {key for _, have in every for key in have}
    tests, notes = [], []
    for raw in constraints:
        m = _CONSTRAINT.match(str(raw))
        if m is None:
            notes.append(f"constraint {str(raw)!r} is not key=value, key==value or key!=value: not applied")
        elif m.group(1) not in known:
            notes.append(f"constraint {str(raw)!r}: no node in the inventory declares {m.group(1)}: not applied")
        else:
            tests.append((m.group(1), m.group(2) != "!=", m.group(3)))
    if not tests:
        return None, notes
    admitted = frozenset(name for name, have in every
                         if all((have.get(key) == value) == equal for key, equal, value in tests))
    return admitted, notes
