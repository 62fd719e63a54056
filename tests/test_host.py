"""host: which peers' processes on this host are gone (a fake process table), and this process as it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from batcher import host

HERE = {"host": "h1", "pid_ns": "pid:[4026531836]", "boot_id": "5e9b7c1a-0d6f-4f53-9a53-3c7d0e2b8f11"}
STARTED = 1000  # clock ticks since boot


def table(processes: dict[int, int]):
    """A process table: pid -> clock ticks since boot at which it started (-1: cannot be read)."""
    return processes.get


def peer(**facts: str) -> dict[str, str]:
    return {**HERE, "pid": "42", "pid_start": str(STARTED), "started_at": "1796000000.0", **facts}


@pytest.mark.parametrize("processes, facts, gone", [
    ({}, peer(), True),  # no process has its pid
    ({42: STARTED}, peer(), False),  # its own process, still running
    ({42: STARTED + 6000}, peer(), True),  # the pid was reused by a later process
    ({42: STARTED + 1}, peer(), True),  # a tick later is another process: no slack is needed
    ({42: STARTED - 1}, peer(), True),
    ({42: -1}, peer(), False),  # a process has it, whose start cannot be read: taken for its own
    ({}, peer(host="h2"), False),  # another host: left to the heartbeat rule
    ({}, peer(pid_ns="pid:[4026532001]"), False),  # same hostname, another pid namespace (host networking)
    ({}, {"host": "h1", "pid": "42", "pid_start": "1000"}, False),  # a peer that did not say its namespace
    # Another machine of the same hostname: every kernel's first pid namespace is pid:[4026531836]
    ({}, peer(boot_id="0b6a3f4e-7d21-4c8e-b1f2-9e4d5a6c7b80"), False),
    ({}, {k: v for k, v in peer().items() if k != "boot_id"}, False),  # a peer that did not say its kernel
    ({}, peer(pid="x"), False),
    ({}, peer(pid="0"), False),
    ({}, peer(pid_start=""), False),
    ({}, peer(pid_start="-1"), False),
    ({}, {k: v for k, v in peer().items() if k != "pid"}, False),
    ({}, {k: v for k, v in peer().items() if k != "pid_start"}, False),  # its start in epoch seconds only
])
def test_a_peer_is_gone_only_when_on_this_host_its_pid_runs_no_process_of_its_own(processes, facts, gone):
    assert host.gone(facts, HERE, table(processes)) is gone


@pytest.mark.parametrize("unknown", ["host", "pid_ns", "boot_id"])
def test_where_a_part_of_this_hosts_name_cannot_be_read_nothing_is_judged_gone(unknown):
    # Two containers that cannot read their pid namespace (both "") are not thereby in one.
    assert host.gone(peer(**{unknown: ""}), {**HERE, unknown: ""}, table({})) is False


def test_a_running_process_has_the_start_it_states_itself_and_an_ended_one_does_not_run(tmp_path):
    # comm, in parentheses in /proc/<pid>/stat, may itself hold spaces and parentheses.
    odd = tmp_path / "a) 1 2 (b"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import sys; sys.path.insert(0, sys.argv[1]); from batcher import host; "
                              "print(host.own_start(), flush=True); sys.stdin.read()", os.getcwd()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        stated = child.stdout.readline().strip()
        assert stated and host.start_ticks(child.pid) == int(stated)
        assert host.gone({**host.identity(), "pid": str(child.pid), "pid_start": stated}, host.identity()) is False
    finally:
        child.stdin.close()
        child.wait()
    assert host.start_ticks(child.pid) is None
    assert host.gone({**host.identity(), "pid": str(child.pid), "pid_start": stated}, host.identity()) is True


def test_a_killed_child_not_yet_waited_for_does_not_run():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    try:
        deadline = time.monotonic() + 10
        while host.start_ticks(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.start_ticks(child.pid) is None  # a zombie until waited for
    finally:
        child.wait()


def test_this_hosts_identity_names_the_hostname_and_pid_namespace():
    me = host.identity()
    assert me["host"] and set(me) == {"host", "pid_ns", "boot_id"}
    assert host.gone({**me, "pid": str(os.getpid()), "pid_start": host.own_start()}, me) is False
