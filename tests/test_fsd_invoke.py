"""Invoking workers over HTTP: a hung call must not hold up the next job's calls."""

from __future__ import annotations

import socket
import time

import pytest

from fsd.errors import WorkerFailed
from fsd.invoke import HttpInvoker
from fsd.worker import JobSpec
from helpers import silent_listener


@pytest.fixture
def silent_url():
    """The URL of a loopback socket that accepts connections and never answers (a blackholed worker)."""
    with silent_listener() as port:
        yield f"http://127.0.0.1:{port}"
    # closing it resets the hung connections, so their threads end now


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there: refused at once


def test_hung_calls_do_not_delay_the_next_jobs_calls(silent_url):
    invoker = HttpInvoker([silent_url, _closed_url()])
    hung = [invoker.submit(JobSpec(f"dead{k}", 0, 1, 20.0, time.time() + 20)) for k in range(3)]  # hang 23 s
    time.sleep(0.2)
    started = time.monotonic()
    nxt = invoker.submit(JobSpec("next", 1, 1, 20.0, time.time() + 20))
    with pytest.raises(WorkerFailed, match="rank 1 at .*: unreachable"):
        nxt.result(timeout=30)
    assert time.monotonic() - started < 10  # at once, not after the hung calls' 23 s
    assert not any(f.done() for f in hung)


def test_a_hung_rank_costs_a_bounded_number_of_threads(silent_url):
    invoker = HttpInvoker([silent_url], max_outstanding=2)
    hung = [invoker.submit(JobSpec(f"dead{k}", 0, 1, 20.0, time.time() + 20)) for k in range(2)]
    refused = invoker.submit(JobSpec("next", 0, 1, 20.0, time.time() + 20))
    with pytest.raises(WorkerFailed, match="rank 0 at .*: 2 calls still unanswered"):
        refused.result(timeout=1)
    assert not any(f.done() for f in hung)
