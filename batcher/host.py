"""This host, as instance facts name it, and whether a peer's process on it is gone.

A peer that stops beating is reaped once its heartbeat is older than ``stats.STALE_AFTER``: it may only be
slow, or cut off from Redis, and a peer on another host cannot be asked. One on this host can: when the
process its facts name (``pid``) no longer runs, or runs but is not the one that started when the instance
did (``pid_start``: the pid was reused), it is dead now. Killed with SIGKILL and restarted at once (the
provider's restart backoff is 0.5 s), a function's next instance otherwise took the dead one's requests,
whose callers died with it, and ran them for nobody ahead of the living. "This host" is the hostname, the
pid namespace and the kernel's boot id: containers sharing a hostname (host networking) do not see each
other's processes, and neither do machines that share one (VMs made from one image are all "vm", say): a
pid namespace is named by an inode number that only one kernel gives meaning to (every machine's first one
is pid:[4026531836]). A part that cannot be read is "", and then nothing is judged (it says nothing about
which machine this is).

A process is told from one that reused its pid by when it started, counted in clock ticks since boot as the
kernel keeps it (``/proc/<pid>/stat``): exact, and blind to the wall clock. Epoch start times (psutil's
``create_time``) are that count plus the boot time read now, which moves whenever the clock is stepped: after
the clock was set forward a few seconds, every peer started before looked as if its pid had been reused since
its ``started_at``, and was reaped while it served.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Mapping

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


def start_ticks(pid: int) -> int | None:
    """Clock ticks from boot to the start of process ``pid``; None when no such process runs (a zombie runs no
    more), -1 when it may run but its start cannot be read (taken for the one we know)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return -1
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ", comm may hold spaces and parentheses
    try:
        return None if fields[0] in (b"Z", b"X") else int(fields[19])  # state is field 3, starttime field 22
    except (IndexError, ValueError):
        return -1


def own_start() -> str:
    """This process's ``pid_start`` fact (``start_ticks``), "" where it cannot be read."""
    ticks = start_ticks(os.getpid())
    return "" if ticks is None or ticks < 0 else str(ticks)


def gone(facts: Mapping[str, str], here: Mapping[str, str],
         started: Callable[[int], int | None] = start_ticks) -> bool:
    """True when ``facts`` (a peer's) name a process on this host (``here``: ``identity()``) that is gone: no
    process has its pid, or the one that has it started at another tick than the peer's (``pid_start``). False
    for peers elsewhere, and for facts (or a ``here``) that cannot say (those wait for the heartbeat rule)."""
    if any(not here.get(name) or facts.get(name) != here.get(name) for name in PLACE):
        return False
    try:
        pid, pid_start = int(facts["pid"]), int(facts["pid_start"])
    except (KeyError, ValueError):
        return False
    if pid <= 0 or pid_start < 0:
        return False
    since = started(pid)
    return since is None or (since >= 0 and since != pid_start)
