"""A real watchdog with ``handler_process=true``: batches over HTTP, a segfault or a hang costs its batch
only, and SIGTERM drains the queue before the child process ends."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import time

import psutil
import pytest
import requests

from helpers import wait_until, write_handler

HANDLER = """
import os, signal, time

def load():
    return {"pid": os.getpid()}

def handle_batch(state, requests):
    time.sleep(0.03)
    bodies = [r.body for r in requests]
    if b"segv" in bodies:
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"hang" in bodies:
        time.sleep(60)
    if b"exit" in bodies:
        raise SystemExit(3)
    return [{"echo": r.body.decode(), "pid": state["pid"], "n": len(requests)} for r in requests]
"""


@pytest.fixture
def handler_dir(tmp_path):
    return write_handler(str(tmp_path / "fn"), HANDLER)


def post_many(url, bodies, workers=16):
    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: requests.post(url, data=b, timeout=30), bodies))


def restarts(wd, reason: str) -> float:
    text = requests.get(wd.metrics_url, timeout=5).text
    found = re.search(rf'^faas_infer_handler_restarts_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_batches_run_in_a_child_process_and_a_segfault_costs_only_its_batch(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, handler_process="true", max_batch_size=8, batch_timeout="50ms")
    responses = post_many(wd.url, [f"r{i}".encode() for i in range(32)])
    assert [r.status_code for r in responses] == [200] * 32
    assert [r.json()["echo"] for r in responses] == [f"r{i}" for i in range(32)]
    assert max(r.json()["n"] for r in responses) > 1
    first_pid = responses[0].json()["pid"]
    gunicorn_worker = psutil.Process(first_pid).ppid()  # the child's parent is the worker under the master
    assert first_pid != gunicorn_worker and psutil.Process(gunicorn_worker).ppid() == wd.proc.pid

    crashed = requests.post(wd.url, data=b"segv", timeout=30)
    assert crashed.status_code == 500
    assert "died of signal SIGSEGV" in crashed.text and "a new one is being started" in crashed.text
    after = requests.post(wd.url, data=b"after", timeout=30)
    assert after.status_code == 200 and after.json()["pid"] != first_pid
    assert restarts(wd, "crash") == 1
    assert requests.get(wd.url + "/_/ready", timeout=5).status_code == 200
    assert "faas_infer_cold_start_seconds" in requests.get(wd.metrics_url, timeout=5).text


def test_sys_exit_in_the_handler_fails_its_request_and_the_child_lives_on(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, handler_process="true", max_batch_size=1)
    pid = requests.post(wd.url, data=b"before", timeout=30).json()["pid"]
    exited = requests.post(wd.url, data=b"exit", timeout=30)
    assert exited.status_code == 500 and "SystemExit" in exited.text
    assert requests.post(wd.url, data=b"after", timeout=30).json()["pid"] == pid
    assert restarts(wd, "crash") == 0


def test_under_load_a_segfault_costs_its_batch_only_while_batches_are_pipelined(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, handler_process="true", max_batch_size=4, batch_timeout="20ms")
    bodies = [f"r{i}".encode() for i in range(40)]
    bodies[13] = b"segv"
    responses = post_many(wd.url, bodies)
    failed = [i for i, r in enumerate(responses) if r.status_code != 200]
    assert 13 in failed and len(failed) <= 4  # one batch, not the one written behind it
    assert all(responses[i].status_code == 500 and "SIGSEGV" in responses[i].text for i in failed)
    assert all(responses[i].json()["echo"] == f"r{i}" for i in range(40) if i not in failed)
    assert restarts(wd, "crash") == 1


def test_a_hung_batch_is_answered_504_and_the_instance_serves_on(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, handler_process="true", max_batch_size=1, exec_timeout="1s")
    hung = requests.post(wd.url, data=b"hang", timeout=30)
    assert hung.status_code == 504
    started = time.monotonic()
    wait_until(lambda: requests.post(wd.url, data=b"fine", timeout=10).status_code == 200, 20,
               what="instance serves after the hung child was replaced")
    assert time.monotonic() - started < 20  # not after the hung call's 60 s
    assert restarts(wd, "timeout") == 1


def test_sigterm_drains_every_accepted_request_then_the_child_exits(watchdogs, handler_dir):
    wd = watchdogs(handler_dir, handler_process="true", max_batch_size=8, batch_timeout="20ms",
                   healthcheck_interval="0.5s")
    child_pid = requests.post(wd.url, data=b"who", timeout=30).json()["pid"]
    with cf.ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(requests.post, wd.url, data=f"{i}".encode(), timeout=30) for i in range(24)]
        time.sleep(0.05)
        wd.signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 24
    assert [r.json()["echo"] for r in results] == [str(i) for i in range(24)]
    assert wd.proc.wait(20) == 0

    def child_gone() -> bool:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(child_gone, 10, what="the handler process to exit after the drain")
