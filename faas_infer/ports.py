"""Free loopback ports for processes started here (tests, benchmarks, ``faas-infer up``)."""

from __future__ import annotations

import collections
import random
import socket
import threading

# Ports are drawn from the span just below the kernel's ephemeral range.
SPAN = 16000
# Ports handed out recently by this process: not handed out again, since the process each was meant for
# may not have bound it yet (seen: one watchdog given the same port for HTTP and metrics).
_HANDED: collections.deque[int] = collections.deque(maxlen=512)
_LOCK = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; the usual default elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """A TCP port on ``host`` that nothing listens on, for another process to bind: ``preferred`` when it
    is free (0: any), else one drawn as below and not handed out by this process recently.

    Drawn below the ephemeral range when possible: a port the kernel hands out (bind to port 0) is an
    ephemeral one, and any outgoing connection on the machine may take it between the moment it is found
    free and the moment the process it is meant for binds it (seen here as a watchdog failing to boot
    with "Address already in use" while the tests made many connections).
    """
    low = ephemeral_range()[0]
    first = max(1024, low - SPAN)
    draws = [random.randrange(first, low) for _ in range(100)] if low > first else []
    with _LOCK:
        for port in ([preferred] if preferred else []) + draws + [0, 0, 0]:
            if port in _HANDED and port != preferred:
                continue
            with socket.socket() as s:
                # as the servers bind (gunicorn, http.server, Go): a port whose last connections linger in
                # TIME_WAIT is free for them (without it, `faas-infer up` restarted within a minute moved the
                # autoscaler's metrics off 8082, where `faas-infer top` looks)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                found = s.getsockname()[1]
            if found in _HANDED and found != preferred:
                continue
            _HANDED.append(found)
            return found
    raise OSError(f"no free TCP port on {host}")
