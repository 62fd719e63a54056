"""host: which peers' processes on this host are gone (a fake process table), and this process as it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from batcher import host

HERE = {"host": "h1", "pid_ns": "pid:[4026531836]", "boot_id": "5e9b7c1a-0d6f-4f53-9a53-3c7d0e2b8f11"}
STARTED_AT = 1000.0


def table(processes: dict[int, float]):
    """A process table: pid -> epoch seconds it started."""
    return processes.get


def peer(**facts: str) -> dict[str, str]:
    return {**HERE, "pid": "42", "started_at": repr(STARTED_AT), **facts}


@pytest.mark.parametrize("processes, facts, gone", [
    ({}, peer(), True),  # no process has its pid
    ({42: STARTED_AT - 5}, peer(), False),  # its own process, still running
    ({42: STARTED_AT + 60}, peer(), True),  # the pid was reused by a later process
    ({42: STARTED_AT + 1}, peer(), False),  # within the start time's slack: its own
    ({}, peer(host="h2"), False),  # another host: left to the heartbeat rule
    ({}, peer(pid_ns="pid:[4026532001]"), False),  # same hostname, another pid namespace (host networking)
    ({}, {"host": "h1", "pid": "42", "started_at": "1000.0"}, False),  # a peer that did not say its namespace
    # Another machine of the same hostname: every kernel's first pid namespace is pid:[4026531836]
    ({}, peer(boot_id="0b6a3f4e-7d21-4c8e-b1f2-9e4d5a6c7b80"), False),
    ({}, {k: v for k, v in peer().items() if k != "boot_id"}, False),  # a peer that did not say its kernel
    ({}, peer(pid="x"), False),
    ({}, peer(pid="0"), False),
    ({}, peer(started_at=""), False),
    ({}, {k: v for k, v in peer().items() if k != "pid"}, False),
])
def test_a_peer_is_gone_only_when_on_this_host_its_pid_runs_no_process_of_its_own(processes, facts, gone):
    assert host.gone(facts, HERE, table(processes)) is gone


@pytest.mark.parametrize("unknown", ["host", "pid_ns", "boot_id"])
def test_where_a_part_of_this_hosts_name_cannot_be_read_nothing_is_judged_gone(unknown):
    # Two containers that cannot read their pid namespace (both "") are not thereby in one.
    assert host.gone(peer(**{unknown: ""}), {**HERE, unknown: ""}, table({})) is False


def test_this_process_runs_since_before_now_and_an_ended_one_does_not_run():
    assert host.running_since(os.getpid()) <= time.time()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert host.running_since(ended.pid) is None


def test_a_killed_child_not_yet_waited_for_does_not_run():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    try:
        deadline = time.monotonic() + 10
        while host.running_since(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.running_since(child.pid) is None  # a zombie until waited for
    finally:
        child.wait()


def test_this_hosts_identity_names_the_hostname_and_pid_namespace():
    me = host.identity()
    assert me["host"] and set(me) == {"host", "pid_ns", "boot_id"}
    assert host.gone({**me, "pid": str(os.getpid()), "started_at": repr(time.time())}, me) is False
