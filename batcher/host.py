"""This host, as instance facts name it, and whether a peer's process on it is gone.

A peer that stops beating is reaped once its heartbeat is older than ``stats.STALE_AFTER``: it may only be
slow, or cut off from Redis, and a peer on another host cannot be asked. One on this host can: when the
process its facts name (``pid``) no longer runs, or runs but started after the instance did (``started_at``:
the pid was reused), it is dead now. Killed with SIGKILL and restarted at once (the provider's restart
backoff is 0.5 s), a function's next instance otherwise took the dead one's requests, whose callers died
with it, and ran them for nobody ahead of the living. "This host" is the hostname, the pid namespace and
the kernel's boot id: containers sharing a hostname (host networking) do not see each other's processes, and
neither do machines that share one (VMs made from one image are all "vm", say): a pid namespace is named by an
inode number that only one kernel gives meaning to (every machine's first one is pid:[4026531836]). A part
that cannot be read is "", and then nothing is judged (it says nothing about which machine this is).
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Mapping

import psutil

# Seconds a process's start time, as the system reports it, may lag behind the truth (Linux counts it from
# the boot time, in whole seconds): a pid is taken for reused only when its process started this much
# after the instance did. A pid reused that fast would mean the pid counter wrapped within two seconds.
START_SLACK = 2.0
# The facts that together name one process table; a peer is judged only when all are known and equal.
PLACE = ("host", "pid_ns", "boot_id")


def identity() -> dict[str, str]:
    """The facts that name this host: ``host`` (the hostname), ``pid_ns`` and ``boot_id`` (the running kernel's;
    each "" where it cannot be read)."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = ""
    return {"host": socket.gethostname(), "pid_ns": pid_ns, "boot_id": boot_id}


def running_since(pid: int) -> float | None:
    """Epoch seconds at which process ``pid`` started; None when no such process runs (a zombie runs no
    more), minus infinity when it runs but its start cannot be read (taken for the one we know)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return float("-inf")


def gone(facts: Mapping[str, str], here: Mapping[str, str],
         started: Callable[[int], float | None] = running_since) -> bool:
    """True when ``facts`` (a peer's) name a process on this host (``here``: ``identity()``) that is gone: no
    process has its pid, or the one that has started after the peer did. False for peers elsewhere, and for
    facts (or a ``here``) that cannot say (those wait for the heartbeat rule)."""
    if any(not here.get(name) or facts.get(name) != here.get(name) for name in PLACE):
        return False
    try:
        pid, started_at = int(facts["pid"]), float(facts["started_at"])
    except (KeyError, ValueError):
        return False
    if pid <= 0:
        return False
    since = started(pid)
    return since is None or since > started_at + START_SLACK
