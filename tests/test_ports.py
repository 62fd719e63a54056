"""Free ports for the processes we start: bindable, and away from the kernel's ephemeral range."""

from __future__ import annotations

import socket

from faas_infer import ports
from faas_infer.ports import ephemeral_range, free_port


def test_free_ports_bind_and_stay_below_the_ephemeral_range():
    low, _ = ephemeral_range()
    for _ in range(20):
        port = free_port()
        with socket.socket() as s:
            # as the servers it is for bind (SO_REUSEADDR): a port whose connections of another test linger in
            # TIME_WAIT is free for them, and failed a plain bind while other test runs shared the machine
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        assert port < low or low <= 1025


def test_a_port_something_listens_on_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        other = taken + 1 if taken + 1 < ephemeral_range()[0] else taken - 1
        draws = iter([taken, taken])
        monkeypatch.setattr(ports.random, "randrange", lambda a, b: next(draws, other))
        assert free_port() not in (taken, 0)
        assert free_port(preferred=taken) not in (taken, 0)


def test_a_preferred_port_is_taken_when_free():
    port = free_port()
    assert free_port(preferred=port) == port


def test_a_port_is_not_handed_out_twice_before_it_is_bound(monkeypatch):
    first = free_port()
    monkeypatch.setattr(ports.random, "randrange", lambda a, b: first)  # every draw repeats the first port
    second = free_port()
    assert second not in (first, 0)
