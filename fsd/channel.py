"""The channel interface: how workers and the coordinator exchange activation blocks.

A message carries one (layer, source) block of values for one destination; both sides know from the
schedule which blocks to expect, so payloads are raw float32 bytes with no indices. A ``Channel`` opens
an ``Endpoint`` per (job, rank); an endpoint sends lists of messages (a backend may pack them into few
wire requests) and receives the blocks of one layer before a deadline, buffering early arrivals.
Every endpoint meters what it does in the backend's billable units, for the cost model.

An endpoint opened with the job's deadline bounds every backend request by the time left before it, and
sends nothing once it has passed. When the coordinator gives up on a job it ``abort``s it: every rank
still waiting for that job's messages raises ``JobAborted`` instead of waiting out the deadline, so the
worker is free for the next job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Collection, Mapping, Protocol, Sequence

from fsd.partition import COORDINATOR


@dataclass(frozen=True)
class Message:
    """One block of activations for one destination."""

    # Rank receiving it (COORDINATOR = -1 for outputs).
    dst: int
    # The layer whose computation needs it (layers + 1 for outputs gathered by the coordinator).
    layer: int
    # Rank that sent it (COORDINATOR for the model's inputs).
    src: int
    # Raw float32 values, (values, batch) in C order.
    data: bytes


@dataclass(frozen=True)
class Usage:
    """What one or more endpoints did on a channel."""

    # Logical messages sent (one per Message).
    messages: int = 0
    # Payload bytes sent.
    bytes: int = 0
    # Billable backend requests by kind ("send", "receive", "put", "get", "list", "delete").
    requests: Mapping[str, int] = field(default_factory=dict)

    def __add__(self, other: "Usage") -> "Usage":
        kinds = set(self.requests) | set(other.requests)
        return Usage(self.messages + other.messages, self.bytes + other.bytes,
                     {k: self.requests.get(k, 0) + other.requests.get(k, 0) for k in sorted(kinds)})

    def to_json(self) -> dict:
        """A JSON-safe dict."""
        return {"messages": self.messages, "bytes": self.bytes, "requests": dict(self.requests)}

    @classmethod
    def from_json(cls, doc: Mapping) -> "Usage":
        """Inverse of ``to_json``."""
        return cls(int(doc.get("messages", 0)), int(doc.get("bytes", 0)),
                   {str(k): int(v) for k, v in (doc.get("requests") or {}).items()})


class Meter:
    """Thread-safe counters behind an endpoint's ``usage()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages = 0
        self._bytes = 0
        self._requests: dict[str, int] = {}

    def sent(self, messages: int, nbytes: int) -> None:
        """Count logical messages and their payload bytes."""
        with self._lock:
            self._messages += messages
            self._bytes += nbytes

    def request(self, kind: str, count: int = 1) -> None:
        """Count ``count`` billable requests of ``kind``."""
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + count

    def usage(self) -> Usage:
        """A snapshot."""
        with self._lock:
            return Usage(self._messages, self._bytes, dict(sorted(self._requests.items())))


class Endpoint(Protocol):
    """One rank's view of one job on a channel."""

    def send(self, messages: Sequence[Message]) -> None:
        """Deliver ``messages`` (all from this rank)."""

    def receive(self, layer: int, sources: Collection[int], deadline: float) -> dict[int, bytes]:
        """The blocks of ``layer`` from every rank in ``sources``; ``ChannelTimeout`` after ``deadline``
        (a ``time.monotonic()`` value) naming what is missing, ``JobAborted`` once the job is aborted."""

    def usage(self) -> Usage:
        """What this endpoint did so far."""


class Channel(Protocol):
    """A transport shared by every job of a deployment."""

    # "redis" or "s3": the name used in config and in the cost model's price table.
    kind: str

    def endpoint(self, job: str, rank: int, deadline: float | None = None) -> Endpoint:
        """The endpoint of ``rank`` (COORDINATOR for the coordinator) in ``job``; with a ``deadline``
        (``time.monotonic()``), no request outlives it."""

    def abort(self, job: str, ranks: Collection[int], reason: str) -> None:
        """Tell every rank of ``ranks`` still working on ``job`` to stop (the marker expires by itself)."""

    def purge(self, job: str, ranks: Collection[int]) -> Usage:
        """Remove whatever ``job`` left behind; returns the requests that took."""

    def sweep(self, before: float) -> Usage:
        """Remove what every job that expired before ``before`` (epoch seconds) left behind, whoever ran it
        (a coordinator that died mid-job cannot purge); returns the requests that took."""


def rank_name(rank: int) -> str:
    """``"c"`` for the coordinator, else the rank's number."""
    return "c" if rank == COORDINATOR else str(rank)


def who(rank: int) -> str:
    """``"coordinator"`` or ``"rank N"``: a rank as error messages name it."""
    return "coordinator" if rank == COORDINATOR else f"rank {rank}"


def missing_text(layer: int, missing: Collection[int], me: int) -> str:
    """The message of a ``ChannelTimeout``."""
    names = ", ".join(who(r) for r in sorted(missing))
    return f"{who(me)}: no layer-{layer} activations from {names} before the deadline (worker dead or message lost)"


def aborted_text(job: str, me: int, reason: str) -> str:
    """The message of the ``JobAborted`` a waiting rank raises."""
    return f"{who(me)}: job {job} was aborted by the coordinator ({reason})"
