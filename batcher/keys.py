"""Every Redis key faas-infer uses, built in one place (shared by the watchdog and the autoscaler).

All keys start with ``PREFIX`` and carry the function's name (its queue name: variants ``<fn>-<config>``
use their parent's name, so all instances of a function share one queue). Values are bytes or JSON only.
The function's own keys (queue, arrivals, refused, stats) expire an hour after its last instance leaves
(``stats.expire_function``); a heartbeat keeps them.

    fi:{fn}:queue                   list  queued requests, pushed left, taken right (the shared batch queue)
    fi:{fn}:claimed:{inst}          list  requests taken by ``inst`` and not yet answered (reclaimed if it dies)
    fi:{fn}:arrivals                hash  {epoch second -> requests arrived, refused ones included}, trimmed
                                          to a few minutes
    fi:{fn}:refused                 hash  {epoch second -> requests refused (429, 503)}, trimmed likewise
    fi:{fn}:instances               zset  {instance -> last heartbeat, epoch seconds}
    fi:{fn}:instance:{inst}         hash  instance facts (host, pid_ns, boot_id, port, pid, pid_start, cpu, memory,
                                          started_at, live batch config, served count); expires unless refreshed by
                                          heartbeats
    fi:{fn}:config:{inst}           hash  live batch config {max_batch_size, batch_timeout, latency_slo},
                                          set by an operator (read with every heartbeat)
    fi:{fn}:exec:{inst}             hash  {batch size -> smoothed execution seconds}
    fi:{fn}:stats                   hash  counters: served, expired, reclaimed, dropped, refused
    fi:{fn}:given-back              set   tokens of requests given back once from a dead instance (expires)
    fi:inbox:{inst}                 list  responses for requests that arrived at instance ``inst``
    fi:functions                    set   names of functions with an instance on the shared queue (a heartbeat
                                          adds the name; the last instance to leave removes it)
"""

from __future__ import annotations

PREFIX = "fi"


NAME_RULE = "must be non-empty without ':', braces or whitespace"


def valid_name(name: str) -> bool:
    """True when ``name`` may be a function or instance name inside a key."""
    return bool(name) and not any(c in name for c in ":{}") and not any(c.isspace() for c in name)


def _check(name: str, what: str) -> str:
    if not valid_name(name):
        raise ValueError(f"{what}={name!r}: {NAME_RULE}")
    return name


def queue(fn: str) -> str:
    """The function's shared request queue."""
    return f"{PREFIX}:{_check(fn, 'function')}:queue"


def arrivals(fn: str) -> str:
    """Per-second arrival counts of the function."""
    return f"{PREFIX}:{_check(fn, 'function')}:arrivals"


def refused(fn: str) -> str:
    """Per-second counts of the function's refused requests."""
    return f"{PREFIX}:{_check(fn, 'function')}:refused"


def claimed(fn: str, inst: str) -> str:
    """Requests one instance has taken and not yet answered."""
    return f"{PREFIX}:{_check(fn, 'function')}:claimed:{_check(inst, 'instance')}"


def instances(fn: str) -> str:
    """Heartbeats of the function's instances."""
    return f"{PREFIX}:{_check(fn, 'function')}:instances"


def instance(fn: str, inst: str) -> str:
    """Facts about one instance."""
    return f"{PREFIX}:{_check(fn, 'function')}:instance:{_check(inst, 'instance')}"


def config(fn: str, inst: str) -> str:
    """The live batch config of one instance."""
    return f"{PREFIX}:{_check(fn, 'function')}:config:{_check(inst, 'instance')}"


def exec_times(fn: str, inst: str) -> str:
    """Smoothed execution seconds by batch size of one instance."""
    return f"{PREFIX}:{_check(fn, 'function')}:exec:{_check(inst, 'instance')}"


def stats(fn: str) -> str:
    """Counters of the function's queue."""
    return f"{PREFIX}:{_check(fn, 'function')}:stats"


def inbox(inst: str) -> str:
    """Responses addressed to the instance that received the requests."""
    return f"{inbox_prefix()}{_check(inst, 'instance')}"


def inbox_prefix() -> str:
    """What every inbox key starts with (the reaping script appends the instance)."""
    return f"{PREFIX}:inbox:"


def given_back(fn: str) -> str:
    """Tokens of the function's requests given back once from a dead instance (never given back twice)."""
    return f"{PREFIX}:{_check(fn, 'function')}:given-back"


def functions() -> str:
    """The set of function names known to the shared queue."""
    return f"{PREFIX}:functions"
