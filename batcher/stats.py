"""Queue statistics kept in Redis: every instance writes them, the autoscaler reads them.

Writers take a client or a pipeline (rq's style) so an instance batches them into one round trip.
The reader, ``read_function_stats(client, fn, now)``, returns a frozen ``FunctionStats`` in two round
trips: queue depth, arrival rates over recent windows, the live instances (heartbeat within
``STALE_AFTER``) with their facts, live batch config, served count and execution time by batch size,
and the function's counters. Times are epoch seconds; the caller passes ``now`` (tests set the clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from batcher import keys, live_config
from batcher.policy import BatchConfig

# An instance whose last heartbeat is older than this is gone: it is not listed, and its claimed
# requests are reclaimed by any live instance.
STALE_AFTER = 3.0
# Arrival counts older than this are trimmed.
ARRIVALS_KEEP = 300
# Windows (seconds) over which arrival rates are reported.
WINDOWS = (1, 10, 60)
COUNTERS = ("served", "expired", "reclaimed", "dropped", "refused")
# Seconds a function's own keys (counters, arrivals, refusals, queue) outlive its last instance: a deleted
# function left them, and its name in ``fi:functions``, forever. Every heartbeat keeps them (``PERSIST``).
IDLE_TTL = 3600
# Seconds without a beat from any instance of a function before its queue is retired (``presence.retire``) by
# anyone but a peer reaping by the heartbeat rule: nothing waits on such a queue, so there is no hurry, and the
# margin keeps a clock running ahead of the instances' (the beats are stamped by theirs), or a live instance
# silent for a few seconds, from losing its queue, claims and inbox.
RETIRE_AFTER = 300.0


@dataclass(frozen=True)
class InstanceStats:
    """One live instance of a function, as it last reported itself."""

    # Instance id (unique per process: host-pid unless configured).
    instance: str
    # Epoch seconds of its last heartbeat.
    heartbeat: float
    # The batch config it runs with now (its start-up config with the live overrides applied).
    config: BatchConfig
    # Requests it has run for the shared queue since it started.
    served: int
    # Smoothed execution seconds of one handler call, by batch size.
    exec_seconds: Mapping[int, float]
    # Everything else it reported: host, pid_ns, boot_id, port, pid, pid_start, started_at, cpu_limit, memory_limit.
    facts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FunctionStats:
    """A function's shared queue as of ``now``."""

    # The function (queue) name.
    function: str
    # Epoch seconds at which this was read.
    now: float
    # Requests waiting in the shared queue, not yet taken by any instance.
    depth: int
    # Requests taken by an instance and not yet answered (running, or about to be reclaimed).
    claimed: int
    # Arrivals per second over each window in ``WINDOWS`` (last full seconds), keyed by window seconds:
    # every request that reached an instance, the ones it refused (429, 503) included.
    arrival_rate: Mapping[int, float]
    # Live instances, ordered by id.
    instances: tuple[InstanceStats, ...]
    # Function counters: served, expired, reclaimed, dropped (a dead instance's requests not given back), refused.
    counters: Mapping[str, int]
    # Refusals per second over each window, as ``arrival_rate`` (the refused part of the arrivals).
    refusal_rate: Mapping[int, float] = field(default_factory=dict)


def record_arrival(pipe: Any, fn: str, now: float, count: int = 1) -> None:
    """Count ``count`` arrivals in the epoch second of ``now``."""
    pipe.hincrby(keys.arrivals(fn), str(int(now)), count)


def record_heartbeat(pipe: Any, fn: str, inst: str, now: float, facts: Mapping[str, str],
                     exec_seconds: Mapping[int, float], ttl: float = 10 * STALE_AFTER) -> None:
    """Mark ``inst`` alive at ``now`` and refresh its facts and execution times (both expire after ``ttl``)."""
    pipe.zadd(keys.instances(fn), {inst: now})
    pipe.sadd(keys.functions(), fn)
    for key in function_keys(fn):
        pipe.persist(key)
    pipe.hset(keys.instance(fn, inst), mapping=dict(facts))
    pipe.expire(keys.instance(fn, inst), int(ttl))
    if exec_seconds:
        pipe.hset(keys.exec_times(fn, inst), mapping={str(n): repr(s) for n, s in exec_seconds.items()})
        pipe.expire(keys.exec_times(fn, inst), int(ttl))


def function_keys(fn: str) -> tuple[str, ...]:
    """The keys of ``fn`` that belong to no one instance (those given an expiry when its last one leaves)."""
    return keys.stats(fn), keys.arrivals(fn), keys.refused(fn), keys.queue(fn)


def expire_function(client: Any, fn: str, ttl: int = IDLE_TTL, pipe: Any = None, listed: bool = False) -> None:
    """``fn`` has no instance left: its keys go in ``ttl`` seconds unless a heartbeat comes first, and its
    name leaves ``fi:functions`` (a heartbeat adds it again) unless ``listed`` (instances that stopped beating
    remain, for ``presence.retire_dead`` to find). Written into ``pipe`` when given (its caller executes it),
    else sent at once."""
    target = client.pipeline(transaction=False) if pipe is None else pipe
    for key in function_keys(fn):
        target.expire(key, ttl)
    if not listed:
        target.srem(keys.functions(), fn)
    if pipe is None:
        target.execute()


def record_served(pipe: Any, fn: str, inst: str, served: int, expired: int = 0) -> None:
    """Count requests ``inst`` answered (``expired`` of them with 504, not run)."""
    for command in served_commands(fn, inst, served, expired):
        pipe.execute_command(*command)


def served_commands(fn: str, inst: str, served: int, expired: int = 0) -> list[tuple[Any, ...]]:
    """The commands of ``record_served``, for a caller that writes commands itself."""
    commands: list[tuple[Any, ...]] = []
    if served:
        commands += [("HINCRBY", keys.stats(fn), "served", served),
                     ("HINCRBY", keys.instance(fn, inst), "served", served)]
    if expired:
        commands.append(("HINCRBY", keys.stats(fn), "expired", expired))
    return commands


def record_refused(pipe: Any, fn: str, now: float, count: int = 1) -> None:
    """Count ``count`` requests refused (429 or 503) in the epoch second of ``now`` (their arrivals are
    counted too), and in the function's counters."""
    pipe.hincrby(keys.refused(fn), str(int(now)), count)
    pipe.hincrby(keys.stats(fn), "refused", count)


def trim_arrivals(client: Any, fn: str, now: float, keep: int = ARRIVALS_KEEP) -> int:
    """Drop arrival counts older than ``keep`` seconds; returns how many were dropped."""
    dropped = 0
    for key in (keys.arrivals(fn), keys.refused(fn)):
        old = [f for f in client.hkeys(key) if int(f) < int(now) - keep]
        dropped += client.hdel(key, *old) if old else 0
    return dropped


def arrival_rates(counts: Mapping[int, int], now: float, windows: tuple[int, ...] = WINDOWS) -> dict[int, float]:
    """Arrivals per second over each window of full seconds before ``now`` (pure)."""
    current = int(now)
    return {w: sum(counts.get(s, 0) for s in range(current - w, current)) / w for w in windows}


def list_functions(client: Any) -> list[str]:
    """Names of the functions with an instance on the shared queue (not those whose last instance left)."""
    return sorted(as_text(name) for name in client.smembers(keys.functions()))


def read_function_stats(client: Any, fn: str, now: float, stale_after: float = STALE_AFTER,
                        windows: tuple[int, ...] = WINDOWS) -> FunctionStats:
    """Everything the autoscaler reads about function ``fn``'s queue, as of ``now``."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.queue(fn))
    pipe.zrangebyscore(keys.instances(fn), now - stale_after, "+inf", withscores=True)
    pipe.hgetall(keys.arrivals(fn))
    pipe.hgetall(keys.stats(fn))
    pipe.hgetall(keys.refused(fn))
    depth, beats, arrivals, counters, refused = pipe.execute()
    live = sorted((as_text(inst), float(score)) for inst, score in beats)
    pipe = client.pipeline(transaction=False)
    for inst, _ in live:
        pipe.hgetall(keys.instance(fn, inst))
        pipe.hgetall(keys.exec_times(fn, inst))
        pipe.llen(keys.claimed(fn, inst))
    replies = pipe.execute()
    instances = tuple(_instance(inst, beat, replies[3 * i], replies[3 * i + 1])
                      for i, (inst, beat) in enumerate(live))
    counts = {int(k): int(v) for k, v in arrivals.items()}
    return FunctionStats(fn, now, int(depth), sum(int(n) for n in replies[2::3]),
                         arrival_rates(counts, now, windows), instances,
                         {name: int(counters.get(name.encode(), 0)) for name in COUNTERS},
                         arrival_rates({int(k): int(v) for k, v in refused.items()}, now, windows))


def _instance(inst: str, beat: float, facts: Mapping[bytes, bytes], exec_raw: Mapping[bytes, bytes]) -> InstanceStats:
    text = {as_text(k): as_text(v) for k, v in facts.items()}
    try:
        config = live_config.parse(text, BatchConfig())
    except ValueError:
        config = BatchConfig()
    served = int(text.pop("served", "0") or 0)
    for name in live_config.FIELDS:
        text.pop(name, None)
    exec_seconds = {int(k): float(v) for k, v in exec_raw.items()}
    return InstanceStats(inst, beat, config, served, exec_seconds, text)


def as_text(value: Any) -> str:
    """A Redis reply (bytes) as text; anything else as its str."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
